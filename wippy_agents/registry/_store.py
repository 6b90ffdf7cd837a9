"""Registry versions in the app's state (its `VersionStore`): who changed what, when and why, each entry before and after.

The store keeps entries as JSON data; here they become `Entry`s again. The newest
version of each entry is the live registry (so a restart can tell which file
edits happened while the node was down), and the state as of any version is the
live state with later changes undone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..state import ChangeRecord, Version, VersionStore
from ._entry import Entry


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


def record(versions: VersionStore, version: int, changes: list[EntryChange], origins: Mapping[str, str | None], *,
           author: str, task: str | None, reason: str) -> Version:
    """Commit `version` durably: every change with the file its entry lives in."""
    rows = [ChangeRecord(c.id, _data(c.before), _data(c.after), origins.get(c.id)) for c in changes]
    return versions.record(version, rows, author=author, task=task, reason=reason)


def _data(entry: Entry | None) -> dict[str, Any] | None:
    return None if entry is None else entry.to_json()


def recorded_entries(versions: VersionStore) -> dict[str, tuple[Entry, str | None]]:
    """The live registry as recorded: each entry's newest version, with its file."""
    return {entry_id: (Entry.from_json(data), origin) for entry_id, (data, origin) in versions.live().items()}


def state_at(versions: VersionStore, version: int, current: Mapping[str, Entry]) -> dict[str, Entry]:
    """The whole registry as it was right after `version` was committed."""
    state = dict(current)
    for entry_id, before in versions.undo_after(version).items():
        if before is None:
            state.pop(entry_id, None)
        else:
            state[entry_id] = Entry.from_json(before)
    return state
