"""The app's state in one DuckDB file (`.wippy/state.duckdb`): the schema, the stores, and opening it.

DuckDB lets one process write a file, so a second node on the same app gets a
clear error naming the holder instead of DuckDB's lock message alone. A journal
log (`journal.log`, see `_journal`) sits beside the file: durable task rows land
there first.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import re
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from .._runtime.secrets import Redactor
from ._journal import JournalReport, check_log
from ._lock import StateFileBusy, StateLock, private_files, private_folder
from ._records import (
    Approval,
    AuditRecord,
    ChangeRecord,
    ConversationRow,
    McpToken,
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
from ._tasks import DuckDBJournal, copied_group

log = logging.getLogger("wippy_agents.state")

SCHEMA_VERSION = 3
LOG_FILE = "journal.log"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS wippy_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS registry_changes (
    version BIGINT NOT NULL,
    time TIMESTAMPTZ NOT NULL,
    author VARCHAR NOT NULL,
    task VARCHAR,
    reason VARCHAR NOT NULL,
    entry_id VARCHAR NOT NULL,
    before JSON,
    after JSON,
    origin VARCHAR
);
CREATE TABLE IF NOT EXISTS journal_position (position BIGINT NOT NULL);
ALTER TABLE journal_position ADD COLUMN IF NOT EXISTS copied_group BIGINT DEFAULT 0;
CREATE TABLE IF NOT EXISTS tasks (
    id VARCHAR NOT NULL,
    workflow VARCHAR NOT NULL,
    args JSON NOT NULL,
    registry_version BIGINT NOT NULL,
    created TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS task_events (
    task VARCHAR NOT NULL,
    time TIMESTAMPTZ NOT NULL,
    status VARCHAR NOT NULL,
    detail JSON
);
CREATE TABLE IF NOT EXISTS task_steps (
    task VARCHAR NOT NULL,
    seq INTEGER NOT NULL,
    name VARCHAR NOT NULL,
    ok BOOLEAN NOT NULL,
    result JSON,
    error VARCHAR,
    started TIMESTAMPTZ NOT NULL,
    seconds DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS task_signals (
    task VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    payload JSON,
    time TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    id VARCHAR NOT NULL,
    agent VARCHAR NOT NULL,
    task VARCHAR,
    call VARCHAR,
    action VARCHAR NOT NULL,
    resource VARCHAR NOT NULL,
    summary VARCHAR NOT NULL,
    diff VARCHAR NOT NULL,
    changes JSON NOT NULL,
    policy VARCHAR,
    status VARCHAR NOT NULL,
    created TIMESTAMPTZ NOT NULL,
    decided_by VARCHAR,
    decided_at TIMESTAMPTZ,
    decision_reason VARCHAR,
    version BIGINT
);
CREATE TABLE IF NOT EXISTS policy_audit (
    time TIMESTAMPTZ NOT NULL,
    subject VARCHAR NOT NULL,
    task VARCHAR,
    action VARCHAR NOT NULL,
    resource VARCHAR NOT NULL,
    kind VARCHAR,
    decision VARCHAR NOT NULL,
    decided_by VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    approval VARCHAR,
    version BIGINT
);
CREATE TABLE IF NOT EXISTS conversations (
    id VARCHAR PRIMARY KEY,
    agent VARCHAR NOT NULL,
    created TIMESTAMPTZ NOT NULL
);
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS last_active TIMESTAMPTZ;
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS turns INTEGER DEFAULT 0;
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS first VARCHAR;
CREATE TABLE IF NOT EXISTS conversation_starts (
    conversation VARCHAR NOT NULL,
    agent VARCHAR NOT NULL,
    time TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS conversation_messages (
    conversation VARCHAR NOT NULL,
    turn INTEGER NOT NULL,
    time TIMESTAMPTZ NOT NULL,
    role VARCHAR NOT NULL,
    text VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS mcp_tokens (
    name VARCHAR PRIMARY KEY,
    digest VARCHAR NOT NULL,
    agents VARCHAR NOT NULL,
    created TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS memory_notes (
    agent VARCHAR NOT NULL,
    version BIGINT NOT NULL,
    note BIGINT NOT NULL,
    text VARCHAR,
    tags JSON NOT NULL,
    author VARCHAR NOT NULL,
    task VARCHAR,
    time TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent, version)
);
CREATE TABLE IF NOT EXISTS model_calls (
    task VARCHAR NOT NULL,
    step VARCHAR NOT NULL,
    agent VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    time TIMESTAMPTZ NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cost_usd DOUBLE NOT NULL,
    PRIMARY KEY (task, step)
);
"""


_INDEX_FROM_TURNS = """
INSERT INTO conversations (id, agent, created, last_active, turns, first)
SELECT args->>'$[1]', any_value(args->>'$[0]'), min(created), max(created), max(CAST(args->>'$[2]' AS INTEGER)),
       arg_min(args->>'$[3]', CAST(args->>'$[2]' AS INTEGER))
FROM tasks WHERE workflow = 'wippy:agent_turn' AND json_array_length(args->'$[5]') = 0 GROUP BY 1
ON CONFLICT (id) DO UPDATE SET last_active = excluded.last_active, turns = excluded.turns, first = excluded.first;
INSERT INTO conversation_messages (conversation, turn, time, role, text)
SELECT args->>'$[1]', CAST(args->>'$[2]' AS INTEGER), created, 'user', args->>'$[3]'
FROM tasks WHERE workflow = 'wippy:agent_turn' AND json_array_length(args->'$[5]') = 0;
"""
"""Schema 3 indexes conversations as their turns happen; those of a file from before are indexed once, from their
people's turns (tasks of the agents' turn workflow whose arguments are agent, conversation, turn, text, context and
an empty chain of delegating agents): their first message, turn count and last activity, their messages searchable
(the answers of those turns are not)."""


# -- opening ------------------------------------------------------------------------------------


def open_duckdb_state(path: Path | None, *, redactor: Redactor | None = None) -> State:
    """Open (creating if needed) the state file at `path`, holding its folder's lock; None: in memory.

    The journal's log is copied into the file first (`JournalDamaged` if it cannot
    be); the `redactor`'s secrets never reach the journal.
    """
    lock = None if path is None else StateLock(path.parent)
    try:
        db = _connect(path)
        try:
            journal = DuckDBJournal(db, None if path is None else path.with_name(LOG_FILE), redactor=redactor,
                                    private=() if path is None else [path.with_name(path.name + ".wal")])
        except BaseException:
            db.close()
            raise
    except BaseException:
        if lock is not None:
            lock.release()
        raise

    def close() -> None:
        try:
            journal.close()  # it writes what it holds before the file closes
        finally:
            try:
                db.close()
            finally:
                if lock is not None:
                    lock.release()

    return State(journal=journal, versions=DuckDBVersions(db), approvals=DuckDBApprovals(db, redactor),
                 audit=DuckDBAudit(db, redactor), conversations=DuckDBConversations(db, journal), tokens=DuckDBTokens(db),
                 memory=DuckDBMemory(db), usage=DuckDBUsage(db, journal),
                 closer=close)


def check_journal(path: Path, *, repair: bool = False) -> JournalReport:
    """`wippy state check` with no node running: the journal beside the state file at `path`, against the file.

    The state file is opened without its journal (which would refuse a damaged log)
    and held meanwhile, so no node starts on the log while it is checked or repaired.
    """
    with StateLock(path.parent):
        db = _connect(path)
        try:
            return check_log(path.with_name(LOG_FILE), copied_group(db), repair=repair)
        finally:
            db.close()


def _connect(path: Path | None) -> duckdb.DuckDBPyConnection:
    """The state file, opened with every table made; None: in memory."""
    if path is not None:
        private_folder(path.parent)
    try:
        db = duckdb.connect(":memory:" if path is None else str(path))
    except duckdb.IOException as error:
        text = str(error)
        if "lock" not in text.lower():
            raise
        holder = re.search(r"PID (\d+)", text)
        who = f"process {holder.group(1)}" if holder else "another process"
        raise StateFileBusy(
            f"the app's state file {path} is in use by {who} (a wippy node that is starting or does not answer "
            f"on its control socket, or a wippy command working without a node); wait for it or stop it"
        ) from None
    try:
        db.execute("BEGIN")
        db.execute(_SCHEMA)
        found = db.execute("SELECT max(version) FROM wippy_schema").fetchone()
        if found is None or found[0] is None:
            db.execute("INSERT INTO wippy_schema VALUES (?)", [SCHEMA_VERSION])
        else:
            if found[0] < 3:
                db.execute(_INDEX_FROM_TURNS)
            db.execute("UPDATE wippy_schema SET version = ?", [SCHEMA_VERSION])
        if db.execute("SELECT count(*) FROM journal_position").fetchone() == (0,):
            db.execute("INSERT INTO journal_position VALUES (0, 0)")
        db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    if path is not None:
        private_files(path.parent)
    return db


# -- the stores ---------------------------------------------------------------------------------



class DuckDBVersions:
    """Every change is one row that also carries its version's author, reason and time.

    One version is then one INSERT, atomic and durable on its own (no explicit
    transaction: each DuckDB statement costs about a millisecond here), and the
    live state is the newest row of each entry.
    """

    shared = False
    """One node holds the file: no version is committed behind its back."""

    def __init__(self, db: duckdb.DuckDBPyConnection) -> None:
        self._db = db

    def on_version(self, callback: Callable[[], None]) -> None:
        """Nothing to follow: this node commits every version itself."""

    def last_version(self) -> int:
        row = self._db.execute("SELECT coalesce(max(version), 0) FROM registry_changes").fetchone()
        return int(row[0]) if row else 0

    def live(self) -> dict[str, tuple[dict[str, Any], str | None]]:
        rows = self._db.execute(
            """SELECT entry_id, after, origin FROM registry_changes
               QUALIFY row_number() OVER (PARTITION BY entry_id ORDER BY version DESC) = 1"""
        ).fetchall()
        return {entry_id: (json.loads(after), origin) for entry_id, after, origin in rows if after is not None}

    def record(self, version: int, changes: Sequence[ChangeRecord], *, author: str, task: str | None,
               reason: str) -> Version:
        """One statement: `unnest` of list parameters (executemany would go row by row)."""
        now = datetime.now(UTC)
        ids = [c.entry_id for c in changes]
        self._db.execute(
            """INSERT INTO registry_changes
               SELECT ?, ?, ?, ?, ?, unnest(?), unnest(?)::JSON, unnest(?)::JSON, unnest(?)""",
            [version, now, author, task, reason, ids, [json_text(c.before) for c in changes],
             [json_text(c.after) for c in changes], [c.origin for c in changes]],
        )
        return Version(version, now, author, reason, task, tuple(ids))

    def history(self, entry_id: str | None = None) -> list[Version]:
        where, params = ("", []) if entry_id is None else (
            "WHERE version IN (SELECT version FROM registry_changes WHERE entry_id = ?)", [entry_id])
        rows = self._db.execute(
            f"""SELECT version, any_value(time), any_value(author), any_value(reason), any_value(task),
                       list(entry_id ORDER BY entry_id)
                FROM registry_changes {where} GROUP BY version ORDER BY version""",
            params,
        ).fetchall()
        return [Version(int(r[0]), r[1], r[2], r[3], r[4], tuple(r[5])) for r in rows]

    def undo_after(self, version: int) -> dict[str, dict[str, Any] | None]:
        rows = self._db.execute(
            """SELECT entry_id, before FROM registry_changes WHERE version > ?
               QUALIFY row_number() OVER (PARTITION BY entry_id ORDER BY version) = 1""",
            [version],
        ).fetchall()
        return {entry_id: json_data(before) for entry_id, before in rows}


class DuckDBApprovals:
    def __init__(self, db: duckdb.DuckDBPyConnection, redactor: Redactor | None = None) -> None:
        self._db = db
        self._redactor = redactor

    def add(self, approval: Approval, changes: list[dict[str, Any]]) -> None:
        self._db.execute(
            f"INSERT INTO approvals ({APPROVAL_COLUMNS}, changes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?)",
            approval_row(approval, changes, self._redactor),
        )

    def get(self, approval_id: str) -> Approval | None:
        row = self._db.execute(f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?", [approval_id]).fetchone()
        return None if row is None else Approval(*row)

    def list(self, status: str | None = None) -> list[Approval]:
        where, params = filters("?", status=status)
        rows = self._db.execute(f"SELECT {APPROVAL_COLUMNS} FROM approvals {where} ORDER BY created", params)
        return [Approval(*row) for row in rows.fetchall()]

    def changes(self, approval_id: str) -> builtins.list[dict[str, Any]]:
        row = self._db.execute("SELECT changes FROM approvals WHERE id = ?", [approval_id]).fetchone()
        if row is None:
            raise LookupError(f"no approval {approval_id!r}")
        changes: builtins.list[dict[str, Any]] = json.loads(row[0])
        return changes

    def decide(self, approval_id: str, *, status: str, by: str, at: datetime, reason: str,
               version: int | None) -> bool:
        decided = self._db.execute(
            "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, decision_reason = ?, version = ? "
            "WHERE id = ? AND status = 'pending' RETURNING id",
            [*redacted_row([status, by, at, reason, version], self._redactor), approval_id]).fetchall()
        return bool(decided)


class DuckDBAudit:
    def __init__(self, db: duckdb.DuckDBPyConnection, redactor: Redactor | None = None) -> None:
        self._db = db
        self._redactor = redactor

    def add(self, record: AuditRecord) -> None:
        self._db.execute(f"INSERT INTO policy_audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         redacted_row(list(record.__dict__.values()), self._redactor))

    def list(self, *, subject: str | None = None, resource: str | None = None,
             limit: int = 100) -> list[AuditRecord]:
        where, params = filters("?", subject=subject, resource=resource)
        rows = self._db.execute(f"SELECT {AUDIT_COLUMNS} FROM policy_audit {where} ORDER BY time DESC LIMIT ?",
                                [*params, limit]).fetchall()
        return [AuditRecord(*row) for row in reversed(rows)]

    def prune(self, before: datetime, *, keep_actions: Collection[str] = ()) -> int:
        return len(self._db.execute(
            "DELETE FROM policy_audit WHERE time < ? AND action NOT IN (SELECT unnest(?::VARCHAR[])) RETURNING time",
            [before, list(keep_actions)]).fetchall())


class DuckDBConversations(SQLConversations):
    """The index's rows come through the journal's writer, so a read waits for what it has not copied in yet."""

    def __init__(self, db: duckdb.DuckDBPyConnection, journal: DuckDBJournal) -> None:
        self._db = db
        self._journal = journal

    def note(self, rows: Sequence[ConversationRow]) -> asyncio.Future[None]:
        return self._journal.append(rows)

    def _query(self, sql: str, params: Sequence[Any]) -> builtins.list[tuple[Any, ...]]:
        self._journal.flush()
        return self._db.execute(sql, params).fetchall()


class DuckDBTokens:
    def __init__(self, db: duckdb.DuckDBPyConnection) -> None:
        self._db = db

    def add(self, token: McpToken) -> bool:
        added = self._db.execute("INSERT INTO mcp_tokens VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING name",
                                 [token.name, token.digest, token.agents, token.created]).fetchall()
        return bool(added)

    def list(self) -> builtins.list[McpToken]:
        rows = self._db.execute("SELECT name, digest, agents, created FROM mcp_tokens ORDER BY name").fetchall()
        return [McpToken(*row) for row in rows]

    def revoke(self, name: str) -> bool:
        return bool(self._db.execute("DELETE FROM mcp_tokens WHERE name = ? RETURNING name", [name]).fetchall())


class DuckDBMemory(SQLMemory):
    def __init__(self, db: duckdb.DuckDBPyConnection) -> None:
        self._db = db

    def _query(self, sql: str, params: Sequence[Any]) -> builtins.list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()


class DuckDBUsage(SQLUsage):
    """Model calls come through the journal's writer (rows are in time order: a day's are near each other in the
    file, which DuckDB's zone maps find without an index); a read waits for what it has not copied in yet."""

    def __init__(self, db: duckdb.DuckDBPyConnection, journal: DuckDBJournal) -> None:
        self._db = db
        self._journal = journal

    def record(self, call: ModelCall) -> asyncio.Future[None]:
        return self._journal.append([call])

    def _query(self, sql: str, params: Sequence[Any]) -> builtins.list[tuple[Any, ...]]:
        self._journal.flush()
        return self._db.execute(sql, params).fetchall()
