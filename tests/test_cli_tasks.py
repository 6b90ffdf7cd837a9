"""`wippy tasks ...`: start, list, show, signal, cancel, resume and upgrade, with and without a running node."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from wippy_agents import App, durable
from wippy_agents.control import ControlServer, connect
from wippy_agents.llm import Response, Usage
from wippy_agents.registry import Entry
from wippy_agents.testing import wait_until, write_file

WIPPY = str(Path(sys.executable).with_name("wippy"))


def wippy(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WIPPY, *map(str, args)], capture_output=True, text=True, timeout=60)


def draft() -> str:
    return "a draft"


def answer() -> Response:
    return Response(text="hi", usage=Usage(input_tokens=100, output_tokens=20), cost_usd=0.0015)


@durable.workflow("test.cli:approval")
async def approval(ctx: durable.TaskContext) -> Any:
    await ctx.step("draft", draft)
    return await ctx.wait_signal("approve")


@durable.workflow("test.cli:model")
async def model_call(ctx: durable.TaskContext) -> str:
    response = await ctx.step("model", answer)
    return f"the model said {response.text}"


@durable.workflow("test.cli:echo")
async def echo(ctx: durable.TaskContext, *args: Any) -> list[Any]:
    return list(args)


async def start_tasks(app: Path) -> tuple[str, str, str]:
    """Two tasks left waiting for a signal by a node that then stops, and one that completed."""
    async with App(root=app) as running:
        waiting = await running.tasks.start("test.cli:approval", task_id="waiting")
        other = await running.tasks.start("test.cli:approval", task_id="other")
        done = await running.tasks.start("test.cli:model", task_id="done")
        await running.tasks.result(done)
        while len(running.tasks.get(waiting).steps) < 2 or len(running.tasks.get(other).steps) < 2:
            await asyncio.sleep(0.01)
    return waiting, other, done


def test_tasks_list_show_signal_and_cancel_without_a_node(example_app: Path) -> None:
    waiting, other, done = asyncio.run(start_tasks(example_app))

    listing = wippy("tasks", "list", "--root", example_app)
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "CREATED", "STEPS", "NODE"]
    assert [(row.split()[0], row.split()[2], *row.split()[-2:]) for row in rows] == [
        ("waiting", "running", "2", "local"), ("other", "running", "2", "local"), ("done", "completed", "1", "local")]
    completed = json.loads(wippy("tasks", "list", "--status", "completed", "--json", "--root", example_app).stdout)
    assert [(task["id"], task["node"]) for task in completed] == [("done", "local")]

    shown = wippy("tasks", "show", done, "--root", example_app)
    assert shown.returncode == 0, shown.stderr
    assert "task done  test.cli:model  completed" in shown.stdout
    assert "100 tokens in, 20 out, $0.001500" in shown.stdout and "model calls:" in shown.stdout
    assert 'result: "the model said hi"' in shown.stdout
    steps = wippy("tasks", "show", waiting, "--root", example_app).stdout
    assert "draft" in steps and "wait:approve" in steps

    signalled = wippy("tasks", "signal", waiting, "approve", '{"ok": true}', "--root", example_app)
    assert signalled.returncode == 0 and "signal 'approve' delivered" in signalled.stdout, signalled.stderr
    cancelled = wippy("tasks", "cancel", other, "--root", example_app)
    assert cancelled.returncode == 0 and "cancel requested" in cancelled.stdout, cancelled.stderr
    again = wippy("tasks", "cancel", done, "--root", example_app)
    assert "is already completed; nothing to cancel" in again.stdout

    missing = wippy("tasks", "show", "nope", "--root", example_app)
    assert missing.returncode == 1 and missing.stderr == "wippy: no task 'nope'\n"
    bad = wippy("tasks", "signal", waiting, "approve", "{oops", "--root", example_app)
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr

    async def recover() -> tuple[Any, str]:
        async with App(root=example_app) as running:  # recovery finds the signal and the cancel
            result = await running.tasks.result(waiting)
            with pytest.raises(durable.TaskFailed):
                await running.tasks.result(other)
            return result, running.tasks.status(other)

    assert asyncio.run(recover()) == ({"ok": True}, "cancelled")


def test_tasks_resume_without_a_node_says_why_a_task_cannot_run_here(example_app: Path) -> None:
    waiting, _, done = asyncio.run(start_tasks(example_app))
    resumed = wippy("tasks", "resume", done, "--root", example_app)
    assert resumed.returncode == 0 and resumed.stdout == "the model said hi\n", resumed.stderr
    # this process knows the workflow; the embedded node in `wippy` does not import the test's module
    stuck = wippy("tasks", "resume", waiting, "--root", example_app)
    assert stuck.returncode == 1
    assert "wippy: no workflow 'test.cli:approval' is registered" in stuck.stderr
    listed = wippy("tasks", "list", "--root", example_app)
    assert any(line.split()[:3] == ["waiting", "test.cli:approval", "running"] for line in listed.stdout.splitlines())


async def test_resume_through_the_node_runs_the_task_to_its_end_and_streams_its_status(example_app: Path) -> None:
    async with App(root=example_app, control=ControlServer(example_app)) as running:
        task = await running.tasks.start("test.cli:approval")
        async with connect(example_app) as resumer, connect(example_app) as signaller:
            events: list[Any] = []
            resume = asyncio.ensure_future(resumer.request("tasks.resume", events.append, id=task))
            await asyncio.sleep(0.05)
            assert not resume.done()
            await signaller.request("tasks.signal", id=task, name="approve", payload="yes")
            assert await resume == "yes"
            assert events == [{"task": task, "workflow": "test.cli:approval", "status": "running"}]
            shown = await signaller.request("tasks.show", id=task)
            assert [step["name"] for step in shown["steps"]] == ["draft", "wait:approve", "signal:approve"]


async def test_upgrade_moves_a_task_to_the_current_registry_version(example_app: Path) -> None:
    async with App(root=example_app, control=ControlServer(example_app)) as running:
        task = await running.tasks.start("test.cli:approval")
        db = running.registry.get("app.db:postgres")
        version = running.registry.apply([Entry(db.id, db.kind, db.meta, dict(db.data) | {"port": 1})], author="test")
        async with connect(example_app) as backend:
            assert await backend.request("tasks.upgrade", id=task) == version
            assert (await backend.request("tasks.show", id=task))["registry_version"] == version
    upgraded = wippy("tasks", "upgrade", task, "--root", example_app)  # no node: the state file is enough
    assert upgraded.returncode == 0 and upgraded.stdout == f"task {task} now uses registry version {version}\n"


def test_ask_with_a_task_id_runs_the_turn_as_that_task(example_app: Path) -> None:
    first = wippy("ask", "app:assistant", "hello", "--task-id", "turn-1", "--root", example_app)
    assert first.returncode == 0, first.stderr
    again = wippy("ask", "app:assistant", "hello", "--task-id", "turn-1", "--root", example_app)
    assert again.returncode == 0 and again.stdout == first.stdout, again.stderr
    shown = wippy("tasks", "show", "turn-1", "--root", example_app)
    assert "wippy:agent_turn  completed" in shown.stdout, shown.stderr


def test_a_damaged_journal_is_reported_and_repaired_from_the_command_line(example_app: Path) -> None:
    assert wippy("ask", "app:assistant", "hello", "--root", example_app).returncode == 0
    log = example_app / ".wippy" / "journal.log"
    intact = log.read_text()
    log.write_text('{"g": 99, "rows": [["task_ev\n' + intact)  # damage before lines not yet copied
    db = duckdb.connect(str(example_app / ".wippy" / "state.duckdb"))
    db.execute("UPDATE journal_position SET position = 0, copied_group = 0")  # as if none of it was copied yet
    db.close()
    refused = wippy("run", "--once", "--root", example_app)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"wippy: {log} is damaged at byte 0" in refused.stderr and "wippy state check --repair" in refused.stderr
    checked = wippy("state", "check", "--root", example_app)
    assert checked.returncode == 1 and "damaged at byte 0" in checked.stdout and "before intact lines" in checked.stdout
    repaired = wippy("state", "check", "--repair", "--root", example_app)
    assert repaired.returncode == 0, repaired.stderr
    assert "repaired" in repaired.stdout and log.read_text() == intact
    assert wippy("run", "--once", "--root", example_app).returncode == 0
    assert "no damage" in wippy("state", "check", "--root", example_app).stdout


def task_ids(app: App) -> list[str]:
    return [info.id for info in app.tasks.list()]


async def wippy_beside(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`wippy ... --root app` in a thread, so the node this test runs keeps serving it."""
    return await asyncio.to_thread(wippy, *args, "--root", app)


async def test_start_through_the_node_prints_the_id_and_passes_json_by_the_argument_rule(example_app: Path) -> None:
    async with App(root=example_app, control=ControlServer(example_app)) as running:
        rule = {'{"topic": "x"}': [{"topic": "x"}], '[1, "a"]': [1, "a"], '"x"': ["x"], "7": [7], None: []}
        for given, positional in rule.items():
            started = await wippy_beside(example_app, "tasks", "start", "test.cli:echo", *filter(None, [given]))
            assert started.returncode == 0, started.stderr
            task = started.stdout.removesuffix("\n")
            assert started.stdout == f"{task}\n" and task in task_ids(running)
            assert started.stderr == f"task {task} (test.cli:echo): running\n"  # no wait: the node runs it on
            assert await running.tasks.result(task) == positional
            shown = json.loads((await wippy_beside(example_app, "tasks", "show", task, "--json")).stdout)
            assert (shown["status"], shown["args"], shown["result"]) == ("completed", positional, positional)


async def test_start_with_a_task_id_attaches_to_that_task_and_refuses_another_workflow_under_it(
        example_app: Path) -> None:
    async with App(root=example_app, control=ControlServer(example_app)) as running:
        waiting = asyncio.ensure_future(
            wippy_beside(example_app, "tasks", "start", "test.cli:approval", "--task-id", "report-1", "--wait"))
        await wait_until(lambda: "report-1" in task_ids(running), timeout=30)
        again = await wippy_beside(example_app, "tasks", "start", "test.cli:approval", '["other"]', "--task-id",
                                   "report-1")
        assert again.returncode == 0 and again.stdout == "report-1\n", again.stderr
        other = await wippy_beside(example_app, "tasks", "start", "test.cli:echo", "--task-id", "report-1")
        assert other.returncode == 1 and other.stderr == (
            "wippy: task report-1 runs workflow 'test.cli:approval', not 'test.cli:echo'; start test.cli:echo under "
            "another task id\n")
        unknown = await wippy_beside(example_app, "tasks", "start", "app:nope", "{}")
        assert unknown.returncode == 1
        assert unknown.stderr.startswith("wippy: no workflow 'app:nope' is registered")
        assert "test.cli:approval" in unknown.stderr and "test.cli:echo" in unknown.stderr
        await running.tasks.signal("report-1", "approve", {"ok": True})
        done = await waiting
        assert done.returncode == 0, done.stderr
        assert done.stdout == 'report-1\n{\n  "ok": true\n}\n'
        assert done.stderr == "task report-1 (test.cli:approval): running\n"
        assert task_ids(running) == ["report-1"] and running.tasks.get("report-1").args == []


def write_workflows(app: Path) -> None:
    """Workflows in the app's own files, so the node a `wippy` command boots has them."""
    write_file(app, "tools/flows.py", """
        \"\"\"The app's workflows: the node registers them when it loads this file's tools.\"\"\"

        from typing import Any

        from wippy_agents import durable


        @durable.workflow("app:echo")
        async def _echo(ctx: durable.TaskContext, *args: Any) -> list[Any]:
            return list(args)


        @durable.workflow("app:approval")
        async def _approval(ctx: durable.TaskContext) -> Any:
            return await ctx.wait_signal("approve")
        """)


def test_start_without_a_node_runs_the_task_here_to_its_end(example_app: Path) -> None:
    write_workflows(example_app)
    started = wippy("tasks", "start", "app:echo", '{"topic": "x"}', "--task-id", "echo-1", "--root", example_app)
    assert started.returncode == 0, started.stderr
    assert started.stdout == 'echo-1\n[\n  {\n    "topic": "x"\n  }\n]\n'
    assert started.stderr == ("task echo-1 (app:echo): running\nwippy: no node runs this app, so the task runs here "
                              "until it ends (Ctrl+C leaves it for the next `wippy run`)\n")
    shown = json.loads(wippy("tasks", "show", "echo-1", "--json", "--root", example_app).stdout)
    assert (shown["status"], shown["result"]) == ("completed", [{"topic": "x"}])

    again = wippy("tasks", "start", "app:echo", "[1, 2]", "--task-id", "echo-1", "--root", example_app)
    assert again.returncode == 0 and again.stdout == started.stdout  # the task it attached to, with its arguments
    assert again.stderr == "task echo-1 (app:echo): completed\n"
    listed = json.loads(wippy("tasks", "list", "--json", "--root", example_app).stdout)
    assert [task["id"] for task in listed] == ["echo-1"]

    unknown = wippy("tasks", "start", "app:nope", "--root", example_app)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("wippy: no workflow 'app:nope' is registered")
    assert "app:echo" in unknown.stderr and "wippy:agent_turn" in unknown.stderr
    bad = wippy("tasks", "start", "app:echo", '{"topic": "x",}', "--root", example_app)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "argument JSON: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 15 " \
           "(char 14))" in bad.stderr


def test_ctrl_c_on_a_start_without_a_node_leaves_the_task_for_the_next_node(example_app: Path) -> None:
    write_workflows(example_app)
    with subprocess.Popen([WIPPY, "tasks", "start", "app:approval", "--root", example_app], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as starting:
        assert starting.stdout is not None and starting.stderr is not None
        task = starting.stdout.readline().removesuffix("\n")  # printed once the task runs
        assert "no node runs this app" in starting.stderr.readline() + starting.stderr.readline()
        starting.send_signal(signal.SIGINT)
        assert starting.wait(timeout=30) == 130
    listed = json.loads(wippy("tasks", "list", "--json", "--root", example_app).stdout)
    assert [(info["id"], info["status"]) for info in listed] == [(task, "running")]
    assert wippy("tasks", "signal", task, "approve", '"yes"', "--root", example_app).returncode == 0
    resumed = wippy("tasks", "resume", task, "--root", example_app)
    assert resumed.returncode == 0 and resumed.stdout == "yes\n", resumed.stderr
