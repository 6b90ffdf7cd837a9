"""The `wippy` command, run as a real subprocess the way a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

WIPPY = str(Path(sys.executable).with_name("wippy"))  # the installed console script


def wippy(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WIPPY, *map(str, args)], capture_output=True, text=True, timeout=60)


def test_run_once_boots_the_app_and_prints_its_process_tree(example_app: Path) -> None:
    done = wippy("run", "--once", "--root", example_app)
    assert done.returncode == 0, done.stderr
    assert f"running the app in {example_app}" in done.stdout and "registry version 1, 15 entries" in done.stdout
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
        "tools.calc:add", "tools.calc:multiply", "tools.clock:now", "wippy:create_tool", "wippy:delete_entry",
        "wippy:registry_find", "wippy:registry_get", "wippy:update_agent", "wippy:update_prompt", "wippy:update_tool"]
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
