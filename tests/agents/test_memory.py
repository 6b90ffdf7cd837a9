"""Agents' memory: notes kept across conversations and restarts, written under policy, versioned, recalled ranked.

Driven by the offline model (`/call TOOL {json}`) on a copy of the example app, with
two agents given the memory tools.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wippy_agents import App
from wippy_agents._runtime.secrets import REDACTED
from wippy_agents.agents import Memory, ToolFinished
from wippy_agents.registry import Entry
from wippy_agents.state import open_state

MEMORY_TOOLS = ["wippy:remember", "wippy:recall"]
KEEPER = Entry("app:keeper", "agent", {}, {"model": "app:offline", "tools": MEMORY_TOOLS})
OTHER = Entry("app:other", "agent", {}, {"model": "app:offline", "tools": MEMORY_TOOLS})


def call(tool: str, **arguments: Any) -> str:
    """The offline model calls `tool` when told `/call TOOL {json}`."""
    return f"/call {tool} {json.dumps(arguments)}"


async def tool_result(app: App, agent: str, text: str, conversation: str | None = None) -> ToolFinished:
    conv = await app.conversation(agent, conversation)
    [result] = [event async for event in conv.stream(text) if isinstance(event, ToolFinished)]
    return result


def add_agents(app: App) -> None:
    app.registry.apply([KEEPER, OTHER], author="user:test")


async def test_an_agent_recalls_in_other_conversations_and_after_a_restart_what_it_remembered(
        example_app: Path) -> None:
    async with App(root=example_app) as app:
        add_agents(app)
        kept = await tool_result(app, "app:keeper", call(
            "wippy:remember", text="Ada's favourite tea is oolong", tags=["prefs"]), conversation="monday")
        assert (kept.result, kept.is_error) == ("remembered as note 1 (memory version 1)", False)
        await tool_result(app, "app:keeper", call("wippy:remember", text="Deploys happen on Fridays"), "monday")
        found = await tool_result(app, "app:keeper", call("wippy:recall", query="which tea?"), "tuesday")
        [note] = json.loads(found.result)
        assert (note["note"], note["text"], note["tags"]) == (1, "Ada's favourite tea is oolong", ["prefs"])
        assert app.agents.memory is not None
        [first, _] = app.agents.memory.history("app:keeper")
        assert first.author == "app:keeper" and first.task is not None and first.task.startswith("turn:")
        audit = app.approvals.audit.list(subject="app:keeper")
        assert [(r.action, r.resource, r.decision) for r in audit] == [("memory.write", "app:keeper", "allowed")] * 2
    async with App(root=example_app) as app:
        found = await tool_result(app, "app:keeper", call("wippy:recall", tags=["PREFS"]), "after the restart")
        assert [n["text"] for n in json.loads(found.result)] == ["Ada's favourite tea is oolong"]
        other = await tool_result(app, "app:other", call("wippy:recall", query="tea"))
        assert json.loads(other.result) == []  # each agent recalls only its own notes


async def test_an_agent_may_not_write_another_agents_memory_unless_a_policy_allows_it(example_app: Path) -> None:
    async with App(root=example_app) as app:
        add_agents(app)
        refused = await tool_result(app, "app:other", call(
            "wippy:remember", text="keeper is wrong about tea", agent="app:keeper"))
        assert refused.is_error and refused.result == (
            "error: refused: no policy allows app:other to write the memory of app:keeper (an agent writes only its "
            "own memory unless a policy entry allows more). Nothing was remembered.")
        assert app.agents.memory is not None and app.agents.memory.history("app:keeper") == []
        [audit] = app.approvals.audit.list(subject="app:other")
        assert (audit.action, audit.resource, audit.decision, audit.decided_by) == (
            "memory.write", "app:keeper", "denied", "default")

        app.registry.apply([Entry("app.policies:other_informs_keeper", "policy", {}, {
            "subjects": ["app:other"], "actions": ["memory.write"], "resources": ["app:keeper"], "effect": "allow"})],
            author="user:test")
        nobody = await tool_result(app, "app:other", call("wippy:remember", text="x", agent="app:nobody"))
        assert nobody.result == "error: app:nobody is not an agent of this app, so it has no memory to write"
        allowed = await tool_result(app, "app:other", call("wippy:remember", text="tea is brewed at 80C",
                                                           agent="app:keeper"))
        assert allowed.result == "remembered as note 1 (memory version 1)"
        [note] = app.agents.memory.notes("app:keeper")
        assert (note.text, note.author) == ("tea is brewed at 80C", "app:other")
        assert app.approvals.audit.list(subject="app:other")[-1].decided_by == "app.policies:other_informs_keeper"


async def test_a_policy_can_deny_an_agent_its_own_memory(example_app: Path) -> None:
    async with App(root=example_app) as app:
        add_agents(app)
        app.registry.apply([Entry("app.policies:keeper_forgets", "policy", {}, {
            "subjects": ["app:keeper"], "actions": ["memory.write"], "effect": "deny"})], author="user:test")
        refused = await tool_result(app, "app:keeper", call("wippy:remember", text="anything"))
        assert refused.result == ("error: refused: policy app.policies:keeper_forgets says deny. Nothing was "
                                  "remembered.")


async def test_rewriting_and_forgetting_notes_are_versions_and_a_repeated_note_is_kept_once(
        example_app: Path) -> None:
    async with App(root=example_app) as app:
        add_agents(app)
        await tool_result(app, "app:keeper", call("wippy:remember", text="tea: oolong", tags=["prefs"]))
        again = await tool_result(app, "app:keeper", call("wippy:remember", text="tea: oolong", tags=["prefs"]))
        assert again.result == "already remembered as note 1"
        rewritten = await tool_result(app, "app:keeper", call("wippy:remember", text="tea: sencha", replaces=1))
        assert rewritten.result == "remembered as note 1 (memory version 2)"
        missing = await tool_result(app, "app:keeper", call("wippy:remember", text="x", replaces=7))
        assert missing.is_error and missing.result == "error: app:keeper has no note 7 (its notes: 1)"
        memory = app.agents.memory
        assert memory is not None
        memory.forget("app:keeper", 1, author="user:ada")
        assert memory.notes("app:keeper") == []
        assert [(v.version, v.text, v.author) for v in memory.history("app:keeper", 1)] == [
            (1, "tea: oolong", "app:keeper"), (2, "tea: sencha", "app:keeper"), (3, None, "user:ada")]
        with pytest.raises(LookupError, match="app:keeper has no note 1 \\(its notes: none\\)"):
            memory.forget("app:keeper", 1, author="user:ada")


async def test_a_note_too_long_or_with_bad_tags_is_refused_with_what_to_change(example_app: Path) -> None:
    async with App(root=example_app) as app:
        add_agents(app)
        long = await tool_result(app, "app:keeper", call("wippy:remember", text="x" * 4001))
        assert long.result == ("error: a note holds at most 4000 characters and this one has 4001; keep the fact "
                               "itself, or split it into notes")
        tags = await tool_result(app, "app:keeper", call("wippy:remember", text="x", tags=[" "]))
        assert tags.result == "error: a tag is 1 to 64 characters, not ''"
        assert app.agents.memory is not None and app.agents.memory.history("app:keeper") == []


def test_recall_ranks_notes_by_keywords_and_keeps_only_those_with_every_tag() -> None:
    with open_state(None) as state:
        memory = Memory(state.memory)
        for text, tags in [("The deploy script lives in ops/deploy.sh", ["ops"]),
                           ("Ada prefers oolong tea, never with milk", ["prefs"]),
                           ("Tea tea tea: the office kitchen has green tea and black tea", ["office"]),
                           ("Deploys need a green build on main", ["ops", "ci"])]:
            memory.remember("app:a", text, tags, author="app:a", task=None)
        ranked = [r.note.text for r in memory.recall("app:a", "tea")]
        assert ranked == ["Tea tea tea: the office kitchen has green tea and black tea",
                          "Ada prefers oolong tea, never with milk"]
        assert [r.note.note for r in memory.recall("app:a", "green build")] == [4, 3]  # both words beat one
        assert [r.note.note for r in memory.recall("app:a", "", ["ops"])] == [4, 1]  # no keywords: newest first
        assert [r.note.note for r in memory.recall("app:a", "green", ["ops", "ci"])] == [4]
        assert memory.recall("app:a", "kubernetes") == [] and len(memory.recall("app:a", limit=2)) == 2


async def test_a_secret_the_app_knows_is_redacted_before_a_note_is_stored(example_app: Path) -> None:
    async with App(root=example_app) as app:
        add_agents(app)
        app.redactor.add(["sk-test-0123456789abcdef"])
        await tool_result(app, "app:keeper", call("wippy:remember", text="the key is sk-test-0123456789abcdef"))
        assert app.agents.memory is not None
        [note] = app.agents.memory.notes("app:keeper")
        assert "sk-test" not in (note.text or "") and note.text == f"the key is {REDACTED}"
