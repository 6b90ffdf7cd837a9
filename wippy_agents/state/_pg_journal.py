"""Durable tasks in a Postgres database shared by many nodes: one writer per node, fenced leases.

The durability and ownership contract:

- `append` hands rows to the node's one writer thread, which takes the rows of every
  caller waiting at that moment and commits them in one transaction (a group commit:
  concurrent tasks share a commit). A caller's future resolves once its rows are
  committed; each call's rows commit together or not at all.
- Each task is owned through a lease (node, epoch, expiry) in `task_leases`. The node
  that appends a task's `TaskRow` holds its first lease; `claim` takes over a task
  whose lease has lapsed (or that the claiming node holds), with a greater epoch. The
  writer renews its node's leases every `lease_seconds / 3`.
- Fencing: in the same transaction as the rows, the writer reads the leases of the
  group's tasks (`FOR SHARE`, so a claim waits for the commit) and refuses the rows of
  any task this node does not hold at the epoch it was granted: their callers get
  `LeaseLost` and nothing of theirs is written. A node that was cut off and comes back
  after another node took its tasks over cannot record a second result.
- A finished task's lease is released in the transaction that records its end.
- When the database cannot be reached, the group's callers get `StateUnavailable`,
  `problem` says why, new durable work is refused, and the writer tries again with
  backoff; once a commit succeeds, `on_writable`'s callback runs. Nothing committed
  is lost, and nothing uncommitted was acknowledged.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from .._runtime.secrets import Redactor
from ._journal import (
    TABLE_OF,
    JournalReport,
    LeaseLost,
    Row,
    StateUnavailable,
    Table,
    _settle,
    _valid_text,
    redacted,
    take_group,
)
from ._location import shown_url
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

log = logging.getLogger("wippy_agents.state")
T = TypeVar("T")

RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)  # backoff while the database cannot be reached; the last repeats
REPEAT_LOG_SECONDS = 60.0


_Call = tuple[list[tuple[Table, Row]], "asyncio.Future[None]"]


_LATEST = f"""
SELECT DISTINCT ON (task) task, status, detail FROM task_events
WHERE status NOT IN ({sql_list(list(Note))}) ORDER BY task, time DESC, n DESC"""

_TASKS = f"""
SELECT t.id, t.workflow, t.args,
       coalesce((SELECT (u.detail::jsonb->>'registry_version')::bigint FROM task_events u
                 WHERE u.task = t.id AND u.status = '{Note.UPGRADED}' ORDER BY u.time DESC, u.n DESC LIMIT 1),
                t.registry_version),
       t.created, e.status, e.detail,
       EXISTS (SELECT 1 FROM task_events c WHERE c.task = t.id AND c.status = '{Note.CANCEL_REQUESTED}'),
       l.node
FROM tasks t LEFT JOIN ({_LATEST}) e ON e.task = t.id LEFT JOIN task_leases l ON l.task = t.id
{{where}}
ORDER BY t.created, t.n"""
_ALL_TASKS = _TASKS.format(where="")
_UNFINISHED_TASKS = _TASKS.format(where=f"WHERE coalesce(e.status, '{TaskStatus.RUNNING}') NOT IN ({sql_list(TERMINAL)})")

_STALLS = f"""
SELECT e.task, count(*) FROM task_events e WHERE e.task = ANY(%s) AND e.status = '{TaskStatus.RECOVERING}'
AND e.time > greatest(
    coalesce((SELECT max(started) FROM task_steps s WHERE s.task = e.task), '-infinity'::timestamptz),
    coalesce((SELECT max(time) FROM task_events r WHERE r.task = e.task AND r.status = '{Note.RESUMED}'),
             '-infinity'::timestamptz))
GROUP BY e.task"""

_UNFINISHED_STARTS = f"""
SELECT e.task, (e.detail::jsonb->>'seq')::int AS seq, min(e.detail::jsonb->>'name'), count(*)
FROM task_events e WHERE e.task = ANY(%s) AND e.status = '{Note.STEP_STARTED}'
AND e.time > coalesce((SELECT max(time) FROM task_events r WHERE r.task = e.task
                       AND r.status = '{Note.RESUMED}'), '-infinity'::timestamptz)
AND NOT EXISTS (SELECT 1 FROM task_steps s WHERE s.task = e.task AND s.seq = (e.detail::jsonb->>'seq')::int)
GROUP BY e.task, seq ORDER BY e.task, seq"""

_STEPS = """
SELECT task, seq, name, ok, result, error, started, seconds FROM task_steps
WHERE task = ANY(%s) ORDER BY task, seq, n"""

_SIGNALS = "SELECT task, id, name, payload, time FROM task_signals WHERE task = ANY(%s) ORDER BY time, n"

_PRUNABLE = f"""
SELECT t.id FROM tasks t
JOIN (SELECT task, max(time) AS last FROM task_events GROUP BY task) a ON a.task = t.id
JOIN ({_LATEST}) e ON e.task = t.id
WHERE a.last < %s AND e.status IN ({sql_list(FINISHED)})
AND NOT (t.workflow = ANY(%s)) AND NOT (t.id = ANY(%s))
ORDER BY t.created, t.n"""

_CLAIM = """
INSERT INTO task_leases AS l (task, node, epoch, expires)
SELECT task, %(node)s, 1, now() + make_interval(secs => %(seconds)s) FROM unnest(%(tasks)s::text[]) AS task
ON CONFLICT (task) DO UPDATE SET node = excluded.node, epoch = l.epoch + 1, expires = excluded.expires
WHERE l.expires < now() OR l.node = excluded.node
RETURNING task, epoch"""


class PostgresJournal:
    """The `JournalStore` of a Postgres state: this node's writer thread, reads through the pool."""

    shared = True
    """Every node of a cluster writes here: another node's tasks change without this one seeing it."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], url: str, *, node: str,
                 lease_seconds: float, renew_seconds: float | None = None,
                 redactor: Redactor | None = None) -> None:
        self._pool = pool
        self._url = url
        self._shown_url = shown_url(url)
        self.node = node
        self.lease_seconds = lease_seconds
        self._renew_seconds = lease_seconds / 3 if renew_seconds is None else renew_seconds
        self._redactor = redactor
        self._held: dict[str, int] = {}  # task -> the epoch of this node's lease on it
        self._held_lock = threading.Lock()
        self._renewed = time.monotonic()
        self._queue: queue.SimpleQueue[_Call | threading.Event | None] = queue.SimpleQueue()
        self._problem: str | None = None
        self._problem_logged = 0.0
        self._on_writable: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._write_forever, name="wippy-journal", daemon=True)
        self._thread.start()

    @property
    def problem(self) -> str | None:
        return self._problem

    def on_writable(self, callback: Callable[[], None]) -> None:
        self._on_writable = callback

    def append(self, rows: Sequence[JournalRow]) -> asyncio.Future[None]:
        self._loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put(([(TABLE_OF[type(row)], _plain(row)) for row in rows], future))
        return future

    def flush(self) -> None:
        """Block until every row appended so far is committed (or refused), before reading."""
        done = threading.Event()
        self._queue.put(done)
        done.wait()

    # -- reads --------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        self.flush()
        return self.run(sql, params)

    def run(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """One statement on the pool (the other stores' too): while the database is known to be down it fails at
        once rather than hold the loop on a connect, and a statement that finds it down makes it known, until the
        writer reconnects."""
        if self._problem is not None:
            raise StateUnavailable(self._problem)
        return run(self._pool, sql, params, self._lost)

    def tasks(self, *, unfinished: bool = False) -> list[TaskSummary]:
        rows = self._query(_UNFINISHED_TASKS if unfinished else _ALL_TASKS)
        return [TaskSummary(id, workflow, args, int(version), created, TaskStatus(status or TaskStatus.RUNNING),
                            detail, bool(cancelled), node)
                for id, workflow, args, version, created, status, detail, cancelled, node in rows]

    def steps(self, task: str) -> list[StepRecord]:
        return [StepRecord(*row) for row in self._query(_STEPS, [[task]])]

    def recovery(self, tasks: Sequence[str]) -> dict[str, Recovery]:
        ids = list(tasks)
        stalls = {task: int(count) for task, count in self._query(_STALLS, [ids])}
        starts: dict[str, list[StartedStep]] = {task: [] for task in ids}
        for task, seq, name, times in self._query(_UNFINISHED_STARTS, [ids]):
            starts[task].append(StartedStep(seq, name, int(times)))
        steps: dict[str, list[StepRecord]] = {task: [] for task in ids}
        for row in self._query(_STEPS, [ids]):
            steps[row[0]].append(StepRecord(*row))
        signals: dict[str, list[SignalRecord]] = {task: [] for task in ids}
        for row in self._query(_SIGNALS, [ids]):
            signals[row[0]].append(SignalRecord(*row))
        return {task: Recovery(steps[task], signals[task], stalls.get(task, 0), starts[task]) for task in ids}

    def claim(self, tasks: Sequence[str], node: str) -> list[Lease]:
        """Take over each of `tasks` whose lease has lapsed or is `node`'s already; the leases granted."""
        granted: dict[str, int] = dict(self._query(_CLAIM, {"node": node, "seconds": self.lease_seconds,
                                                            "tasks": list(tasks)}))
        if node == self.node:
            with self._held_lock:
                self._held.update(granted)
        return [Lease(task, node, int(granted[task])) for task in tasks if task in granted]

    def prune(self, finished_before: datetime, *, keep_workflows: Collection[str] = (),
              keep_tasks: Collection[str] = ()) -> list[str]:
        doomed = [task for (task,) in self._query(_PRUNABLE, [finished_before, list(keep_workflows),
                                                             list(keep_tasks)])]
        self.delete(doomed)
        return doomed

    def delete(self, tasks: Sequence[str]) -> None:
        if tasks:
            with self._pool.connection() as conn, conn.transaction():
                for table, column in (("task_steps", "task"), ("task_signals", "task"), ("task_events", "task"),
                                      ("task_leases", "task"), ("tasks", "id")):
                    conn.execute(f"DELETE FROM {table} WHERE {column} = ANY(%s)", [list(tasks)])

    def check(self) -> JournalReport:
        """Postgres keeps its own log: there is no journal file here to be damaged."""
        (count,) = self._query("SELECT count(*) FROM tasks")[0]
        return JournalReport(self._shown_url, 0, 0, int(count), 0, [])

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    # -- the writer thread ----------------------------------------------------------------

    def _write_forever(self) -> None:
        renew_at = time.monotonic() + self._renew_seconds
        failures = 0
        while True:
            wait = max(0.0, renew_at - time.monotonic())
            if self._problem is not None:
                wait = min(wait, RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
            try:
                first = self._queue.get(timeout=wait)
            except queue.Empty:
                if self._problem is not None and not self._try(self._reachable):
                    failures += 1
                    continue
                if time.monotonic() >= renew_at:
                    self._try(self._renew)
                    renew_at = time.monotonic() + self._renew_seconds
                failures = 0
                continue
            if first is None:
                self._disconnect()
                return
            if isinstance(first, threading.Event):
                first.set()
                continue
            calls, events, stop = take_group(first, self._queue)
            self._commit_group(calls)
            for event in events:
                event.set()
            if stop:
                self._disconnect()
                return

    def _commit_group(self, calls: list[_Call]) -> None:
        """Commit the group in one transaction; a call the database refuses (a data error) fails alone."""
        if self._problem is not None:  # the retry loop reconnects; until then nobody waits on a connect
            _settle([future for _, future in calls], StateUnavailable(self._problem))
            return
        calls = [(_valid_text(redacted(rows, self._redactor), nul_free=True), future) for rows, future in calls]
        accepted: list[_Call] = []
        fenced: list[_Call] = []

        def write() -> dict[str, str]:
            accepted.clear()
            fenced.clear()
            conn = self._connection()
            with conn.transaction():
                refused = self._fenced(conn, calls)
                for call in calls:
                    (fenced if _touches(call, refused) else accepted).append(call)
                self._insert(conn, [pair for rows, _ in accepted for pair in rows])
                self._release_finished(conn, accepted)
            return refused

        try:
            refused = again_if_rolled_back(write)
        except (psycopg.OperationalError, PoolTimeout) as error:
            self._disconnect()
            _settle([future for _, future in calls], StateUnavailable(self._lost(error)))
            return
        except Exception as error:
            if len(calls) > 1 and isinstance(error, psycopg.Error):  # find the call it refused: one at a time
                for call in calls:
                    self._commit_group([call])
                return
            log.error("journal write of %d call(s) failed: %s", len(calls), error)
            _settle([future for _, future in calls], error)
            return
        self.commits += 1
        self._writable_again()
        if fenced:
            tasks = ", ".join(sorted(refused))
            log.warning("task(s) %s: another node has taken them over; this node's rows for them are refused", tasks)
            _settle([future for _, future in fenced], LeaseLost(f"task(s) {tasks} are held by another node now: this node may no longer "
                                    "record steps for them (the node that took them over continues them)", refused))
        _settle([future for _, future in accepted], None)

    def _fenced(self, conn: psycopg.Connection[Any], calls: list[_Call]) -> dict[str, str]:
        """The group's tasks this node may not write, with their holders: another node, or a later epoch of ours."""
        created = {row[0] for rows, _ in calls for table, row in rows if table.name == "tasks"}
        if created:
            conn.execute(
                "INSERT INTO task_leases (task, node, epoch, expires) SELECT task, %s, 1, now() + "
                "make_interval(secs => %s) FROM unnest(%s::text[]) AS task ON CONFLICT (task) DO NOTHING",
                [self.node, self.lease_seconds, sorted(created)])
        tasks = sorted({table.task_of(row) for rows, _ in calls for table, row in rows if table.of_task})
        leases = conn.execute("SELECT task, node, epoch FROM task_leases WHERE task = ANY(%s) FOR SHARE",
                              [tasks]).fetchall()
        with self._held_lock:
            for task in created:
                self._held.setdefault(task, 1)
            return {task: node for task, node, epoch in leases if node != self.node or self._held.get(task) != epoch}

    @staticmethod
    def _insert(conn: psycopg.Connection[Any], rows: list[tuple[Table, Row]]) -> None:
        by_table: dict[Table, list[Row]] = {}
        for table, row in rows:
            by_table.setdefault(table, []).append(row)
        with conn.cursor() as cursor:
            for table, table_rows in by_table.items():
                if table.conflict:  # COPY cannot merge a row into one stored under its key: a statement each
                    values = ", ".join(["%s"] * len(table.columns))
                    cursor.executemany(f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({values}) "
                                       f"{table.conflict}", table_rows)
                    continue
                with cursor.copy(f"COPY {table.name} ({', '.join(table.columns)}) FROM STDIN") as copy:
                    for row in table_rows:
                        copy.write_row(row)

    def _release_finished(self, conn: psycopg.Connection[Any], calls: list[_Call]) -> None:
        ended = sorted({row[0] for rows, _ in calls for table, row in rows
                        if table.name == "task_events" and row[2] in TERMINAL})
        if ended:
            conn.execute("UPDATE task_leases SET expires = '-infinity' WHERE task = ANY(%s) AND node = %s",
                         [ended, self.node])
            with self._held_lock:
                for task in ended:
                    self._held.pop(task, None)

    @property
    def lease_age(self) -> float:
        """Seconds since this node last renewed its leases (or found none to renew): over `lease_seconds`, lost."""
        return time.monotonic() - self._renewed

    def _renew(self) -> None:
        with self._held_lock:
            held = dict(self._held)
        if not held:
            self._renewed = time.monotonic()
            return

        def renew() -> set[str]:
            conn = self._connection()
            with conn.transaction():
                return {task for (task,) in conn.execute(
                    "UPDATE task_leases l SET expires = now() + make_interval(secs => %s) "
                    "FROM unnest(%s::text[], %s::bigint[]) AS h(task, epoch) "
                    "WHERE l.task = h.task AND l.epoch = h.epoch AND l.node = %s RETURNING l.task",
                    [self.lease_seconds, list(held), list(held.values()), self.node]).fetchall()}

        kept = again_if_rolled_back(renew)
        with self._held_lock:
            for task in set(held) - kept:  # taken over by another node while this one could not renew
                if self._held.get(task) == held[task]:
                    del self._held[task]
        self._renewed = time.monotonic()

    def _try(self, action: Callable[[], object]) -> bool:
        """Run a connect or a renewal on the writer thread; whatever it raises, the writer goes on."""
        try:
            action()
        except (psycopg.OperationalError, PoolTimeout) as error:
            self._disconnect()
            self._lost(error)
            return False
        except Exception as error:
            log.error("the state database refused %s: %s", getattr(action, "__name__", action), error)
            self._disconnect()
            return False
        self._writable_again()
        return True

    def _reachable(self) -> None:
        """Whether the database answers the writer now (a read may have found it gone while the writer's connection,
        unused since, still looks open)."""
        conn = self._connection()
        with conn.transaction():  # not left open: the writer's next group must commit on its own
            conn.execute("SELECT 1")

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url, connect_timeout=5)
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def _unreachable(self, error: BaseException) -> str:
        return unreachable(self._url, error)

    def _lost(self, error: BaseException) -> str:
        message = self._unreachable(error)
        if self._problem is None or time.monotonic() - self._problem_logged > REPEAT_LOG_SECONDS:
            log.error("%s", message)
            self._problem_logged = time.monotonic()
        self._problem = message
        return message

    def _writable_again(self) -> None:
        if self._problem is None:
            return
        self._problem = None
        log.warning("the app's state database %s can be reached again; durable work goes on", self._shown_url)
        if self._on_writable is not None and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_writable)
            except RuntimeError:
                pass  # the loop has closed


CONNECT_WAIT = 1.0
"""Seconds a statement waits for a pooled connection: one is idle at once while the database is up (the writer
and the listener hold their own), so a longer wait is the database being away, and the caller's loop waits."""


def run(pool: ConnectionPool[psycopg.Connection[Any]], sql: str, params: Sequence[Any] | dict[str, Any],
        unreachable: Callable[[BaseException], str]) -> list[tuple[Any, ...]]:
    """Run one statement on a pooled connection; its rows (none for a statement that returns none).

    A connection the server dropped (a restart) fails once and leaves the pool, so the
    statement is tried once more on a fresh one; `StateUnavailable` if that fails too.
    """
    for attempt in (1, 2):
        try:
            with pool.connection(timeout=CONNECT_WAIT) as conn:
                cursor = conn.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        except (psycopg.OperationalError, PoolTimeout) as error:
            if attempt == 2 or isinstance(error, PoolTimeout):
                raise StateUnavailable(unreachable(error)) from None
    raise AssertionError("unreachable")


ROLLBACK_TRIES = 5
"""How often a node tries a transaction that Postgres rolled back for a deadlock or a serialization failure with
another node's transaction (one taking tasks over while this one writes, or creating the schema as it boots)."""


def again_if_rolled_back(transaction: Callable[[], T]) -> T:
    """Run `transaction`, again after a short pause when Postgres rolled it back for a conflict with another
    transaction: nothing of it was written, and the database is there (such a rollback is an `OperationalError`,
    which otherwise means it cannot be reached)."""
    for attempt in range(1, ROLLBACK_TRIES + 1):
        try:
            return transaction()
        except psycopg.OperationalError as error:
            if attempt == ROLLBACK_TRIES or not (error.sqlstate or "").startswith("40"):  # 40: transaction rollback
                raise
            log.info("the state database rolled a transaction back (%s); trying it again", error)
            time.sleep(random.uniform(0.0, 0.02 * attempt))  # a thread of its own (the writer's, or boot's)
    raise AssertionError("unreachable")


def _plain(row: JournalRow) -> Row:
    """The row's values as Postgres should get them: a status as its text (psycopg would send an enum's name)."""
    return tuple(str(value) if isinstance(value, enum.Enum) else value for value in row)


def _touches(call: _Call, tasks: Collection[str]) -> bool:
    return bool(tasks) and any(table.of_task and table.task_of(row) in tasks for table, row in call[0])


def unreachable(url: str, error: BaseException) -> str:
    """What to tell when the state database at `url` does not answer (its password hidden)."""
    return (f"the app's state database {shown_url(url)} cannot be reached ({reason(error, url)}): check that "
            "Postgres runs there and accepts this node; new durable work is refused until it does, and nothing "
            "already acknowledged is lost")


def reason(error: BaseException, url: str) -> str:
    """The first line of a driver's error (psycopg's go on with hints), with `url`'s password hidden if it quotes it."""
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__).replace(url, shown_url(url))
