"""The control socket: the CLI reaches a running node, one node per app, stale files cleared.

Some tests read limits from the control package's private modules (`_server`, `_wire`): they test those limits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wippy_agents import App
from wippy_agents.control import ControlClient, ControlError, ControlServer, connect, pid_path, socket_path
from wippy_agents.control._server import MAX_CONNECTIONS
from wippy_agents.control._wire import REQUEST_LIMIT
from wippy_agents.durable import TaskFailed
from wippy_agents.llm import ChatMessage, Model, Response, ResponseDone, StreamEvent, TextDelta, ToolDefinition
from wippy_agents.llm._model import Settings
from wippy_agents.state import StateFileBusy

WIPPY = str(Path(sys.executable).with_name("wippy"))


def served(root: Path) -> App:
    """An app that the CLI reaches through its control socket (as `wippy run` boots it)."""
    return App(root=root, control=ControlServer(root))


def wippy(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WIPPY, *map(str, args)], capture_output=True, text=True, timeout=60)


def test_the_cli_talks_to_a_running_node_and_a_second_node_is_refused(example_app: Path, running_node: Any) -> None:
    with running_node(example_app) as node:
        # each of these would fail on the state file's lock if it did not go through the node
        history = wippy("registry", "history", "--root", example_app)
        assert history.returncode == 0, history.stderr
        assert history.stdout.startswith("v1  ") and "loaded from files" in history.stdout
        assert wippy("tasks", "list", "--root", example_app).returncode == 0
        ask = wippy("ask", "app:assistant", "hello", "--root", example_app)
        assert ask.returncode == 0 and "You said: hello" in ask.stdout, ask.stderr
        [status] = json.loads(wippy("cluster", "status", "--json", "--root", example_app).stdout)
        assert (status["name"], status["pid"], status["ray_node"], status["status"]) == ("local", node.pid, None, "up")
        assert status["processes"] > 3 and status["tasks"] == 0 and status["host"]
        table = wippy("cluster", "status", "--root", example_app).stdout.splitlines()
        assert table[0].split() == ["NODE", "HOST", "RAY", "NODE", "PID", "PROCESSES", "TASKS", "LEASE", "AGE", "STATUS"]
        second = wippy("run", "--root", example_app)
        assert second.returncode == 1
        assert f"the app in {example_app} is already run by wippy node pid {node.pid}" in second.stderr
        assert "use the CLI, which talks to it" in second.stderr
        node.send_signal(signal.SIGINT)
        assert node.wait(timeout=30) == 0
    assert not socket_path(example_app).exists() and not pid_path(example_app).exists()


def test_a_node_killed_with_sigkill_leaves_files_that_the_next_node_clears(example_app: Path,
                                                                           running_node: Any) -> None:
    with running_node(example_app) as node:
        assert int(pid_path(example_app).read_text()) == node.pid
        node.kill()
        node.wait(timeout=30)  # reaped: a zombie still counts as alive
    assert socket_path(example_app).exists()
    history = wippy("registry", "history", "--root", example_app)  # nothing answers: served here instead
    assert history.returncode == 0 and history.stdout.startswith("v1  "), history.stderr
    nodes = wippy("cluster", "status", "--root", example_app)
    assert nodes.stdout == "no node runs this app; start one with `wippy run`\n", nodes.stderr
    again = wippy("run", "--once", "--root", example_app)
    assert again.returncode == 0, again.stderr
    assert not socket_path(example_app).exists() and not pid_path(example_app).exists()


async def test_a_second_node_in_the_same_process_gets_the_first_ones_pid(example_app: Path) -> None:
    async with served(example_app):
        with pytest.raises(StateFileBusy, match=f"already run by wippy node pid {os.getpid()} "):
            async with served(example_app):
                pass


async def request_lines(path: Path, *requests: Any) -> list[dict[str, Any]]:
    """Raw protocol: send each request as a line, read every line back until the connection's last answer."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    lines = []
    for request in requests:
        writer.write(request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n")
        while True:
            lines.append(json.loads(await reader.readline()))
            if "event" not in lines[-1]:
                break
    writer.close()
    return lines


async def test_the_protocol_is_json_lines_with_events_before_the_final_answer(example_app: Path) -> None:
    async with served(example_app):
        path = socket_path(example_app)
        ping, show, missing, unknown, bad, garbage = await request_lines(
            path, {"op": "ping"}, {"op": "registry.show", "id": "app.db:postgres"},
            {"op": "registry.show", "id": "app.db:postgre"}, {"op": "nope"},
            {"op": "registry.show", "name": "x"}, b"not json\n")
        assert ping["ok"] and ping["result"]["pid"] == os.getpid() and ping["result"]["root"] == str(example_app)
        assert show["result"]["data"]["port"] == 5432 and show["result"]["file"] == "registry/db/_index.yaml"
        assert missing == {"ok": False, "kind": "EntryNotFound", "error": missing["error"]}
        assert "did you mean 'app.db:postgres'" in missing["error"]
        assert unknown["kind"] == "ControlError" and "registry.show" in unknown["error"]
        assert "bad registry.show request" in bad["error"]
        assert garbage["error"] == "a request is one line of JSON"

        *events, answer = await request_lines(path, {"op": "ask", "agent": "app:assistant", "message": "hi"})
        kinds = [line["event"]["type"] for line in events]
        assert kinds[0] == "turn_started" and kinds[-1] == "turn_done" and "usage" in kinds
        assert answer["ok"] and "You said: hi" in answer["result"]["text"]


async def test_a_request_with_a_wrong_field_gets_an_error_naming_the_op_and_the_field(
        example_app: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with served(example_app):
        replies = await request_lines(
            socket_path(example_app), {"op": "registry.show", "id": 123}, {"op": "approvals.audit", "limit": -1},
            {"op": "approvals.audit", "limit": 10_001}, {"op": "registry.diff", "v1": "1", "v2": 2},
            {"op": "registry.show", "id": "app:offline", "verbose": True}, {"op": "registry.lint", "x": 1},
            {"op": "approvals.audit", "limit": 2})
    assert [reply.get("error") for reply in replies] == [
        "bad registry.show request: id: Input should be a valid string",
        "bad approvals.audit request: limit: Input should be greater than or equal to 1",
        "bad approvals.audit request: limit: Input should be less than or equal to 10000",
        "bad registry.diff request: v1: Input should be a valid integer",
        "bad registry.show request: verbose: unknown field (registry.show takes id)",
        "bad registry.lint request: x: unknown field (registry.lint takes no fields)",
        None]
    assert replies[-1]["ok"] and len(replies[-1]["result"]) <= 2
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


async def test_json_too_deep_too_long_or_with_invalid_text_gets_an_error_and_the_connection_goes_on(
        example_app: Path) -> None:
    async with served(example_app):
        deep, deep_payload, too_long, invalid_text, unknown, ping = await request_lines(
            socket_path(example_app), b"[" * 100_000 + b"\n",
            {"op": "tasks.signal", "id": "t", "name": "go", "payload": json.loads("[" * 65 + "]" * 65)},
            b'{"op": "ping", "pad": "' + b"x" * REQUEST_LIMIT + b'"}\n',
            b'{"op": "registry.show", "id": "app:\\ud800"}\n', b'{"op": "\\udcff"}\n', {"op": "ping"})
    assert deep["error"] == "a request is one line of JSON nested at most 64 levels deep"
    assert deep_payload["error"] == "bad tasks.signal request: payload: nested more than 64 levels deep"
    assert too_long["error"] == "a request is one line of at most 1 MiB; this one is longer"
    assert invalid_text["error"].startswith("no entry 'app:\ufffd' in the registry")  # a lone surrogate: U+FFFD
    assert unknown["error"].startswith("unknown op '\ufffd'")
    assert ping["ok"] and ping["result"]["pid"] == os.getpid()


async def test_a_lone_surrogate_in_a_message_is_stored_as_valid_text_and_the_app_boots_again(
        example_app: Path) -> None:
    async with served(example_app):
        *_, answer = await request_lines(
            socket_path(example_app), b'{"op": "ask", "agent": "app:assistant", "message": "hi \\udcff"}\n')
    assert answer["ok"] and "You said: hi \ufffd" in answer["result"]["text"]
    async with served(example_app) as app:
        [turn] = app.tasks.list()
        assert "hi \ufffd" in json.dumps(app.tasks.get(turn.id).args, ensure_ascii=False)


async def test_a_burst_of_300_connections_all_get_an_answer_and_none_is_reset(example_app: Path) -> None:
    async with served(example_app):
        path = socket_path(example_app)
        answers = await asyncio.gather(*(request_lines(path, {"op": "ping"}) for _ in range(300)))
    answered = [answer for [answer] in answers if answer["ok"]]
    refused = [answer for [answer] in answers if not answer["ok"]]
    assert len(answered) >= MAX_CONNECTIONS and len(answered) + len(refused) == 300
    assert all(answer["kind"] == "NodeBusy" for answer in refused)


async def test_beyond_the_connection_cap_a_client_gets_one_error_line_and_the_connection_closes(
        example_app: Path) -> None:
    async with served(example_app):
        path = socket_path(example_app)
        held = [await ControlClient.open(path) for _ in range(MAX_CONNECTIONS)]
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            refused = json.loads(await reader.readline())
            assert await reader.read() == b""  # then the node closes it
            writer.close()
            with pytest.raises(ControlError, match=f"already serves {MAX_CONNECTIONS} connections; try again"):
                async with connect(example_app):  # what a `wippy` command says
                    pass
        finally:
            for client in held:
                await client.close()
    assert refused["kind"] == "NodeBusy" and refused["error"] == (
        f"the node (pid {os.getpid()}) already serves {MAX_CONNECTIONS} connections; try again when some have closed")


async def test_a_client_that_stalls_in_the_middle_of_a_line_is_disconnected(example_app: Path) -> None:
    async with App(root=example_app, control=ControlServer(example_app, idle_timeout=0.1)):
        reader, writer = await asyncio.open_unix_connection(str(socket_path(example_app)))
        writer.write(b'{"op": "pi')
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        writer.close()
        [ping] = await request_lines(socket_path(example_app), {"op": "ping"})
        assert ping["ok"]


async def test_a_socket_that_does_not_speak_the_protocol_is_a_clear_error(tmp_path: Path) -> None:
    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello, I am not a wippy node\n")
        await writer.drain()
        writer.close()

    socket_path(tmp_path).parent.mkdir()
    server = await asyncio.start_unix_server(babble, path=str(socket_path(tmp_path)))
    async with server:
        with pytest.raises(ControlError, match="the node sent a line that is not a JSON object"):
            async with connect(tmp_path):
                pass


async def test_a_garbled_pid_file_left_with_a_dead_socket_is_cleared(tmp_path: Path) -> None:
    socket_path(tmp_path).parent.mkdir()
    socket_path(tmp_path).write_text("")  # not a socket: nothing answers
    pid_path(tmp_path).write_text("99999999999999999999999\n")
    async with served(tmp_path):
        assert int(pid_path(tmp_path).read_text()) == os.getpid()


async def test_a_deep_app_folder_gets_a_short_socket_path_under_tmp(tmp_path: Path) -> None:
    root = tmp_path / ("deep" * 30)
    root.mkdir()
    path = socket_path(root)
    assert path.parent == Path(f"/tmp/wippy-{os.getuid()}") and len(str(path)) < 100
    async with served(root):
        assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
        async with connect(root) as backend:
            assert isinstance(backend, ControlClient) and backend.info["pid"] == os.getpid()
            assert await backend.request("registry.lint") == {"entries": 0, "problems": [], "by_file": {}}
    assert not path.exists()


async def test_a_dead_socket_of_a_live_process_is_replaced_once_the_state_file_is_ours(tmp_path: Path) -> None:
    socket_path(tmp_path).parent.mkdir()
    socket_path(tmp_path).write_text("")  # not a socket: nothing answers
    pid_path(tmp_path).write_text(f"{os.getppid()}\n")  # a live process, but it does not hold the state file
    async with served(tmp_path):
        async with connect(tmp_path) as backend:
            assert isinstance(backend, ControlClient)
            assert await backend.request("approvals.list") == []
            with pytest.raises(ControlError, match="there is no approval 'nope'") as error:
                await backend.request("approvals.show", id="nope")
            assert error.value.kind == "ApprovalError"


HOLD_THEN_BOOT = """
import asyncio, sys
from pathlib import Path
from wippy_agents import App
from wippy_agents.control import ControlServer
from wippy_agents.state import open_state

root = Path(sys.argv[1])
db = open_state(root / ".wippy" / "state.duckdb")   # what a booting node holds before its socket is up
print("locked", flush=True)
sys.stdin.readline()
db.close()

async def main():
    async with App(root, control=ControlServer(root)):
        print("serving", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

asyncio.run(main())
"""


def test_a_command_issued_while_a_node_boots_waits_for_its_socket(example_app: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", HOLD_THEN_BOOT, str(example_app)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdin is not None and holder.stdout is not None
            assert holder.stdout.readline() == "locked\n"
            with subprocess.Popen([WIPPY, "approvals", "list", "--root", str(example_app)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) as cli:
                assert cli.stderr is not None
                assert "the app's state file is busy; waiting up to" in cli.stderr.readline()
                holder.stdin.write("\n")  # now the node boots and listens
                holder.stdin.flush()
                assert holder.stdout.readline() == "serving\n"
                out, err = cli.communicate(timeout=30)
                assert cli.returncode == 0, err
                assert out == "no pending approvals\n"
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.wait(timeout=30) == 0
        finally:
            if holder.poll() is None:
                holder.kill()


class _SlowModel(Model):
    """Streams one word, then waits to be told to go on: a provider that is slow to finish."""

    def __init__(self) -> None:
        super().__init__("slow")
        self.go_on = asyncio.Event()
        self.stopped = asyncio.Event()

    async def _stream(self, messages: list[ChatMessage], tools: list[ToolDefinition],
                      settings: Settings) -> AsyncIterator[StreamEvent]:
        try:
            yield TextDelta(text="thinking")
            await self.go_on.wait()
            yield TextDelta(text=" more")
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.stopped.set()
            raise
        yield ResponseDone(response=Response(text="never"))


async def test_a_client_that_goes_away_in_the_middle_of_a_turn_cancels_it(example_app: Path) -> None:
    model = _SlowModel()
    async with served(example_app) as app:
        app.agents.model_overrides["*"] = model
        reader, writer = await asyncio.open_unix_connection(str(socket_path(example_app)))
        writer.write(json.dumps({"op": "ask", "agent": "app:assistant", "message": "hi"}).encode() + b"\n")
        started = json.loads(await reader.readline())["event"]
        assert started["type"] == "turn_started"
        await reader.readline()  # the first word
        writer.close()  # Ctrl+C on `wippy ask`
        await writer.wait_closed()
        model.go_on.set()  # the next word finds nobody to read it
        async with asyncio.timeout(10):  # a deadline for a failing run, not a timing assertion
            await model.stopped.wait()
            with pytest.raises(TaskFailed, match="cancelled"):
                await app.tasks.result(started["task"])


async def test_a_second_app_on_the_same_folder_is_refused_even_in_the_same_process(example_app: Path) -> None:
    async with App(root=example_app):  # not reachable from the CLI: no control server
        with pytest.raises(StateFileBusy, match=f"in use by process {os.getpid()}"):
            async with App(root=example_app):
                pass  # it would replay the first one's tasks
