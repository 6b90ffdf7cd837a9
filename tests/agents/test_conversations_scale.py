"""Conversations at actor scale: thousands start in the journal's group commits and idle as cheap processes.

Sized to run in seconds; `benchmarks/agents.py` starts and holds the full 100,000.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from pathlib import Path

import duckdb

from wippy_agents import App
from wippy_agents.testing import ScriptedModel

STARTS = 3000
BYTES_PER_IDLE_CONVERSATION = 10_000
"""At most this much memory (tracemalloc) an idle conversation holds: 100,000 in 1 GB."""


async def test_thousands_of_conversations_start_in_shared_group_commits_and_idle_in_little_memory(
        example_app: Path) -> None:
    async with App(root=example_app) as app:
        app.agents.model_overrides["*"] = ScriptedModel(["still here"])
        journal = app.tasks.journal
        await app.conversation("app:assistant")  # one-time costs before counting
        gc.collect()
        commits = journal.commits
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            started = await asyncio.gather(*(app.conversation("app:assistant") for _ in range(STARTS)))  # many at once
            for _ in range(3):
                await asyncio.sleep(0)  # each process journals its start, then waits for a message
            gc.collect()
            held = (tracemalloc.get_traced_memory()[0] - before) / STARTS
        finally:
            tracemalloc.stop()
        await journal.append([])  # an empty group behind every start: once it is durable, they all are
        assert len({conversation.id for conversation in started}) == STARTS
        assert all(app.node.whereis(f"conversation:{c.id}") is not None for c in started)  # each a live process
        assert journal.commits - commits < STARTS / 10, journal.commits - commits  # starts share group commits
        assert held < BYTES_PER_IDLE_CONVERSATION, f"{held:.0f} bytes per idle conversation"
        answer = await started[STARTS // 2].ask("anyone there?")  # an idle one answers at once
        assert answer.text == "still here"
        assert [c.id for c in app.agents.conversations()] == [started[STARTS // 2].id]  # the one with a turn

    with duckdb.connect(str(example_app / ".wippy" / "state.duckdb")) as db:  # the starts outlived the node
        rows = db.execute("SELECT count(DISTINCT conversation) FROM conversation_starts").fetchone()
    assert rows == (STARTS + 1,)
