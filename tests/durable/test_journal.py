"""The journal: acknowledged rows survive a crash before they reach DuckDB, exactly once, whatever the log went through.

Torn and damaged writes, invalid text, rows DuckDB refuses, a full or read-only disk: each ends in a clear
message at the right place, and nothing that was acknowledged is lost or copied twice.
"""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from wippy_agents._state import open_state
from wippy_agents.durable._engine import TABLES
from wippy_agents.durable._journal import Journal, JournalDamaged, check_log

WHEN = datetime(2026, 1, 1, tzinfo=UTC)

CRASHING_WRITER = """
import asyncio, os, sys
from collections.abc import Callable
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
    try:
        Journal(db, TABLES, log).close()
    finally:
        db.close()


def event_line(group: int, task: str) -> str:
    return json.dumps({"g": group, "rows": [["task_events", [task, WHEN.isoformat(), "running", "null"]]]}) + "\n"


def append_rows(state: Path, log: Path, rows: list[tuple[str, tuple[Any, ...]]], *, together: bool = False) -> None:
    """Append `(table, row)`s through a real journal (one group each, or one group for all `together`), then close it:
    everything is copied into DuckDB."""

    async def main() -> None:
        db = open_state(state)
        journal = Journal(db, TABLES, log)
        if together:
            await asyncio.gather(*(journal.append(table, row) for table, row in rows))
        for table, row in [] if together else rows:
            await journal.append(table, row)
        journal.close()
        db.close()

    asyncio.run(main())


def write_events(state: Path, log: Path, tasks: list[str]) -> None:
    append_rows(state, log, [("task_events", (task, WHEN, "running", "null")) for task in tasks])


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
    line = event_line(1, "t1")
    log.write_text(line + event_line(2, "t2")[:30])  # killed in the middle of the second write
    restart(state, log)
    assert events(state) == ["t1"]
    assert "cut short" in caplog.text and "dropping it" in caplog.text
    assert log.read_text() == line


def test_a_log_that_lost_its_tail_copies_nothing_twice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    write_events(state, log, [f"t{i}" for i in range(5)])
    with log.open("r+b") as handle:  # `truncate -s -100` on a stopped app
        handle.truncate(log.stat().st_size - 100)
    restart(state, log)
    assert events(state) == [f"t{i}" for i in range(5)]  # each once: no step shows twice, no usage doubles
    assert "dropping it" in caplog.text
    write_events(state, log, ["t5"])  # and the journal goes on where it was
    restart(state, log)
    assert events(state) == [f"t{i}" for i in range(6)]


def test_a_damaged_line_before_intact_ones_stops_startup_naming_the_file_and_offset(tmp_path: Path) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    first, damaged = event_line(1, "t1"), event_line(2, "t2").replace('"rows"', '"r0ws"')
    log.write_text(first + damaged + event_line(3, "t3"))
    with pytest.raises(JournalDamaged) as raised:
        restart(state, log)
    message = str(raised.value)
    assert f"{log} is damaged at byte {len(first)}" in message
    assert "wippy state check" in message and "--repair" in message
    assert events(state) == []  # nothing was changed


def test_repair_keeps_every_intact_line_and_sets_the_damage_aside(tmp_path: Path) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    damaged = '{"g": 2, "rows": [["task_events", ["t2", "2026-01-01T00:00:00+00:00", "runn'
    log.write_text(event_line(1, "t1") + damaged + "\n" + event_line(3, "t3"))
    report = check_log(log, TABLES, copied_group=0)
    assert (report.groups, report.to_copy, len(report.damage), report.repaired) == (2, 2, 1, False)
    assert report.damage[0].in_middle
    repaired = check_log(log, TABLES, copied_group=0, repair=True)
    assert repaired.repaired
    assert damaged in (tmp_path / "journal.damaged").read_text()
    restart(state, log)
    assert events(state) == ["t1", "t3"]


def test_lone_surrogates_are_stored_as_replacement_characters_naming_the_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    append_rows(state, log, [("task_steps", ("t\ud800", 0, "tool:x", False, None, "returned \udcff", WHEN, 0.0))])
    assert "task t\ufffd: a task_steps row held invalid text" in caplog.text
    restart(state, log)  # and the app boots again, every time
    db = open_state(state)
    assert db.execute("SELECT task, error FROM task_steps").fetchall() == [("t\ufffd", "returned \ufffd")]
    db.close()


def test_an_escaped_lone_surrogate_in_an_old_line_is_repaired_at_startup(tmp_path: Path) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    args = json.dumps(["app:assistant", "c1", 1, "hi\udcff"])  # JSON escapes it: `"hi\\udcff"`, which DuckDB refuses
    line = {"g": 1, "rows": [["tasks", ["t1", "wippy:agent_turn", args, 1, WHEN.isoformat()]]]}
    log.write_text(json.dumps(line) + "\n")
    restart(state, log)
    db = open_state(state)
    assert json.loads(db.execute("SELECT args FROM tasks").fetchone()[0])[3] == "hi\ufffd"
    db.close()


def test_a_row_duckdb_refuses_is_set_aside_and_every_other_row_is_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    append_rows(state, log, [("task_events", ("good", WHEN, "running", "null")),
                             ("task_steps", ("bad", "not a number", "s", True, "1", None, WHEN, 0.0))], together=True)
    assert events(state) == ["good"]
    rejected = [json.loads(line) for line in (tmp_path / "journal.rejected").read_text().splitlines()]
    assert [(r["table"], r["task"]) for r in rejected] == [("task_steps", "bad")]
    assert "task bad: a task_steps row could not be stored" in caplog.text
    restart(state, log)  # the next start neither fails on it nor copies anything twice
    assert events(state) == ["good"]


def test_the_state_folder_and_files_are_the_owners_alone(tmp_path: Path) -> None:
    folder = tmp_path / ".wippy"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    state, log = folder / "state.duckdb", folder / "journal.log"
    write_events(state, log, ["t1"])
    (folder / "journal.rejected").touch(mode=0o644)
    open_state(state).close()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


SMALL_DISK = """
import asyncio, json, os, subprocess, sys, time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from wippy_agents._state import open_state
from wippy_agents.durable._engine import TABLES
from wippy_agents.durable._journal import Journal, StateUnavailable

disk, state = Path(sys.argv[1]), Path(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
log = disk / "journal.log"
WHEN = datetime(2026, 1, 1, tzinfo=UTC)

async def main():
    journal = Journal(open_state(state), TABLES, log)
    acknowledged, refused = [], 0
    await journal.append("task_events", ("before", WHEN, "running", "null"))
    acknowledged.append("before")
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        os.close(fd)
    for i in range(20):
        try:
            await journal.append("task_events", (f"during{i}", WHEN, "running", json.dumps("x" * 2000)))
            acknowledged.append(f"during{i}")
        except StateUnavailable as error:
            refused += 1
            message = str(error)
    problem = journal.problem
    filler.unlink()
    deadline = time.monotonic() + 10
    while journal.problem is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await journal.append("task_events", ("after", WHEN, "running", "null"))
    acknowledged.append("after")
    journal.close()
    db = open_state(state)
    Journal(db, TABLES, log).close()
    stored = [r[0] for r in db.execute("SELECT task FROM task_events ORDER BY rowid").fetchall()]
    print(json.dumps({"acknowledged": acknowledged, "stored": stored, "refused": refused, "message": message,
                      "problem": problem, "recovered": journal.problem is None}))

asyncio.run(main())
"""


def test_a_disk_that_fills_up_loses_nothing_acknowledged_and_the_journal_recovers(
    tmp_path: Path, in_a_mount_namespace: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    done = in_a_mount_namespace(SMALL_DISK, str(disk), str(tmp_path / "state.duckdb"))
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["refused"] > 0 and outcome["recovered"]
    assert "the app's state cannot be written" in outcome["message"] and "nothing already acknowledged is lost" in \
        outcome["message"]
    assert outcome["problem"] == outcome["message"]
    assert outcome["stored"] == outcome["acknowledged"]  # every acknowledged row, once, in order
    assert done.stderr.count("the app's state cannot be written") == 1  # said once, not at every attempt



def test_a_journal_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    log.symlink_to("/dev/full")  # reads zeros and refuses writes for ever: reading it at boot used to never end
    with pytest.raises(OSError, match="not a regular file, so it cannot hold the journal"):
        restart(state, log)
