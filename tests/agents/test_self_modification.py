"""Agents changing the registry under policy, on a copy of the example app driven by the offline model.

The example app's toolsmith may create and update restricted tools in `generated`
and must ask before deleting; its code runs only in the sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wippy_agents import App
from wippy_agents.agents import AgentEvent, ApprovalRequested, ToolFinished, TurnDone
from wippy_agents.policy import ApprovalError
from wippy_agents.registry import Entry, RegistryError

SLUGIFY = '''def main(text: str, sep: str = "-") -> str:
    """Lower-case words of the text joined by sep."""
    return sep.join(regex.findall("[a-z0-9]+", text.lower()))
'''

BROKEN = '''def main(text: str, sep: str = "-") -> str:
    """Lower-case words of the text joined by sep (now with a bug for long texts)."""
    if len(text) > 5:
        raise ValueError("too long")
    return text.lower()
'''


def call(tool: str, **arguments: Any) -> str:
    """The offline model calls `tool` when told `/call TOOL {json}`."""
    return f"/call {tool} {json.dumps(arguments)}"


async def turn(app: App, agent: str, text: str, conversation: str | None = None) -> list[AgentEvent]:
    conv = await app.conversation(agent, conversation)
    return [event async for event in conv.stream(text)]


def tool_results(events: list[AgentEvent]) -> list[ToolFinished]:
    return [event for event in events if isinstance(event, ToolFinished)]


async def create_slugify(app: App, source: str = SLUGIFY, **extra: Any) -> ToolFinished:
    events = await turn(app, "app:toolsmith", call(
        "wippy:create_tool", id="generated:slugify", source=source, description="Make a URL slug.",
        examples=[{"args": {"text": "Hello, World!"}, "expect": "hello-world"}], **extra))
    [result] = tool_results(events)
    return result


async def test_a_toolsmith_creates_a_tool_that_another_agent_uses_in_its_next_turn(example_app: Path) -> None:
    async with App(root=example_app) as app:
        before = app.registry.version
        result = await create_slugify(app)
        assert not result.is_error, result.result
        assert result.result == f"done: create tool generated:slugify (registry version {before + 1})"

        [used] = tool_results(await turn(app, "app:assistant", call("generated:slugify", text="Actors All The Way")))
        assert (used.result, used.is_error) == ("actors-all-the-way", False)

        [version] = app.registry.history("generated:slugify")
        assert version.author == "app:toolsmith" and version.task is not None and version.task.startswith("turn:")
        [audit] = app.approvals.audit.list(resource="generated:slugify")
        assert (audit.decision, audit.decided_by) == ("allowed", "app.policies:toolsmith_writes_generated_tools")
    written = (example_app / "registry/generated/_index.yaml").read_text()
    assert "source: |\n      def main(text: str" in written  # reviewable line by line in git


async def test_an_agent_no_policy_allows_is_refused_and_nothing_changes(example_app: Path) -> None:
    async with App(root=example_app) as app:
        app.registry.apply([Entry("app:intruder", "agent", {}, {"model": "app:offline",
                                                                  "tools": ["wippy:create_tool"]})],
                            author="user:test")
        version = app.registry.version
        [result] = tool_results(await turn(app, "app:intruder", call(
            "wippy:create_tool", id="generated:evil", source=SLUGIFY, description="x")))
        assert result.is_error
        assert result.result == ("error: refused: registry.create generated:evil: no policy allows app:intruder to "
                                 "registry.create generated:evil (writes are denied unless a policy entry allows "
                                 "them). Nothing was changed.")
        assert app.registry.version == version and "generated:evil" not in app.registry
        [audit] = app.approvals.audit.list(subject="app:intruder")
        assert (audit.decision, audit.action) == ("denied", "registry.create")


async def test_the_toolsmith_is_refused_outside_its_namespace(example_app: Path) -> None:
    async with App(root=example_app) as app:
        [result] = tool_results(await turn(app, "app:toolsmith", call(
            "wippy:create_tool", id="app:slugify", source=SLUGIFY, description="x")))
        assert result.is_error and "no policy allows app:toolsmith to registry.create app:slugify" in result.result
        assert "app:slugify" not in app.registry


async def test_failing_examples_reject_a_tool_with_the_failure_as_the_result(example_app: Path) -> None:
    async with App(root=example_app) as app:
        version = app.registry.version
        result = await create_slugify(app, source=BROKEN)
        assert result.is_error
        assert "generated:slugify does not pass its examples, so nothing was changed" in result.result
        assert 'example 1: main(text="Hello, World!") failed: ValueError: too long' in result.result
        assert app.registry.version == version and "generated:slugify" not in app.registry


async def test_code_the_sandbox_refuses_is_rejected_with_its_line(example_app: Path) -> None:
    async with App(root=example_app) as app:
        [result] = tool_results(await turn(app, "app:toolsmith", call(
            "wippy:create_tool", id="generated:env", description="x",
            source='def main() -> str:\n    """Read the env."""\n    import os\n    return os.environ["HOME"]\n')))
        assert result.is_error and "import statements are not allowed" in result.result
        assert "generated:env" not in app.registry
        [audit] = app.approvals.audit.list(resource="generated:env")  # a refused check is a decision on record
        assert (audit.decision, audit.decided_by, audit.action) == ("denied", "wippy:registry", "registry.create")
        assert "import statements are not allowed" in audit.reason


async def test_no_agent_may_write_a_policy_or_grant_itself_permissions(example_app: Path) -> None:
    async with App(root=example_app) as app:
        version = app.registry.version
        [result] = tool_results(await turn(app, "app:toolsmith", call(
            "wippy:delete_entry", id="app.policies:toolsmith_asks_before_deleting")))
        assert result.is_error and "agents cannot create or change policies" in result.result
        assert app.approvals.pending() == []

        policy = Entry("app.policies:open", "policy", {}, {"subjects": ["*"], "actions": ["registry.create"],
                                                           "effect": "allow"})
        with pytest.raises(RegistryError, match="agents cannot create or change policies"):
            app.registry.apply([policy], author="app:toolsmith")  # the registry itself refuses, whatever the path
        trusted = Entry("generated:shell", "tool", {}, {"module": "os", "function": "system", "description": "x"})
        with pytest.raises(RegistryError, match="agents can only write restricted tools"):
            app.registry.apply([trusted], author="app:toolsmith")
        me = app.registry.get("app:toolsmith")
        with pytest.raises(RegistryError, match="meta.traits"):
            app.registry.apply([Entry(me.id, "agent", {**me.meta, "traits": ["admin"]}, me.data)],
                                author="app:toolsmith")
        assert app.registry.version == version
        app.registry.apply([policy], author="user:alice")  # people edit policies freely
        assert "app.policies:open" in app.registry


async def ask_to_delete(app: App) -> tuple[str, str]:
    """Have the toolsmith ask to delete generated:slugify; return the approval id and the turn's task id."""
    conv = await app.conversation("app:toolsmith")
    async for event in conv.stream(call("wippy:delete_entry", id="generated:slugify")):
        if isinstance(event, ApprovalRequested):
            return event.approval, f"turn:{conv.id}:1"
    raise AssertionError("the delete did not ask for approval")


async def test_an_approved_delete_is_applied_in_the_agents_name_and_the_agent_hears_of_it(example_app: Path) -> None:
    async with App(root=example_app) as app:
        await create_slugify(app)
        approval_id, task_id = await ask_to_delete(app)
        [pending] = app.approvals.pending()
        assert (pending.id, pending.agent, pending.task_id, pending.action) == (
            approval_id, "app:toolsmith", task_id, "registry.delete")
        assert "-source: |" in pending.diff and "generated:slugify" in app.registry

        decided = await app.approvals.approve(approval_id, by="user:alice", reason="unused")
        assert decided.status == "approved" and decided.version == app.registry.version
        result = await app.tasks.result(task_id)
        assert "approved by user:alice: unused; committed as registry version" in result["answer"].text
        assert "generated:slugify" not in app.registry
        last = app.registry.history()[-1]
        assert (last.author, last.task) == ("app:toolsmith", task_id)
        decisions = [r.decision for r in app.approvals.audit.list(resource="generated:slugify")]
        assert decisions == ["allowed", "asked", "approved"]


async def test_a_denied_delete_changes_nothing_and_tells_the_agent_why(example_app: Path) -> None:
    async with App(root=example_app) as app:
        await create_slugify(app)
        version = app.registry.version
        approval_id, task_id = await ask_to_delete(app)
        await app.approvals.deny(approval_id, by="user:bob", reason="still in use")
        result = await app.tasks.result(task_id)
        assert "denied by user:bob: still in use. Nothing was changed." in result["answer"].text
        assert app.registry.version == version and "generated:slugify" in app.registry
        with pytest.raises(Exception, match="already denied by user:bob"):
            await app.approvals.approve(approval_id)


async def test_an_approval_whose_stored_change_was_altered_is_not_applied(example_app: Path) -> None:
    async with App(root=example_app) as app:
        await create_slugify(app)
        approval_id, _ = await ask_to_delete(app)
        [asked] = app.approvals.changes(approval_id)
        other = Entry("generated:slugify", "tool", {}, {**asked.before.data, "description": "rewritten"})  # type: ignore[union-attr]
        store = app.folder.state.approvals
        store._db.execute("UPDATE approvals SET changes = ? WHERE id = ?",  # type: ignore[attr-defined]
                          [json.dumps([{"id": asked.id, "before": asked.before.to_json(),  # type: ignore[union-attr]
                                        "after": other.to_json()}]), approval_id])
        version = app.registry.version
        with pytest.raises(ApprovalError, match=f"approval {approval_id} no longer matches what app:toolsmith asked"):
            await app.approvals.approve(approval_id, by="user:mallory")
        assert app.registry.version == version and "rewritten" not in str(app.registry.get("generated:slugify").data)


@pytest.mark.parametrize("decision", ["approve", "deny"])
async def test_a_pending_approval_survives_a_restart(example_app: Path, decision: str) -> None:
    async with App(root=example_app) as app:
        await create_slugify(app)
        approval_id, task_id = await ask_to_delete(app)
    async with App(root=example_app) as app:  # the turn is recovered and waits again
        assert [a.id for a in app.approvals.pending()] == [approval_id]
        assert app.tasks.status(task_id) == "running"
        await getattr(app.approvals, decision)(approval_id, by="user:carol")
        answer = (await app.tasks.result(task_id))["answer"]
        assert ("approved by user:carol" if decision == "approve" else "denied by user:carol") in answer.text
        assert ("generated:slugify" in app.registry) == (decision == "deny")


async def test_a_generated_tool_that_keeps_failing_is_rolled_back_to_its_previous_version(example_app: Path) -> None:
    async with App(root=example_app) as app:
        await create_slugify(app)
        first = app.registry.get("generated:slugify")
        [updated] = tool_results(await turn(app, "app:toolsmith", call(
            "wippy:update_tool", id="generated:slugify", source=BROKEN, examples=[
                {"args": {"text": "Hi"}, "expect": "hi"}])))
        assert not updated.is_error, updated.result
        texts = ["ok", "a long text", "another long one", "yes", "long again"]  # 3 of 5 fail: over the policy's 50%
        results = [tool_results(await turn(app, "app:assistant", call("generated:slugify", text=text)))[0]
                   for text in texts]
        assert [r.is_error for r in results] == [False, True, True, False, True]
        assert "error: the tool failed: ValueError: too long" in results[1].result
        assert app.registry.get("generated:slugify") == first
        last = app.registry.history("generated:slugify")[-1]
        assert last.author == "wippy:policy" and last.reason.startswith(
            "automatic rollback: 3 of the last 5 calls of generated:slugify failed")
        [rolled] = [r for r in app.approvals.audit.list() if r.decision == "rolled back"]
        assert rolled.version == last.version
        [again] = tool_results(await turn(app, "app:assistant", call("generated:slugify", text="Back to Work")))
        assert again.result == "back-to-work"


async def test_a_tool_call_policy_can_deny_or_ask(example_app: Path) -> None:
    async with App(root=example_app) as app:
        app.registry.apply([
            Entry("app.policies:no_multiply", "policy", {}, {
                "subjects": ["app:assistant"], "actions": ["tool.call"], "resources": ["tools.calc:multiply"],
                "effect": "deny"}),
            Entry("app.policies:ask_add", "policy", {}, {
                "subjects": ["app:assistant"], "actions": ["tool.call"], "resources": ["tools.calc:add"],
                "effect": "ask"}),
        ], author="user:test")
        [refused] = tool_results(await turn(app, "app:assistant", call("tools.calc:multiply", a=2, b=3)))
        assert refused.is_error and refused.result == "error: refused: policy app.policies:no_multiply says deny"

        conv = await app.conversation("app:assistant")
        events: list[AgentEvent] = []
        async for event in conv.stream(call("tools.calc:add", a=2, b=3)):
            events.append(event)
            if isinstance(event, ApprovalRequested):
                assert json.loads(app.approvals.get(event.approval).diff) == {"a": 2, "b": 3}
                await app.approvals.approve(event.approval, by="user:test")
            if isinstance(event, TurnDone):
                break
        [added] = tool_results(events)
        assert (added.result, added.is_error) == ("5.0", False)  # the approved call ran, once


async def test_an_approval_whose_entry_changed_meanwhile_is_not_applied_over_the_change(example_app: Path) -> None:
    async with App(root=example_app) as app:
        await create_slugify(app)
        approval_id, _ = await ask_to_delete(app)
        tool = app.registry.get("generated:slugify")
        app.registry.apply([Entry(tool.id, "tool", tool.meta, {**tool.data, "description": "Edited by hand."})],
                            author="user:dave")
        with pytest.raises(ApprovalError, match="generated:slugify changed since app:toolsmith asked"):
            await app.approvals.approve(approval_id)
        assert app.approvals.get(approval_id).status == "pending" and "generated:slugify" in app.registry


async def test_registry_rollback_undoes_an_agents_change_in_the_files_too(example_app: Path) -> None:
    async with App(root=example_app) as app:
        before = app.registry.version
        await create_slugify(app)
        app.registry.rollback(before, author="user:erin")
        assert "generated:slugify" not in app.registry
        assert "slugify" not in (example_app / "registry/generated/_index.yaml").read_text()


async def test_an_agent_adjusts_another_agents_tools_and_prompt_for_its_next_turn(example_app: Path) -> None:
    async with App(root=example_app) as app:
        smith = app.registry.get("app:toolsmith")
        app.registry.apply([
            Entry(smith.id, "agent", smith.meta, {**smith.data, "tools": [
                *smith.data["tools"], "wippy:update_agent", "wippy:update_prompt"]}),
            Entry("app.policies:tune_assistant", "policy", {}, {
                "subjects": ["app:toolsmith"], "actions": ["registry.update"],
                "resources": ["app:assistant", "prompts:assistant"], "effect": "allow"}),
        ], author="user:test")
        [tools] = tool_results(await turn(app, "app:toolsmith", call(
            "wippy:update_agent", id="app:assistant", changes={"tools": ["tools.calc:add"], "description": "Adds."})))
        [prompt] = tool_results(await turn(app, "app:toolsmith", call(
            "wippy:update_prompt", id="prompts:assistant", template="You only add numbers.")))
        assert not tools.is_error and not prompt.is_error, (tools.result, prompt.result)
        assistant = app.registry.get("app:assistant")
        assert assistant.data["tools"] == ["tools.calc:add"] and assistant.meta["description"] == "Adds."
        [added] = tool_results(await turn(app, "app:assistant", call("tools.calc:add", a=2, b=3)))
        assert added.result == "5.0"
        assert tool_results(await turn(app, "app:assistant", call("tools.calc:multiply", a=2, b=3))) == []  # gone
        assert (example_app / "prompts/assistant.md").read_text().endswith("You only add numbers.")
        [bad] = tool_results(await turn(app, "app:toolsmith", call(
            "wippy:update_agent", id="app:assistant", changes={"max_stepz": 3})))
        assert bad.is_error and "max_stepz: unknown field" in bad.result
