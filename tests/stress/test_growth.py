"""Growth: a node that runs for days keeps its state bounded by the app's retention settings, while it runs.

Each simulated day (the app's wall clock is a `VirtualClock` moved on a day at a time)
people hold conversations of two turns, each turn calling an audited tool, and a
workflow runs a chore. The first days run with nothing old enough to delete: how much
the state grows per thousand turns then is what a user without retention must plan
for (the figure). From then on `wippy:retention` is asked to apply `retention:` (a day
and a half of everything) after each day, and the state measured after two of those
days and after the last must be the same size: the same rows per table, no more
processes, the state file and its journal no bigger (the journal's log is started
afresh at a small size here, as it is at 16 MB in a real node). `make test` runs a
few hundred turns; `make soak` tens of thousands.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from wippy_agents import App
from wippy_agents.durable import TaskContext
from wippy_agents.state import _journal
from wippy_agents.testing import FunctionModel, VirtualClock, wait_until, write_file

from ._figures import Figures
from .test_load import calculator

DAY = 86400.0
RETENTION = """
retention:
  tasks_days: 1.5
  conversations_days: 1.5
  audit_days: 1.5
  usage_days: 1.5
  interval_minutes: {interval}
"""
AUDITED_CALCULATOR = """
namespace: app.growth
entries:
  - name: calculator_audited
    kind: policy
    subjects: [app:assistant]
    actions: [tool.call]
    resources: ["tools.calc:*"]
    effect: allow
"""


async def chore(ctx: TaskContext, number: int) -> int:
    return int(await ctx.step("count", lambda: number + 1))


def with_retention(app: Path, interval_minutes: float) -> Path:
    config = app / "wippy.yaml"
    config.write_text(config.read_text() + RETENTION.format(interval=interval_minutes))
    write_file(app, "registry/growth/_index.yaml", AUDITED_CALCULATOR)
    return app


def state_size(app: Path) -> dict[str, Any]:
    """The state's bytes on disk (the DuckDB file, its WAL, the journal's log) and its rows per table."""
    folder = app / ".wippy"
    files = sum(path.stat().st_size for path in folder.iterdir()
                if path.name.startswith("state.duckdb") or path.name == "journal.log")
    with duckdb.connect(str(folder / "state.duckdb")) as db:  # the node's own database, shared in this process
        tables = [name for (name,) in db.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        rows = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}  # type: ignore[index]
    return {"bytes": files, "rows": rows}


async def one_day(app: App, conversations: int, day: int) -> None:
    async def converse(number: int) -> None:
        conversation = await app.conversation("app:assistant")
        for turn in range(2):
            answer = await conversation.ask(f"add {number} and {turn}")
            assert answer.text == f"the sum is {float(number + turn)}"

    await asyncio.gather(*(converse(number) for number in range(conversations)))
    assert await app.tasks.result(await app.tasks.start("test:chore", day)) == day + 1


async def test_a_node_running_for_days_keeps_its_state_bounded_by_its_retention_settings(
        example_app: Path, soak: bool, figures: Figures, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_journal, "TRUNCATE_BYTES", 256 << 10)
    conversations, unretained_days, days = (150, 4, 100) if soak else (40, 2, 5)
    clock = VirtualClock(start=time.time())
    async with App(root=with_retention(example_app, interval_minutes=600), wall_clock=clock.time) as app:
        app.agents.model_overrides["*"] = FunctionModel(calculator)
        app.tasks.register("test:chore", chore)
        processes = len(app.processes())
        start = state_size(example_app)
        for day in range(unretained_days):  # nothing is old enough to go yet
            await one_day(app, conversations, day)
            clock.now += DAY
        unretained = state_size(example_app)
        assert unretained["rows"]["policy_audit"] >= 2 * conversations * unretained_days  # the tool calls, audited
        measured: list[dict[str, Any]] = []
        for day in range(unretained_days, days):
            await one_day(app, conversations, day)
            clock.now += DAY
            pruned = await app.node.call("wippy:retention", "prune", timeout=None)
            assert pruned["conversations"] >= conversations, pruned
            measured.append({**state_size(example_app), "processes": len(app.processes()),
                             "tasks_in_memory": len(app.tasks.list())})
        first, last = measured[1], measured[-1]
        assert last["rows"] == first["rows"], "the rows of the last day alone are kept, as after the second"
        assert last["processes"] == first["processes"] <= processes + conversations  # idle conversations stopped
        assert last["tasks_in_memory"] == first["tasks_in_memory"]  # the task manager forgets what it deleted
        # DuckDB reuses the blocks of deleted rows; its WAL comes and goes between checkpoints
        early, later = max(m["bytes"] for m in measured[:2]), max(m["bytes"] for m in measured[2:])
        assert later <= early * 1.1, f"the state grew from {early} to {later} bytes while retention applied"
    turns = 2 * conversations * unretained_days
    figures.record("growth", {
        "turns": 2 * conversations * days,
        "state_bytes_per_1000_turns_without_retention": round((unretained["bytes"] - start["bytes"]) * 1000 / turns),
        "state_bytes_with_retention": later,
        "rows_kept_with_retention": sum(last["rows"].values())})


async def test_the_running_node_applies_retention_every_interval_without_being_asked(example_app: Path) -> None:
    clock = VirtualClock(start=time.time())
    async with App(root=with_retention(example_app, interval_minutes=0.001), wall_clock=clock.time) as app:
        app.agents.model_overrides["*"] = FunctionModel(calculator)
        conversation = await app.conversation("app:assistant")
        await conversation.ask("add 1 and 2")
        assert [c.id for c in app.agents.conversations()] == [conversation.id]
        clock.now += 2 * DAY
        await wait_until(lambda: not app.agents.conversations(), timeout=10)
        assert app.tasks.list() == [] and app.audit.list() == [] and app.agents.spend.daily() == []
