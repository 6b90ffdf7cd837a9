"""The app's state file (`.wippy/state.duckdb`): opened once per node, schema made at startup.

DuckDB lets one process write a file, so a second node on the same app gets a
clear error naming the holder instead of DuckDB's lock message alone.

The state holds every conversation, so it is its owner's alone: the folder is
made (or tightened to) 0700 and the files in it 0600.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import stat
from pathlib import Path

import duckdb

from .errors import UsageError

log = logging.getLogger("wippy_agents.state")

SCHEMA_VERSION = 2

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
"""


class StateFileBusy(UsageError):
    """Another process holds the app's state file."""


class StateLock:
    """The app's state folder, held for as long as this object is: one app at a time, in any process.

    DuckDB refuses a second process, but not a second connection in the same one,
    and two apps on one journal would replay each other's tasks. So the folder's
    `lock` file is held with `flock` (released when the process dies, however it dies),
    and it names the holder's pid for the message a second app gets.
    """

    def __init__(self, folder: Path) -> None:
        private_folder(folder)
        self.path = folder / "lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "another"
            self.release()
            raise StateFileBusy(
                f"the app's state in {folder} is in use by process {holder} (a wippy node or command, or another "
                "app in this process); wait for it or stop it") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def private_folder(folder: Path) -> None:
    """Create `folder` 0700, or take group and other access away from one that exists (with a warning)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by other users (mode %o); made it 0700", folder, mode)
        folder.chmod(0o700)


def private_files(folder: Path) -> None:
    """Make every file in `folder` 0600: DuckDB creates its files with the process's umask."""
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)


def open_state(path: Path | None) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the state file and make sure every table exists; None: in memory."""
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
    db.execute("BEGIN")
    db.execute(_SCHEMA)
    if db.execute("SELECT count(*) FROM wippy_schema").fetchone() == (0,):
        db.execute("INSERT INTO wippy_schema VALUES (?)", [SCHEMA_VERSION])
    else:
        db.execute("UPDATE wippy_schema SET version = ?", [SCHEMA_VERSION])
    if db.execute("SELECT count(*) FROM journal_position").fetchone() == (0,):
        db.execute("INSERT INTO journal_position VALUES (0, 0)")
    db.execute("COMMIT")
    if path is not None:
        private_files(path.parent)
    return db
