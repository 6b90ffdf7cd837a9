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

import duckdb
import pytest

from wippy_agents.state import JournalDamaged, JournalRow, StepRecord, TaskEvent, TaskRow, TaskStatus, open_state
from wippy_agents.state._journal import check_log

WHEN = datetime(2026, 1, 1, tzinfo=UTC)

CRASHING_WRITER = """
import asyncio, os, sys
from datetime import UTC, datetime
from pathlib import Path
from wippy_agents.state import TaskEvent, open_state

def event(i):
    return TaskEvent(f"t{i}", datetime(2026, 1, 1, tzinfo=UTC), "running", "null")

async def main():
    state = open_state(Path(sys.argv[1]))
    await asyncio.gather(*(state.journal.append([event(i)]) for i in range(3)))
    state.journal.tasks()  # a read: what was appended before it is copied into DuckDB first ...
    await asyncio.gather(*(state.journal.append([event(i)]) for i in range(3, 5)))
    os._exit(0)  # ... these two were acknowledged (durable in the log) when the process dies

asyncio.run(main())
"""


def stored(state: Path, sql: str) -> list[tuple[object, ...]]:
    """What the state file holds, read as the next process finds it (without copying the log in)."""
    db = duckdb.connect(str(state), read_only=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def events(state: Path) -> list[str]:
    return [str(task) for (task,) in stored(state, "SELECT task FROM task_events ORDER BY task")]


def restart(state: Path) -> None:
    """Open the state (the log's tail is copied in) and close it again."""
    open_state(state).close()


def event(task: str) -> TaskEvent:
    return TaskEvent(task, WHEN, TaskStatus.RUNNING, "null")


def event_line(group: int, task: str) -> str:
    return json.dumps({"g": group, "rows": [["task_events", [task, WHEN.isoformat(), "running", "null"]]]}) + "\n"


def append_rows(state: Path, rows: list[JournalRow], *, together: bool = False) -> None:
    """Append rows through a real journal (a group each, or one group for all `together`), then close it:
    everything is copied into DuckDB."""

    async def main() -> None:
        with open_state(state) as opened:
            for batch in [rows] if together else [[row] for row in rows]:
                await opened.journal.append(batch)

    asyncio.run(main())


def write_events(state: Path, tasks: list[str]) -> None:
    append_rows(state, [event(task) for task in tasks])


def test_rows_acknowledged_but_not_yet_copied_are_replayed_once(tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASHING_WRITER), str(state)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert events(state) == ["t0", "t1", "t2"]  # what reached DuckDB before the crash
    restart(state)  # the next start copies the log's tail in
    assert events(state) == ["t0", "t1", "t2", "t3", "t4"]
    restart(state)  # and a start after that copies nothing twice
    assert events(state) == ["t0", "t1", "t2", "t3", "t4"]


def test_a_torn_last_write_was_never_acknowledged_and_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    line = event_line(1, "t1")
    log.write_text(line + event_line(2, "t2")[:30])  # killed in the middle of the second write
    restart(state)
    assert events(state) == ["t1"]
    assert "cut short" in caplog.text and "dropping it" in caplog.text
    assert log.read_text() == line


def test_a_log_that_lost_its_tail_copies_nothing_twice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    write_events(state, [f"t{i}" for i in range(5)])
    with log.open("r+b") as handle:  # `truncate -s -100` on a stopped app
        handle.truncate(log.stat().st_size - 100)
    restart(state)
    assert events(state) == [f"t{i}" for i in range(5)]  # each once: no step shows twice, no usage doubles
    assert "dropping it" in caplog.text
    write_events(state, ["t5"])  # and the journal goes on where it was
    restart(state)
    assert events(state) == [f"t{i}" for i in range(6)]


def test_a_damaged_line_before_intact_ones_stops_startup_naming_the_file_and_offset(tmp_path: Path) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    first, damaged = event_line(1, "t1"), event_line(2, "t2").replace('"rows"', '"r0ws"')
    log.write_text(first + damaged + event_line(3, "t3"))
    with pytest.raises(JournalDamaged) as raised:
        restart(state)
    message = str(raised.value)
    assert f"{log} is damaged at byte {len(first)}" in message
    assert "wippy state check" in message and "--repair" in message
    assert events(state) == []  # nothing was changed


def test_a_state_that_cannot_open_its_journal_lets_go_of_the_file_and_its_lock(tmp_path: Path) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    log.write_text(event_line(1, "t1") + "not a journal line\n" + event_line(2, "t2"))
    with pytest.raises(JournalDamaged):
        restart(state)
    assert check_log(log, copied_group=0, repair=True).repaired
    restart(state)  # in this same process: nothing of the failed start holds the file
    assert events(state) == ["t1", "t2"]


def test_repair_keeps_every_intact_line_and_sets_the_damage_aside(tmp_path: Path) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    damaged = '{"g": 2, "rows": [["task_events", ["t2", "2026-01-01T00:00:00+00:00", "runn'
    log.write_text(event_line(1, "t1") + damaged + "\n" + event_line(3, "t3"))
    report = check_log(log, copied_group=0)
    assert (report.groups, report.to_copy, len(report.damage), report.repaired) == (2, 2, 1, False)
    assert report.damage[0].in_middle
    repaired = check_log(log, copied_group=0, repair=True)
    assert repaired.repaired
    assert damaged in (tmp_path / "journal.damaged").read_text()
    restart(state)
    assert events(state) == ["t1", "t3"]


def test_lone_surrogates_are_stored_as_replacement_characters_naming_the_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state.duckdb"
    append_rows(state, [StepRecord("t\ud800", 0, "tool:x", False, None, "returned \udcff", WHEN, 0.0)])
    assert "task t\ufffd: a task_steps row held invalid text" in caplog.text
    restart(state)  # and the app boots again, every time
    assert stored(state, "SELECT task, error FROM task_steps") == [("t\ufffd", "returned \ufffd")]


def test_an_escaped_lone_surrogate_in_an_old_line_is_repaired_at_startup(tmp_path: Path) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    args = json.dumps(["app:assistant", "c1", 1, "hi\udcff"])  # JSON escapes it: `"hi\\udcff"`, which DuckDB refuses
    line = {"g": 1, "rows": [["tasks", ["t1", "wippy:agent_turn", args, 1, WHEN.isoformat()]]]}
    log.write_text(json.dumps(line) + "\n")
    with open_state(state) as opened:
        [task] = opened.journal.tasks()
    assert json.loads(task.args)[3] == "hi\ufffd"


def test_a_row_duckdb_refuses_is_set_aside_and_every_other_row_is_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state.duckdb"
    refused = StepRecord("bad", "not a number", "s", True, "1", None, WHEN, 0.0)  # type: ignore[arg-type]
    append_rows(state, [event("good"), refused], together=True)
    assert events(state) == ["good"]
    rejected = [json.loads(line) for line in (tmp_path / "journal.rejected").read_text().splitlines()]
    assert [(r["table"], r["task"]) for r in rejected] == [("task_steps", "bad")]
    assert "task bad: a task_steps row could not be stored" in caplog.text
    restart(state)  # the next start neither fails on it nor copies anything twice
    assert events(state) == ["good"]


def test_the_rows_of_one_append_land_in_one_group_of_the_log(tmp_path: Path) -> None:
    state, log = tmp_path / "state.duckdb", tmp_path / "journal.log"
    append_rows(state, [TaskRow("t1", "app:flow", "[]", 0, WHEN), event("t1")], together=True)
    [line] = log.read_text().splitlines()
    assert [table for table, _ in json.loads(line)["rows"]] == ["tasks", "task_events"]


def test_the_state_folder_and_files_are_the_owners_alone(tmp_path: Path) -> None:
    folder = tmp_path / ".wippy"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    state = folder / "state.duckdb"
    write_events(state, ["t1"])
    (folder / "journal.rejected").touch(mode=0o644)
    restart(state)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


SMALL_DISK = """
import asyncio, json, os, subprocess, sys, time
from datetime import UTC, datetime
from pathlib import Path
import duckdb
from wippy_agents.state import StateUnavailable, TaskEvent, open_state

disk, path = Path(sys.argv[1]), Path(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
path.with_name("journal.log").symlink_to(disk / "journal.log")  # the log on the small disk, DuckDB beside it
WHEN = datetime(2026, 1, 1, tzinfo=UTC)

def event(task, detail="null"):
    return TaskEvent(task, WHEN, "running", detail)

async def main():
    state = open_state(path)
    journal = state.journal
    acknowledged, refused = [], 0
    await journal.append([event("before")])
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
            await journal.append([event(f"during{i}", json.dumps("x" * 2000))])
            acknowledged.append(f"during{i}")
        except StateUnavailable as error:
            refused += 1
            message = str(error)
    problem = journal.problem
    filler.unlink()
    deadline = time.monotonic() + 10
    while journal.problem is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    recovered = journal.problem is None
    await journal.append([event("after")])
    acknowledged.append("after")
    state.close()
    open_state(path).close()
    db = duckdb.connect(str(path), read_only=True)
    stored = [r[0] for r in db.execute("SELECT task FROM task_events ORDER BY rowid").fetchall()]
    print(json.dumps({"acknowledged": acknowledged, "stored": stored, "refused": refused, "message": message,
                      "problem": problem, "recovered": recovered}))

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
        restart(state)
