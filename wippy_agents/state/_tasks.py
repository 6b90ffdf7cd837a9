"""Durable tasks on DuckDB: rows go in through the journal's writer, reads are queries of its tables."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import duckdb

from .._runtime.secrets import Redactor
from ._journal import Journal, JournalReport, check_log
from ._records import (
    FINISHED,
    TERMINAL,
    JournalRow,
    Lease,
    Note,
    Recovery,
    SignalRecord,
    StartedStep,
    StepRecord,
    TaskStatus,
    TaskSummary,
)
from ._sql import sql_list

_Record = TypeVar("_Record", StepRecord, SignalRecord)

PRUNE_BATCH = 500
"""Finished tasks deleted per transaction, so each stays short beside the journal's writer."""


_TASKS = """
SELECT t.id, t.workflow, t.args,
       coalesce((SELECT CAST(json_extract(u.detail, '$.registry_version') AS BIGINT) FROM task_events u
                 WHERE u.task = t.id AND u.status = '{upgraded}' ORDER BY u.time DESC, u.rowid DESC LIMIT 1),
                t.registry_version),
       t.created, e.status, e.detail,
       EXISTS (SELECT 1 FROM task_events c WHERE c.task = t.id AND c.status = '{cancel}')
FROM tasks t LEFT JOIN (
    SELECT task, status, detail, row_number() OVER (PARTITION BY task ORDER BY time DESC, rowid DESC) AS n
    FROM task_events WHERE status NOT IN ({notes})) e ON e.task = t.id AND e.n = 1
{where}
ORDER BY t.created, t.rowid
"""
_ALL_TASKS, _UNFINISHED_TASKS = (
    _TASKS.format(upgraded=Note.UPGRADED, cancel=Note.CANCEL_REQUESTED, notes=sql_list(list(Note)), where=where)
    for where in ("", f"WHERE coalesce(e.status, '{TaskStatus.RUNNING}') NOT IN ({sql_list(TERMINAL)})"))

_STALLS = f"""
SELECT e.task, count(*) FROM task_events e WHERE e.task IN (SELECT unnest(?)) AND e.status = '{TaskStatus.RECOVERING}'
AND e.time > greatest(
    coalesce((SELECT max(started) FROM task_steps s WHERE s.task = e.task), '-infinity'::TIMESTAMPTZ),
    coalesce((SELECT max(time) FROM task_events r WHERE r.task = e.task AND r.status = '{Note.RESUMED}'),
             '-infinity'::TIMESTAMPTZ))
GROUP BY e.task"""

_UNFINISHED_STARTS = f"""
SELECT e.task, CAST(json_extract(e.detail, '$.seq') AS INTEGER) AS seq,
       any_value(json_extract_string(e.detail, '$.name')), count(*)
FROM task_events e WHERE e.task IN (SELECT unnest(?)) AND e.status = '{Note.STEP_STARTED}'
AND e.time > coalesce((SELECT max(time) FROM task_events r WHERE r.task = e.task
                       AND r.status = '{Note.RESUMED}'), '-infinity'::TIMESTAMPTZ)
AND NOT EXISTS (SELECT 1 FROM task_steps s WHERE s.task = e.task
                AND s.seq = CAST(json_extract(e.detail, '$.seq') AS INTEGER))
GROUP BY e.task, seq ORDER BY e.task, seq"""

_STEPS = """
SELECT task, seq, name, ok, result, error, started, seconds FROM task_steps
WHERE task IN (SELECT unnest(?)) ORDER BY task, seq, rowid"""

_SIGNALS = """
SELECT task, id, name, payload, time FROM task_signals WHERE task IN (SELECT unnest(?)) ORDER BY time, rowid"""

_PRUNABLE = f"""
SELECT t.id FROM tasks t
JOIN (SELECT task, max(time) AS last FROM task_events GROUP BY task) a ON a.task = t.id
JOIN (SELECT task, status, row_number() OVER (PARTITION BY task ORDER BY time DESC, rowid DESC) AS n
      FROM task_events WHERE status NOT IN ({sql_list(list(Note))})) e ON e.task = t.id AND e.n = 1
WHERE a.last < ? AND e.status IN ({sql_list(FINISHED)})
AND t.workflow NOT IN (SELECT unnest(?::VARCHAR[])) AND t.id NOT IN (SELECT unnest(?::VARCHAR[]))
ORDER BY t.created, t.rowid"""


class DuckDBJournal:
    """The `JournalStore` of a DuckDB state file: its writer thread and its log (see `_journal`), read by queries.

    The queries run on the caller's connection, after the writer has copied into
    the tables everything appended before them.
    """

    def __init__(self, db: duckdb.DuckDBPyConnection, log_path: Path | None, *,
                 redactor: Redactor | None = None, private: Sequence[Path] = ()) -> None:
        self._db = db
        self._log_path = log_path
        self._writer = Journal(db, log_path, redactor=redactor, private=private)
        self._epochs = itertools.count(1)

    shared = False
    """One node writes a DuckDB file: what it remembers of its tasks is the whole truth."""
    lease_age = None
    """One node, no leases."""

    @property
    def problem(self) -> str | None:
        return self._writer.problem

    @property
    def commits(self) -> int:
        return self._writer.commits

    def on_writable(self, callback: Callable[[], None]) -> None:
        self._writer.on_writable(callback)

    def append(self, rows: Sequence[JournalRow]) -> asyncio.Future[None]:
        return self._writer.append(rows)

    def flush(self) -> None:
        """Wait until everything appended so far is in the tables (the other stores' reads of journaled rows)."""
        self._writer.flush()

    def tasks(self, *, unfinished: bool = False) -> list[TaskSummary]:
        self._writer.flush()
        rows = self._db.execute(_UNFINISHED_TASKS if unfinished else _ALL_TASKS).fetchall()
        return [TaskSummary(id, workflow, args, int(version), created, TaskStatus(status or TaskStatus.RUNNING),
                            detail, bool(cancelled))
                for id, workflow, args, version, created, status, detail, cancelled in rows]

    def steps(self, task: str) -> list[StepRecord]:
        return self._read(_STEPS, [task], StepRecord)

    def recovery(self, tasks: Sequence[str]) -> dict[str, Recovery]:
        ids = list(tasks)
        self._writer.flush()
        stalls = dict(self._db.execute(_STALLS, [ids]).fetchall())
        starts: dict[str, list[StartedStep]] = {task: [] for task in ids}
        for task, seq, name, times in self._db.execute(_UNFINISHED_STARTS, [ids]).fetchall():
            starts[task].append(StartedStep(seq, name, times))
        steps: dict[str, list[StepRecord]] = {task: [] for task in ids}
        for step in self._read(_STEPS, ids, StepRecord, flush=False):
            steps[step.task].append(step)
        signals: dict[str, list[SignalRecord]] = {task: [] for task in ids}
        for signal in self._read(_SIGNALS, ids, SignalRecord, flush=False):
            signals[signal.task].append(signal)
        return {task: Recovery(steps[task], signals[task], stalls.get(task, 0), starts[task]) for task in ids}

    def _read(self, sql: str, tasks: list[str], record: type[_Record], *, flush: bool = True) -> list[_Record]:
        if flush:
            self._writer.flush()
        return [record(*row) for row in self._db.execute(sql, [tasks]).fetchall()]

    def claim(self, tasks: Sequence[str], node: str) -> list[Lease]:
        # The state file's lock keeps every other node out: each claim is granted, with the next epoch.
        return [Lease(task, node, next(self._epochs)) for task in tasks]

    def prune(self, finished_before: datetime, *, keep_workflows: Collection[str] = (),
              keep_tasks: Collection[str] = ()) -> list[str]:
        self._writer.flush()
        doomed = [task for (task,) in self._db.execute(
            _PRUNABLE, [finished_before, list(keep_workflows), list(keep_tasks)]).fetchall()]
        self.delete(doomed)
        return doomed

    def delete(self, tasks: Sequence[str]) -> None:
        """Delete in short transactions beside the writer, then `CHECKPOINT` so the file reuses the space."""
        if not tasks:
            return
        self._writer.flush()
        for start in range(0, len(tasks), PRUNE_BATCH):
            ids = list(tasks[start : start + PRUNE_BATCH])
            self._db.execute("BEGIN")
            for table, column in (("task_steps", "task"), ("task_signals", "task"), ("task_events", "task"),
                                  ("tasks", "id")):
                self._db.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT unnest(?))", [ids])
            self._db.execute("COMMIT")
        self._db.execute("CHECKPOINT")

    def check(self) -> JournalReport:
        if self._log_path is None:
            return JournalReport("(in memory)", 0, 0, 0, 0, [])
        return check_log(self._log_path, copied_group(self._db))

    def close(self) -> None:
        self._writer.close()


def copied_group(db: duckdb.DuckDBPyConnection) -> int:
    """The last group of the log that is in the DuckDB tables."""
    row = db.execute("SELECT copied_group FROM journal_position").fetchone()
    return int(row[0]) if row else 0
