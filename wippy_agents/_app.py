"""An app folder: `wippy.yaml`, its sources, its state file, and what a node runs for it.

`Node(root=...)` boots an app: it loads the registry (recording in the state file
what changed since last time), starts the `wippy:system` supervisor with the file
watcher, lets processes be spawned by registry id, and starts the supervision trees
the registry declares with `auto_start`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import watchfiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._runtime.proc import ProcessFn
from ._runtime.secrets import Redactor
from ._state import open_state
from .agents import AgentService
from .agents._builtin import register_builtins
from .agents._history import TURN_WORKFLOW, ConversationStore
from .agents._restricted import RestrictedTools
from .durable import TaskManager
from .policy import Approvals, Audit, Policies, ToolHealth
from .registry import Problem, Registry, RegistryError
from .registry._kinds import ModelSpec
from .registry._sources import Folders, Unreadable, decode_text, hidden, read_bytes, source_kind, walk_files
from .registry._yaml import YAMLProblem, load_yaml
from .supervisor import ChildSpec, Supervisor

if TYPE_CHECKING:
    from ._runtime.node import Node

log = logging.getLogger("wippy_agents.app")

CONFIG_FILE = "wippy.yaml"
SYSTEM_SUPERVISOR = "wippy:system"
AGENTS = "wippy:agents"
WATCHER = "wippy:registry_watcher"


class Sources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    registry: str = "registry"
    prompts: str = "prompts"
    tools: str = "tools"


class AppConfig(BaseModel):
    """The settings in `wippy.yaml`; every field is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = None
    sources: Sources = Sources()
    state: str = Field(".wippy/state.duckdb",
                       description="the DuckDB state file, relative to the app root; `:memory:` keeps nothing")
    default_agent: str | None = None
    watch: bool = Field(True, description="hot-reload entries when source files change")
    watch_step_ms: int = Field(5, ge=1, le=1000, description="how long the watcher waits for more changes")
    task_retention_days: float | None = Field(
        30, gt=0, description="finished tasks older than this are deleted at boot (agent turns are kept); null keeps all"
    )


def load_config(root: Path) -> AppConfig:
    """Read `wippy.yaml` (defaults when it is absent); errors name the file, line and field."""
    try:
        raw = read_bytes(Path(os.path.realpath(root / CONFIG_FILE)))
        if raw is None:
            return AppConfig()
        data, lines = load_yaml(decode_text(raw), CONFIG_FILE)
    except Unreadable as error:
        raise RegistryError(f"{CONFIG_FILE} cannot be read", [
            Problem(error.message, file=CONFIG_FILE, line=error.line)]) from None
    except YAMLProblem as error:
        raise RegistryError(f"{CONFIG_FILE} is not valid YAML", error.problems) from None
    if data is not None and not isinstance(data, dict):
        raise RegistryError(f"{CONFIG_FILE} has invalid settings", [
            Problem("the file must be a mapping of settings (name: value)", file=CONFIG_FILE, line=1)])
    try:
        config = AppConfig.model_validate(data or {})
    except ValidationError as error:
        problems = [
            Problem(_setting_problem(e["type"], tuple(e["loc"]), e["msg"]), file=CONFIG_FILE,
                    line=lines.line_of(tuple(e["loc"])), field=".".join(map(str, e["loc"])))
            for e in error.errors(include_url=False)
        ]
        raise RegistryError(f"{CONFIG_FILE} has invalid settings", problems) from None
    problems = [  # the sources are read from `<root>/<name>`, and each file's id starts with its folder's name
        Problem(f"{name!r} is not a folder name; a source folder is one folder inside the app, such as {field!r}",
                file=CONFIG_FILE, line=lines.line_of(("sources", field)), field=f"sources.{field}")
        for field, name in config.sources
        if not name or name in (".", "..") or "/" in name or "\\" in name or hidden(name)
    ]
    if problems:
        raise RegistryError(f"{CONFIG_FILE} has invalid settings", problems)
    return config


def _setting_problem(kind: str, loc: tuple[str | int, ...], message: str) -> str:
    if kind != "extra_forbidden":
        return message
    model: type[BaseModel] = Sources if loc[:1] == ("sources",) and len(loc) > 1 else AppConfig
    return f"unknown setting; the settings here are {', '.join(model.model_fields)}"


class App:
    """The running parts of one app folder on one node."""

    def __init__(self, root: Path, node: Node | None = None, *, files_only: bool = False) -> None:
        """Load the app; `files_only` reads the sources without the state file (lint, list, show)."""
        self.root = root.resolve()
        if not self.root.is_dir():
            raise RegistryError(f"the app folder {root} does not exist")
        self.config = load_config(self.root)
        sources = self.config.sources
        self.folders = Folders(sources.registry, sources.prompts, sources.tools)
        in_memory = files_only or self.config.state == ":memory:"
        state = None if in_memory else self.root / self.config.state
        self.db: duckdb.DuckDBPyConnection = open_state(state)
        self.journal_path = None if state is None else state.with_name("journal.log")
        """Where durable rows land first (see `durable._journal`); None for an in-memory state."""
        self.watching = asyncio.Event()
        try:
            self.registry = Registry(self.root, self.db, folders=self.folders, node=node)
            register_builtins(self.registry)
            self.registry.load()
        except BaseException:
            self.db.close()
            raise

    async def wait_watching(self, timeout: float = 10.0) -> None:
        """Wait until file changes are being watched, so no save after boot goes unseen."""
        if self.config.watch:
            try:
                await asyncio.wait_for(self.watching.wait(), timeout)
            except TimeoutError:
                log.warning("the file watcher did not start within %gs; file changes may be missed", timeout)

    def start(self, node: Node) -> None:
        """Start the system processes and the registry's auto-start supervision trees."""
        key_names = [spec.api_key_env for entry in self.registry.find(kind="model")
                     if isinstance(spec := self.registry.spec(entry.id), ModelSpec) and spec.api_key_env]
        self.redactor = Redactor.from_environment(os.environ, also=key_names)
        """Secret values from the environment, kept out of the state, the log and what agents read."""
        self._log_filter = self.redactor.log_filter()
        for logger in _package_loggers():
            logger.addFilter(self._log_filter)
        self.policies = Policies(self.registry)
        self.registry.policy = self.policies.check_change
        self.audit = Audit(self.db)
        self.approvals = Approvals(node, self.registry, self.db, self.audit)
        self.tool_health = ToolHealth(self.registry, self.policies, self.audit)
        self.agents = AgentService(node, self.registry, ConversationStore(self.db),
                                   RestrictedTools(on_outcome=self.tool_health.record), self.redactor)
        self.tasks = TaskManager(node, self.db, clock=node.wall_clock, registry_version=lambda: self.registry.version,
                                 log_path=self.journal_path, redact=self.redactor.redact if self.redactor else None)
        node.process_resolver = self.resolve
        children = [ChildSpec("agents", self.agents.supervisor(), name=AGENTS)]
        if self.config.watch:
            children.insert(0, ChildSpec("registry_watcher", self.watch, name=WATCHER))
        node.spawn(Supervisor(children, max_restarts=10, max_seconds=10), name=SYSTEM_SUPERVISOR)
        for entry in self.registry.find(kind="supervisor"):
            if self.registry.spec(entry.id).auto_start:  # type: ignore[attr-defined]
                try:
                    node.spawn(entry.id, None, name=entry.id)
                except Exception as error:
                    log.error("could not start supervisor %s: %s", entry.id, error)

    def prune_tasks(self) -> int:
        """Apply `task_retention_days`: delete old finished tasks, but never a conversation's turns."""
        days = self.config.task_retention_days
        if days is None:
            return 0
        pruned = self.tasks.prune(days * 86400, keep_workflows=(TURN_WORKFLOW,))
        if pruned:
            log.info("deleted %d finished task(s) older than %g days", pruned, days)
        return pruned

    def resolve(self, entry_id: str, host: str | None) -> ProcessFn:
        """What `process.spawn(entry_id)` runs: an agent's new conversation, a process or a supervisor."""
        if self.registry.get(entry_id).kind == "agent":
            return self.agents.process_function(entry_id)
        return self.registry.process_function(entry_id, host)

    async def aclose(self) -> None:
        """Stop the sandbox workers (if agent-written tools ran), then close the state."""
        agents = getattr(self, "agents", None)
        try:
            if agents is not None:
                await agents.restricted.close()
        finally:
            log_filter = getattr(self, "_log_filter", None)
            if log_filter is not None:
                for logger in _package_loggers():
                    logger.removeFilter(log_filter)
            self.close()

    def close(self) -> None:
        tasks = getattr(self, "tasks", None)
        if tasks is not None:
            tasks.close()  # the journal writes what is queued before the file closes
        self.db.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def watch(self) -> None:
        """The watcher process: each batch of saved source files becomes one registry change.

        Reading and parsing happen in a worker thread (`Registry.refresh`). No file can
        stop the watcher: a batch that fails is logged and the watcher keeps watching.
        """
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
            *folders, watch_filter=self._is_source, step=self.config.watch_step_ms, debounce=200,
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


def _package_loggers() -> list[logging.Logger]:
    """This package's loggers (a filter on a logger sees only the records made on it, so each gets one)."""
    return [logging.getLogger(name) for name, logger in list(logging.root.manager.loggerDict.items())
            if isinstance(logger, logging.Logger) and (name == "wippy_agents" or name.startswith("wippy_agents."))]
