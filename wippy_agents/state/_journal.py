"""The journal's one writer: a thread that makes rows durable in groups and keeps DuckDB up to date.

The durability contract:

- A group of rows (many tasks' steps at once) becomes durable as one line appended
  to `journal.log` and `fdatasync`'d; only then do the callers' futures resolve. The
  rows are copied into the DuckDB tables in batches a little later (a DuckDB
  statement costs about a millisecond, an append plus sync a fraction of that).
- Every line carries its group number, which only grows (also across the log being
  started afresh once everything in it is in DuckDB). DuckDB records the last group
  it holds, so copying the log in at startup is idempotent: a group is copied once,
  whatever happened to the file's length or the recorded byte position.
- What is stored is valid text: a row holding lone UTF-16 surrogates is repaired
  (U+FFFD) before it is written, with a warning naming its task, and a row DuckDB
  still refuses is set aside in `journal.rejected` instead of blocking every later copy.
- At startup a damaged tail (a torn last write, which was never acknowledged, or a
  corrupt last line) is dropped with a message. A damaged line with intact groups
  after it is corruption in the middle: startup stops with `JournalDamaged`, naming
  the file and byte offset; `wippy state check` shows it and `--repair` keeps every
  intact line (the damaged bytes go to `journal.damaged`).
- When the disk refuses a write (full, read-only, I/O error) the line is taken back
  (the file is truncated to its last good line), every caller of that group gets
  `StateUnavailable`, the problem is logged once, and new durable work is refused
  until a probe write succeeds again; nothing acknowledged is ever lost.

Readers of the journal tables call `flush()` first. Without a log file (an
in-memory state) the rows only go to DuckDB.

`JournalStore.append` is this writer's `append`: the rows of one call go into one group.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import queue
import re
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import duckdb

from .._runtime.secrets import Redactor
from .._runtime.text import clean_data, clean_text, is_clean
from ..errors import RunError, UsageError
from ._records import (
    ConversationInfo,
    ConversationMessage,
    ConversationStart,
    JournalRow,
    ModelCall,
    SignalRecord,
    StepRecord,
    TaskEvent,
    TaskRow,
)

log = logging.getLogger("wippy_agents.state")

MAX_GROUP = 4096
FLUSH_ROWS = 2000  # copy into DuckDB once this many rows wait ...
ENVIRONMENT = (duckdb.IOException, duckdb.FatalException, duckdb.TransactionException, OSError)
"""What failing to copy rows into DuckDB says of the disk, not of the rows: a commit that could not write its
WAL (a full or read-only disk) is a TransactionException. The rows stay pending, safe in the log, and are tried
again; a row DuckDB refuses for what it holds is set aside instead."""

FLUSH_SECONDS = 0.2  # ... or this long after the first of them
TRUNCATE_BYTES = 16 << 20  # start the log afresh once everything in it is in DuckDB and it is this big
PROBE_SECONDS = 1.0  # while the disk refuses writes, try again this often
REPEAT_LOG_SECONDS = 60.0  # a problem that persists is logged again this often, not at every attempt
REJECTED_FILE = "journal.rejected"
DAMAGED_FILE = "journal.damaged"
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_ESCAPED_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")  # `\u0000` itself, not an escaped backslash before `u0000`


class StateUnavailable(RunError, OSError):
    """The journal cannot write to the disk (full, read-only, failing): no durable work until it can."""


class StaleVersion(RunError):
    """A registry version was not committed: another node committed that number first (`latest` is the newest)."""

    def __init__(self, message: str, latest: int) -> None:
        super().__init__(message)
        self.latest = latest


class LeaseLost(RunError):
    """Another node has taken these tasks over (this node's leases lapsed): it may no longer record anything for them.

    `holders` names the node that holds each task now.
    """

    def __init__(self, message: str, holders: dict[str, str]) -> None:
        super().__init__(message)
        self.holders = holders


class JournalDamaged(UsageError):
    """`journal.log` is damaged before intact lines: the node does not start on it until a person decides."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    json_columns: frozenset[str] = frozenset()
    time_columns: frozenset[str] = frozenset()
    conflict: str = ""
    """What a row does whose key (its first column) is stored already: an `ON CONFLICT` clause both SQL stores
    run. Empty: rows are only ever appended."""
    of_task: bool = True
    """Whether its rows are a task's (fenced by the task's lease in a shared store)."""

    def insert_sql(self) -> str:
        values = ", ".join(f"unnest(?){'::JSON' if c in self.json_columns else ''}" for c in self.columns)
        return f"INSERT INTO {self.name} ({', '.join(self.columns)}) SELECT {values} {self.conflict}".rstrip()

    def batches(self, rows: list[Row]) -> list[list[Row]]:
        """`rows` in batches a statement can take: one, unless the table merges rows by key; then each key at
        most once per batch, in order (a statement that meets a key twice merges its rows in no set order, or is
        refused: Postgres refuses to update a row twice in one statement)."""
        if not self.conflict:
            return [rows]
        batches: list[list[Row]] = []
        seen: list[set[Any]] = []
        for row in rows:
            index = next((i for i, keys in enumerate(seen) if row[0] not in keys), len(seen))
            if index == len(seen):
                batches.append([])
                seen.append(set())
            batches[index].append(row)
            seen[index].add(row[0])
        return batches

    def task_of(self, row: Row) -> str:
        """The task a row belongs to (every journal table starts with the task's id), as printable text."""
        return clean_text(str(row[0]))


def _table(name: str, record: type[NamedTuple], json: set[str], time: set[str]) -> Table:
    return Table(name, tuple(record._fields), frozenset(json), frozenset(time))


TABLE_OF: dict[type[JournalRow], Table] = {
    TaskRow: _table("tasks", TaskRow, {"args"}, {"created"}),
    TaskEvent: _table("task_events", TaskEvent, {"detail"}, {"time"}),
    StepRecord: _table("task_steps", StepRecord, {"result"}, {"started"}),
    SignalRecord: _table("task_signals", SignalRecord, {"payload"}, {"time"}),
    ConversationInfo: Table("conversations", ("id", "agent", "created", "last_active", "turns", "first"), frozenset(),
                            frozenset({"created", "last_active"}),
                            conflict="ON CONFLICT (id) DO UPDATE SET "
                                     "last_active = greatest(conversations.last_active, excluded.last_active), "
                                     "turns = greatest(conversations.turns, excluded.turns), "
                                     "first = coalesce(conversations.first, excluded.first)", of_task=False),
    ConversationStart: Table("conversation_starts", ConversationStart._fields, frozenset(), frozenset({"time"}),
                             of_task=False),
    ConversationMessage: Table("conversation_messages", ConversationMessage._fields, frozenset(), frozenset({"time"}),
                               of_task=False),
    ModelCall: Table("model_calls", ModelCall._fields, frozenset(), frozenset({"time"}),
                     conflict="ON CONFLICT (task, step) DO NOTHING"),
}
"""The journal's tables, by the record each row is: a log line names the table, then the record's fields."""
TABLES = {table.name: table for table in TABLE_OF.values()}

Row = tuple[Any, ...]
_Item = tuple[list[tuple[Table, Row]], "asyncio.Future[None] | None"]


# -- reading the log ------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """One intact line of the log."""

    offset: int
    end: int
    number: int
    rows: list[tuple[Table, Row]]


@dataclass(frozen=True)
class Damage:
    """Bytes of the log that are not an intact line: where, how long, why, and whether intact lines follow."""

    offset: int
    end: int
    reason: str
    in_middle: bool

    def describe(self, path: Path) -> str:
        return f"{path} is damaged at byte {self.offset} ({self.end - self.offset} bytes): {self.reason}"


@dataclass
class LogScan:
    """What a log file holds: its intact groups and its damaged stretches, in file order."""

    groups: list[Group] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    size: int = 0

    @property
    def intact_end(self) -> int:
        """Where the log's intact part ends: a damaged tail starts here."""
        tail = [d for d in self.damage if not d.in_middle]
        return tail[0].offset if tail else self.size


def scan_log(data: bytes, start: int = 0) -> LogScan:
    """Parse the log from byte `start` (a line boundary) into groups and damage."""
    scan = LogScan(size=len(data))
    offset = start
    pending: list[Damage] = []
    while offset < len(data):
        newline = data.find(b"\n", offset)
        end = len(data) if newline < 0 else newline + 1
        try:
            if newline < 0:
                raise ValueError("the last write was cut short (no end of line); it was never acknowledged")
            number, rows = _parse_line(data[offset:newline])
        except ValueError as error:
            if pending and pending[-1].end == offset:  # one stretch of damage, however many lines
                pending[-1] = Damage(pending[-1].offset, end, pending[-1].reason, False)
            else:
                pending.append(Damage(offset, end, str(error), False))
        else:
            scan.damage += [Damage(d.offset, d.end, d.reason, True) for d in pending]
            pending = []
            scan.groups.append(Group(offset, end, number, rows))
        offset = end
    scan.damage += pending
    return scan


def _parse_line(line: bytes) -> tuple[int, list[tuple[Table, Row]]]:
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"not a journal line ({str(error)[:120]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("g"), int) or not isinstance(doc.get("rows"), list):
        raise ValueError('not a journal line (expected {"g": <group number>, "rows": [...]})')
    rows = []
    for item in doc["rows"]:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], list)):
            raise ValueError("a row is not [table, values]")
        name, values = item
        table = TABLES.get(name) if isinstance(name, str) else None
        if table is None:
            raise ValueError(f"a row names an unknown table {name!r}")
        if len(values) != len(table.columns):
            raise ValueError(f"a {table.name} row has {len(values)} values, not {len(table.columns)}")
        rows.append((table, tuple(_decode(value, column in table.time_columns)
                                  for column, value in zip(table.columns, values, strict=True))))
    return doc["g"], rows


@dataclass(frozen=True)
class JournalReport:
    """`wippy state check`: what the log holds against what DuckDB already has."""

    path: str
    size: int
    groups: int
    copied_group: int
    to_copy: int
    damage: list[Damage]
    repaired: bool = False


def check_log(path: Path, copied_group: int, *, repair: bool = False) -> JournalReport:
    """Report the log's damage; with `repair`, keep every intact line and move the damaged bytes aside.

    The damaged bytes are appended to `journal.damaged` beside the log, each stretch
    headed by its offset and reason, so nothing is thrown away.
    """
    data = path.read_bytes() if path.exists() else b""
    scan = scan_log(data)
    report = JournalReport(str(path), len(data), len(scan.groups), copied_group,
                           sum(1 for g in scan.groups if g.number > copied_group), scan.damage)
    if repair and scan.damage:
        with _private_open(path.with_name(DAMAGED_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT) as aside:
            for stretch in scan.damage:
                header = json.dumps({"offset": stretch.offset, "reason": stretch.reason, "time": time.time()})
                os.write(aside, header.encode() + b"\n" + data[stretch.offset:stretch.end] + b"\n")
            os.fsync(aside)
        intact = b"".join(data[g.offset:g.end] for g in scan.groups)
        tmp = path.with_name(path.name + ".repair")
        with _private_open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) as out:
            os.write(out, intact)
            os.fsync(out)
        os.replace(tmp, path)
        report = JournalReport(report.path, len(intact), report.groups, copied_group, report.to_copy, scan.damage,
                               repaired=True)
    return report


def _owner_only(path: Path) -> None:
    """Take group and other access away from the file at `path`, if there is one and it has any."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
            os.chmod(path, 0o600)


class _private_open:
    """An fd opened 0600 (the state is its owner's alone), closed on leaving the block."""

    def __init__(self, path: Path, flags: int) -> None:
        self.fd = os.open(path, flags, 0o600)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.fd)


# -- the journal ------------------------------------------------------------------------------

_Queued = TypeVar("_Queued")


def take_group(first: _Queued, waiting: queue.SimpleQueue[_Queued | threading.Event | None],
               limit: int = MAX_GROUP) -> tuple[list[_Queued], list[threading.Event], bool]:
    """The group commit's group: `first` and every call queued behind it, up to `limit` or a flush or the end.

    Returns the calls, the flush events to set once they are written, and whether the end was queued.
    """
    group: list[_Queued] = [first]
    flushes: list[threading.Event] = []
    while len(group) < limit:
        try:
            item = waiting.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return group, flushes, True
        if isinstance(item, threading.Event):
            flushes.append(item)
            break
        group.append(item)
    return group, flushes, False



class Journal:
    """Append rows durably, in groups, from any coroutine on the node's loop.

    The `redactor`'s secrets (it may learn more of them later) are replaced in every row before it is written.
    The files in `private` are made 0600 again after each copy into DuckDB: DuckDB writes its WAL anew after
    each checkpoint, with the process's umask (their folder is 0700 meanwhile).
    """

    def __init__(self, db: duckdb.DuckDBPyConnection, log_path: Path | None = None, *,
                 redactor: Redactor | None = None, private: Sequence[Path] = ()) -> None:
        self._cursor = db.cursor()  # the writer thread's own handle on the same database
        self._redactor = redactor
        self._private = tuple(private)
        self._log_path = log_path
        self._fd = None if log_path is None else _open_log(log_path)
        self._on_recovered: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[Table, Row]] = []
        self._pending_since = 0.0
        self._queue: queue.SimpleQueue[_Item | threading.Event | None] = queue.SimpleQueue()
        self._problem: str | None = None
        self._copy_problem: tuple[str, float] | None = None
        self.commits = 0
        """How many groups have been made durable (for tests and benchmarks)."""
        self._group = 0  # the number of the last group made durable
        self._end = 0  # where the log's last good line ends
        try:
            self._replay()
        except BaseException:
            self._close_files()
            raise
        self._thread = threading.Thread(target=self._write_forever, name="wippy-journal", daemon=True)
        self._thread.start()

    @property
    def problem(self) -> str | None:
        """Why the state cannot be written right now (None while it can): new durable work is refused meanwhile.

        Either the log refuses writes, or its rows cannot be copied into DuckDB (so the tables that
        recovery reads would be behind what was acknowledged).
        """
        if self._problem is not None:
            return self._problem
        if self._copy_problem is not None:
            return f"the app's state file cannot be updated ({self._copy_problem[0]}); free disk space or fix the file"
        return None

    def on_writable(self, callback: Callable[[], None]) -> None:
        """Have `callback()` run on the loop of the latest `append` whenever a problem has gone away."""
        self._on_recovered = callback

    def append(self, rows: Sequence[JournalRow]) -> asyncio.Future[None]:
        """Queue rows for one group; the future resolves when they are durable (or fails with the write's error)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[None] = loop.create_future()
        item: list[tuple[Table, Row]] = [(TABLE_OF[type(row)], row) for row in rows]
        if self._fd is None:  # an in-memory state: nothing to make durable, so nothing to wait for
            future.set_result(None)
            self._queue.put((item, None))
        else:
            self._queue.put((item, future))
        return future

    def flush(self) -> None:
        """Block until every row appended so far is in the DuckDB tables (before reading them).

        Raises `StateUnavailable` when they could not be copied: reading the tables then would miss them.
        """
        done = threading.Event()
        self._queue.put(done)
        done.wait()
        if self._copy_problem is not None:
            raise StateUnavailable(str(self.problem))

    def close(self) -> None:
        """Write what is queued, copy everything into DuckDB, then stop the writer."""
        self._queue.put(None)
        self._thread.join()
        self._cursor.close()
        self._close_files()

    def _close_files(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- the writer thread --------------------------------------------------------------

    def _write_forever(self) -> None:
        while True:
            timeout = None
            if self._pending:
                timeout = max(0.0, self._pending_since + FLUSH_SECONDS - time.monotonic())
            if self._problem is not None:
                timeout = PROBE_SECONDS if timeout is None else min(timeout, PROBE_SECONDS)
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                if self._problem is not None:
                    self._probe()
                self._copy_pending()
                continue
            if first is None:
                self._copy_pending()
                return
            if isinstance(first, threading.Event):
                self._copy_pending()
                first.set()
                continue
            group, waiting, stop = take_group(first, self._queue)
            error = self._make_durable([pair for rows, _ in group for pair in rows])
            _settle([future for _, future in group if future is not None], error)
            if waiting or stop or len(self._pending) >= FLUSH_ROWS:
                self._copy_pending()
            for event in waiting:
                event.set()
            if stop:
                return

    def _make_durable(self, rows: list[tuple[Table, Row]]) -> BaseException | None:
        rows = redacted(rows, self._redactor)
        try:
            line = self._line(rows)
        except UnicodeEncodeError:
            rows = _valid_text(rows)
            line = self._line(rows)
        except Exception as error:  # every caller in the group learns it
            log.error("journal write of %d row(s) failed: %s", len(rows), error)
            return error
        if self._fd is not None:
            refused = self._write_line(line)
            if refused is not None:
                return refused
        self._group += 1
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending += rows
        self.commits += 1
        return None

    def _line(self, rows: list[tuple[Table, Row]]) -> bytes:
        """The log line of the next group (UTF-8: `UnicodeEncodeError` if a row holds invalid text)."""
        doc = {"g": self._group + 1, "rows": [[table.name, [_encode(v) for v in row]] for table, row in rows]}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    def _write_line(self, line: bytes) -> StateUnavailable | None:
        """Append and sync one line; on failure take it back, so the log never holds half a line before a whole one."""
        assert self._fd is not None and self._log_path is not None
        try:
            if os.fstat(self._fd).st_size != self._end:  # an earlier failed write left bytes behind
                os.ftruncate(self._fd, self._end)
            data = line + b"\n"
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fdatasync(self._fd)
        except OSError as error:
            try:
                os.ftruncate(self._fd, self._end)
            except OSError:
                pass  # the next write tries again first
            return self._refused(error)
        self._end += len(data)
        if self._problem is not None:
            log.warning("the journal %s can be written again", self._log_path)
            self._problem = None
            self._cleared()
        return None

    def _cleared(self) -> None:
        """A problem went away: once none is left, durable work goes on (the task manager resumes what paused)."""
        if self.problem is not None:
            return
        log.warning("the app's state can be written again; durable work goes on")
        if self._on_recovered is not None and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_recovered)
            except RuntimeError:
                pass  # the loop has closed

    def _refused(self, error: OSError) -> StateUnavailable:
        message = (f"the app's state cannot be written: {self._log_path}: {error.strerror or error} "
                   "(free disk space or make the folder writable; new durable work is refused until then, "
                   "and nothing already acknowledged is lost)")
        if self._problem is None:
            log.error("%s", message)
        self._problem = message
        refused = StateUnavailable(message)
        refused.errno = error.errno
        return refused

    def _probe(self) -> None:
        """While writes are refused: try an empty group, so recovery is noticed without new work arriving."""
        if self._fd is None:
            return
        line = json.dumps({"g": self._group + 1, "rows": []}, separators=(",", ":")).encode()
        if self._write_line(line) is None:
            self._group += 1

    def _copy_pending(self) -> None:
        """Copy the rows made durable in the log into DuckDB, with the log position, in one transaction."""
        if not self._pending:
            return
        position = None if self._fd is None else self._end
        try:
            self._insert(self._pending, position, self._group)
        except ENVIRONMENT as error:
            # The environment (disk, file): the rows are safe in the log; the next copy or start retries.
            self._copy_failed(error)
            return
        except duckdb.Error:
            # One of the rows: copy them one by one, setting aside those DuckDB refuses.
            if not self._insert_one_by_one(position):
                return
        self._pending = []
        for path in self._private:
            _owner_only(path)
        if self._copy_problem is not None:
            log.warning("the journal's rows reach the state file again")
            self._copy_problem = None
            self._cleared()
        if self._fd is not None and position is not None and position >= TRUNCATE_BYTES:
            os.ftruncate(self._fd, 0)
            self._end = 0
            self._cursor.execute("UPDATE journal_position SET position = 0")

    def _copy_failed(self, error: BaseException) -> None:
        text = str(error)
        now = time.monotonic()
        if self._copy_problem is None or self._copy_problem[0] != text or now - self._copy_problem[1] > REPEAT_LOG_SECONDS:
            log.error("copying %d journal row(s) into the state file failed (they are safe in the journal; "
                      "retrying): %s", len(self._pending), text)
            self._copy_problem = (text, now)
        self._pending_since = now  # try again after FLUSH_SECONDS, not in a tight loop

    def _insert_one_by_one(self, position: int | None) -> bool:
        """Copy the pending rows one at a time; False (the rest still pending) if the environment fails."""
        for index, (table, row) in enumerate(self._pending):
            try:
                try:
                    self._insert([(table, row)])
                except ENVIRONMENT:
                    raise
                except duckdb.Error as error:
                    self._reject(table, row, error)  # OSError if even that cannot be written: kept pending
            except ENVIRONMENT as error:
                self._copy_failed(error)
                self._pending = self._pending[index:]
                return False
        self._cursor.execute("UPDATE journal_position SET position = ?, copied_group = ?",
                             [position or 0, self._group])
        return True

    def _reject(self, table: Table, row: Row, error: BaseException) -> None:
        """Set aside a row DuckDB refuses, so it cannot block every later copy (and every later boot)."""
        task = table.task_of(row)
        where = "(in memory)" if self._log_path is None else str(self._log_path.with_name(REJECTED_FILE))
        log.error("task %s: a %s row could not be stored (%s); it was set aside in %s, and the task may repeat "
                  "that step", task, table.name, error, where)
        if self._log_path is None:
            return
        record = json.dumps({"time": time.time(), "table": table.name, "task": task, "error": str(error),
                             "row": [_encode(value) for value in row]}, default=str)
        with _private_open(self._log_path.with_name(REJECTED_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fd:
            os.write(fd, record.encode("utf-8", "replace") + b"\n")

    def _insert(self, rows: list[tuple[Table, Row]], position: int | None = None, group: int | None = None) -> None:
        by_table: dict[str, tuple[Table, list[Row]]] = {}
        for table, row in rows:
            by_table.setdefault(table.name, (table, []))[1].append(row)
        batches = [(table, batch) for table, table_rows in by_table.values() for batch in table.batches(table_rows)]
        bookkeeping = group is not None
        statements = len(batches) + bookkeeping
        cursor = self._cursor
        if statements > 1:  # one statement commits by itself; several need a transaction
            cursor.execute("BEGIN")
        try:
            for table, batch in batches:
                cursor.execute(table.insert_sql(), [list(column) for column in zip(*batch, strict=True)])
            if bookkeeping:
                cursor.execute("UPDATE journal_position SET position = ?, copied_group = ?", [position or 0, group])
            if statements > 1:
                cursor.execute("COMMIT")
        except BaseException:
            if statements > 1:
                with contextlib.suppress(duckdb.Error):  # a failed COMMIT has ended the transaction already
                    cursor.execute("ROLLBACK")
            raise

    def _replay(self) -> None:
        """Copy into DuckDB the groups of the log it does not hold yet (at startup, before any reads)."""
        row = self._cursor.execute("SELECT position, copied_group FROM journal_position").fetchone()
        position, copied = (int(row[0]), int(row[1])) if row else (0, 0)
        self._group = copied
        if self._fd is None or self._log_path is None:
            return
        data = self._log_path.read_bytes()  # a regular file: `_open_log` checked
        # The recorded position is a hint: start there when it is a line boundary inside the file; anything else
        # (a log started afresh, truncated or edited) is read from the top, and the group numbers skip what is in.
        start = position if 0 < position <= len(data) and data[position - 1:position] == b"\n" else 0
        scan = scan_log(data, start)
        if start and scan.groups and scan.groups[0].number <= copied:
            start, scan = 0, scan_log(data)
        middle = [d for d in scan.damage if d.in_middle]
        fresh = [g for g in scan.groups if g.number > copied]
        if middle and any(g.offset > middle[0].offset for g in fresh):
            raise JournalDamaged(
                f"{middle[0].describe(self._log_path)}, and {len(fresh)} intact group(s) not yet in the state file "
                f"follow it. Nothing was changed. Run `wippy state check` to see the damage, or `wippy state check "
                f"--repair` to keep every intact line (the damaged bytes are moved to {DAMAGED_FILE})")
        for stretch in middle:  # only groups already in DuckDB follow it: nothing of it is missing
            log.warning("%s; every group after it is already in the state file, so nothing is missing",
                        stretch.describe(self._log_path))
        tail = [d for d in scan.damage if not d.in_middle]
        if tail:
            log.warning("%s; dropping it (a torn last write was never acknowledged)", tail[0].describe(self._log_path))
            os.ftruncate(self._fd, tail[0].offset)
        self._end = scan.intact_end
        numbers = [g.number for g in fresh]
        expected = list(range(copied + 1, copied + 1 + len(numbers)))
        if numbers and numbers != expected:
            log.warning("the journal %s is missing group(s) between %d and %d (lost or set aside by a repair); "
                        "copying the %d intact group(s) it has", self._log_path, copied, numbers[-1], len(numbers))
        rows = [item for g in fresh for item in _valid_text(_repaired(g.rows))]
        last = max([copied, *(g.number for g in scan.groups)])
        if rows:
            log.info("copying %d journal row(s) from %s into the state file", len(rows), self._log_path)
            self._pending = rows
            try:
                self._insert(rows, self._end, last)
            except duckdb.Error:
                self._group = last
                if not self._insert_one_by_one(self._end):
                    raise
            self._pending = []
        elif last != copied or self._end != position:
            self._cursor.execute("UPDATE journal_position SET position = ?, copied_group = ?", [self._end, last])
        self._group = last


def _open_log(path: Path) -> int:
    """The log, opened for appending (made 0600); `OSError` naming it unless it is a regular file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a device, such as /dev/full, would read and write for ever
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file, so it cannot hold the journal", str(path))
    return fd


def redacted(rows: list[tuple[Table, Row]], redactor: Redactor | None) -> list[tuple[Table, Row]]:
    """Rows with the redactor's secrets replaced in every text value: secrets never enter the state."""
    if redactor is None:
        return rows
    return [(table, tuple(redactor.redact(v) if isinstance(v, str) else v for v in row)) for table, row in rows]


def _valid_text(rows: list[tuple[Table, Row]], *, nul_free: bool = False) -> list[tuple[Table, Row]]:
    """Rows with lone surrogates repaired to U+FFFD (a warning names each task); clean rows pass as they are.

    `nul_free`, for a store whose text cannot hold NUL (Postgres): NUL characters, and in
    JSON columns their `\\u0000` escapes (which its JSON operators decode), become U+FFFD too.
    """
    out = []
    for table, row in rows:
        if not any(_needs_repair(v, c in table.json_columns, nul_free) for c, v in zip(table.columns, row, strict=True)):
            out.append((table, row))
            continue
        what = "NUL, which the state cannot store" if all(not isinstance(v, str) or is_clean(v) for v in row) \
            else "lone UTF-16 surrogates"
        log.warning("task %s: a %s row held invalid text (%s); stored with U+FFFD in their place", table.task_of(row),
                    table.name, what)
        out.append((table, tuple(_repaired_text(v, c in table.json_columns, nul_free)
                                 for c, v in zip(table.columns, row, strict=True))))
    return out


def _needs_repair(value: Any, is_json: bool, nul_free: bool) -> bool:
    if not isinstance(value, str):
        return False
    if not is_clean(value):
        return True
    return nul_free and ("\x00" in value or (is_json and _ESCAPED_NUL.search(value) is not None))


def _repaired_text(value: Any, is_json: bool, nul_free: bool) -> Any:
    if not isinstance(value, str):
        return value
    value = clean_text(value)
    if nul_free:
        value = value.replace("\x00", "\ufffd")
        if is_json:
            value = _ESCAPED_NUL.sub(r"\1\\ufffd", value)
    return value


def _repaired(rows: list[tuple[Table, Row]]) -> list[tuple[Table, Row]]:
    """Rows read back from the log, with JSON text that escapes lone surrogates re-encoded as valid text.

    Journals written before text was checked at every boundary can hold `"\\ud800"` in a JSON column,
    which DuckDB refuses; the value is decoded, repaired and encoded again.
    """
    out = []
    for table, row in rows:
        if table.json_columns and any(isinstance(v, str) and _ESCAPED_SURROGATE.search(v) for v in row):
            row = tuple(_reencoded(v) if c in table.json_columns and isinstance(v, str) else v
                        for c, v in zip(table.columns, row, strict=True))
        out.append((table, row))
    return out


def _reencoded(text: str) -> str:
    if not _ESCAPED_SURROGATE.search(text):
        return text
    try:
        return json.dumps(clean_data(json.loads(text)), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        return text


def _encode(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _decode(value: Any, is_time: bool) -> Any:
    return datetime.fromisoformat(value) if is_time and isinstance(value, str) else value


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    loops: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for future in futures:
        loops.setdefault(future.get_loop(), []).append(future)
    for loop, waiting in loops.items():
        try:
            loop.call_soon_threadsafe(_resolve, waiting, error)
        except RuntimeError:
            pass  # that loop has closed: nobody is waiting any more


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
