"""The journal's one writer: a thread that owns the writes and commits many rows at once.

DuckDB commits cost a millisecond or so each (an fsync plus statement overhead),
so steps from many tasks share commits: a caller's `await journal.append(...)`
returns once the group holding its row is durable. Each group is one
transaction with one `INSERT ... SELECT unnest(...)` per table (a group for one
table is a single statement, which commits by itself: each statement costs).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

log = logging.getLogger("wippy_agents.durable")

MAX_GROUP = 4096


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    json_columns: frozenset[str] = frozenset()

    def insert_sql(self) -> str:
        values = ", ".join(f"unnest(?){'::JSON' if c in self.json_columns else ''}" for c in self.columns)
        return f"INSERT INTO {self.name} ({', '.join(self.columns)}) SELECT {values}"


class Journal:
    """Append rows durably, in groups, from any coroutine on the node's loop."""

    def __init__(self, db: duckdb.DuckDBPyConnection, tables: Sequence[Table]) -> None:
        self._cursor = db.cursor()  # the writer thread's own handle on the same database
        self._tables = {table.name: table for table in tables}
        self._queue: queue.SimpleQueue[tuple[Table, tuple[Any, ...], asyncio.Future[None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_forever, name="wippy-journal", daemon=True)
        self._thread.start()
        self.commits = 0
        """How many groups have been committed (for tests and benchmarks)."""

    def append(self, table: str, row: tuple[Any, ...]) -> asyncio.Future[None]:
        """Queue one row; the future resolves when it is durable (or fails with the commit's error)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put((self._tables[table], row, future))
        return future

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        self._queue.put(None)
        self._thread.join()
        self._cursor.close()

    def _write_forever(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                group.append(item)
            error = self._commit(group)
            self._settle([future for _, _, future in group], error)

    def _commit(self, group: list[tuple[Table, tuple[Any, ...], asyncio.Future[None]]]) -> BaseException | None:
        by_table: dict[str, tuple[Table, list[tuple[Any, ...]]]] = {}
        for table, row, _ in group:
            by_table.setdefault(table.name, (table, []))[1].append(row)
        try:
            several = len(by_table) > 1  # one statement commits by itself; several need a transaction
            if several:
                self._cursor.execute("BEGIN")
            for table, rows in by_table.values():
                self._cursor.execute(table.insert_sql(), [list(column) for column in zip(*rows, strict=True)])
            if several:
                self._cursor.execute("COMMIT")
            self.commits += 1
            return None
        except Exception as error:  # every caller in the group learns it; nothing of the group was written
            log.error("journal commit of %d row(s) failed: %s", len(group), error)
            try:
                self._cursor.execute("ROLLBACK")
            except duckdb.Error:
                pass
            return error

    @staticmethod
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
