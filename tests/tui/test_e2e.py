"""`wippy chat` for real: in a tmux terminal, type a message, see the answer, quit with ctrl+q; and its refusals.

Hosting its node, quitting shuts it down; attached to the node `wippy run` serves, quitting leaves it running.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wippy_agents.control import socket_path

WIPPY = str(Path(sys.executable).with_name("wippy"))
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


@needs_tmux
def test_chat_attaches_to_the_node_wippy_run_serves_and_quitting_leaves_it_running(
        terminal: Terminal, example_app: Path, tmp_path: Path, running_node: Any) -> None:
    status = tmp_path / "status"
    with running_node(example_app) as node:
        command = (f"env -u COLUMNS -u LINES {shlex.quote(sys.executable)} -m wippy_agents.cli chat; "
                   f"echo $? > {shlex.quote(str(status))}")
        terminal.start(command, example_app)
        terminal.wait_for("Type a message")
        terminal.run("send-keys", "-l", "hello, attached")
        terminal.run("send-keys", "Enter")
        terminal.wait_for("You said: hello, attached")
        terminal.run("send-keys", "F4")  # the node's processes, read through its socket
        terminal.wait_for("forward_events")
        terminal.run("send-keys", "C-q")
        poll(lambda: status.exists() and bool(status.read_text().strip()), 20,
             lambda: f"wippy chat did not exit; the screen:\n{terminal.screen()}")
        assert status.read_text().strip() == "0"
        assert node.poll() is None  # the node goes on, and it ran the turn
        tasks = subprocess.run([WIPPY, "tasks", "list", "--json", "--root", str(example_app)], capture_output=True,
                               text=True, timeout=60)
        assert [task["status"] for task in json.loads(tasks.stdout)] == ["completed"], tasks.stderr


async def test_chat_names_an_unknown_agent_before_the_ui_starts(example_app: Path) -> None:
    status, stderr = await run_chat_command("app:asistant", "--root", str(example_app))
    assert status == 1
    assert "no agent 'app:asistant'" in stderr and "app:assistant" in stderr


async def test_chat_without_a_terminal_says_it_needs_one_instead_of_waiting_for_keys(example_app: Path) -> None:
    status, stderr = await run_chat_command("--root", str(example_app))
    assert status != 0 and "draws its UI in a terminal" in stderr and "wippy ask" in stderr
    assert not socket_path(example_app).exists()  # the node it booted is shut down again
