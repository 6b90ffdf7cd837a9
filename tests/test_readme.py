"""The README's examples run on a copy of the example app: its Python blocks, in order, and its console
sessions (`$ ` a command, `> ` its next line, then what it prints) through the real `wippy` against a node
that `wippy run` keeps running, each printing what the README shows."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from wippy_agents.testing import wait_until

README = Path(__file__).resolve().parent.parent / "README.md"
BIN = Path(sys.executable).parent
VOLATILE = ((re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?Z?"), "<time>"),
            (re.compile(r"\b\d+\.\d+s\b"), "<seconds>"))
"""What differs from run to run in what the commands print: times of day and durations."""


def test_readme_examples_run(example_app: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 4
    namespace: dict[str, object] = {"__name__": "readme"}
    cwd = Path.cwd()
    os.chdir(example_app)
    try:
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    finally:
        os.chdir(cwd)


def sessions() -> list[tuple[str, str]]:
    """The README's console blocks as (command, what it prints) pairs."""
    pairs: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", README.read_text(), flags=re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                pairs.append((line[2:], []))
            elif line.startswith("> ") and not pairs[-1][1]:
                pairs[-1] = (pairs[-1][0] + "\n" + line[2:], [])
            else:
                pairs[-1][1].append(line)
    return [(command, "".join(line + "\n" for line in printed)) for command, printed in pairs]


def shows(shown: str, printed: str) -> bool:
    """Whether the command printed what the README shows, where `...` stands for any text."""

    def normal(text: str) -> str:
        for pattern, placeholder in VOLATILE:
            text = pattern.sub(placeholder, text)
        return text

    pattern = ".*?".join(re.escape(normal(part)) for part in shown.split("..."))
    return re.fullmatch(pattern, normal(printed), flags=re.DOTALL) is not None


async def test_readme_console_sessions_print_what_they_show(example_app: Path) -> None:
    commands = sessions()
    assert any(command.startswith("wippy tasks upgrade") for command, _ in commands)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}

    def run(command: str) -> str:
        done = subprocess.run(["bash", "-c", command], cwd=example_app, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60)
        return done.stdout

    async def read(command: str, shown: str) -> str:
        """What the command prints; a person reads a task (`wippy tasks show`) a moment later, by when it has got
        where the README shows it: such a read is repeated until it does (for 30 s)."""
        printed = [run(command)]

        def as_shown() -> bool:
            if shows(shown, printed[-1]):
                return True
            printed.append(run(command))
            return False

        if command.startswith("wippy tasks show"):
            with contextlib.suppress(AssertionError):
                await wait_until(as_shown, timeout=30, poll=0.1)
        return printed[-1]

    with subprocess.Popen([BIN / "wippy", "run"], cwd=example_app, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as node:
        assert node.stdout is not None
        try:
            assert any("press Ctrl+C" in line for line in node.stdout)
            for command, shown in commands:
                printed = await read(command, shown)
                assert shows(shown, printed), f"$ {command}\nprinted:\n{printed}\nthe README shows:\n{shown}"
        finally:
            node.send_signal(signal.SIGINT)
            node.communicate(timeout=30)
