"""The app's state in a Postgres database, shared by every node of a cluster: the schema, the stores, opening it.

psycopg 3 with a connection pool for reads and one connection per node for its
journal writer (see `_pg_journal`). The schema is created at startup and its
version recorded; a database written by a newer wippy is refused rather than
misread. JSON columns hold the JSON text the records carry, as they are.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from .._runtime.secrets import Redactor
from ..errors import UsageError
from ._journal import StaleVersion, StateUnavailable
from ._location import shown_url
from ._pg_journal import PostgresJournal, again_if_rolled_back, reason, unreachable
from ._pg_listen import CHANNEL, VersionListener
from ._records import (
    Approval,
    AuditRecord,
    ChangeRecord,
    ConversationRow,
    McpToken,
    MemoryVersion,
    ModelCall,
    Version,
)
from ._sql import (
    APPROVAL_COLUMNS,
    AUDIT_COLUMNS,
    SQLConversations,
    SQLMemory,
    SQLUsage,
    approval_row,
    filters,
    json_data,
    json_text,
    redacted_row,
)
from ._stores import State

log = logging.getLogger("wippy_agents.state")

SCHEMA_VERSION = 2
LEASE_SECONDS = 15.0
"""How long a node's lease on a task lasts without renewal: after that another node may take the task over."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS wippy_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS registry_changes (
    n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version BIGINT NOT NULL, time TIMESTAMPTZ NOT NULL, author TEXT NOT NULL, task TEXT, reason TEXT NOT NULL,
    entry_id TEXT NOT NULL, before TEXT, after TEXT, origin TEXT);
CREATE INDEX IF NOT EXISTS registry_changes_entry ON registry_changes (entry_id, version);
CREATE INDEX IF NOT EXISTS registry_changes_version ON registry_changes (version);
CREATE TABLE IF NOT EXISTS tasks (
    n BIGINT GENERATED ALWAYS AS IDENTITY,
    id TEXT PRIMARY KEY, workflow TEXT NOT NULL, args TEXT NOT NULL, registry_version BIGINT NOT NULL,
    created TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS task_events (
    n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task TEXT NOT NULL, time TIMESTAMPTZ NOT NULL, status TEXT NOT NULL, detail TEXT);
CREATE INDEX IF NOT EXISTS task_events_task ON task_events (task, time);
CREATE TABLE IF NOT EXISTS task_steps (
    n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, ok BOOLEAN NOT NULL, result TEXT, error TEXT,
    started TIMESTAMPTZ NOT NULL, seconds DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS task_steps_task ON task_steps (task, seq);
CREATE TABLE IF NOT EXISTS task_signals (
    n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, payload TEXT, time TIMESTAMPTZ NOT NULL);
CREATE INDEX IF NOT EXISTS task_signals_task ON task_signals (task);
CREATE TABLE IF NOT EXISTS task_leases (
    task TEXT PRIMARY KEY, node TEXT NOT NULL, epoch BIGINT NOT NULL, expires TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY, agent TEXT NOT NULL, task TEXT, call TEXT, action TEXT NOT NULL, resource TEXT NOT NULL,
    summary TEXT NOT NULL, diff TEXT NOT NULL, changes TEXT NOT NULL, policy TEXT, status TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL, decided_by TEXT, decided_at TIMESTAMPTZ, decision_reason TEXT, version BIGINT);
CREATE TABLE IF NOT EXISTS policy_audit (
    n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time TIMESTAMPTZ NOT NULL, subject TEXT NOT NULL, task TEXT, action TEXT NOT NULL, resource TEXT NOT NULL,
    kind TEXT, decision TEXT NOT NULL, decided_by TEXT NOT NULL, reason TEXT NOT NULL, approval TEXT,
    version BIGINT);
CREATE TABLE IF NOT EXISTS conversations (id TEXT PRIMARY KEY, agent TEXT NOT NULL, created TIMESTAMPTZ NOT NULL);
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS last_active TIMESTAMPTZ;
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS turns INTEGER DEFAULT 0;
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS first TEXT;
CREATE INDEX IF NOT EXISTS conversations_active ON conversations (last_active);
CREATE TABLE IF NOT EXISTS conversation_starts (conversation TEXT NOT NULL, agent TEXT NOT NULL, time TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS conversation_messages (
    conversation TEXT NOT NULL, turn INTEGER NOT NULL, time TIMESTAMPTZ NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS conversation_messages_conversation ON conversation_messages (conversation);
CREATE TABLE IF NOT EXISTS mcp_tokens (
    name TEXT PRIMARY KEY, digest TEXT NOT NULL, agents TEXT NOT NULL, created TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS memory_notes (
    agent TEXT NOT NULL, version BIGINT NOT NULL, note BIGINT NOT NULL, text TEXT, tags TEXT NOT NULL,
    author TEXT NOT NULL, task TEXT, time TIMESTAMPTZ NOT NULL, PRIMARY KEY (agent, version));
CREATE INDEX IF NOT EXISTS memory_notes_note ON memory_notes (agent, note, version);
CREATE TABLE IF NOT EXISTS model_calls (
    task TEXT NOT NULL, step TEXT NOT NULL, agent TEXT NOT NULL, model TEXT NOT NULL, time TIMESTAMPTZ NOT NULL,
    input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL, cached_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL, PRIMARY KEY (task, step));
CREATE INDEX IF NOT EXISTS model_calls_agent_time ON model_calls (agent, time);
"""

_INDEX_FROM_TURNS = """
INSERT INTO conversations (id, agent, created, last_active, turns, first)
SELECT a->>1, min(a->>0), min(created), max(created), max((a->>2)::int), (array_agg(a->>3 ORDER BY (a->>2)::int))[1]
FROM (SELECT args::jsonb AS a, created FROM tasks WHERE workflow = 'wippy:agent_turn') AS turns
WHERE jsonb_array_length(a->5) = 0 GROUP BY 1
ON CONFLICT (id) DO UPDATE SET last_active = excluded.last_active, turns = excluded.turns, first = excluded.first;
INSERT INTO conversation_messages (conversation, turn, time, role, text)
SELECT a->>1, (a->>2)::int, created, 'user', a->>3
FROM (SELECT args::jsonb AS a, created FROM tasks WHERE workflow = 'wippy:agent_turn') AS turns
WHERE jsonb_array_length(a->5) = 0;
"""
"""Schema 2 indexes conversations as their turns happen; those of a database from before are indexed once from their
people's turns, as the DuckDB store does (see `_duckdb._INDEX_FROM_TURNS`)."""

_SCHEMA_LOCK = 0x77697070  # "wipp": one node at a time creates or upgrades the schema
_VERSIONS_LOCK = 0x77697076  # "wipv": one node at a time commits a registry version


def open_postgres_state(url: str, *, node: str, redactor: Redactor | None = None,
                        lease_seconds: float = LEASE_SECONDS, renew_seconds: float | None = None) -> State:
    """Open the state in the database at `url` (creating its tables if needed) as the node named `node`.

    Raises `StateUnavailable` naming the URL (password hidden) when the database cannot be reached.
    """
    shown = shown_url(url)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            again_if_rolled_back(lambda: _create_schema(conn, shown))  # its DDL can deadlock with running nodes
    except psycopg.OperationalError as error:
        raise StateUnavailable(
            f"cannot open the app's state database {shown}: {reason(error, url)}. Check that Postgres runs at that host "
            "and port, that the database exists, and that the URL's user and password are right (`state:` in "
            "wippy.yaml or WIPPY_STATE)") from None
    except psycopg.ProgrammingError as error:  # the URL itself does not parse
        raise UsageError(f"the app's state {shown} is not a Postgres URL psycopg can use: {reason(error, url)}. Write it "
                         "as postgresql://USER:PASSWORD@HOST:PORT/DATABASE (`state:` in wippy.yaml or WIPPY_STATE)"
                         ) from None
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        url, min_size=1, max_size=4, timeout=5, open=True, name="wippy-state",
        kwargs={"autocommit": True, "connect_timeout": 5})
    journal = PostgresJournal(pool, url, node=node, lease_seconds=lease_seconds, renew_seconds=renew_seconds,
                              redactor=redactor)

    versions = PostgresVersions(pool, url, journal)

    def close() -> None:
        try:
            versions.close()
            journal.close()
        finally:
            pool.close()

    return State(journal=journal, versions=versions, approvals=PostgresApprovals(pool, url, journal, redactor),
                 audit=PostgresAudit(pool, url, journal, redactor), conversations=PostgresConversations(pool, url, journal),
                 tokens=PostgresTokens(pool, url, journal), memory=PostgresMemory(pool, url, journal),
                 usage=PostgresUsage(pool, url, journal),
                 closer=close)


def _create_schema(conn: psycopg.Connection[Any], shown: str) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
        conn.execute(_SCHEMA)
        row = conn.execute("SELECT max(version) FROM wippy_schema").fetchone()
        found = None if row is None else row[0]
        if found is not None and found > SCHEMA_VERSION:
            raise UsageError(f"the state database {shown} holds schema version {found}, newer than this wippy's "
                             f"{SCHEMA_VERSION}: upgrade wippy-agents on this machine")
        if found is None:
            conn.execute("INSERT INTO wippy_schema VALUES (%s)", [SCHEMA_VERSION])
        elif found < SCHEMA_VERSION:
            if found < 2:
                conn.execute(_INDEX_FROM_TURNS)
            conn.execute("UPDATE wippy_schema SET version = %s", [SCHEMA_VERSION])


Pool = ConnectionPool[psycopg.Connection[Any]]


class _Store:
    """A store on the journal's pool, whose statements fail at once while the journal knows the database is down
    (rather than hold the node's event loop on a connect)."""

    def __init__(self, pool: Pool, url: str, journal: PostgresJournal, redactor: Redactor | None = None) -> None:
        self._pool = pool
        self._url = url
        self._journal = journal
        self._redactor = redactor
        """Secrets kept out of what the store writes (the journal redacts its own rows)."""

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        return self._journal.run(sql, params)

    def _unreachable(self, error: BaseException) -> str:
        return unreachable(self._url, error)



class PostgresVersions(_Store):
    """One row per changed entry, carrying its version's author, reason and time (as in the DuckDB store).

    Several nodes commit here: a version is committed under a lock only if it is the next
    number, and announced (NOTIFY) in its transaction so the other nodes follow it.
    """

    shared = True

    def __init__(self, pool: Pool, url: str, journal: PostgresJournal) -> None:
        super().__init__(pool, url, journal)
        self._listeners: list[VersionListener] = []

    def last_version(self) -> int:
        return int(self._rows("SELECT coalesce(max(version), 0) FROM registry_changes")[0][0])

    def live(self) -> dict[str, tuple[dict[str, Any], str | None]]:
        rows = self._rows("SELECT DISTINCT ON (entry_id) entry_id, after, origin FROM registry_changes "
                          "ORDER BY entry_id, version DESC, n DESC")
        return {entry_id: (json.loads(after), origin) for entry_id, after, origin in rows if after is not None}

    def record(self, version: int, changes: Sequence[ChangeRecord], *, author: str, task: str | None,
               reason: str) -> Version:
        """Commit `version` if it is the next one; `StaleVersion` if another node committed that number first."""
        now = datetime.now(UTC)
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_VERSIONS_LOCK])
                row = conn.execute("SELECT coalesce(max(version), 0) FROM registry_changes").fetchone()
                latest = 0 if row is None else int(row[0])
                if latest + 1 != version:
                    raise StaleVersion(f"registry version {version} cannot be committed: the state database is at "
                                       f"version {latest} (another node committed meanwhile)", latest)
                conn.execute(
                    "INSERT INTO registry_changes (version, time, author, task, reason, entry_id, before, after, origin) "
                    "SELECT %s, %s, %s, %s, %s, * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])",
                    [version, now, author, task, reason, [c.entry_id for c in changes],
                     [json_text(c.before) for c in changes], [json_text(c.after) for c in changes],
                     [c.origin for c in changes]])
                conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(version)])
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise StateUnavailable(self._unreachable(error)) from None
        return Version(version, now, author, reason, task, tuple(c.entry_id for c in changes))

    def on_version(self, callback: Callable[[], None]) -> None:
        """Have `callback()` run (on a thread of its own) whenever a version is committed, by any node."""
        self._listeners.append(VersionListener(self._url, callback))

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()

    def history(self, entry_id: str | None = None) -> list[Version]:
        where, params = ("", []) if entry_id is None else (
            "WHERE version IN (SELECT version FROM registry_changes WHERE entry_id = %s)", [entry_id])
        rows = self._rows(
            f"""SELECT version, min(time), min(author), min(reason), min(task), array_agg(entry_id ORDER BY entry_id)
                FROM registry_changes {where} GROUP BY version ORDER BY version""", params)
        return [Version(int(r[0]), r[1], r[2], r[3], r[4], tuple(r[5])) for r in rows]

    def undo_after(self, version: int) -> dict[str, dict[str, Any] | None]:
        rows = self._rows("SELECT DISTINCT ON (entry_id) entry_id, before FROM registry_changes WHERE version > %s "
                          "ORDER BY entry_id, version, n", [version])
        return {entry_id: json_data(before) for entry_id, before in rows}


class PostgresApprovals(_Store):
    def add(self, approval: Approval, changes: list[dict[str, Any]]) -> None:
        self._rows(
            f"INSERT INTO approvals ({APPROVAL_COLUMNS}, changes) VALUES ({', '.join(['%s'] * 16)})",
            approval_row(approval, changes, self._redactor))

    def get(self, approval_id: str) -> Approval | None:
        rows = self._rows(f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = %s", [approval_id])
        return Approval(*rows[0]) if rows else None

    def list(self, status: str | None = None) -> list[Approval]:
        where, params = filters("%s", status=status)
        return [Approval(*row) for row in
                self._rows(f"SELECT {APPROVAL_COLUMNS} FROM approvals {where} ORDER BY created", params)]

    def changes(self, approval_id: str) -> builtins.list[dict[str, Any]]:
        rows = self._rows("SELECT changes FROM approvals WHERE id = %s", [approval_id])
        if not rows:
            raise LookupError(f"no approval {approval_id!r}")
        changes: builtins.list[dict[str, Any]] = json.loads(rows[0][0])
        return changes

    def decide(self, approval_id: str, *, status: str, by: str, at: datetime, reason: str,
               version: int | None) -> bool:
        return bool(self._rows(
            "UPDATE approvals SET status = %s, decided_by = %s, decided_at = %s, decision_reason = %s, version = %s "
            "WHERE id = %s AND status = 'pending' RETURNING id",
            [*redacted_row([status, by, at, reason, version], self._redactor), approval_id]))


class PostgresAudit(_Store):
    def add(self, record: AuditRecord) -> None:
        self._rows(f"INSERT INTO policy_audit ({AUDIT_COLUMNS}) VALUES ({', '.join(['%s'] * 11)})",
                   redacted_row(list(record.__dict__.values()), self._redactor))

    def list(self, *, subject: str | None = None, resource: str | None = None,
             limit: int = 100) -> list[AuditRecord]:
        where, params = filters("%s", subject=subject, resource=resource)
        rows = self._rows(f"SELECT {AUDIT_COLUMNS} FROM policy_audit {where} ORDER BY time DESC, n DESC LIMIT %s",
                          [*params, limit])
        return [AuditRecord(*row) for row in reversed(rows)]

    def prune(self, before: datetime, *, keep_actions: Collection[str] = ()) -> int:
        return len(self._rows("DELETE FROM policy_audit WHERE time < %s AND NOT (action = ANY(%s)) RETURNING n",
                              [before, list(keep_actions)]))


class PostgresConversations(_Store, SQLConversations):
    """The index's rows come through this node's journal writer; a read waits for what it has not committed yet."""

    placeholder = "%s"

    def note(self, rows: Sequence[ConversationRow]) -> asyncio.Future[None]:
        return self._journal.append(rows)

    def _query(self, sql: str, params: Sequence[Any]) -> builtins.list[tuple[Any, ...]]:
        self._journal.flush()
        return self._rows(sql, params)


class PostgresTokens(_Store):
    def add(self, token: McpToken) -> bool:
        return bool(self._rows("INSERT INTO mcp_tokens VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING name",
                               [token.name, token.digest, token.agents, token.created]))

    def list(self) -> builtins.list[McpToken]:
        return [McpToken(*row) for row in
                self._rows("SELECT name, digest, agents, created FROM mcp_tokens ORDER BY name")]

    def revoke(self, name: str) -> bool:
        return bool(self._rows("DELETE FROM mcp_tokens WHERE name = %s RETURNING name", [name]))


class PostgresMemory(_Store, SQLMemory):
    """Nodes write one agent's memory at once: a version number another node took first is taken again."""

    placeholder = "%s"

    def _query(self, sql: str, params: Sequence[Any]) -> builtins.list[tuple[Any, ...]]:
        return self._rows(sql, params)

    def write(self, agent: str, note: int | None, text: str | None, tags: Sequence[str], *, author: str,
              task: str | None) -> MemoryVersion:
        attempts = _MEMORY_ATTEMPTS
        while True:
            try:
                return super().write(agent, note, text, tags, author=author, task=task)
            except psycopg.errors.UniqueViolation:
                attempts -= 1
                if not attempts:
                    raise StateUnavailable(f"{agent}'s memory is being written by other nodes too often to take a "
                                           "version number; try again") from None


_MEMORY_ATTEMPTS = 20


class PostgresUsage(_Store, SQLUsage):
    """Model calls come through this node's journal writer; a read waits for what it has not committed yet."""

    placeholder = "%s"

    def record(self, call: ModelCall) -> asyncio.Future[None]:
        return self._journal.append([call])

    def _query(self, sql: str, params: Sequence[Any]) -> builtins.list[tuple[Any, ...]]:
        self._journal.flush()
        return self._rows(sql, params)
