"""The `wippy` command, run as a real subprocess the way a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from wippy_agents.control import PROTOCOL, socket_path

WIPPY = str(Path(sys.executable).with_name("wippy"))  # the installed console script


def wippy(*args: str | bytes | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `wippy ARGS`; an argument given as bytes reaches it as those bytes (argv need not be UTF-8)."""
    return subprocess.run([WIPPY, *(os.fspath(arg) for arg in args)], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


def test_run_once_boots_the_app_and_prints_its_process_tree(example_app: Path) -> None:
    done = wippy("run", "--once", "--root", example_app)
    assert done.returncode == 0, done.stderr
    assert f"running the app in {example_app}" in done.stdout and "registry version 1, 19 entries" in done.stdout
    lines = done.stdout.splitlines()
    assert any(line.startswith("<local.") and "app:workers" in line for line in lines)
    assert any(line.startswith("  <local.") and "app.workers.db_client" in line for line in lines)
    assert (example_app / ".wippy" / "state.duckdb").exists()


def test_run_stops_cleanly_on_ctrl_c(example_app: Path) -> None:
    with subprocess.Popen(
        [WIPPY, "run", "--root", str(example_app)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "press Ctrl+C" in line:
                break
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping" in out


def test_a_missing_root_folder_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    done = wippy("run", "--root", missing)
    assert done.returncode == 2
    assert f"--root {missing} is not a folder" in done.stderr


def test_no_command_prints_usage_and_fails() -> None:
    done = wippy()
    assert done.returncode == 2 and "usage: wippy" in done.stderr and "COMMAND" in done.stderr


def test_registry_list_filters_by_kind_and_namespace(example_app: Path) -> None:
    every = wippy("registry", "list", "--root", example_app)
    assert every.returncode == 0, every.stderr
    ids = [line.split()[0] for line in every.stdout.splitlines()]
    assert ids == sorted(ids) and {"app:offline", "tools.calc:add", "prompts:assistant"} <= set(ids)
    tools = wippy("registry", "list", "--kind", "tool", "--root", example_app)
    assert [line.split()[0] for line in tools.stdout.splitlines()] == [
        "app:write_up", "tools.calc:add", "tools.calc:multiply", "tools.clock:now", "wippy:create_tool",
        "wippy:create_workflow", "wippy:delete_entry", "wippy:recall", "wippy:registry_find", "wippy:registry_get",
        "wippy:remember", "wippy:start_workflow", "wippy:update_agent", "wippy:update_prompt", "wippy:update_tool",
        "wippy:update_workflow", "wippy:workflow_status"]
    ns = wippy("registry", "list", "--ns", "app.db", "--root", example_app)
    assert [line.split()[0] for line in ns.stdout.splitlines()] == ["app.db:postgres"]


def test_registry_show_prints_yaml_or_json_and_names_close_matches(example_app: Path) -> None:
    shown = wippy("registry", "show", "app.db:postgres", "--root", example_app)
    assert shown.returncode == 0 and "registry/db/_index.yaml" in shown.stdout and "port: 5432" in shown.stdout
    as_json = json.loads(wippy("registry", "show", "app.db:postgres", "--json", "--root", example_app).stdout)
    assert as_json["kind"] == "config" and as_json["data"]["port"] == 5432
    assert as_json["file"] == "registry/db/_index.yaml"
    missing = wippy("registry", "show", "app.db:postgre", "--root", example_app)
    assert missing.returncode == 1 and "did you mean 'app.db:postgres'" in missing.stderr


def test_registry_lint_lists_every_problem_and_fails(example_app: Path) -> None:
    assert wippy("registry", "lint", "--root", example_app).returncode == 0
    (example_app / "registry" / "db" / "_index.yaml").write_text(
        "namespace: app.db\nentries:\n  - name: postgres\n    kind: config\n    port: abc\n"
        "    schema: {properties: {port: {type: integer}}}\n"
    )
    (example_app / "tools" / "broken.py").write_text("def oops(:\n")
    done = wippy("registry", "lint", "--root", example_app)
    assert done.returncode == 1
    assert "2 problem(s)" in done.stderr
    assert "registry/db/_index.yaml" in done.stderr and "port: 'abc' is not of type 'integer'" in done.stderr
    assert "tools/broken.py:1" in done.stderr and "syntax error" in done.stderr


def test_registry_history_diff_and_rollback(example_app: Path) -> None:
    assert wippy("run", "--once", "--root", example_app).returncode == 0  # version 1: the first boot
    config = example_app / "registry" / "db" / "_index.yaml"
    config.write_text(config.read_text().replace("port: 5432", "port: 6543"))
    assert wippy("run", "--once", "--root", example_app).returncode == 0  # version 2: edited while down
    history = wippy("registry", "history", "app.db:postgres", "--root", example_app)
    lines = history.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["v1", "v2"]
    assert "files changed while the node was not running" in lines[1]
    diff = wippy("registry", "diff", "1", "2", "--root", example_app)
    assert diff.stdout.startswith("update app.db:postgres") and "-port: 5432" in diff.stdout
    assert "+port: 6543" in diff.stdout
    rollback = wippy("registry", "rollback", "1", "--root", example_app)
    assert rollback.returncode == 0 and "as version 3" in rollback.stdout
    assert "port: 5432" in config.read_text()
    assert "# Free-form settings" in config.read_text()  # people's comments survive write-through
    bad = wippy("registry", "rollback", "9", "--root", example_app)
    assert bad.returncode == 1 and "no version 9; the latest is 3" in bad.stderr


def test_ask_runs_a_tool_round_trip_with_the_offline_model(example_app: Path) -> None:
    done = wippy("ask", "app:assistant", '/call tools.calc:add {"a": 2, "b": 3}', "--root", example_app)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Here is what the tools said:\n- tools_calc_add returned: 5.0\n"
    assert '-> tools.calc:add {"a": 2, "b": 3}' in done.stderr and "<- tools.calc:add returned" in done.stderr
    assert "turn 1:" in done.stderr


def test_ask_continues_a_conversation_and_prints_json(example_app: Path) -> None:
    first = wippy("ask", "app:assistant", "hello", "--json", "--root", example_app)
    answer = json.loads(first.stdout)
    assert answer["turn"] == 1 and answer["agent"] == "app:assistant" and "You said: hello" in answer["text"]
    again = wippy("ask", "app:assistant", "more", "--conversation", answer["conversation"], "--json",
                  "--root", example_app)
    assert json.loads(again.stdout)["turn"] == 2


def test_ask_fails_clearly_for_an_unknown_agent_and_a_missing_key(example_app: Path) -> None:
    unknown = wippy("ask", "app:asistant", "hi", "--root", example_app)
    assert unknown.returncode == 1 and "no agent 'app:asistant'" in unknown.stderr
    assert "did you mean 'app:assistant'?" in unknown.stderr
    index = example_app / "registry/app/_index.yaml"
    index.write_text(index.read_text().replace("provider: offline\n    model: wippy-offline",
                                               "provider: openai\n    model: gpt\n    api_key_env: WIPPY_NO_SUCH_KEY"))
    missing = wippy("ask", "app:assistant", "hi", "--root", example_app)
    assert missing.returncode == 1 and "set the environment variable WIPPY_NO_SUCH_KEY" in missing.stderr


def test_root_may_come_before_or_after_the_command(example_app: Path) -> None:
    before = wippy("--root", example_app, "registry", "list", "--ns", "app.db")
    after = wippy("registry", "list", "--ns", "app.db", "--root", example_app)
    assert before.returncode == 0, before.stderr
    assert before.stdout == after.stdout and before.stdout.startswith("app.db:postgres ")


def test_a_folder_that_is_not_an_app_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    for command in (["run", "--once"], ["registry", "list"], ["tasks", "list"], ["ask", "app:assistant", "hi"],
                    ["chat"]):
        done = wippy(*command, "--root", folder)
        assert done.returncode == 1, (command, done.stderr)
        assert done.stderr == (f"wippy: {folder} is not a wippy app (an app has a wippy.yaml, or a registry/, "
                               f"prompts/ or tools/ folder); `wippy init {folder}` makes one\n"), command
    here = wippy("tasks", "list", cwd=folder)
    assert here.returncode == 1 and here.stderr.startswith("wippy: this folder is not a wippy app")
    assert here.stderr.endswith("; `wippy init` makes one\n")
    assert list(folder.iterdir()) == []  # no .wippy/, no registry/


def test_argv_that_is_not_utf8_reaches_the_agent_as_valid_text_and_the_app_boots_again(example_app: Path) -> None:
    asked = wippy("ask", "app:assistant", b"hi \xff", "--root", example_app)
    assert asked.returncode == 0, asked.stderr
    assert "You said: hi \ufffd" in asked.stdout
    again = wippy("run", "--once", "--root", example_app)
    assert again.returncode == 0, again.stderr
    listed = wippy("tasks", "list", "--json", "--root", example_app)
    assert [task["status"] for task in json.loads(listed.stdout)] == ["completed"]


def test_a_signal_payload_nested_too_deeply_is_a_usage_error(example_app: Path) -> None:
    done = wippy("tasks", "signal", "t", "go", "[" * 10_000, "--root", example_app)
    assert done.returncode == 2 and done.stderr.endswith("error: argument payload: nested too deeply to read\n")


def test_an_app_folder_whose_path_is_not_utf8_is_refused_clearly(tmp_path: Path) -> None:
    app = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))
    app.mkdir()
    (app / "wippy.yaml").write_text("")
    done = wippy("registry", "history", "--root", app)
    assert done.returncode == 1
    assert done.stderr == (f"wippy: the path '{tmp_path}/caf\ufffd' is not valid UTF-8, so the app's state file "
                           f"cannot be kept there; rename the folder\n")


def unusable_state(app: Path, how: str) -> tuple[str, str, list[str]]:
    """Make the app's `.wippy/` unusable in the way `how` says: the path and advice the error must give, and
    what to run the command under."""
    state = app / ".wippy"
    if how == "a file where the folder should be":
        state.write_text("")
        return str(state), "a file is in the way; move it away", []
    if how == "a read-only folder":
        state.mkdir(mode=0o700)
        if os.geteuid() != 0:
            state.chmod(0o500)
            return str(state), "make it writable by the user who runs wippy", []
        # permission bits do not bind root: a read-only bind mount does, in a mount namespace of the command's own
        mount = f"mount --bind {state} {state} && mount -o remount,bind,ro {state} && exec \"$@\""
        return str(state), "read-only file system; move the app somewhere writable", [
            "unshare", "-m", "sh", "-c", mount, "wippy"]
    state.mkdir(mode=0o700)
    (state / "state.duckdb").symlink_to("/dev/full")  # every write fails with ENOSPC
    return "/dev/full", "No space left on device; the disk is full; free some space", []


@pytest.mark.parametrize("how", ["a file where the folder should be", "a read-only folder", "a full disk"])
def test_an_unusable_state_folder_is_one_clear_line_from_every_command(example_app: Path, how: str) -> None:
    path, advice, under = unusable_state(example_app, how)
    for command in (["run", "--once"], ["registry", "history"], ["ask", "app:assistant", "hi"]):
        done = subprocess.run([*under, WIPPY, *command, "--root", str(example_app)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 1, (command, done.stderr)
        [line] = done.stderr.splitlines()
        assert line.startswith("wippy: ") and path in line and advice in line, (command, line)


def test_a_node_that_breaks_the_connection_in_the_middle_of_a_request_is_one_clear_line(example_app: Path) -> None:
    path = socket_path(example_app)
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()

        def answer_ping_then_die() -> None:
            connection, _ = server.accept()
            with connection:
                connection.makefile("rb").readline()
                connection.sendall(json.dumps({"ok": True, "result": {"pid": 1, "protocol": PROTOCOL}}).encode()
                                   + b"\n")
                connection.recv(1, socket.MSG_PEEK)  # the next request is here; closing with it unread resets

        node = threading.Thread(target=answer_ping_then_die)
        node.start()
        done = wippy("registry", "history", "--root", example_app)
        node.join(timeout=30)
    assert done.returncode == 1
    assert done.stderr == ("wippy: the connection to the node broke (Connection reset by peer); did it stop? Run the "
                           "command again: with no node running, it is served here\n")
