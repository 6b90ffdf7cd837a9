"""The file watcher: the process that turns each batch of saved source files into one registry change.

Reading and parsing happen in a worker thread (`Registry.refresh`). No file can
stop the watcher: a batch that fails is logged and the watcher keeps watching.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import watchfiles

from ..registry import Registry
from ..registry._sources import Folders, hidden, source_kind, walk_files

__all__ = ["Watcher"]

log = logging.getLogger("wippy_agents.app")


class Watcher:
    """Watches an app's source folders for its registry; `run` is the body of the watcher process."""

    def __init__(self, root: Path, folders: Folders, registry: Registry, *, step_ms: int) -> None:
        self.root = root
        self.folders = folders
        self.registry = registry
        self.step_ms = step_ms
        self.watching = asyncio.Event()
        """Set once file changes are being watched, so no save after boot goes unseen."""

    async def run(self) -> None:
        folders = []
        for folder in (self.root / f for f in (self.folders.registry, self.folders.prompts, self.folders.tools)):
            try:
                folder.mkdir(exist_ok=True)  # so that a first file dropped into a new app's tools/ is seen
            except OSError as error:
                log.warning("not watching %s: %s", folder, error)
            if os.path.isdir(folder):
                folders.append(folder)
        if not folders:
            log.warning("no source folder to watch; file changes are not picked up until a restart")
            self.watching.set()
            await asyncio.Event().wait()

        async def commit(paths: Iterable[str] | None) -> None:
            """Commit the files behind `paths` (every changed file for None); log a failure, never raise it."""
            try:
                changed = None if paths is None else await asyncio.to_thread(self._changed_files, paths)
                await self.registry.refresh(changed)
            except Exception:
                log.exception("the registry watcher could not apply a batch of file changes; still watching")

        stop = threading.Event()  # ends the watch thread at once, so cancelling the watcher is quick
        batches = watchfiles.awatch(
            *folders, watch_filter=self._is_source, step=self.step_ms, debounce=200,
            ignore_permission_denied=True, stop_event=stop,
        )
        batch = asyncio.ensure_future(anext(batches))
        try:
            await asyncio.sleep(0)  # the first step of `batch` sets up the OS watches, synchronously
            await commit(None)  # whatever changed between boot and now
            self.watching.set()
            while True:
                changes = await batch
                await commit(path for _, path in changes)
                batch = asyncio.ensure_future(anext(batches))
        finally:
            stop.set()
            batch.cancel()
            await asyncio.wait([batch])  # the generator must be left before it can be closed
            await batches.aclose()

    def _changed_files(self, paths: Iterable[str]) -> set[str]:
        """Source files behind a batch of changes; a new folder stands for every file in it.

        Files written into a folder right after it is created can land before the
        watcher watches that folder, so a folder event rescans the folder (a folder
        named like a source file stands for itself too: a file replaced by a folder is
        gone). A linked folder is not entered, as at boot. Does file I/O: the watcher
        calls it in a worker thread.
        """
        changed: set[str] = set()
        for path in map(Path, paths):
            found = [path, *walk_files(path)] if os.path.isdir(path) and not path.is_symlink() else [path]
            changed.update(relpath for p in found if (relpath := self._relative(p)) is not None)
        return {relpath for relpath in changed if self._is_source_file(relpath)}

    def _relative(self, path: Path) -> str | None:
        """`path` relative to the app root, by name alone (links are judged when the file is read); None if outside."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return None

    def _is_source(self, change: Any, path: str) -> bool:
        """Watch filter: source files, and folders (whose files may have been missed)."""
        relpath = self._relative(Path(path))
        if relpath is None:
            return False
        return self._is_source_file(relpath) or (not Path(relpath).suffix and not hidden(relpath))

    def _is_source_file(self, relpath: str) -> bool:
        return source_kind(relpath, self.folders) is not None and not hidden(relpath)
