"""`App`: an app folder booted on a node of its own, with every service it runs, in order.

Boot order, each step needing only the ones before it:

1. the control port claims the app (a clear error if a node already runs it),
2. the folder: settings, the state (its journal copied in), the registry loaded from the files,
3. the services, each handed what it needs: the task manager (the state's journal),
   policies, audit and approvals (their stores; approvals signal tasks through the
   task manager), the agent service (the conversations' store; it registers its turn
   workflow on the task manager),
4. the processes: the `wippy:system` supervisor (file watcher, conversations,
   MCP servers, retention) and the registry's auto-start supervision trees,
5. recovery of every unfinished task, before any new work, then the retention
   settings applied once (`wippy:retention` applies them again as the node runs),
6. the control port listens: the CLI reaches the app from here on.

Shutdown runs the other way: the port closes, the processes stop, the sandbox
workers stop, the state closes (the journal writes what it holds first).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from opentelemetry.trace import TracerProvider

from .._runtime.node import Node, ProcessInfo
from .._runtime.proc import ProcessFn
from .._runtime.pubsub import Subscribers
from .._runtime.remote import Peers
from .._runtime.secrets import Redactor
from .._runtime.telemetry import ENDPOINT_VARIABLES, Telemetry, ambient_provider, otlp_provider, shut_down
from ..agents import (
    AgentService,
    Conversation,
    Embeddings,
    Governance,
    McpServers,
    Memory,
    RestrictedTools,
)
from ..durable import TaskManager
from ..errors import UsageError
from ..policy import Approvals, Audit, Policies, ToolHealth
from ..registry import ModelSpec, Registry, SupervisorSpec
from ..supervisor import ChildSpec, Supervisor
from ._config import AppConfig, load_config
from ._folder import LOCAL_NODE, AppFolder
from ._retention import Retention
from ._watch import Watcher

__all__ = ["App", "ControlPort"]

log = logging.getLogger("wippy_agents.app")

SYSTEM_SUPERVISOR = "wippy:system"
AGENTS = "wippy:agents"
MCP_SERVERS = "wippy:mcp"
WATCHER = "wippy:registry_watcher"
RETENTION = "wippy:retention"


class ControlPort(Protocol):
    """How an app is reached from outside (the CLI's control socket): claimed before boot, opened after it."""

    async def claim(self) -> None: ...

    async def start(self, app: App) -> None: ...

    async def close(self) -> None: ...


class App:
    """An app folder on a node of its own: `async with App(root=".") as app:`.

    `app.registry`, `app.tasks`, `app.agents` and `app.approvals` are its services;
    `app.node` is the actor runtime they run on. `control` makes the app reachable
    from the CLI (`wippy_agents.control.ControlServer(root)`); `wall_clock` is the
    clock of durable timers (tests hand in a virtual one). `state` (a file's path,
    `":memory:"` or a `postgresql://` URL) overrides `WIPPY_STATE` and `state:` in
    wippy.yaml: a cluster's driver hands every node the same database. `peers` reaches the
    other nodes of a cluster (whose pids this node then sends to); `first_pid` is the
    number its pids start at (a node started again under its name starts past its old ones).
    Without `owns_files` (a cluster's node, whose folder is a copy the driver sent) the
    files are neither watched nor written, and the registry follows the shared state.
    `tracer_provider` is where the app's spans go; without one, `telemetry:` in wippy.yaml
    or `OTEL_EXPORTER_OTLP_ENDPOINT` makes an OTLP exporter (shut down with the app), else
    the process's global provider is used if the program embedding us set one, else
    nothing is traced.
    """

    def __init__(self, root: str | os.PathLike[str] = ".", *, node_name: str = LOCAL_NODE,
                 state: str | os.PathLike[str] | None = None, control: ControlPort | None = None,
                 wall_clock: Callable[[], float] = time.time, shutdown_timeout: float = 5.0,
                 peers: Peers | None = None, first_pid: int = 1, owns_files: bool = True,
                 tracer_provider: TracerProvider | None = None) -> None:
        self.root = Path(root).resolve()
        self.state = state
        self.owns_files = owns_files
        self.node = Node(node_name, shutdown_timeout=shutdown_timeout, process_resolver=self._resolve,
                         host_resolver=self._host_of, peers=peers, first_id=first_pid)
        self.control = control
        self.wall_clock = wall_clock
        self.tracer_provider = tracer_provider
        self.telemetry = Telemetry()
        """Where the app's spans go (off until boot finds a tracer provider)."""
        self._exporter: Any = None  # the tracer provider the app made to export, shut down with it
        self.shutdown_timeout = shutdown_timeout
        self._folder: AppFolder | None = None
        self._log_filter: logging.Filter | None = None
        self._started = False

    def __repr__(self) -> str:
        return f"App({str(self.root)!r})"

    # -- the services ---------------------------------------------------------------------

    @property
    def folder(self) -> AppFolder:
        """The app's folder: settings, state file, journal path."""
        if self._folder is None:
            raise UsageError("the app is not running: use `async with App(root=...) as app:`")
        return self._folder

    @property
    def config(self) -> AppConfig:
        return self.folder.config

    @property
    def registry(self) -> Registry:
        return self.folder.registry

    async def conversation(self, agent: str, id: str | None = None) -> Conversation:
        """Start a conversation with agent `agent`, or reattach to conversation `id` (its history goes on)."""
        return await self.agents.conversation(agent, id)

    async def run(self, fn: ProcessFn | str, *args: Any) -> Any:
        """Run `fn(*args)` as a process on the app's node; its result, or what it raised."""
        return await self.node.run(fn, *args)

    def processes(self) -> list[ProcessInfo]:
        """Every live process of the app's node, oldest first."""
        return self.node.processes()

    # -- boot and shutdown ----------------------------------------------------------------

    async def __aenter__(self) -> App:
        await self.node.__aenter__()
        try:
            if self.control is not None:
                await self.control.claim()
            self.redactor = Redactor.from_environment(os.environ)
            """Secret values from the environment, kept out of the state, the log and what agents read."""
            config = load_config(self.root) if self.root.is_dir() else None  # else the folder says it is missing
            if config is not None:
                self.telemetry = self._telemetry(config)
            self._folder = AppFolder(self.root, node=self.node, redactor=self.redactor, state=self.state,
                                     owns_files=self.owns_files, config=config, telemetry=self.telemetry)
            self._start_services(self._folder)
            self._start_processes()
            # The supervisor answers once it has started its children: the agents' process (which
            # `conversation` calls) is up when this returns, whether or not a file watcher is waited for.
            await self.node.call(SYSTEM_SUPERVISOR, "which_children", timeout=None)
            await self.watcher_ready()
            await self.tasks.recover()  # unfinished tasks resume before any new work is taken
            await self.retention.prune()
            if self.control is not None:
                await self.control.start(self)
        except BaseException:
            await self._shut_down()
            raise
        self._started = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._shut_down()

    def _telemetry(self, config: AppConfig) -> Telemetry:
        """Tracing as the app was given it (`tracer_provider`), configured it (an OTLP endpoint), or runs in it."""
        provider = self.tracer_provider
        if provider is None and (config.telemetry.otlp_endpoint or any(map(os.environ.get, ENDPOINT_VARIABLES))):
            exported = any(map(os.environ.get, ENDPOINT_VARIABLES))
            provider = self._exporter = otlp_provider(None if exported else config.telemetry.otlp_endpoint,
                                                      config.name or self.root.name)
        provider = provider or ambient_provider()
        if provider is None:
            return Telemetry()
        return Telemetry(provider.get_tracer("wippy_agents"), content=config.telemetry.content,
                         redact=self.redactor.redact)

    def _start_services(self, folder: AppFolder) -> None:
        registry, state = folder.registry, folder.state
        self.redactor.add(os.environ[spec.api_key_env] for entry in registry.find(kind="model")
                          if isinstance(spec := registry.spec(entry.id), ModelSpec) and spec.api_key_env
                          and spec.api_key_env in os.environ)  # the keys the model entries name, whatever they are
        self._log_filter = self.redactor.log_filter()
        for logger in _package_loggers():
            logger.addFilter(self._log_filter)
        self.tasks = TaskManager(self.node, state.journal, clock=self.wall_clock, registry=registry,
                                 telemetry=self.telemetry)
        self.policies = Policies(registry)
        registry.policy = self.policies.check_change
        self.audit = Audit(state.audit, clock=self.wall_clock)
        self.approvals = Approvals(registry, state.approvals, self.audit, signal=self.tasks.signal,
                                   subscribers=Subscribers(self.node))
        self.tool_health = ToolHealth(registry, self.policies, self.audit)
        self.mcp = McpServers(self.node, registry, self.root, approvals=self.approvals, redactor=self.redactor)
        self.agents = AgentService(self.node, registry, self.tasks, state.conversations,
                                   Governance(self.policies, self.audit, self.approvals), state.usage,
                                   restricted=RestrictedTools(on_outcome=self.tool_health.record),
                                   redactor=self.redactor, mcp=self.mcp, telemetry=self.telemetry,
                                   memory=Memory(state.memory, _embeddings(folder.config, self.root)))
        self.retention = Retention(folder.config, self.tasks, self.agents, state.audit, state.usage,
                                   clock=self.wall_clock)
        self.watcher = Watcher(self.root, folder.folders, registry, step_ms=folder.config.watch_step_ms)
        registry.follow_announced(asyncio.get_running_loop())

    def _start_processes(self) -> None:
        children = [ChildSpec("agents", self.agents.supervisor(), name=AGENTS),
                    ChildSpec("mcp_servers", self.mcp.run, name=MCP_SERVERS),
                    ChildSpec("retention", self.retention.run, name=RETENTION)]
        if self.config.watch and self.owns_files:
            children.insert(0, ChildSpec("registry_watcher", self.watcher.run, name=WATCHER))
        self.node.spawn(Supervisor(children, max_restarts=10, max_seconds=10), name=SYSTEM_SUPERVISOR)
        for entry in self.registry.find(kind="supervisor"):
            spec = self.registry.spec(entry.id)
            if isinstance(spec, SupervisorSpec) and spec.auto_start and self._starts_here(spec.host):
                try:
                    self.node.spawn(entry.id, name=entry.id, host=self.node.name)
                except Exception as error:
                    log.error("could not start supervisor %s: %s", entry.id, error)

    async def watcher_ready(self, timeout: float = 10.0) -> None:
        """Wait until file changes are being watched, so no save after boot goes unseen."""
        if not self.config.watch or not self.owns_files:
            return
        try:
            async with asyncio.timeout(timeout):
                await self.watcher.watching.wait()
        except TimeoutError:
            log.warning("the file watcher did not start within %gs; file changes may be missed", timeout)

    async def _shut_down(self) -> None:
        """Stop in the reverse order of boot; each step runs even if one before it failed."""
        try:
            if self.control is not None:
                await self.control.close()
        finally:
            try:
                await self.node.stop()
            finally:
                try:
                    agents = getattr(self, "agents", None)
                    if agents is not None:
                        await agents.restricted.close()
                finally:
                    if self._log_filter is not None:
                        for logger in _package_loggers():
                            logger.removeFilter(self._log_filter)
                        self._log_filter = None
                    if self._folder is not None:
                        self._folder.close()  # the journal writes what is queued before the file closes
                        self._folder = None
                    if self._exporter is not None:  # the spans queued go out, or are dropped after the timeout
                        await shut_down(self._exporter, self.shutdown_timeout)
                        self._exporter = None

    def _starts_here(self, host: str | None) -> bool:
        """Whether this node starts a supervision tree placed on `host` at boot: its own and unplaced ones; of those
        placed on `any`, the first node by name (of those up now) does."""
        if host == "any":
            peers = [] if self.node.remote is None else self.node.remote.peers.nodes()
            return self.node.name == min([self.node.name, *peers])
        return host is None or host == self.node.name

    # -- spawning by registry id --------------------------------------------------------------

    def _host_of(self, entry_id: str) -> str | None:
        return self.registry.host_of(entry_id) if entry_id in self.registry else None

    def _resolve(self, entry_id: str) -> ProcessFn:
        """What `process.spawn(entry_id)` runs: an agent's new conversation, a process or a supervisor.

        A process function that has a parameter annotated `Registry` gets the app's registry there.
        """
        if self.registry.get(entry_id).kind == "agent":
            return self.agents.process_function(entry_id)
        return _with_registry(self.registry.process_function(entry_id), self.registry)


def _with_registry(fn: ProcessFn, registry: Registry) -> ProcessFn:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return fn
    wanted = [p.name for p in parameters if p.annotation in (Registry, "Registry")
              and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not wanted:
        return fn

    @functools.wraps(fn)
    async def with_registry(*args: Any) -> Any:
        return await fn(*args, **{name: registry for name in wanted})

    return with_registry


def _embeddings(config: AppConfig, root: Path) -> Embeddings | None:
    """The embedding model `memory.embedding_model` names (relative to the app or absolute), if it names one."""
    folder = config.memory.embedding_model
    return Embeddings(root / folder) if folder else None


def _package_loggers() -> list[logging.Logger]:
    """This package's loggers (a filter on a logger sees only the records made on it, so each gets one)."""
    return [logging.getLogger(name) for name, logger in list(logging.root.manager.loggerDict.items())
            if isinstance(logger, logging.Logger) and (name == "wippy_agents" or name.startswith("wippy_agents."))]

