"""Entries, their ids, and the errors that point at the file, line, entry and field at fault."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ArgumentError, UsageError

ID_RULE = (
    "an id is 'namespace:name': the namespace is dot-separated words of letters, digits, '_' or '-' "
    "(starting with a letter or '_'), the name letters, digits, '_', '-' or '.'"
)
_ID = re.compile(r"[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*:\w[\w.-]*")

MAX_INT_BITS = 64
"""Integers in entries fit in 64 bits (sign aside): JSON readers and DuckDB take them, and a 5000-digit
number cannot even be printed by Python without raising."""


def check_id(entry_id: object) -> str:
    """Return `entry_id` if it is well formed; otherwise raise `ValueError` showing it and the rule.

    The whole id must match (`fullmatch`): `$` would let `"app:x\n"` pass as a second `app:x`.
    """
    if not isinstance(entry_id, str) or not _ID.fullmatch(entry_id):
        raise ArgumentError(f"bad entry id {entry_id!r}: {ID_RULE}")
    return entry_id


def non_json(value: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Where `value` holds something that is not JSON data, and what: entries are stored as JSON.

    Yields (path, message) for each value that JSON cannot hold or that would not come
    back equal (NaN, a date, bytes, a set, a key that is not text, a huge integer, a
    list that contains itself). Walks without recursion, so any nesting is safe to check.
    """
    inside: set[int] = set()  # the containers on the path being walked
    stack: list[tuple[tuple[str | int, ...], Any] | int] = [((), value)]
    while stack:
        top = stack.pop()
        if isinstance(top, int):  # the walk has left this container
            inside.discard(top)
            continue
        path, item = top
        if isinstance(item, dict | list | tuple):
            if id(item) in inside:
                yield path, "the value contains itself; JSON data cannot"
                continue
            inside.add(id(item))
            stack.append(id(item))
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    yield path, f"the key {key!r} is not text; quote it to make it text"
            stack.extend(((*path, key), child) for key, child in reversed(item.items()) if isinstance(key, str))
        elif isinstance(item, list | tuple):
            stack.extend(((*path, index), item[index]) for index in reversed(range(len(item))))
        elif isinstance(item, bool | int):
            if abs(item).bit_length() > MAX_INT_BITS:
                yield path, f"the number is larger than {MAX_INT_BITS} bits; quote it to keep it as text"
        elif isinstance(item, float):
            if not math.isfinite(item):
                yield path, f"{item} is not a number JSON can hold; quote it to keep it as text"
        elif item is not None and not isinstance(item, str):
            what, advice = _NOT_JSON.get(type(item).__name__, (f"a {type(item).__name__} value", "store text"))
            yield path, f"{what} is not JSON data; {advice}"


_NOT_JSON = {
    "date": ("a date", "quote it to keep it as text"),
    "datetime": ("a date and time", "quote it to keep it as text"),
    "bytes": ("binary data (!!binary)", "store base64 text instead"),
    "set": ("a set (!!set)", "write a list instead"),
}


def split_id(entry_id: str) -> tuple[str, str]:
    namespace, _, name = entry_id.partition(":")
    return namespace, name


@dataclass(frozen=True)
class Entry:
    """One registry entry. `data` holds the kind's own fields; treat `meta` and `data` as read-only."""

    id: str
    kind: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_id(self.id)
        if not isinstance(self.kind, str) or not self.kind:
            raise ArgumentError(f"entry {self.id!r}: kind must be a non-empty string, not {self.kind!r}")

    @property
    def namespace(self) -> str:
        return split_id(self.id)[0]

    @property
    def name(self) -> str:
        return split_id(self.id)[1]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "meta": dict(self.meta), "data": dict(self.data)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Entry:
        return cls(value["id"], value["kind"], value.get("meta") or {}, value.get("data") or {})

    def to_mapping(self) -> dict[str, Any]:
        """The flat form used in `_index.yaml` files: name, kind, meta, then the kind's fields."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.meta:
            out["meta"] = dict(self.meta)
        out.update(self.data)
        return out


@dataclass(frozen=True)
class Delete:
    """A change that removes the entry `id`."""

    id: str

    def __post_init__(self) -> None:
        check_id(self.id)


Change = Entry | Delete


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an entry or a file, located as precisely as we know."""

    message: str
    file: str | None = None
    line: int | None = None
    entry: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file or "<api>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.entry:
            parts.append(f"entry {self.entry}")
        if self.field:
            parts.append(f"field {self.field}")
        return f"{': '.join(parts)}: {self.message}"


class RegistryError(UsageError):
    """A registry operation failed; `problems` lists every reason, each with its location."""

    def __init__(self, summary: str, problems: list[Problem] | tuple[Problem, ...] = ()) -> None:
        self.summary = summary
        self.problems = tuple(problems)
        text = summary if not problems else summary + "\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(text)


class EntryNotFound(KeyError, RegistryError):
    """`registry.get` of an id that does not exist; the message names close matches."""

    def __init__(self, summary: str) -> None:
        RegistryError.__init__(self, summary)

    def __str__(self) -> str:
        return self.summary
