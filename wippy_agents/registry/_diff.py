"""Entries as people read them (the `_index.yaml` form) and unified diffs between two states of one.

Multi-line strings (tool source, prompt templates) are written as YAML block
scalars so a diff of a tool's code reads line by line, as it would in git.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml

from ._entry import Entry
from ._store import EntryChange


class _BlockDumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and value == value.rstrip(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def entry_yaml(entry: Entry) -> str:
    """An entry as it reads in an `_index.yaml` file, named by its full id."""
    mapping: dict[str, Any] = entry.to_mapping() | {"name": entry.id}
    return yaml.dump(mapping, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True)


def change_diff(change: EntryChange, before_label: str = "before", after_label: str = "after") -> str:
    """A unified diff of one entry's change, headed by what happens to which entry."""
    before = entry_yaml(change.before).splitlines(keepends=True) if change.before else []
    after = entry_yaml(change.after).splitlines(keepends=True) if change.after else []
    body = "".join(difflib.unified_diff(before, after, before_label, after_label, n=3))
    return f"{change.op} {change.id}\n{body}"
