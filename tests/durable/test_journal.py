"""The journal: acknowledged rows survive a crash before they reach DuckDB, exactly once; torn writes are dropped."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wippy_agents._state import open_state
from wippy_agents.durable._engine import TABLES
from wippy_agents.durable._journal import Journal

CRASHING_WRITER = """
import asyncio, os, sys
from datetime import UTC, datetime
from pathlib import Path
from wippy_agents._state import open_state
from wippy_agents.durable._engine import TABLES
from wippy_agents.durable._journal import Journal

def event(i):
    return (f"t{i}", datetime(2026, 1, 1, tzinfo=UTC), "running", "null")

async def main():
    journal = Journal(open_state(Path(sys.argv[1])), TABLES, Path(sys.argv[2]))
    await asyncio.gather(*(journal.append("task_events", event(i)) for i in range(3)))
    journal.flush()  # these three reach DuckDB ...
    await asyncio.gather(*(journal.append("task_events", event(i)) for i in range(3, 5)))
    os._exit(0)  # ... these two were acknowledged (durable in the log) when the process dies

asyncio.run(main())
"""


def events(state: Path) -> list[str]:
    db = open_state(state)
    try:
        return [row[0] for row in db.execute("SELECT task FROM task_events ORDER BY task").fetchall()]
    finally:
        db.close()


def restart(state: Path, log: Path) -> None:
    db = open_state(state)
    Journal(db, TABLES, log).close()
    db.close()


def test_rows_acknowledged_but_not_yet_copied_are_replayed_once(tmp_path: Path) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASHING_WRITER), str(state), str(log)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert events(state) == ["t0", "t1", "t2"]  # what reached DuckDB before the crash
    restart(state, log)  # the next start copies the log's tail in
    assert events(state) == ["t0", "t1", "t2", "t3", "t4"]
    restart(state, log)  # and a start after that copies nothing twice
    assert events(state) == ["t0", "t1", "t2", "t3", "t4"]


def test_a_torn_last_write_was_never_acknowledged_and_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    line = f'[["task_events", ["t1", "{datetime(2026, 1, 1, tzinfo=UTC).isoformat()}", "running", "null"]]]\n'
    log.write_text(line + '[["task_events", ["t2", "2026-')  # killed in the middle of the second write
    restart(state, log)
    assert events(state) == ["t1"]
    assert "partial write" in caplog.text
    assert log.read_text() == line
