"""The journal's one writer: a thread that makes rows durable in groups and keeps DuckDB up to date.

A DuckDB statement costs about a millisecond here even in memory, while an
append to a file plus `fdatasync` costs a fraction of that. So a group of rows
becomes durable as one line appended to `journal.log` (one sync for the whole
group: many tasks' steps share it), the callers' futures resolve, and the rows
are copied into the DuckDB tables in batches a little later, together with how
far into the log the tables go. At startup the log past that point is copied in
first, so nothing that was acknowledged is lost; a torn last line, written by a
process killed mid-write, was never acknowledged and is dropped. Readers of the
journal tables call `flush()` first. Without a log file (an in-memory state) the
rows only go to DuckDB.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

log = logging.getLogger("wippy_agents.durable")

MAX_GROUP = 4096
FLUSH_ROWS = 2000  # copy into DuckDB once this many rows wait ...
FLUSH_SECONDS = 0.2  # ... or this long after the first of them
TRUNCATE_BYTES = 16 << 20  # start the log afresh once everything in it is in DuckDB and it is this big


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    json_columns: frozenset[str] = frozenset()
    time_columns: frozenset[str] = frozenset()

    def insert_sql(self) -> str:
        values = ", ".join(f"unnest(?){'::JSON' if c in self.json_columns else ''}" for c in self.columns)
        return f"INSERT INTO {self.name} ({', '.join(self.columns)}) SELECT {values}"


Row = tuple[Any, ...]
_Item = tuple[Table, Row, "asyncio.Future[None] | None"]


class Journal:
    """Append rows durably, in groups, from any coroutine on the node's loop."""

    def __init__(self, db: duckdb.DuckDBPyConnection, tables: Sequence[Table], log_path: Path | None = None) -> None:
        self._cursor = db.cursor()  # the writer thread's own handle on the same database
        self._tables = {table.name: table for table in tables}
        self._log_path = log_path
        self._log = None if log_path is None else open(log_path, "ab")  # noqa: SIM115 (kept open for appends)
        self._pending: list[tuple[Table, Row]] = []
        self._pending_since = 0.0
        self._queue: queue.SimpleQueue[_Item | threading.Event | None] = queue.SimpleQueue()
        self.commits = 0
        """How many groups have been made durable (for tests and benchmarks)."""
        self._replay()
        self._thread = threading.Thread(target=self._write_forever, name="wippy-journal", daemon=True)
        self._thread.start()

    def append(self, table: str, row: Row) -> asyncio.Future[None]:
        """Queue one row; the future resolves when it is durable (or fails with the write's error)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._log is None:  # an in-memory state: nothing to make durable, so nothing to wait for
            future.set_result(None)
            self._queue.put((self._tables[table], row, None))
        else:
            self._queue.put((self._tables[table], row, future))
        return future

    def flush(self) -> None:
        """Block until every row appended so far is in the DuckDB tables (before reading them)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait()

    def close(self) -> None:
        """Write what is queued, copy everything into DuckDB, then stop the writer."""
        self._queue.put(None)
        self._thread.join()
        self._cursor.close()
        if self._log is not None:
            self._log.close()

    # -- the writer thread --------------------------------------------------------------

    def _write_forever(self) -> None:
        while True:
            timeout = None if not self._pending else max(0.0, self._pending_since + FLUSH_SECONDS - time.monotonic())
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._copy_pending()
                continue
            if first is None:
                self._copy_pending()
                return
            if isinstance(first, threading.Event):
                self._copy_pending()
                first.set()
                continue
            group: list[_Item] = [first]
            waiting: list[threading.Event] = []
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if isinstance(item, threading.Event):
                    waiting.append(item)
                    break
                group.append(item)
            error = self._make_durable(group)
            _settle([future for _, _, future in group if future is not None], error)
            if waiting or stop or len(self._pending) >= FLUSH_ROWS:
                self._copy_pending()
            for event in waiting:
                event.set()
            if stop:
                return

    def _make_durable(self, group: list[_Item]) -> BaseException | None:
        rows = [(table, row) for table, row, _ in group]
        try:
            if self._log is not None:  # without a log (an in-memory state) there is nothing to make durable
                line = json.dumps([[table.name, [_encode(value) for value in row]] for table, row in rows])
                self._log.write(line.encode() + b"\n")
                self._log.flush()
                os.fdatasync(self._log.fileno())
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending += rows
            self.commits += 1
            return None
        except Exception as error:  # every caller in the group learns it
            log.error("journal write of %d row(s) failed: %s", len(group), error)
            return error

    def _copy_pending(self) -> None:
        """Copy the rows made durable in the log into DuckDB, with the log position, in one transaction."""
        if not self._pending:
            return
        position = None if self._log is None else self._log.tell()
        try:
            self._insert(self._pending, position)
        except Exception as error:  # they are safe in the log; the next copy (or the next start) retries
            log.error("copying %d journal row(s) into the state file failed: %s", len(self._pending), error)
            self._pending_since = time.monotonic()  # try again after FLUSH_SECONDS, not in a tight loop
            return
        self._pending = []
        if self._log is not None and position is not None and position >= TRUNCATE_BYTES:
            self._log.truncate(0)
            self._log.seek(0)
            self._cursor.execute("UPDATE journal_position SET position = 0")

    def _insert(self, rows: list[tuple[Table, Row]], position: int | None = None) -> None:
        by_table: dict[str, tuple[Table, list[Row]]] = {}
        for table, row in rows:
            by_table.setdefault(table.name, (table, []))[1].append(row)
        statements = len(by_table) + (position is not None)
        cursor = self._cursor
        if statements > 1:  # one statement commits by itself; several need a transaction
            cursor.execute("BEGIN")
        try:
            for table, table_rows in by_table.values():
                cursor.execute(table.insert_sql(), [list(column) for column in zip(*table_rows, strict=True)])
            if position is not None:
                cursor.execute("UPDATE journal_position SET position = ?", [position])
            if statements > 1:
                cursor.execute("COMMIT")
        except BaseException:
            if statements > 1:
                cursor.execute("ROLLBACK")
            raise

    def _replay(self) -> None:
        """Copy into DuckDB what the log holds past the recorded position (at startup, before any reads)."""
        if self._log is None or self._log_path is None:
            return
        row = self._cursor.execute("SELECT position FROM journal_position").fetchone()
        position = int(row[0]) if row else 0
        data = self._log_path.read_bytes()
        if position > len(data):  # the log was started afresh after everything in it was copied
            position = 0
        rows: list[tuple[Table, Row]] = []
        end = position
        for line in data[position:].split(b"\n")[:-1]:  # a last piece without a newline is a torn write
            end += len(line) + 1
            for name, values in json.loads(line):
                table = self._tables[name]
                rows.append((table, tuple(_decode(value, column in table.time_columns)
                                          for column, value in zip(table.columns, values, strict=True))))
        if end != len(data):
            log.warning("the journal ends with a partial write (%d bytes) that was never acknowledged; dropping it",
                        len(data) - end)
            self._log.truncate(end)
            self._log.seek(end)
        if rows:
            log.info("copying %d journal row(s) from %s into the state file", len(rows), self._log_path)
            self._insert(rows, end)
        elif end != position:
            self._cursor.execute("UPDATE journal_position SET position = ?", [end])


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
