"""`wippy chat` for real: in a tmux terminal, type a message, see the answer, quit with ctrl+q; and its refusals.

The node's control socket is checked, and a node already running staged, with the node's own
control server (`_control`).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wippy_agents import App
from wippy_agents.control import ControlServer, socket_path

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def poll(ready: Callable[[], bool], timeout: float, failure: Callable[[], str]) -> None:
    """Check `ready()` every 50 ms until it holds (the terminal is driven from plain code, off any loop);
    fail with `failure()` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(failure())
        time.sleep(0.05)


class Terminal:
    """A detached tmux session on a private server, read with capture-pane."""

    def __init__(self) -> None:
        self.tmux = ["tmux", "-L", f"wippy-test-{os.getpid()}-{uuid.uuid4().hex[:8]}", "-f", os.devnull]

    def run(self, *args: str) -> str:
        return subprocess.run([*self.tmux, *args], check=True, capture_output=True, text=True, timeout=10).stdout

    def start(self, command: str, folder: Path, width: int = 100, height: int = 30) -> None:
        self.run("new-session", "-d", "-x", str(width), "-y", str(height), "-c", str(folder), command)
        self.run("set", "-g", "escape-time", "0")

    def screen(self) -> str:
        return self.run("capture-pane", "-p")

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        """Wait until `text` shows; fail with what the screen shows after `timeout` seconds."""
        poll(lambda: text in self.screen(), timeout,
             lambda: f"{text!r} did not show within {timeout:g}s; the screen:\n{self.screen()}")

    def kill(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    terminal = Terminal()
    try:
        yield terminal
    finally:
        terminal.kill()


@needs_tmux
def test_chat_answers_in_a_real_terminal_and_ctrl_q_shuts_the_node_down(
        terminal: Terminal, example_app: Path, tmp_path: Path) -> None:
    status = tmp_path / "status"
    # pytest sets COLUMNS and LINES, which would override the pane's size
    command = (f"env -u COLUMNS -u LINES {shlex.quote(sys.executable)} -m wippy_agents.cli chat; "
               f"echo $? > {shlex.quote(str(status))}")
    terminal.start(command, example_app)
    terminal.wait_for("Type a message")
    assert socket_path(example_app).exists()  # the TUI's node serves the CLI meanwhile
    terminal.run("send-keys", "-l", "hello from tmux")
    terminal.run("send-keys", "Enter")
    terminal.wait_for("You said: hello from tmux")
    terminal.run("send-keys", "C-q")
    poll(lambda: status.exists() and bool(status.read_text().strip()), 20,
         lambda: f"wippy chat did not exit; the screen:\n{terminal.screen()}")
    assert status.read_text().strip() == "0"
    assert not socket_path(example_app).exists()


async def run_chat_command(*args: str) -> tuple[int, str]:
    """Run `wippy chat ARGS` without a terminal (it is expected to stop before the UI starts); status and stderr."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "wippy_agents.cli", "chat", *args,
                                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


async def test_chat_refuses_an_app_that_another_node_runs(example_app: Path) -> None:
    async with App(root=example_app, control=ControlServer(example_app)):
        status, stderr = await run_chat_command("--root", str(example_app))
    assert status == 1
    assert stderr.startswith("wippy: the app in ") and "is already run by wippy node pid" in stderr


async def test_chat_names_an_unknown_agent_before_the_ui_starts(example_app: Path) -> None:
    status, stderr = await run_chat_command("app:asistant", "--root", str(example_app))
    assert status == 1
    assert "no agent 'app:asistant'" in stderr and "app:assistant" in stderr
