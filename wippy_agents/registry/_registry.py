"""The live registry: entries by id, changed only by changesets that commit as numbered versions.

A changeset is checked as a whole (each entry by its kind, each change by the
policy hook, every reference in the resulting state) and then written through
to the files, recorded durably in the app's state, swapped into memory and announced to
subscribed processes, in that order. Nothing of a rejected changeset happens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import fnmatch
import functools
import getpass
import inspect
import logging
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .._runtime.proc import ProcessFn
from .._runtime.pubsub import Subscribers
from .._runtime.telemetry import OFF, AttributeValue, Telemetry
from .._runtime.text import os_text
from .._runtime.types import Ref
from ..errors import UsageError
from ..state import StaleVersion
from ..supervisor import Backoff, ChildSpec, Supervisor
from ..tools import FunctionTool
from ._entry import Change, Delete, Entry, EntryNotFound, Problem, RegistryError, non_json
from ._files import FileWriter
from ._imports import ImportFailed, import_guarded
from ._kinds import KindSpec, ProcessSpec, SpecErrors, SupervisorSpec, WorkflowSpec, parse_spec
from ._sources import (
    Folders,
    Origin,
    SourceFile,
    file_digest,
    module_name,
    read_source,
    scan,
    source_kind,
)
from ._store import EntryChange, record, recorded_entries, state_at

if TYPE_CHECKING:
    from .._runtime.node import Node
    from ..state import Version, VersionStore

log = logging.getLogger("wippy_agents.registry")

PolicyHook = Callable[[str, str, "Entry | None", "Entry | None"], "str | None"]
"""`hook(author, action, before, after)` returns why the change is refused, or None to allow it."""


Validator = Callable[[Mapping[str, "Entry"], Callable[[str], "KindSpec | None"], list["EntryChange"]], list["Problem"]]
"""`validate(state, spec_of, changes)`: the problems of the registry state that `changes` would produce."""


class RegistryEvent(NamedTuple):
    """Payload of the `registry.<type>` messages a subscribed process receives."""

    type: str  # begin, create, update, delete, commit, error
    version: int
    author: str
    reason: str
    id: str | None = None
    kind: str | None = None
    entry: Entry | None = None
    previous: Entry | None = None
    ids: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    task: str | None = None  # the agent's task that made the change, if an agent did


@dataclass(frozen=True)
class _Interest:
    """What a subscriber asked to hear about: ids matching `pattern`, of `kinds` (None: any)."""

    pattern: str
    kinds: frozenset[str] | None

    def wants(self, entry: Entry) -> bool:
        return fnmatch.fnmatchcase(entry.id, self.pattern) and (self.kinds is None or entry.kind in self.kinds)


def _is_pattern(target: str) -> bool:
    return any(ch in target for ch in "*?[")


class Registry:
    """Entries from an app folder, versioned in its state file; see `wippy_agents.registry`."""

    def __init__(
        self, root: Path, versions: VersionStore, *, folders: Folders | None = None, node: Node | None = None,
        owns_files: bool = True, telemetry: Telemetry = OFF,
    ) -> None:
        self.root = root.resolve()
        self.telemetry = telemetry
        """Where each commit's span goes (off unless the app traces)."""
        self.owns_files = owns_files
        """Whether this registry's files are the source of its entries (loaded, watched, written through); a
        cluster's node holds a copy of the app folder for its code, and follows the entries in the shared state."""
        self.folders = folders or Folders()
        self._subscribers: Subscribers[_Interest] | None = None if node is None else Subscribers(node)
        self.versions = versions
        """Where committed versions are kept (the app's state)."""
        self.writer = FileWriter(self.root, self.folders)
        self.policy: PolicyHook | None = None
        self.validators: list[Validator] = []
        """Checks across entries run at every commit (and boot), such as clashing tool names of an agent."""
        self.version = 0
        self.problems: dict[str, list[Problem]] = {}
        """Files whose last save was refused (by name, as text), with why: their last good entries stay in force."""
        self._refused: set[str] = set()  # the paths behind `problems`, as the OS names them
        self.tools: dict[str, FunctionTool] = {}
        self._entries: dict[str, Entry] = {}
        self._specs: dict[str, KindSpec] = {}
        self._origins: dict[str, Origin] = {}
        self._digests: dict[str, str] = {}
        self._builtins: dict[str, Entry] = {}
        self.builtins_revision = 0
        """Counts changes to the built-in entries (an MCP server's tools come and go without a version)."""
        self._views: dict[int, RegistryView] = {}
        self._builtin_specs: dict[str, KindSpec] = {}
        self._modules: dict[str, tuple[tuple[int, int], Any]] = {}

    # -- reading ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries or entry_id in self._builtins

    def get(self, entry_id: str) -> Entry:
        """The entry `entry_id`; `KeyError` (an `EntryNotFound`) naming close matches if there is none."""
        try:
            return self._entries[entry_id]
        except KeyError:
            if entry_id in self._builtins:
                return self._builtins[entry_id]
            raise EntryNotFound(_not_found(entry_id, self._entries)) from None

    def spec(self, entry_id: str) -> KindSpec:
        """The entry's fields, validated by its kind's model."""
        self.get(entry_id)
        return self._specs.get(entry_id) or self._builtin_specs[entry_id]

    def add_builtin(self, entry: Entry, tool: FunctionTool | None = None) -> None:
        """An entry the platform provides (`wippy:*`): readable and referable, never in files or versions."""
        self._builtins[entry.id] = entry
        self._builtin_specs[entry.id] = parse_spec(entry)
        if tool is not None:
            self.tools[entry.id] = tool
        self.builtins_revision += 1

    def remove_builtin(self, entry_id: str) -> None:
        """Take back an entry `add_builtin` provided (an MCP server's tool its server no longer lists)."""
        if self._builtins.pop(entry_id, None) is not None:
            self._builtin_specs.pop(entry_id, None)
            self.tools.pop(entry_id, None)
            self.builtins_revision += 1

    def find(self, kind: str | None = None, namespace: str | None = None, pattern: str | None = None) -> list[Entry]:
        """Entries by kind, exact namespace and/or id pattern (`app.*:*`), sorted by id."""
        return [
            entry
            for entry_id, entry in sorted((self._builtins | self._entries).items())
            if (kind is None or entry.kind == kind)
            and (namespace is None or entry.namespace == namespace)
            and (pattern is None or fnmatch.fnmatchcase(entry_id, pattern))
        ]

    def at(self, version: int) -> Registry | RegistryView:
        """The registry as it was at `version` (the registry itself for the current version).

        A durable task reads its entries from the version it started on, so a
        resumed task keeps the configuration it began with.
        """
        if version >= self.version:
            return self
        view = self._views.get(version)
        if view is None:
            state = state_at(self.versions, version, self._entries)
            view = self._views[version] = RegistryView(self, version, self._builtins | state)
        return view

    def view(self) -> Mapping[str, Entry]:
        """Every entry by id, built-ins included (a read-only view for code that scans many entries)."""
        return types.MappingProxyType(self._builtins | self._entries)

    def origin(self, entry_id: str) -> Origin | None:
        """The file (and line) an entry lives in."""
        return self._origins.get(entry_id)

    # -- changing through the API -------------------------------------------------

    def apply(
        self, changes: Iterable[Change | Mapping[str, Any]], *, author: str, reason: str = "", task: str | None = None
    ) -> int:
        """Apply entries (create or update) and `Delete`s all-or-nothing; return the new version.

        The change is written through to the app's files. Raises `RegistryError`
        listing every problem, with nothing applied, if any part is refused.
        """
        diff = self._changeset(changes)
        if not diff:
            return self.version
        return self._commit(diff, author=author, reason=reason, task=task, write=True)

    def check(self, changes: Iterable[Change | Mapping[str, Any]]) -> list[EntryChange]:
        """What `apply` would change, checked (kinds, references, files; not policy) without committing.

        Raises `RegistryError` listing every problem, as `apply` would.
        """
        diff = self._changeset(changes)
        self._check(diff, author="", policy=False)
        return diff

    def _changeset(self, changes: Iterable[Change | Mapping[str, Any]]) -> list[EntryChange]:
        """The entries that `changes` would really change, or `RegistryError` if they cannot be written."""
        wanted: dict[str, Entry | None] = {}
        for item in changes:
            change = Entry.from_json(item) if isinstance(item, Mapping) else item
            wanted[change.id] = None if isinstance(change, Delete) else change
        problems = [
            Problem("there is no such entry to delete", entry=entry_id)
            for entry_id, entry in wanted.items()
            if entry is None and entry_id not in self._entries and entry_id not in self._builtins
        ]
        problems += [Problem("a built-in entry cannot be changed", entry=entry_id)
                     for entry_id in wanted if entry_id in self._builtins]
        diff = [
            EntryChange(entry_id, self._entries.get(entry_id), entry)
            for entry_id, entry in wanted.items()
            if self._entries.get(entry_id) != entry
        ]
        for entry_change in diff:
            origin = self._origins.get(entry_change.id)
            problem = self.writer.problem(entry_change, origin)
            if problem is None and (file := self.writer.target(entry_change.entry, origin)) in self._refused:
                problem = Problem(f"{file} is refused (see `wippy registry lint`): fix the file before its entries "
                                  "can be changed", file=file, entry=entry_change.id)
            if problem is not None:
                problems.append(problem)
        if problems:
            raise RegistryError("changeset rejected; nothing was applied", problems)
        return diff

    def rollback(self, version: int, *, author: str | None = None, reason: str | None = None) -> int:
        """Restore the registry to its state as of `version`, as a new version written through to files.

        Tools defined by `tools/*.py` files are trusted code kept in those files
        (and in git): a rollback leaves them as they are.
        """
        if not 0 <= version <= self.version:
            raise RegistryError(f"there is no version {version}; the latest is {self.version}")
        target = state_at(self.versions, version, self._entries)
        changes = []
        skipped = []
        for entry_id in sorted(set(target) | set(self._entries)):
            before, after = self._entries.get(entry_id), target.get(entry_id)
            if before == after:
                continue
            origin = self._origins.get(entry_id)
            if (origin is not None and source_kind(origin.file, self.folders) == "tools") or (
                before is None and after is not None and after.kind == "tool" and after.data.get("file")
            ):
                skipped.append(entry_id)
                continue
            changes.append(EntryChange(entry_id, before, after))
        note = f"rollback to version {version}"
        if skipped:
            note += f" (left as they are: {', '.join(skipped)}, defined in tools/ files; restore those with git)"
        if not changes:
            return self.version
        return self._commit(
            changes, author=author or f"user:{getpass.getuser()}", reason=reason or note, task=None, write=True
        )

    def history(self, entry_id: str | None = None) -> list[Version]:
        """Committed versions, oldest first; only those that changed `entry_id` when given."""
        return self.versions.history(entry_id)

    def diff(self, v1: int, v2: int) -> list[EntryChange]:
        """What changed between the states as of `v1` and `v2`, by entry id."""
        for v in (v1, v2):
            if not 0 <= v <= self.version:
                raise RegistryError(f"there is no version {v}; the latest is {self.version}")
        a = state_at(self.versions, v1, self._entries)
        b = state_at(self.versions, v2, self._entries)
        return [
            EntryChange(entry_id, a.get(entry_id), b.get(entry_id))
            for entry_id in sorted(set(a) | set(b))
            if a.get(entry_id) != b.get(entry_id)
        ]

    # -- the commit path shared by the API, file changes and boot ------------------------

    def _check(self, changes: list[EntryChange], *, author: str, policy: bool) -> dict[str, KindSpec]:
        """Validate a changeset against the state it would produce; return the new entries' specs."""
        problems: list[Problem] = []
        specs: dict[str, KindSpec] = {}
        for change in changes:
            origin = self._origins.get(change.id)
            file = origin.file if origin else None
            if change.after is not None:
                problems += self._json_problems(change.after, file)
                try:
                    specs[change.id] = parse_spec(change.after)
                except SpecErrors as errors:
                    problems += [
                        Problem(message, file=file, entry=change.id, field=".".join(map(str, loc)))
                        for loc, message in errors.errors
                    ]
            if policy and self.policy is not None:
                action = "registry." + change.op
                refusal = self.policy(author, action, change.before, change.after)
                if refusal:
                    problems.append(Problem(f"{action} refused by policy: {refusal}", file=file, entry=change.id))
        if not problems:
            problems = self._dangling(changes, specs)
        if problems:
            raise RegistryError("changeset rejected; nothing was applied", problems)
        return specs

    @staticmethod
    def _json_problems(entry: Entry, file: str | None) -> list[Problem]:
        """What of the entry cannot be stored: entries are JSON data (code can hand in any Python value)."""
        return [Problem(message, file=file, entry=entry.id, field=".".join(map(str, (*at, *loc))))
                for at, fields in ((("meta",), entry.meta), ((), entry.data))
                for loc, message in non_json(dict(fields))]

    def _dangling(self, changes: list[EntryChange], specs: dict[str, KindSpec]) -> list[Problem]:
        """References left pointing at nothing (or at the wrong kind) by applying `changes`."""
        state = self._builtins | self._entries
        for change in changes:
            if change.after is None:
                state.pop(change.id, None)
            else:
                state[change.id] = change.after
        removed = any(c.after is None or (c.before and c.before.kind != c.after.kind) for c in changes)
        to_check = state.keys() if removed else [c.id for c in changes if c.after is not None]
        problems = []
        for entry_id in to_check:
            spec = specs.get(entry_id) or self._specs.get(entry_id)
            if spec is None:
                continue
            for ref in spec.references():
                if _is_pattern(ref.target):
                    continue
                target = state.get(ref.target)
                if target is not None and target.kind in ref.kinds or target is None and _served(ref.target, state):
                    continue
                if target is not None:
                    message = f"{ref.target!r} is {_a(target.kind)}, not {_a(' or '.join(ref.kinds))}"
                else:
                    message = _not_found(ref.target, {i: e for i, e in state.items() if e.kind in ref.kinds},
                                         what=" or ".join(ref.kinds))
                problems.append(self._located(Problem(message, entry=entry_id, field=ref.field)))
        if not problems:
            def spec_of(entry_id: str) -> KindSpec | None:
                return specs.get(entry_id) or self._specs.get(entry_id) or self._builtin_specs.get(entry_id)

            for validate in self.validators:
                problems += [self._located(problem) for problem in validate(state, spec_of, changes)]
        return problems

    def _located(self, problem: Problem) -> Problem:
        """The problem with the file and line of its entry filled in."""
        origin = self._origins.get(problem.entry or "")
        if origin is None or problem.file is not None:
            return problem
        return dataclasses.replace(problem, file=origin.file, line=origin.line)

    def _commit(
        self,
        changes: list[EntryChange],
        *,
        author: str,
        reason: str,
        task: str | None,
        write: bool,
        origins: Mapping[str, Origin] | None = None,
        policy: bool = True,
    ) -> int:
        """Check `changes` and commit them as the next version, in a `registry.commit` span when traced."""
        attributes: dict[str, AttributeValue] = {"wippy.registry.author": author, "wippy.registry.reason": reason,
                                                 "wippy.registry.changes": len(changes),
                                                 **({"wippy.task.id": task} if task else {})}
        with self.telemetry.span("registry.commit", attributes) as span:
            version = self._commit_changes(changes, author=author, reason=reason, task=task, write=write,
                                           origins=origins, policy=policy)
            span.set_attribute("wippy.registry.version", version)
            return version

    def _commit_changes(
        self,
        changes: list[EntryChange],
        *,
        author: str,
        reason: str,
        task: str | None,
        write: bool,
        origins: Mapping[str, Origin] | None,
        policy: bool,
    ) -> int:
        specs = self._check(changes, author=author, policy=policy)
        placed: dict[str, Origin | None] = dict(origins or {})
        if write and self.owns_files:
            placed.update(self._write_through(changes))
        try:
            recorded = record(
                self.versions, self.version + 1, changes,
                {c.id: (o.file if (o := placed.get(c.id) or self._origins.get(c.id)) else None) for c in changes},
                author=author, task=task, reason=reason,
            )
        except StaleVersion:  # another node committed first: take its versions in, then commit on top of them
            self.follow()
            changes = [EntryChange(c.id, self._entries.get(c.id), c.after) for c in changes
                       if self._entries.get(c.id) != c.after]
            if not changes:
                return self.version
            return self._commit(changes, author=author, reason=reason, task=task, write=write, origins=origins,
                                policy=policy)
        self.version = recorded.version
        self._take_in(changes, specs, placed)
        self._publish(recorded, changes)
        return recorded.version

    def _take_in(self, changes: list[EntryChange], specs: Mapping[str, KindSpec],
                 origins: Mapping[str, Origin | None]) -> None:
        """Make `changes` this registry's entries, with their specs and (where known) the files they live in."""
        for change in changes:
            if change.after is None:
                self._forget(change.id)
            else:
                self._entries[change.id] = change.after
                self._specs[change.id] = specs[change.id]
                if (origin := origins.get(change.id)) is not None:
                    self._origins[change.id] = origin

    def _forget(self, entry_id: str) -> None:
        self._entries.pop(entry_id, None)
        self._specs.pop(entry_id, None)
        self._origins.pop(entry_id, None)
        self.tools.pop(entry_id, None)

    # -- files ------------------------------------------------------------------------

    def load(self) -> None:
        """Boot: read every source file and record what changed since the state file last saw them.

        A file that cannot be used is that file's problem (its entries from the state file
        stay in force); no file can make this raise.
        """
        self.version = self.versions.last_version()
        known = recorded_entries(self.versions)
        sources = [read_source(self.root, relpath, self.folders) for relpath in scan(self.root, self.folders)]
        candidate: dict[str, tuple[Entry, Origin]] = {}
        specs: dict[str, KindSpec] = {}
        if not self.owns_files:
            self._load_recorded(sources, known)
            return
        kept_files: set[str] = set()
        for source in sources:
            if not source.digest and not source.problems:
                continue  # gone since the scan
            self._claim(source, candidate)
            if source.problems:
                self._refuse(source.file, source.problems)
                kept_files.add(source.file)
            else:
                self._accept(source)
                candidate.update(source.entries)
                specs.update(source.specs)
        # a file in error keeps the entries it had when it was last good
        for entry_id, (entry, origin) in known.items():
            if origin in kept_files and entry_id not in candidate:
                try:
                    specs[entry_id] = parse_spec(entry)
                except SpecErrors:  # valid when stored, not by this version's rules: it cannot stay in force
                    continue
                candidate[entry_id] = (entry, Origin(origin))
        self._drop_dangling(candidate, specs)
        changes = [
            EntryChange(entry_id, known[entry_id][0] if entry_id in known else None,
                        candidate[entry_id][0] if entry_id in candidate else None)
            for entry_id in sorted(set(known) | set(candidate))
            if (known[entry_id][0] if entry_id in known else None)
            != (candidate[entry_id][0] if entry_id in candidate else None)
        ]
        if changes:
            reason = "loaded from files" if not known else "files changed while the node was not running"
            touched = sorted({file for c in changes
                              if (file := candidate[c.id][1].file if c.id in candidate else known[c.id][1])})
            try:  # a change made while the node was down is its files', as one the watcher sees is (`file:<path>`)
                recorded = record(
                    self.versions, self.version + 1, changes,
                    {c.id: self._origins[c.id].file if c.id in self._origins else None for c in changes},
                    author="file:" + ",".join(touched) if known and touched else "files", task=None, reason=reason,
                )
            except StaleVersion:  # another node committed meanwhile: compare the files with that
                self.load()
                return
            self.version = recorded.version

    def _load_recorded(self, sources: list[SourceFile], known: Mapping[str, tuple[Entry, str | None]]) -> None:
        """Boot a follower: the entries as the shared state holds them; the files only for the code they hold."""
        for source in sources:
            if source.digest and not source.problems:
                self._accept(source)
        candidate = {entry_id: (entry, Origin(origin or "")) for entry_id, (entry, origin) in known.items()}
        specs: dict[str, KindSpec] = {}
        for entry_id, (entry, _) in list(candidate.items()):
            try:
                specs[entry_id] = parse_spec(entry)
            except SpecErrors as error:
                log.error("registry: %s as the state holds it is refused here: %s", entry_id, error)
                del candidate[entry_id]
        self._drop_dangling(candidate, specs)

    def follow(self) -> int | None:
        """Catch up with the versions other nodes committed to a shared state; the newest, or None if none was new.

        Subscribers hear of the changes as of a local commit. A registry that owns its
        files writes the changes through to them (an agent on another node wrote them).
        """
        latest = self.versions.last_version()
        if latest <= self.version:
            return None
        known = {entry_id: recorded for entry_id, recorded in recorded_entries(self.versions).items()
                 if entry_id not in self._builtins}
        changes, specs = [], {}
        for entry_id in sorted(set(known) | (set(self._entries) - set(self._builtins))):
            before, after = self._entries.get(entry_id), known[entry_id][0] if entry_id in known else None
            if before == after:
                continue
            if after is not None:
                try:
                    specs[entry_id] = parse_spec(after)
                except SpecErrors as error:
                    log.error("registry: %s of version %d is refused here: %s", entry_id, latest, error)
                    continue
            changes.append(EntryChange(entry_id, before, after))
        newer = [version for version in self.versions.history() if version.version > self.version]
        self.version = latest
        if self.owns_files and changes:
            self._write_through(changes)
        self._take_in(changes, specs, {entry_id: Origin(file) for entry_id, (_, file) in known.items() if file})
        if changes and newer:
            self._publish(newer[-1], changes)
        return latest

    def follow_announced(self, loop: asyncio.AbstractEventLoop) -> None:
        """Follow the versions other nodes commit as the shared state announces them, on `loop` (the node's)."""
        if not self.versions.shared:
            return

        def follow() -> None:
            try:
                self.follow()
            except Exception as error:  # the database is away: the next announcement (or reconnect) catches up
                log.warning("registry: could not follow the new versions in the state: %s", error)

        def announced() -> None:
            loop.call_soon_threadsafe(follow)

        self.versions.on_version(announced)

    def _write_through(self, changes: list[EntryChange]) -> dict[str, Origin | None]:
        """Write `changes` to the files their entries live in; our own write is no news to the watcher."""
        written = self.writer.write(changes, self._origins)
        for file in {self.writer.target(c.entry, self._origins.get(c.id)) for c in changes}:
            self._digests[file] = file_digest(self.root, file)
        return written

    def _claim(self, source: SourceFile, taken: Mapping[str, tuple[Entry, Origin]]) -> None:
        """An id may live in one file only: a second file defining it is refused."""
        for entry_id in list(source.entries):
            if entry_id in self._builtins:
                source.problems.append(Problem("the id belongs to a built-in entry; choose another name",
                                               file=source.file, entry=entry_id, line=source.entries[entry_id][1].line))
                continue
            holder = taken.get(entry_id) or ((None, self._origins[entry_id]) if entry_id in self._origins else None)
            if holder is not None and holder[1].file != source.file:
                source.problems.append(Problem(f"the id is already defined in {holder[1].file}", file=source.file,
                                               entry=entry_id, line=source.entries[entry_id][1].line))
        if source.problems:
            source.entries.clear()
            source.tools.clear()

    def _drop_dangling(self, candidate: dict[str, tuple[Entry, Origin]], specs: dict[str, KindSpec]) -> None:
        """At boot, a file whose entries point at missing entries is refused as a whole."""
        while True:
            self._entries = {entry_id: entry for entry_id, (entry, _) in candidate.items()}
            self._origins = {entry_id: origin for entry_id, (_, origin) in candidate.items()}
            self._specs = {entry_id: specs[entry_id] for entry_id in self._entries}
            everything = [EntryChange(entry_id, None, entry) for entry_id, entry in self._entries.items()]
            problems = self._dangling(everything, self._specs)
            if not problems:
                return
            bad_files = {p.file for p in problems}
            for file in bad_files:
                self._refuse(file or "?", [p for p in problems if p.file == file])
            for entry_id in [i for i, (_, origin) in candidate.items() if origin.file in bad_files]:
                del candidate[entry_id]

    def _accept(self, source: SourceFile) -> None:
        self._digests[source.file] = source.digest
        self._forgive(source.file)
        for entry_id in [i for i in self.tools if self._origins.get(i, Origin("")).file == source.file]:
            if entry_id not in source.tools:
                del self.tools[entry_id]
        self.tools.update(source.tools)

    def _refuse(self, file: str, problems: list[Problem]) -> None:
        self.problems[os_text(file)] = problems
        self._refused.add(file)
        for problem in problems:
            log.warning("registry: %s", problem)

    def _forgive(self, file: str) -> None:
        self.problems.pop(os_text(file), None)
        self._refused.discard(file)

    async def refresh(self, relpaths: Iterable[str] | None = None) -> int | None:
        """Reload these files (when None, every source file that changed, appeared or vanished) as one changeset.

        Reading and parsing run in a worker thread; only the commit runs on the event
        loop, so a big file or a slow tool import never stalls the node. What the watcher calls.
        """
        everything = relpaths is None
        wanted = self._known_files() if relpaths is None else set(relpaths)
        return self._commit_reads(await asyncio.to_thread(self._read_changed, wanted, everything))

    def _known_files(self) -> set[str]:
        return set(self._digests) | self._refused

    def _read_changed(self, relpaths: set[str], everything: bool = False) -> list[tuple[SourceFile, str | None]]:
        """Each of `relpaths` (and, for `everything`, every source file) that changed since it was accepted.

        Returns each file read with the digest that was in force when it was read.
        Reads registry state only by single lookups, so it may run in a worker thread.
        """
        if everything:
            relpaths = relpaths | set(scan(self.root, self.folders))
        reads = []
        for relpath in sorted(relpaths):
            if source_kind(relpath, self.folders) is None:
                continue
            known = self._digests.get(relpath)
            if known is not None and file_digest(self.root, relpath) == known:
                continue
            reads.append((read_source(self.root, relpath, self.folders), known))
        return reads

    def _commit_reads(self, reads: list[tuple[SourceFile, str | None]]) -> int | None:
        """Commit files read by `_read_changed` as one changeset (per file if together they are refused)."""
        sources = []
        for source, known in reads:
            if self._digests.get(source.file) != known:
                continue  # committed since it was read (`apply` wrote it through): the watcher brings the news
            if not source.problems:
                self._claim(source, {})
            if source.problems:
                self._refuse(source.file, source.problems)
                self._publish_error(source.file, source.problems)
            else:
                sources.append(source)
        if not sources:
            return None
        try:
            return self._commit_sources(sources)
        except RegistryError:
            if len(sources) == 1:
                return None
        result = None
        for source in sources:
            result = self._commit_sources([source]) if source.file else result
        return result

    def _commit_sources(self, sources: list[SourceFile]) -> int | None:
        changes: list[EntryChange] = []
        origins: dict[str, Origin] = {}
        for source in sources:
            old_ids = {i for i, origin in self._origins.items() if origin.file == source.file}
            for entry_id in sorted(old_ids - set(source.entries)):
                changes.append(EntryChange(entry_id, self._entries[entry_id], None))
            for entry_id, (entry, origin) in source.entries.items():
                origins[entry_id] = origin
                if self._entries.get(entry_id) != entry:
                    changes.append(EntryChange(entry_id, self._entries.get(entry_id), entry))
        author = "file:" + ",".join(s.file for s in sources)
        version = None
        if changes:
            try:
                version = self._commit(changes, author=author, reason="file changed", task=None, write=False,
                                       origins=origins, policy=False)
            except RegistryError as error:
                for source in sources:
                    mine = [p for p in error.problems if p.file in (None, source.file)] or list(error.problems)
                    self._refuse(source.file, mine)
                    self._publish_error(source.file, mine)
                raise
        for source in sources:
            self._origins.update({i: o for i, o in origins.items() if i in self._entries})
            if source.digest:
                self._accept(source)
            else:
                self._digests.pop(source.file, None)
                self._forgive(source.file)
        return version

    # -- events -----------------------------------------------------------------------

    def subscribe(self, pattern: str = "*", kinds: Iterable[str] | None = None) -> Ref:
        """Subscribe the calling process to changes of entries matching `pattern` (and `kinds`).

        It then receives `registry.begin`, `registry.create|update|delete` and
        `registry.commit` messages (payload `RegistryEvent`) for each version that
        touches such an entry, in commit order, and `registry.error` when a file
        that held such entries is refused.
        """
        if self._subscribers is None:
            raise UsageError("this registry runs on no node: nothing can subscribe to it")
        return self._subscribers.add(_Interest(pattern, frozenset(kinds) if kinds else None))

    def _publish(self, version: Version, changes: list[EntryChange]) -> None:
        for pid, interest in self._subscribers or ():
            mine = [c for c in changes if any(interest.wants(e) for e in (c.before, c.after) if e is not None)]
            if not mine:
                continue
            ids = tuple(c.id for c in mine)
            head = (version.version, version.author, version.reason)
            send = functools.partial(self._subscribers.send, pid)  # type: ignore[union-attr]
            send("registry.begin", RegistryEvent("begin", *head, ids=ids))
            for c in mine:
                send(f"registry.{c.op}", RegistryEvent(c.op, *head, id=c.id, kind=c.entry.kind, entry=c.after,
                                                       previous=c.before))
            send("registry.commit", RegistryEvent("commit", *head, ids=ids, task=version.task))

    def _publish_error(self, file: str, problems: list[Problem]) -> None:
        held = [entry for entry_id, entry in self._entries.items() if self._origins[entry_id].file == file]
        for pid, interest in self._subscribers or ():
            if interest.pattern == "*" or any(interest.wants(entry) for entry in held):
                self._subscribers.send(pid, "registry.error", RegistryEvent(  # type: ignore[union-attr]
                    "error", self.version, f"file:{os_text(file)}", "file refused", problems=tuple(problems)))

    # -- code named by entries --------------------------------------------------------------

    def host_of(self, entry_id: str) -> str | None:
        """Where a process or supervisor entry says it runs (None: wherever it is spawned)."""
        spec = self._specs.get(entry_id)
        return spec.host if isinstance(spec, ProcessSpec | SupervisorSpec) else None

    def process_function(self, entry_id: str) -> ProcessFn:
        """The function a `process` entry names (or a `supervisor` entry's Supervisor), ready to spawn."""
        spec = self.spec(entry_id)
        if isinstance(spec, SupervisorSpec):
            return self._supervisor(spec)
        if not isinstance(spec, ProcessSpec):
            raise RegistryError(f"{entry_id!r} is a {self.get(entry_id).kind}; only process and supervisor "
                                "entries can be spawned")
        fn = self._load_function(entry_id, spec.file, spec.module, spec.function)
        return functools.partial(fn, *spec.args) if spec.args else fn

    def workflow_function(self, entry_id: str) -> Any:
        """The async function a python `workflow` entry names, loaded from the app's code."""
        spec = self.spec(entry_id)
        if not isinstance(spec, WorkflowSpec) or spec.runtime != "python":
            raise RegistryError(f"{entry_id!r} is not a python workflow entry")
        assert spec.function is not None
        fn = self._load_function(entry_id, spec.file, spec.module, spec.function)
        if not inspect.iscoroutinefunction(fn):
            raise RegistryError(f"{entry_id}: {spec.function} must be an async function (ctx, *args)")
        return fn

    def _supervisor(self, spec: SupervisorSpec) -> Supervisor:
        backoff = None if spec.backoff is None else Backoff(**spec.backoff.model_dump())
        children = [
            ChildSpec(child.id, child.process, tuple(child.args), child.restart, child.shutdown, child.name)
            for child in spec.children
        ]
        return Supervisor(children, strategy=spec.strategy, max_restarts=spec.max_restarts,
                          max_seconds=spec.max_seconds, backoff=backoff)

    def _load_function(self, entry_id: str, file: str | None, module: str | None, function: str) -> Any:
        import importlib

        if file is not None:
            path = (self.root / file).resolve()
            if not path.is_relative_to(self.root):
                raise RegistryError(f"{entry_id}: file {file!r} is outside the app folder")
            try:
                stat = path.stat()
            except OSError as error:
                raise RegistryError(f"{entry_id}: cannot read {file}: {error.strerror}") from None
            stamp = (stat.st_mtime_ns, stat.st_size)
            cached = self._modules.get(str(path))
            if cached is None or cached[0] != stamp:
                relpath = path.relative_to(self.root).as_posix()
                try:
                    loaded = import_guarded(path, f"wippy_app.{module_name(relpath)}")
                except ImportFailed as error:
                    raise RegistryError(f"{entry_id}: cannot import {relpath}", [
                        Problem(error.message, file=relpath, line=error.line, entry=entry_id, field="file")]) from None
                self._modules[str(path)] = cached = (stamp, loaded)
            mod = cached[1]
        else:
            assert module is not None
            mod = importlib.import_module(module)
        fn = getattr(mod, function, None)
        if fn is None:
            raise RegistryError(f"{entry_id}: {file or module} has no function {function!r}")
        return fn


class RegistryView:
    """A read-only registry as of an older version: `get`, `spec`, `view` and the live tool functions."""

    def __init__(self, registry: Registry, version: int, entries: dict[str, Entry]) -> None:
        self.version = version
        self.tools = registry.tools  # code cannot be pinned: tools/ files are what they are now
        self._entries = entries
        self._specs: dict[str, KindSpec] = {}

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def get(self, entry_id: str) -> Entry:
        try:
            return self._entries[entry_id]
        except KeyError:
            raise EntryNotFound(_not_found(entry_id, self._entries) + f" (as of version {self.version})") from None

    def spec(self, entry_id: str) -> KindSpec:
        spec = self._specs.get(entry_id)
        if spec is None:
            spec = self._specs[entry_id] = parse_spec(self.get(entry_id))
        return spec

    def view(self) -> Mapping[str, Entry]:
        return types.MappingProxyType(self._entries)


def _served(entry_id: str, state: Mapping[str, Entry]) -> bool:
    """Whether `entry_id` is a tool an `mcp_server` entry provides (`mcp.<its name>:<tool>`) once its server is
    connected: an agent may name one before the server has listed it."""
    namespace = entry_id.partition(":")[0]
    return namespace.startswith("mcp.") and any(
        entry.kind == "mcp_server" and entry.name == namespace.removeprefix("mcp.") for entry in state.values())


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _not_found(entry_id: str, entries: Mapping[str, Entry], what: str = "entry") -> str:
    close = difflib.get_close_matches(entry_id, list(entries), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"no {what} {entry_id!r} in the registry{hint}"
