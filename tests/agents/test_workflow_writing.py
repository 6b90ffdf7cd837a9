"""Agents writing, changing and starting restricted workflows under policy, driven by the offline model.

`app:writer` may create and update workflows in `generated` (a policy allows it, with a
rollback rule); `app:stranger` has the same write tool and no policy; `app:starter` may
start workflows but is not given the notes tool that the workflows call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wippy_agents import App
from wippy_agents.agents import AgentEvent, ToolFinished
from wippy_agents.durable import TaskFailed
from wippy_agents.registry import Entry, RegistryError
from wippy_agents.testing import wait_until, write_file
from wippy_agents.tools import ToolContext

APP = """
namespace: app
entries:
  - name: model
    kind: model
    provider: offline
    model: wippy-offline
  - name: writer
    kind: agent
    model: app:model
    tools: [wippy:create_workflow, wippy:update_workflow, wippy:start_workflow, wippy:workflow_status,
            "tools.notes:*"]
  - name: stranger
    kind: agent
    model: app:model
    tools: [wippy:create_workflow]
  - name: starter
    kind: agent
    model: app:model
    tools: [wippy:start_workflow, wippy:workflow_status]
  - name: writer_writes_generated_workflows
    kind: policy
    subjects: [app:writer]
    actions: [registry.create, registry.update]
    resources: ["generated:*"]
    kinds: [workflow]
    effect: allow
    rollback: {window: 3, max_error_rate: 0.5}
  - name: generated_workflows_take_notes
    kind: policy
    subjects: ["generated:*"]
    actions: [tool.call]
    resources: ["tools.notes:*"]
    effect: allow
"""

NOTES = '''
def note(path: str, text: str) -> str:
    """Append a line to a file and return it in capitals.

    Args:
        path: The file.
        text: The line.
    """
    with open(path, "a", encoding="utf-8") as file:
        file.write(text + "\\n")
    return text.upper()
'''

REPORT = '''def main(ctx, path: str, topic: str):
    """Note the topic, then report it."""
    noted = ctx.tool("tools.notes:note", path=path, text=topic)
    return {"topic": topic, "noted": noted}
'''

EXAMPLE = {"args": {"path": "unused", "topic": "actors"},
           "operations": [{"op": "tool:tools.notes:note", "result": "ACTORS"}],
           "expect": {"topic": "actors", "noted": "ACTORS"}}


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    write_file(tmp_path, "registry/app/_index.yaml", APP)
    write_file(tmp_path, "tools/notes.py", NOTES)
    write_file(tmp_path, "wippy.yaml", "name: writing\nwatch: false\n")
    return tmp_path


def call(tool: str, **arguments: Any) -> str:
    """The offline model calls `tool` when told `/call TOOL {json}`."""
    return f"/call {tool} {json.dumps(arguments)}"


async def use(app: App, agent: str, tool: str, **arguments: Any) -> ToolFinished:
    """One turn of `agent` calling `tool`; the call's result."""
    conv = await app.conversation(agent)
    events: list[AgentEvent] = [event async for event in conv.stream(call(tool, **arguments))]
    [finished] = [event for event in events if isinstance(event, ToolFinished)]
    return finished


async def create_report(app: App, agent: str = "app:writer", source: str = REPORT,
                        examples: list[dict[str, Any]] | None = None) -> ToolFinished:
    return await use(app, agent, "wippy:create_workflow", id="generated:report", source=source,
                     description="Note a topic and report it.", examples=[EXAMPLE] if examples is None else examples)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


async def test_an_allowed_agent_creates_a_workflow_whose_examples_pass_and_the_change_is_attributed_and_audited(
        app_root: Path) -> None:
    async with App(root=app_root) as app:
        before = app.registry.version
        created = await create_report(app)
        assert (created.result, created.is_error) == (
            f"done: create workflow generated:report (registry version {before + 1})", False)
        [version] = app.registry.history("generated:report")
        assert version.author == "app:writer" and version.task is not None and version.task.startswith("turn:")
        [audit] = app.approvals.audit.list(resource="generated:report")
        assert (audit.subject, audit.action, audit.decision, audit.decided_by) == (
            "app:writer", "registry.create", "allowed", "app:writer_writes_generated_workflows")
        notes = app_root / "notes.txt"
        assert await app.tasks.run("generated:report", {"path": str(notes), "topic": "ants"}) == {
            "topic": "ants", "noted": "ANTS"}
    assert lines(notes) == ["ants"]  # the examples ran on scripted results: only the real task took a note
    assert "source: |\n      def main(ctx, path: str, topic: str):" in (
        app_root / "registry/generated/_index.yaml").read_text()


async def test_failing_examples_change_nothing_and_the_error_says_which_example_and_why(app_root: Path) -> None:
    wrong = {**EXAMPLE, "expect": {"topic": "actors", "noted": "actors"}}
    short = {**EXAMPLE, "operations": []}
    long = {**EXAMPLE, "operations": [*EXAMPLE["operations"], {"result": "more"}]}
    unnamed = {**EXAMPLE, "operations": [{"op": "ask:app:writer", "result": "no"}]}
    missing = {**EXAMPLE, "args": {"path": "unused"}}
    async with App(root=app_root) as app:
        version = app.registry.version
        refused = await create_report(app, examples=[EXAMPLE, wrong, short, long, unnamed, missing])
        assert refused.is_error
        assert refused.result == (
            "error: generated:report does not pass its examples, so nothing was changed:\n"
            'example 2: generated:report returned {"topic": "actors", "noted": "ACTORS"}, expected {"topic": '
            '"actors", "noted": "actors"}\n'
            "example 3: the workflow asked for operation 0 (tool:tools.notes:note), beyond the 0 the example scripts\n"
            "example 4: the workflow returned after 1 operation(s), but the example scripts 2\n"
            "example 5: at operation 0 the script has 'ask:app:writer' where the code asks for "
            "'tool:tools.notes:note'\n"
            "example 6: the workflow failed: TypeError: main() missing 1 required positional argument: 'topic'")
        assert app.registry.version == version and "generated:report" not in app.registry


async def test_an_agent_no_policy_allows_is_refused_and_nothing_changes(app_root: Path) -> None:
    async with App(root=app_root) as app:
        version = app.registry.version
        refused = await create_report(app, agent="app:stranger")
        assert refused.is_error and refused.result == (
            "error: refused: registry.create generated:report: no policy allows app:stranger to registry.create "
            "generated:report (writes are denied unless a policy entry allows them). Nothing was changed.")
        assert app.registry.version == version and "generated:report" not in app.registry
        [audit] = app.approvals.audit.list(subject="app:stranger")
        assert (audit.action, audit.decision) == ("registry.create", "denied")


async def test_no_agent_may_write_a_python_workflow_whatever_the_policies_say(app_root: Path) -> None:
    write_file(app_root, "flows/legacy.py", "async def run(ctx):\n    return 'legacy'\n")
    legacy = Entry("generated:legacy", "workflow", {}, {"file": "flows/legacy.py", "function": "run"})
    async with App(root=app_root) as app:
        with pytest.raises(RegistryError, match=r"agents can only write restricted workflows \(runtime: restricted\)"):
            app.registry.apply([legacy], author="app:writer")
        app.registry.apply([legacy], author="user:alice")  # people may
        version = app.registry.version
        refused = await use(app, "app:writer", "wippy:update_workflow", id="generated:legacy", source=REPORT)
        assert refused.is_error and "agents can only write restricted workflows" in refused.result
        assert app.registry.version == version and app.registry.get("generated:legacy") == legacy
        assert await app.tasks.run("generated:legacy") == "legacy"


async def test_an_agent_updates_its_workflow_and_the_next_task_runs_the_new_code(app_root: Path) -> None:
    notes = app_root / "notes.txt"
    changed = REPORT.replace('"topic": topic', '"topic": topic, "version": 2')
    async with App(root=app_root) as app:
        await create_report(app)
        first = await app.tasks.run("generated:report", {"path": str(notes), "topic": "one"})
        example = {**EXAMPLE, "expect": {"topic": "actors", "version": 2, "noted": "ACTORS"}}
        updated = await use(app, "app:writer", "wippy:update_workflow", id="generated:report", source=changed,
                            examples=[example])
        assert not updated.is_error and updated.result.startswith("done: update workflow generated:report")
        second = await app.tasks.run("generated:report", {"path": str(notes), "topic": "two"})
        assert [v.author for v in app.registry.history("generated:report")] == ["app:writer", "app:writer"]
    assert (first, second) == ({"topic": "one", "noted": "ONE"}, {"topic": "two", "version": 2, "noted": "TWO"})


async def test_an_agent_starts_a_workflow_and_reads_its_status_in_later_turns(app_root: Path) -> None:
    notes = app_root / "notes.txt"
    async with App(root=app_root) as app:
        await create_report(app)
        started = await use(app, "app:writer", "wippy:start_workflow", workflow="generated:report",
                            args={"path": str(notes), "topic": "bees"})
        assert not started.is_error, started.result
        task = json.loads(started.result)["task_id"]
        assert app.tasks.get(task).args == [{"path": str(notes), "topic": "bees"}, "app:writer"]
        await app.tasks.result(task)
        status = await use(app, "app:writer", "wippy:workflow_status", task_id=task)
        assert json.loads(status.result) == {
            "task_id": task, "workflow": "generated:report", "status": "completed",
            "result": {"topic": "bees", "noted": "BEES"}, "error": None, "steps": 1,
            "registry_version": app.registry.version}
        bad = await use(app, "app:writer", "wippy:start_workflow", workflow="generated:report", args={"topic": 3})
        assert bad.is_error and "bad arguments for generated:report" in bad.result
        huge = await use(app, "app:writer", "wippy:start_workflow", workflow="generated:report",
                         args={"path": str(notes), "topic": "x" * 70_000})  # sent to the worker every resumption
        assert huge.is_error and "over the workflow's max_value_bytes (65,536)" in huge.result
        nosy = await use(app, "app:starter", "wippy:workflow_status", task_id=task)  # another agent's task
        assert nosy.is_error and "was not started by you (app:starter)" in nosy.result
    assert lines(notes) == ["bees"]


async def test_the_same_start_workflow_call_replayed_starts_one_task(app_root: Path) -> None:
    """A turn replayed after a crash calls its tools again with the same task and call ids."""
    notes = app_root / "notes.txt"
    arguments = {"workflow": "generated:report", "args": {"path": str(notes), "topic": "once"}}
    async with App(root=app_root) as app:
        await create_report(app)
        start = app.registry.tools["wippy:start_workflow"]
        first = await start.call(arguments, ToolContext(agent_id="app:writer", task_id="turn:c:1", call_id="call-1"))
        again = await start.call(arguments, ToolContext(agent_id="app:writer", task_id="turn:c:1", call_id="call-1"))
        other = await start.call(arguments, ToolContext(agent_id="app:writer", task_id="turn:c:1", call_id="call-2"))
        assert first["task_id"] == again["task_id"] != other["task_id"]
        for task in (first["task_id"], other["task_id"]):
            await app.tasks.result(task)
        assert len([info for info in app.tasks.list() if info.workflow == "generated:report"]) == 2
    assert lines(notes) == ["once", "once"]


async def test_a_workflow_an_agent_starts_cannot_call_a_tool_the_agent_is_not_given(app_root: Path) -> None:
    notes = app_root / "notes.txt"
    async with App(root=app_root) as app:
        await create_report(app)
        started = await use(app, "app:starter", "wippy:start_workflow", workflow="generated:report",
                            args={"path": str(notes), "topic": "secrets"})
        task = json.loads(started.result)["task_id"]
        with pytest.raises(TaskFailed):
            await app.tasks.result(task)
        error = app.tasks.get(task).error
        assert error is not None and ("refused: app:starter started this task and may not call tools.notes:note "
                                      "itself") in error
        [audit] = app.approvals.audit.list(subject="generated:report")
        assert (audit.decision, audit.resource, audit.task) == ("denied", "tools.notes:note", task)
        by_writer = await use(app, "app:writer", "wippy:start_workflow", workflow="generated:report",
                              args={"path": str(notes), "topic": "allowed"})
        await app.tasks.result(json.loads(by_writer.result)["task_id"])  # the writer is given the tool
    assert lines(notes) == ["allowed"]



async def test_a_tool_taken_from_an_agent_is_refused_to_the_waiting_workflow_it_started(app_root: Path) -> None:
    notes = app_root / "notes.txt"
    later = '''def main(ctx, path: str):
    """Wait for go, then note a line."""
    ctx.wait_signal("go")
    return ctx.tool("tools.notes:note", path=path, text="after")
'''
    async with App(root=app_root) as app:
        app.registry.apply([Entry("generated:later", "workflow", {}, {"runtime": "restricted", "source": later})],
                           author="user:alice")
        started = await use(app, "app:writer", "wippy:start_workflow", workflow="generated:later",
                            args={"path": str(notes)})
        task = json.loads(started.result)["task_id"]
        await wait_until(lambda: [step.name for step in app.tasks.get(task).steps] == ["wait:go"])
        writer = app.registry.get("app:writer")
        tools = [tool for tool in writer.data["tools"] if tool != "tools.notes:*"]
        app.registry.apply([Entry("app:writer", "agent", writer.meta, {**writer.data, "tools": tools})],
                           author="user:alice")
        await app.tasks.signal(task, "go")
        with pytest.raises(TaskFailed, match="refused: app:writer started this task and may not call "
                                             "tools.notes:note itself"):
            await app.tasks.result(task)
    assert lines(notes) == []

async def test_a_workflow_version_whose_tasks_fail_too_often_is_rolled_back_and_new_tasks_run_the_good_code(
        app_root: Path) -> None:
    notes = app_root / "notes.txt"
    broken = REPORT.replace("    noted =", "    if len(topic) > 0:\n        raise ValueError(\"broken on purpose\")\n"
                                          "    noted =")
    async with App(root=app_root) as app:
        await create_report(app)
        good = app.registry.get("generated:report")
        updated = await use(app, "app:writer", "wippy:update_workflow", id="generated:report", source=broken,
                            examples=[])
        assert not updated.is_error, updated.result
        for n in range(3):
            task = await app.tasks.start("generated:report", {"path": str(notes), "topic": f"t{n}"})
            with pytest.raises(TaskFailed, match="broken on purpose"):
                await app.tasks.result(task)
            if n < 2:  # the window of 3 tasks is not full yet
                assert app.registry.get("generated:report").data["source"] == broken
        assert app.registry.get("generated:report") == good
        [rolled] = [a for a in app.approvals.audit.list(resource="generated:report") if a.decision == "rolled back"]
        assert (rolled.decided_by, rolled.reason) == (
            "app:writer_writes_generated_workflows",
            "automatic rollback: 3 of the last 3 tasks of generated:report failed (policy "
            "app:writer_writes_generated_workflows allows at most 50%)")
        assert await app.tasks.run("generated:report", {"path": str(notes), "topic": "fine"}) == {
            "topic": "fine", "noted": "FINE"}
    assert lines(notes) == ["fine"]
