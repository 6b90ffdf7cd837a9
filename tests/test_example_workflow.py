"""The example app's research workflow (`app:research`, registry/app/flows): a restricted workflow that asks
app:researcher, waits for a person's approval and writes up with app:write_up; what automatic rollback does to
it; and when `tasks.upgrade` moves a task to new code: refused if the task waits for something the new code would
not ask for there, or if its code is running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wippy_agents import App
from wippy_agents.durable import TaskFailed, UpgradeRefused
from wippy_agents.registry import Entry, ToolSpec, WorkflowSpec
from wippy_agents.testing import wait_until, write_file

OFFLINE_NOTES = ("This is the offline model: it needs no key and no network, and echoes you. You said: What does the "
                 "registry say about agents?")

DRAFT_FIRST = '''
def main(ctx, topic: str) -> dict:
    """Research a topic, write it up, then wait for a person to approve the report."""
    notes = ctx.ask("app:researcher", "What does the registry say about " + topic + "?")
    report = ctx.tool("app:write_up", topic=topic, notes=notes)
    decision = ctx.wait_signal("approve")
    return {"topic": topic, "approved_by": decision.get("by"), "report": report}
'''

ASK_BEFORE_WRITING_UP = """
namespace: app.review
entries:
  - name: ask_before_writing_up
    kind: policy
    subjects: [app:research]
    actions: [tool.call]
    resources: [app:write_up]
    effect: ask
"""

GATE = """
\"\"\"A gate a test opens: the call waits until the file exists.\"\"\"

import time
from pathlib import Path


def wait_for(path: str) -> str:
    \"\"\"Wait until the file exists (30 s at most), having made `<path>.entered`.

    Args:
        path: The file.
    \"\"\"
    Path(path + ".entered").touch()
    deadline = time.monotonic() + 30
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "open"
"""


def step_names(app: App, task: str) -> list[str]:
    return [step.name for step in app.tasks.get(task).steps]


async def waiting_for(app: App, task: str, signal: str) -> None:
    await wait_until(lambda: step_names(app, task)[-1:] == [f"wait:{signal}"], timeout=30)


async def waiting_for_approval(app: App, task: str) -> None:
    await waiting_for(app, task, "approve")


async def test_a_research_task_asks_the_researcher_waits_for_approval_holding_no_worker_then_writes_up(
        example_app: Path) -> None:
    async with App(root=example_app) as app:
        task = await app.tasks.start("app:research", {"topic": "agents"})
        await wait_until(lambda: step_names(app, task) == ["ask:app:researcher", "wait:approve"], timeout=30)
        pool = app.agents.restricted.workflow_pool
        assert pool is not None and pool.busy == 0
        await app.tasks.signal(task, "approve", {"by": "ana"})
        assert await app.tasks.result(task) == {"topic": "agents", "approved_by": "ana",
                                                "report": "# agents\n\n" + OFFLINE_NOTES}
        assert step_names(app, task) == ["ask:app:researcher", "wait:approve", "signal:approve", "tool:app:write_up"]


async def test_the_agent_that_starts_a_research_task_is_told_its_id_and_can_follow_it(example_app: Path) -> None:
    async with App(root=example_app) as app:
        started = await (await app.conversation("app:assistant")).ask(
            '/call wippy:start_workflow {"workflow": "app:research", "args": {"topic": "agents"}}')
        task = next(task.id for task in app.tasks.list() if task.workflow == "app:research")
        assert f'"task_id": "{task}"' in started.text
        await waiting_for_approval(app, task)
        await app.tasks.signal(task, "approve", {"by": "ana"})
        await app.tasks.result(task)
        status = await (await app.conversation("app:assistant")).ask(
            "/call wippy:workflow_status " + json.dumps({"task_id": task}))
        assert '"status": "completed"' in status.text and '"approved_by": "ana"' in status.text


async def test_the_shipped_workflow_and_write_up_pass_their_own_examples(example_app: Path) -> None:
    async with App(root=example_app) as app:
        research, write_up = app.registry.spec("app:research"), app.registry.spec("app:write_up")
        assert isinstance(research, WorkflowSpec) and isinstance(write_up, ToolSpec)
        assert len(research.examples) == 2 and len(write_up.examples) == 1
        assert await app.agents.workflows.failed_examples("app:research", research) == []
        assert await app.agents.restricted.failed_examples(write_up) == []


async def test_an_upgrade_is_refused_when_the_new_code_would_not_go_on_with_the_signal_the_task_waits_for(
        example_app: Path) -> None:
    async with App(root=example_app) as app:
        old = await app.tasks.start("app:research", {"topic": "agents"}, task_id="old")
        await waiting_for_approval(app, old)
        entry = app.registry.get("app:research")
        version = app.registry.apply([Entry(entry.id, entry.kind, entry.meta, {**entry.data, "source": DRAFT_FIRST,
                                                                                "examples": []})], author="user:test")
        with pytest.raises(UpgradeRefused) as refused:
            await app.tasks.upgrade(old)
        assert str(refused.value) == (
            f"task old stays on registry version 1: on version {version}, at operation 1 the task is in "
            "'signal:approve' where the code asks for 'tool:app:write_up'; let it finish where it is")
        await app.tasks.signal(old, "approve", {"by": "ana"})
        assert (await app.tasks.result(old))["report"] == "# agents\n\n" + OFFLINE_NOTES
        assert app.tasks.get(old).registry_version == 1


async def test_an_upgrade_is_refused_when_the_new_code_asks_for_something_else_where_the_task_sleeps(
        example_app: Path) -> None:
    def napper(before: str) -> Entry:
        source = f'def main(ctx):\n    """Nap an hour."""\n{before}    ctx.sleep(3600)\n    return "rested"\n'
        return Entry("app:napper", "workflow", {}, {"runtime": "restricted", "source": source})

    async with App(root=example_app) as app:
        app.registry.apply([napper("")], author="user:test")
        task = await app.tasks.start("app:napper", {})
        await wait_until(lambda: step_names(app, task) == ["sleep"], timeout=30)
        version = app.registry.apply([napper("    ctx.log('about to nap')\n")], author="user:test")
        with pytest.raises(UpgradeRefused, match=f"on version {version}, at operation 0 the task is in 'sleep' "
                                                 "where the code asks for 'log'"):
            await app.tasks.upgrade(task)
        await app.tasks.cancel(task)


async def test_an_upgrade_is_refused_when_the_new_code_would_not_go_on_with_the_call_a_person_is_asked_to_approve(
        example_app: Path) -> None:
    write_file(example_app, "registry/app/review/_index.yaml", ASK_BEFORE_WRITING_UP)
    async with App(root=example_app) as app:
        task = await app.tasks.start("app:research", {"topic": "agents"}, task_id="reviewed")
        await waiting_for_approval(app, task)
        await app.tasks.signal(task, "approve", {"by": "ana"})
        await wait_until(lambda: step_names(app, task)[-1].startswith("wait:approval:"), timeout=30)
        entry = app.registry.get("app:research")
        source = str(entry.data["source"]).replace('ctx.tool("app:write_up", topic=topic, notes=notes)',
                                                    'ctx.log("no write-up for", topic)')
        version = app.registry.apply([Entry(entry.id, entry.kind, entry.meta, {**entry.data, "source": source,
                                                                                "examples": []})], author="user:test")
        with pytest.raises(UpgradeRefused, match=f"on version {version}, at operation 2 the task is in "
                                                 "'tool:app:write_up' where the code asks for 'log'"):
            await app.tasks.upgrade(task)
        await app.approvals.approve(app.approvals.pending()[0].id, by="bo")
        assert (await app.tasks.result(task))["report"] == "# agents\n\n" + OFFLINE_NOTES


async def test_failing_tasks_roll_back_the_toolsmiths_version_of_the_workflow_but_never_the_one_a_person_wrote(
        example_app: Path) -> None:
    async def fail_five_tasks(app: App, payload: object) -> None:
        for _ in range(5):
            task = await app.tasks.start("app:research", {"topic": "agents"})
            await waiting_for_approval(app, task)
            await app.tasks.signal(task, "approve", payload)
            with pytest.raises(TaskFailed):
                await app.tasks.result(task)

    async with App(root=example_app) as app:
        shipped = app.registry.get("app:research")
        await fail_five_tasks(app, "yes")  # the code reads the payload as an object: each task fails
        assert app.registry.get("app:research") == shipped and len(app.registry.history("app:research")) == 1

        buggy = str(shipped.data["source"]).replace('decision.get("by")', 'decision["approver"]')
        updated = await (await app.conversation("app:toolsmith")).ask(
            "/call wippy:update_workflow " + json.dumps({"id": "app:research", "source": buggy, "examples": []}))
        assert "done: update workflow app:research" in updated.text
        await fail_five_tasks(app, {"by": "ana"})
        assert app.registry.get("app:research") == shipped
        last = app.registry.history("app:research")[-1]
        assert (last.author, last.reason) == ("wippy:policy", (
            "automatic rollback: 5 of the last 5 tasks of app:research failed (policy "
            "app.policies:toolsmith_improves_workflows allows at most 50%)"))
    assert "def main(ctx, topic: str) -> dict:" in (example_app / "registry/app/flows/_index.yaml").read_text()


async def test_an_upgrade_is_refused_while_the_tasks_code_runs_an_operation(example_app: Path, tmp_path: Path) -> None:
    write_file(example_app, "tools/gate.py", GATE)
    gate = tmp_path / "gate"

    def gated(after: str) -> Entry:
        source = (f'def main(ctx, path: str):\n    """Pass the gate, then wait for go."""\n'
                  f'    ctx.tool("tools.gate:wait_for", path=path)\n{after}    return ctx.wait_signal("go")\n')
        return Entry("app:gated", "workflow", {}, {"runtime": "restricted", "source": source})

    grant = Entry("app.policies:gated_passes_the_gate", "policy", {}, {
        "subjects": ["app:gated"], "actions": ["tool.call"], "resources": ["tools.gate:*"], "effect": "allow"})
    async with App(root=example_app) as app:
        app.registry.apply([gated(""), grant], author="user:test")
        task = await app.tasks.start("app:gated", {"path": str(gate)})
        await wait_until(Path(f"{gate}.entered").exists, timeout=30)
        version = app.registry.apply([gated("    ctx.log('passed')\n")], author="user:test")
        with pytest.raises(UpgradeRefused, match="its code is running \\(an operation is under way\\)"):
            await app.tasks.upgrade(task)
        gate.touch()
        await waiting_for(app, task, "go")
        with pytest.raises(UpgradeRefused, match="at operation 1 the task is in 'signal:go' where the code asks for "
                                                 "'log'"):
            await app.tasks.upgrade(task)
        await app.tasks.signal(task, "go", "went")
        assert await app.tasks.result(task) == "went"
        assert app.tasks.get(task).registry_version == version - 1
