"""Registry versions in DuckDB: who changed what, when and why, and each entry before and after.

`registry_changes` keeps every change: the newest row of each entry is the live
registry (so a restart can tell which file edits happened while the node was
down), and the state as of any version is the live state with later changes undone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from ._entry import Entry


@dataclass(frozen=True)
class Version:
    """One committed registry version."""

    version: int
    time: datetime
    author: str
    reason: str
    task: str | None
    entries: tuple[str, ...]


@dataclass(frozen=True)
class EntryChange:
    """An entry before and after a change (None where it did not exist)."""

    id: str
    before: Entry | None
    after: Entry | None

    @property
    def entry(self) -> Entry:
        """The entry as it is after the change, or as it was before a delete."""
        entry = self.after or self.before
        assert entry is not None
        return entry

    @property
    def op(self) -> str:
        if self.before is None:
            return "create"
        return "delete" if self.after is None else "update"


def _dump(entry: Entry | None) -> str | None:
    return None if entry is None else json.dumps(entry.to_json(), sort_keys=True)


def _load(text: str | None) -> Entry | None:
    return None if text is None else Entry.from_json(json.loads(text))


class VersionStore:
    """Every change is one row that also carries its version's author, reason and time.

    One version is then one INSERT, atomic and durable on its own (no explicit
    transaction: each DuckDB statement costs about a millisecond here), and the
    live state is the newest row of each entry.
    """

    def __init__(self, db: duckdb.DuckDBPyConnection) -> None:
        self.db = db

    def last_version(self) -> int:
        row = self.db.execute("SELECT coalesce(max(version), 0) FROM registry_changes").fetchone()
        return int(row[0]) if row else 0

    def load_state(self) -> dict[str, tuple[Entry, str | None]]:
        """The live registry as recorded: each entry's newest version, with its file."""
        rows = self.db.execute(
            """SELECT after, origin FROM registry_changes
               QUALIFY row_number() OVER (PARTITION BY entry_id ORDER BY version DESC) = 1"""
        ).fetchall()
        out: dict[str, tuple[Entry, str | None]] = {}
        for text, origin in rows:
            entry = _load(text)
            if entry is not None:
                out[entry.id] = (entry, origin)
        return out

    def record(
        self, version: int, changes: list[EntryChange], origins: dict[str, str | None], author: str,
        task: str | None, reason: str,
    ) -> Version:
        """Commit `version` durably in one statement (unnest of list parameters; executemany goes row by row)."""
        now = datetime.now(UTC)
        ids = [c.id for c in changes]
        self.db.execute(
            """INSERT INTO registry_changes
               SELECT ?, ?, ?, ?, ?, unnest(?), unnest(?)::JSON, unnest(?)::JSON, unnest(?)""",
            [version, now, author, task, reason, ids, [_dump(c.before) for c in changes],
             [_dump(c.after) for c in changes], [origins.get(c.id) for c in changes]],
        )
        return Version(version, now, author, reason, task, tuple(ids))

    def history(self, entry_id: str | None = None) -> list[Version]:
        where, params = ("", []) if entry_id is None else (
            "WHERE version IN (SELECT version FROM registry_changes WHERE entry_id = ?)", [entry_id])
        rows = self.db.execute(
            f"""SELECT version, any_value(time), any_value(author), any_value(reason), any_value(task),
                       list(entry_id ORDER BY entry_id)
                FROM registry_changes {where} GROUP BY version ORDER BY version""",
            params,
        ).fetchall()
        return [Version(int(r[0]), r[1], r[2], r[3], r[4], tuple(r[5])) for r in rows]

    def state_at(self, version: int, current: dict[str, Entry]) -> dict[str, Entry]:
        """The whole registry as it was right after `version` was committed."""
        state = dict(current)
        for entry_id, before in self._first_after(version):
            entry = _load(before)
            if entry is None:
                state.pop(entry_id, None)
            else:
                state[entry_id] = entry
        return state

    def _first_after(self, version: int) -> Iterable[tuple[str, Any]]:
        return self.db.execute(
            """SELECT entry_id, before FROM registry_changes WHERE version > ?
               QUALIFY row_number() OVER (PARTITION BY entry_id ORDER BY version) = 1""",
            [version],
        ).fetchall()
