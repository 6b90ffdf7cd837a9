"""Write-through: a change made through the API lands in the app's files, so disk shows the live state.

`_index.yaml` files are edited round-trip with ruamel.yaml, keeping people's
comments and key order; prompts are written as front matter plus template.
Tool functions from `tools/*.py` are trusted code that only people edit.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import LiteralScalarString

from ._entry import Entry, Problem
from ._sources import Folders, Origin, decode_text, read_bytes, source_kind
from ._store import EntryChange


class FileWriter:
    def __init__(self, root: Path, folders: Folders) -> None:
        self.root = root
        self.folders = folders
        self._yaml = YAML()
        self._yaml.indent(mapping=2, sequence=4, offset=2)
        self._yaml.width = 4096
        self._docs: dict[str, tuple[str, Any]] = {}  # file -> (text we wrote, its round-trip document)

    def target(self, entry: Entry, origin: Origin | None) -> str:
        """The file an entry is written to: where it came from, else one chosen by namespace and kind."""
        if origin is not None:
            return origin.file
        namespace_path = entry.namespace.replace(".", "/")
        prompts = self.folders.prompts
        if entry.kind == "prompt" and (entry.namespace == prompts or entry.namespace.startswith(prompts + ".")):
            return f"{namespace_path}/{entry.name}.md"
        return f"{self.folders.registry}/{namespace_path}/_index.yaml"

    def problem(self, change: EntryChange, origin: Origin | None) -> Problem | None:
        """Why this change cannot be written to files, if it cannot."""
        entry = change.entry
        file = self.target(entry, origin)
        kind = source_kind(file, self.folders)
        if kind == "tools":
            return Problem(
                f"this tool comes from {file}, trusted code that only people edit; change that file instead",
                file=file, entry=entry.id,
            )
        if kind == "prompt" and change.after is not None and change.after.kind != "prompt":
            return Problem(f"{file} holds a prompt; the entry cannot become a {change.after.kind}", file=file,
                           entry=entry.id)
        if kind is None:
            return Problem(f"{file} is not a source file of this app", file=file, entry=entry.id)
        if not Path(os.path.realpath(self.root / file)).is_relative_to(os.path.realpath(self.root)):
            return Problem(f"{file} leads outside the app folder (through a link); changes are only written inside "
                           "the app: replace the link with a real file or folder", file=file, entry=entry.id)
        return None

    def write(self, changes: list[EntryChange], origins: dict[str, Origin]) -> dict[str, Origin | None]:
        """Apply the changes to the files; return each entry's new origin (None once deleted)."""
        by_file: dict[str, list[EntryChange]] = {}
        for change in changes:
            by_file.setdefault(self.target(change.entry, origins.get(change.id)), []).append(change)
        placed: dict[str, Origin | None] = {}
        for file, file_changes in by_file.items():
            if source_kind(file, self.folders) == "prompt":
                self._write_prompt(file, file_changes[-1])
            else:
                self._write_index(file, file_changes)
            for change in file_changes:
                placed[change.id] = None if change.after is None else Origin(file)
        return placed

    def _write_prompt(self, file: str, change: EntryChange) -> None:
        path = self.root / file
        if change.after is None:
            path.unlink(missing_ok=True)
            return
        front: dict[str, Any] = dict(change.after.meta)
        if change.after.data.get("vars"):
            front["vars"] = dict(change.after.data["vars"])
        template = str(change.after.data.get("template", ""))
        header = ""
        if front:
            header = "---\n" + self._dump(front) + "---\n"
        _atomic_write(path, header + template)

    def _write_index(self, file: str, changes: list[EntryChange]) -> None:
        path = self.root / file
        cached = self._docs.pop(file, None)
        raw = read_bytes(Path(os.path.realpath(path)))
        if raw is not None:
            text = decode_text(raw)
            unchanged = cached is not None and cached[0] == text
            doc = cached[1] if cached is not None and unchanged else (self._yaml.load(text) or CommentedMap())
        else:
            doc = CommentedMap()
        doc.setdefault("namespace", changes[0].entry.namespace)
        items = doc.get("entries")
        if not isinstance(items, list):
            items = doc["entries"] = CommentedSeq()
        for change in changes:
            name = change.entry.name
            index = next((i for i, item in enumerate(items) if isinstance(item, dict) and item.get("name") == name),
                         None)
            if change.after is None:
                if index is not None:
                    del items[index]
            elif index is None:
                items.append(_blocks(change.after.to_mapping()))
            else:
                _update_in_place(items[index], _blocks(change.after.to_mapping()))
        text = self._dump(doc)
        _atomic_write(path, text)
        self._docs[file] = (text, doc)  # parsing with comments is slow: the next change starts from here

    def _dump(self, value: Any) -> str:
        from io import StringIO

        buffer = StringIO()
        self._yaml.dump(value, buffer)
        return buffer.getvalue()


def _blocks(value: Any) -> Any:
    """Multi-line strings (tool source, templates) as `|` block scalars, so files and git diffs read line by line."""
    if isinstance(value, str) and "\n" in value and value == value.rstrip(" "):
        return LiteralScalarString(value)
    if isinstance(value, dict):
        return {key: _blocks(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_blocks(item) for item in value]
    return value


def _update_in_place(target: Any, new: dict[str, Any]) -> None:
    """Change a mapping's keys to `new` while keeping the comments attached to unchanged keys."""
    for key in [k for k in target if k not in new]:
        del target[key]
    for key, value in new.items():
        if target.get(key) != value:
            target[key] = value


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
