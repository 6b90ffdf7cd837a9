"""What every implementation of the state's interfaces does, written against the protocols alone.

Each test runs on every store the `state` fixture offers: the DuckDB file with its journal
log, the in-memory DuckDB, and a Postgres database on a real server started for the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import psycopg
import pytest

from wippy_agents.state import (
    Approval,
    AuditRecord,
    ChangeRecord,
    ConversationInfo,
    ConversationMessage,
    ConversationRow,
    ConversationStart,
    McpToken,
    ModelCall,
    Note,
    SignalRecord,
    StartedStep,
    State,
    StepRecord,
    TaskEvent,
    TaskRow,
    TaskStatus,
    open_state,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(params=["duckdb file", "duckdb in memory", "postgres"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[State]:
    if request.param == "postgres":
        location: Path | str | None = request.getfixturevalue("postgres").database()
    else:
        location = tmp_path / ".wippy" / "state.duckdb" if request.param == "duckdb file" else None
    with open_state(location, node="node-1") as opened:
        yield opened


def task(id: str, workflow: str = "app:flow", created: float = 0, version: int = 1) -> TaskRow:
    return TaskRow(id, workflow, json.dumps([id]), version, at(created))


def event(task: str, seconds: float, status: TaskStatus | Note, detail: object = None) -> TaskEvent:
    return TaskEvent(task, at(seconds), status, json.dumps(detail))


def step(task: str, seq: int, seconds: float, result: object = None, name: str | None = None) -> StepRecord:
    return StepRecord(task, seq, name or f"s{seq}", True, json.dumps(result), None, at(seconds), 0.01)


# -- the journal ------------------------------------------------------------------------------


async def test_a_task_reads_back_as_its_latest_status_with_its_upgrades_and_cancel(state: State) -> None:
    await state.journal.append([task("a", created=1), event("a", 1, TaskStatus.RUNNING)])
    await state.journal.append([event("a", 2, Note.UPGRADED, {"registry_version": 5}),
                                event("a", 3, TaskStatus.COMPLETED, {"result": 42}),
                                event("a", 4, Note.CANCEL_REQUESTED)])  # a note after it changes no status
    await state.journal.append([task("b", created=2)])  # no event yet: running
    a, b = state.journal.tasks()
    assert (a.id, a.workflow, json.loads(a.args), a.created) == ("a", "app:flow", ["a"], at(1))
    assert (a.status, json.loads(a.detail or ""), a.registry_version, a.cancel_requested) == (
        TaskStatus.COMPLETED, {"result": 42}, 5, True)
    assert (b.id, b.status, b.detail, b.registry_version, b.cancel_requested) == ("b", TaskStatus.RUNNING, None, 1,
                                                                                 False)


async def test_unfinished_tasks_are_those_a_node_resumes_oldest_first(state: State) -> None:
    await state.journal.append([task("new", created=3), task("recovering", created=2), task("done", created=1),
                                task("parked", created=0)])
    await state.journal.append([event("recovering", 5, TaskStatus.RECOVERING), event("done", 5, TaskStatus.FAILED),
                                event("parked", 5, TaskStatus.NEEDS_ATTENTION)])
    assert [t.id for t in state.journal.tasks(unfinished=True)] == ["recovering", "new"]
    assert [t.id for t in state.journal.tasks()] == ["parked", "done", "recovering", "new"]


async def test_steps_read_back_by_number(state: State) -> None:
    await state.journal.append([task("a")])
    await state.journal.append([step("a", 1, 2, "second"), step("a", 0, 1, "first")])
    await state.journal.append([step("b", 0, 1)])
    assert [(s.task, s.seq, json.loads(s.result or "")) for s in state.journal.steps("a")] == [
        ("a", 0, "first"), ("a", 1, "second")]
    assert state.journal.steps("nobody") == []


async def test_recovery_gives_steps_signals_stalls_and_steps_started_without_finishing(state: State) -> None:
    journal = state.journal
    await journal.append([task("a"), event("a", 0, TaskStatus.RUNNING), step("a", 0, 1)])
    await journal.append([SignalRecord("a", "s2", "go", json.dumps(2), at(3)),
                          SignalRecord("a", "s1", "go", json.dumps(1), at(2))])
    await journal.append([event("a", 4, Note.STEP_STARTED, {"seq": 2, "name": "tool:x"}),
                          event("a", 5, TaskStatus.RECOVERING), step("a", 1, 6),  # progress: stalls count from here
                          event("a", 7, Note.STEP_STARTED, {"seq": 2, "name": "tool:x"}),
                          event("a", 8, TaskStatus.RECOVERING)])
    await journal.append([event("a", 9, Note.STEP_STARTED, {"seq": 1, "name": "s1"})])  # it finished: not counted
    await journal.append([task("b"), event("b", 1, TaskStatus.RECOVERING), event("b", 2, TaskStatus.RECOVERING)])
    recoveries = journal.recovery(["a", "b", "none"])
    a = recoveries["a"]
    assert [s.seq for s in a.steps] == [0, 1]
    assert [(s.id, json.loads(s.payload)) for s in a.signals] == [("s1", 1), ("s2", 2)]
    assert (a.stalls, a.unfinished_starts) == (1, [StartedStep(2, "tool:x", 2)])
    assert (recoveries["b"].stalls, recoveries["b"].unfinished_starts, recoveries["b"].steps) == (2, [], [])
    assert (recoveries["none"].steps, recoveries["none"].signals, recoveries["none"].stalls) == ([], [], 0)


async def test_a_person_resuming_a_task_starts_its_stall_and_crash_counts_afresh(state: State) -> None:
    await state.journal.append([task("a"), event("a", 1, Note.STEP_STARTED, {"seq": 0, "name": "s0"}),
                                event("a", 2, TaskStatus.RECOVERING), event("a", 3, TaskStatus.RECOVERING)])
    await state.journal.append([event("a", 4, Note.RESUMED)])
    recovery = state.journal.recovery(["a"])["a"]
    assert (recovery.stalls, recovery.unfinished_starts) == (0, [])


async def test_claims_grant_each_task_to_the_node_with_a_growing_epoch(state: State) -> None:
    await state.journal.append([task("a"), task("b")])
    first = state.journal.claim(["a", "b"], "node-1")
    assert [(lease.task, lease.node) for lease in first] == [("a", "node-1"), ("b", "node-1")]
    [again] = state.journal.claim(["a"], "node-1")
    assert again.epoch > first[0].epoch


async def test_pruning_deletes_old_finished_tasks_and_keeps_the_rest(state: State) -> None:
    journal = state.journal
    rows = [task(name, workflow="app:turn" if name == "turn" else "app:flow") for name in
            ("old", "turn", "kept", "waiting", "recent")]
    await journal.append(rows + [step("old", 0, 1)] + [SignalRecord("old", "s", "go", "null", at(1))])
    await journal.append([event(name, 10, TaskStatus.COMPLETED) for name in ("old", "turn", "kept")])
    await journal.append([event("waiting", 10, TaskStatus.RUNNING), event("recent", 100, TaskStatus.COMPLETED)])
    pruned = journal.prune(at(50), keep_workflows=["app:turn"], keep_tasks=["kept"])
    assert pruned == ["old"]
    assert [t.id for t in journal.tasks()] == ["turn", "kept", "waiting", "recent"]
    assert journal.steps("old") == [] and journal.recovery(["old"])["old"].signals == []
    assert journal.prune(at(50), keep_workflows=["app:turn"], keep_tasks=["kept"]) == []


async def test_deleting_tasks_takes_every_row_of_theirs_and_nothing_of_the_others(state: State) -> None:
    journal = state.journal
    await journal.append([task("gone"), task("stays"), step("gone", 0, 1), step("stays", 0, 1),
                          SignalRecord("gone", "s", "go", "null", at(1)), event("gone", 2, TaskStatus.COMPLETED),
                          event("stays", 2, TaskStatus.COMPLETED)])
    journal.delete(["gone"])
    assert [t.id for t in journal.tasks()] == ["stays"]
    assert journal.recovery(["gone"])["gone"].steps == [] and journal.recovery(["gone"])["gone"].signals == []
    assert [s.task for s in journal.steps("stays")] == ["stays"]
    journal.delete([])  # nothing to delete is no error


async def test_groups_are_counted_and_a_healthy_journal_has_no_problem(state: State) -> None:
    before = state.journal.commits
    await state.journal.append([task("a")])
    await state.journal.append([event("a", 1, TaskStatus.RUNNING)])
    state.journal.tasks()  # a read comes after every write before it (an in-memory journal counts only then)
    assert before < state.journal.commits <= before + 2  # one group each, or both in one
    assert state.journal.problem is None
    assert state.journal.check().damage == []


# -- registry versions -------------------------------------------------------------------------


def entry(id: str, value: int) -> dict[str, object]:
    return {"id": id, "kind": "config", "meta": {}, "data": {"value": value}}


def test_versions_record_changes_and_give_the_live_entries_history_and_undo(state: State) -> None:
    versions = state.versions
    assert (versions.last_version(), versions.live(), versions.history()) == (0, {}, [])
    one = versions.record(1, [ChangeRecord("app:a", None, entry("app:a", 1), "registry/a.yaml"),
                              ChangeRecord("app:b", None, entry("app:b", 1), "registry/b.yaml")],
                          author="files", task=None, reason="loaded")
    assert (one.version, one.author, one.reason, one.task, one.entries) == (1, "files", "loaded", None,
                                                                            ("app:a", "app:b"))
    versions.record(2, [ChangeRecord("app:a", entry("app:a", 1), entry("app:a", 2), "registry/a.yaml")],
                    author="app:agent", task="t1", reason="tuned")
    versions.record(3, [ChangeRecord("app:b", entry("app:b", 1), None, None)], author="user:x", task=None,
                    reason="removed")
    assert versions.last_version() == 3
    assert versions.live() == {"app:a": (entry("app:a", 2), "registry/a.yaml")}
    assert [(v.version, v.author, v.task) for v in versions.history()] == [(1, "files", None), (2, "app:agent", "t1"),
                                                                           (3, "user:x", None)]
    assert [v.version for v in versions.history("app:b")] == [1, 3]
    assert versions.undo_after(1) == {"app:a": entry("app:a", 1), "app:b": entry("app:b", 1)}
    assert versions.undo_after(0) == {"app:a": None, "app:b": None}
    assert versions.undo_after(3) == {}


# -- approvals, audit, conversations -------------------------------------------------------------


def approval(id: str, created: float) -> Approval:
    return Approval(id, "app:agent", "t1", "registry.update", "app:a", "tune a", "- 1\n+ 2", "pending", at(created),
                    call_id="c1", policy="app.policies:ask")


def test_approvals_are_kept_with_their_changes_and_decided_once(state: State) -> None:
    approvals = state.approvals
    changes = [{"id": "app:a", "before": entry("app:a", 1), "after": entry("app:a", 2)}]
    approvals.add(approval("late", 2), changes)
    approvals.add(approval("early", 1), [])
    assert approvals.get("late") == approval("late", 2) and approvals.get("nope") is None
    assert approvals.changes("late") == changes and approvals.changes("early") == []
    assert [a.id for a in approvals.list()] == ["early", "late"]
    assert approvals.decide("late", status="approved", by="user:x", at=at(3), reason="fine", version=7)
    assert not approvals.decide("late", status="denied", by="user:y", at=at(4), reason="too late", version=None)
    decided = approvals.get("late")
    assert decided is not None
    assert (decided.status, decided.decided_by, decided.decided_at, decided.decision_reason, decided.version) == (
        "approved", "user:x", at(3), "fine", 7)
    assert [a.id for a in approvals.list("pending")] == ["early"]


def record(subject: str, seconds: float, resource: str = "app:a") -> AuditRecord:
    return AuditRecord(at(seconds), subject, None, "registry.update", resource, "config", "allowed",
                       "app.policies:p", "policy says allow")


def test_the_audit_trail_gives_the_latest_records_oldest_first(state: State) -> None:
    for seconds, subject in enumerate(["app:one", "app:two", "app:one", "app:one"]):
        state.audit.add(record(subject, seconds, resource=f"app:r{seconds}"))
    assert state.audit.list(limit=2) == [record("app:one", 2, "app:r2"), record("app:one", 3, "app:r3")]
    assert [r.time for r in state.audit.list(subject="app:one")] == [at(0), at(2), at(3)]
    assert state.audit.list(subject="app:one", resource="app:r2") == [record("app:one", 2, "app:r2")]


def test_the_audit_trail_is_pruned_of_the_records_older_than_a_time_but_those_of_actions_kept(state: State) -> None:
    for seconds in range(4):
        state.audit.add(record("app:one", seconds, resource=f"app:r{seconds}"))
    state.audit.add(dataclasses.replace(record("app:one", 1, resource="app:pinned"), action="mcp.tool.pin"))
    assert state.audit.prune(at(2), keep_actions=["mcp.tool.pin"]) == 2
    assert [(r.time, r.resource) for r in state.audit.list()] == [(at(1), "app:pinned"), (at(2), "app:r2"),
                                                                   (at(3), "app:r3")]
    assert state.audit.prune(at(2), keep_actions=["mcp.tool.pin"]) == 0


def turn(conversation: str, agent: str, number: int, seconds: float, asked: str,
         answer: str) -> list[list[ConversationRow]]:
    """The index's rows of one person's turn, as the agents journal them: when it starts, and when it ends."""
    return [[ConversationInfo(conversation, agent, at(seconds), at(seconds), number, asked),
             ConversationMessage(conversation, number, at(seconds), "user", asked)],
            [ConversationInfo(conversation, agent, at(seconds + 1), at(seconds + 1), number),
             ConversationMessage(conversation, number, at(seconds + 1), "assistant", answer)]]


async def test_conversations_are_indexed_through_the_journal_and_move_on_with_their_turns(state: State) -> None:
    index = state.conversations
    commits = state.journal.commits
    await index.note([ConversationStart("c1", "app:assistant", at(0))])
    assert index.list() == []  # started, but no turn yet: nothing to list
    assert state.journal.commits == commits + 1  # a start is a journal row in a group, not a write of its own
    rows = [*turn("c1", "app:assistant", 1, 10, "What is the weather in Paris?", "Sunny, 21 °C."),
            *turn("c2", "app:helper", 1, 20, "Plan 100% of the budget_2027", "Done."),
            *turn("c1", "app:assistant", 2, 30, "And in Rome?", "Rainy."),
            [ConversationStart("c1", "app:assistant", at(40))]]  # a restart
    await asyncio.gather(*(index.note(group) for group in rows),
                         index.note([ConversationInfo("c1", "app:assistant", at(5), at(5), 1, "late")]))
    c1 = ConversationInfo("c1", "app:assistant", at(10), at(31), 2, "What is the weather in Paris?")
    c2 = ConversationInfo("c2", "app:helper", at(20), at(21), 1, "Plan 100% of the budget_2027")
    assert index.list() == [c1, c2]  # latest activity first; the first turn's start and message kept
    assert index.list(agent="app:helper") == [c2]
    assert index.list(since=at(25)) == [c1] and index.list(until=at(25)) == [c2]
    assert index.list(limit=1) == [c1]
    assert index.list(text="ROME paris") == [c1]  # every word, in any message, in any case
    assert index.list(text="sunny rainy") == [c1]  # the answers are searched too
    assert index.list(text="paris done") == []
    assert index.list(text="100%") == [c2] and index.list(text="0%") == [c2] and index.list(text="%") == [c2]
    assert index.list(text="t_2") == [c2] and index.list(text="t_3") == []  # LIKE's wildcards match as themselves


async def test_a_forgotten_conversation_leaves_the_index_with_its_messages(state: State) -> None:
    index = state.conversations
    for group in [[ConversationStart("c1", "app:a", at(0))], *turn("c1", "app:a", 1, 10, "Paris?", "Sunny."),
                  *turn("c2", "app:a", 1, 20, "Paris too?", "Rainy.")]:
        await index.note(group)
    index.forget(["c1"])
    assert [c.id for c in index.list()] == ["c2"] and [c.id for c in index.list(text="paris")] == ["c2"]
    await asyncio.gather(*(index.note(group) for group in turn("c1", "app:a", 1, 30, "Again?", "Yes.")))
    assert [(c.id, c.turns, c.first) for c in index.list()] == [("c1", 1, "Again?"), ("c2", 1, "Paris too?")]


def turn_task(task: str, agent: str, conversation: str, number: int, text: str, chain: list[str],
              seconds: float) -> TaskRow:
    """A turn task as the agents start it: its arguments are agent, conversation, turn, text, context and chain."""
    return TaskRow(task, "wippy:agent_turn", json.dumps([agent, conversation, number, text, {}, chain]), 1, at(seconds))


@pytest.mark.parametrize("store", ["duckdb file", "postgres"])
async def test_conversations_from_before_the_index_are_indexed_from_their_turns_when_the_state_is_upgraded(
        store: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    location: Path | str = (request.getfixturevalue("postgres").database() if store == "postgres"
                            else tmp_path / ".wippy" / "state.duckdb")
    with open_state(location, node="node-1") as state:
        await state.journal.append([
            turn_task("t1", "app:a", "c1", 1, "first question", [], 1), turn_task("t2", "app:a", "c1", 2, "second", [], 5),
            turn_task("t3", "app:b", "c1.call", 1, "delegated", ["app:a"], 3), task("t4", created=4)])
        assert state.conversations.list() == []  # turns alone do not index a conversation: the agents do
    if isinstance(location, str):  # as the state was before the index
        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute("UPDATE wippy_schema SET version = 1")
    else:
        with duckdb.connect(str(location)) as db:
            db.execute("UPDATE wippy_schema SET version = 2")
    for _ in range(2):  # indexed at the upgrade, and found so at the next opening
        with open_state(location, node="node-1") as state:
            c1 = ConversationInfo("c1", "app:a", at(1), at(5), 2, "first question")
            assert state.conversations.list() == [c1]  # the delegate's conversation and other tasks left out
            assert state.conversations.list(text="SECOND") == [c1]
            assert state.conversations.list(text="delegated") == []


# -- MCP server tokens -----------------------------------------------------------------------------


def test_tokens_are_kept_by_name_as_digests_and_revoked_by_name(state: State) -> None:
    tokens = state.tokens
    first = McpToken("laptop", "ab" * 32, "app:*", at(1))
    assert tokens.add(first) and tokens.add(McpToken("ci", "cd" * 32, "*", at(2)))
    assert not tokens.add(McpToken("laptop", "ef" * 32, "*", at(3)))  # a name is taken once: the first stays
    assert tokens.list() == [McpToken("ci", "cd" * 32, "*", at(2)), first]
    assert tokens.revoke("ci") and not tokens.revoke("ci") and not tokens.revoke("nobody")
    assert tokens.list() == [first]


# -- agents' memory ------------------------------------------------------------------------------


def test_memory_writes_are_numbered_versions_per_agent_attributed_to_their_author_and_task(state: State) -> None:
    memory = state.memory
    first = memory.write("app:a", None, "the user likes tea", ["prefs"], author="app:a", task="turn:1")
    second = memory.write("app:a", None, "deploys on fridays", [], author="app:a", task="turn:2")
    other = memory.write("app:b", None, "a note of b's own", ["x", "y"], author="app:b", task=None)
    assert (first.version, first.note, second.version, second.note, other.version, other.note) == (1, 1, 2, 2, 1, 1)
    [kept] = memory.history("app:a", 1)
    assert (kept.text, kept.tags, kept.author, kept.task) == ("the user likes tea", ("prefs",), "app:a", "turn:1")
    assert memory.notes("app:b") == [other]


def test_a_rewritten_or_forgotten_note_keeps_its_versions_and_leaves_the_notes(state: State) -> None:
    memory = state.memory
    memory.write("app:a", None, "tea", ["prefs"], author="app:a", task="turn:1")
    memory.write("app:a", None, "fridays", [], author="app:a", task="turn:1")
    memory.write("app:a", 1, "green tea", ["prefs"], author="app:a", task="turn:2")
    forgot = memory.write("app:a", 2, None, [], author="user:ada", task=None)
    assert forgot.version == 4 and forgot.note == 2
    assert [(n.note, n.version, n.text) for n in memory.notes("app:a")] == [(1, 3, "green tea")]
    assert [(v.version, v.note, v.text, v.author) for v in memory.history("app:a")] == [
        (1, 1, "tea", "app:a"), (2, 2, "fridays", "app:a"), (3, 1, "green tea", "app:a"), (4, 2, None, "user:ada")]
    assert [v.version for v in memory.history("app:a", 2)] == [2, 4]
    assert memory.agents() == {"app:a": 1} and memory.history("app:nobody") == []


# -- what model calls spent --------------------------------------------------------------------------


async def test_model_calls_are_kept_once_per_step_and_added_up_per_day_agent_and_model(state: State) -> None:
    usage = state.usage
    await usage.record(ModelCall("turn:1", "model:1", "app:a", "app:gpt", at(0), 100, 10, 40, 0.5))
    replayed = usage.record(ModelCall("turn:1", "model:1", "app:a", "app:gpt", at(5), 999, 999, 0, 9.0))  # kept once
    later = usage.record(ModelCall("turn:1", "model:2", "app:a", "app:gpt", at(60), 200, 20, 0, 1.25))
    usage.record(ModelCall("turn:2", "model:1", "app:a", "app:claude", at(86_400), 7, 3, 0, 0.125))
    usage.record(ModelCall("turn:3", "model:1", "app:b", "app:gpt", at(86_400), 1, 1, 0, 0.25))
    await asyncio.gather(replayed, later)  # the reads below see the two not awaited as well
    day1, day2 = T0.date(), (T0 + timedelta(days=1)).date()
    assert usage.spent("app:a", day1) == (330, 1.75) and usage.spent("app:a", day2) == (10, 0.125)
    assert usage.spent("app:nobody", day1) == (0, 0.0)
    assert [(d.day, d.agent, d.model, d.calls, d.input_tokens, d.output_tokens, d.cached_tokens, d.cost_usd)
            for d in usage.daily()] == [(day1, "app:a", "app:gpt", 2, 300, 30, 40, 1.75),
                                        (day2, "app:a", "app:claude", 1, 7, 3, 0, 0.125),
                                        (day2, "app:b", "app:gpt", 1, 1, 1, 0, 0.25)]
    assert [(d.agent, d.model) for d in usage.daily(agent="app:a", since=day2)] == [("app:a", "app:claude")]


async def test_model_calls_are_pruned_of_those_made_before_a_time(state: State) -> None:
    usage = state.usage
    await asyncio.gather(*(usage.record(ModelCall(f"turn:{day}", "model:1", "app:a", "app:gpt", at(day * 86_400), 1,
                                                  1, 0, 0.5)) for day in range(3)))
    assert usage.prune(at(86_400)) == 1
    assert [d.day for d in usage.daily()] == [(T0 + timedelta(days=1)).date(), (T0 + timedelta(days=2)).date()]
