"""An app folder: `wippy.yaml`, its sources, its state file, and what a node runs for it.

`Node(root=...)` boots an app: it loads the registry (recording in the state file
what changed since last time), starts the `wippy:system` supervisor with the file
watcher, lets processes be spawned by registry id, and starts the supervision trees
the registry declares with `auto_start`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import watchfiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._runtime.proc import ProcessFn
from ._state import open_state
from .agents import AgentService
from .agents._builtin import register_builtins
from .agents._history import TURN_WORKFLOW, ConversationStore
from .agents._restricted import RestrictedTools
from .durable import TaskManager
from .policy import Approvals, Audit, Policies, ToolHealth
from .registry import Problem, Registry, RegistryError
from .registry._sources import Folders, hidden, source_kind
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
    path = root / CONFIG_FILE
    if not path.exists():
        return AppConfig()
    try:
        data, lines = load_yaml(path.read_text(encoding="utf-8"), CONFIG_FILE)
    except YAMLProblem as error:
        raise RegistryError(f"{CONFIG_FILE} is not valid YAML", [error.problem]) from None
    if data is not None and not isinstance(data, dict):
        raise RegistryError(f"{CONFIG_FILE} has invalid settings", [
            Problem("the file must be a mapping of settings (name: value)", file=CONFIG_FILE, line=1)])
    try:
        return AppConfig.model_validate(data or {})
    except ValidationError as error:
        problems = [
            Problem(_setting_problem(e["type"], tuple(e["loc"]), e["msg"]), file=CONFIG_FILE,
                    line=lines.line_of(tuple(e["loc"])), field=".".join(map(str, e["loc"])))
            for e in error.errors(include_url=False)
        ]
        raise RegistryError(f"{CONFIG_FILE} has invalid settings", problems) from None


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
        self.policies = Policies(self.registry)
        self.registry.policy = self.policies.check_change
        self.audit = Audit(self.db)
        self.approvals = Approvals(node, self.registry, self.db, self.audit)
        self.tool_health = ToolHealth(self.registry, self.policies, self.audit)
        self.agents = AgentService(node, self.registry, ConversationStore(self.db),
                                   RestrictedTools(on_outcome=self.tool_health.record))
        self.tasks = TaskManager(node, self.db, clock=node.wall_clock, registry_version=lambda: self.registry.version,
                                 log_path=self.journal_path)
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
        """The watcher process: each batch of saved source files becomes one registry change."""
        folders = [self.root / f for f in (self.folders.registry, self.folders.prompts, self.folders.tools)]
        for folder in folders:  # so that a first file dropped into a new app's tools/ is seen
            folder.mkdir(exist_ok=True)
        batches = watchfiles.awatch(
            *folders, watch_filter=self._is_source, step=self.config.watch_step_ms, debounce=200,
            ignore_permission_denied=True,
        )
        batch = asyncio.ensure_future(anext(batches))
        try:
            await asyncio.sleep(0)  # the first step of `batch` sets up the OS watches, synchronously
            self.registry.rescan()  # whatever changed between boot and now
            self.watching.set()
            while True:
                changes = await batch
                self.registry.reload(self._changed_files(path for _, path in changes))
                batch = asyncio.ensure_future(anext(batches))
        finally:
            batch.cancel()
            await batches.aclose()

    def _changed_files(self, paths: Iterable[str]) -> set[str]:
        """Source files behind a batch of changes; a new folder stands for every file in it.

        Files written into a folder right after it is created can land before the
        watcher watches that folder, so a folder event rescans the folder.
        """
        changed: set[str] = set()
        for path in map(Path, paths):
            if path.is_dir():
                changed.update(self._relative(p) for p in path.rglob("*") if p.is_file())
            else:
                changed.add(self._relative(path))
        return {relpath for relpath in changed if self._is_source_file(relpath)}

    def _relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def _is_source(self, change: Any, path: str) -> bool:
        """Watch filter: source files, and folders (whose files may have been missed)."""
        try:
            relpath = self._relative(Path(path))
        except ValueError:
            return False
        return self._is_source_file(relpath) or (not Path(relpath).suffix and not hidden(relpath))

    def _is_source_file(self, relpath: str) -> bool:
        return source_kind(relpath, self.folders) is not None and not hidden(relpath)
