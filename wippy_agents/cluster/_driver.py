"""The driver of a cluster app (`wippy run` when `wippy.yaml` has `cluster:`): it places the nodes and forwards.

It connects to Ray (starting a private instance for `address: local`), keeps
the app's files (loads them into the shared state, watches them, commits what
changes and writes through what agents on the nodes change; the nodes follow
the versions as Postgres announces them), gets or creates one
detached Ray actor per node (`max_restarts=-1`, spread over the machines, the
app folder as their working directory), and serves the control socket, sending
each request to the node it concerns:

- `ask`: the node a conversation is placed on (by its id, so every turn of a
  conversation runs on the same node). The driver names the turn's task before
  sending it, so when the node is lost mid-turn it asks again under the same id
  once Ray has restarted the node: the turn resumes at its next unfinished step.
- ops on one task (`tasks.cancel`, `signal`, `resume`, `upgrade`, and
  `chat.events` and `chat.steps` of a turn) and decisions on an approval
  (which signal the task waiting for it): the node that holds the task;
  `chat.turns`: the conversation's node.
- `cluster.status`, `processes` and `watch` (what a TUI attached to the driver
  shows): every node, merged. `watch` keeps following a
  node Ray restarts; the registry's events come from the first node only, as
  every node follows the same versions.
- anything else: the first node.

The nodes are detached: a driver that dies leaves them running, and the next
`wippy run` reattaches to them. A driver that stops normally stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .._runtime.node import Node
from ..agents import AgentError, AgentEvent, Answer, TurnDone, TurnFailed, answer_of, new_conversation_id
from ..app import AppFolder, ClusterSettings, Watcher, load_config, state_location
from ..control._ops import Emit
from ..control._wire import ControlError, failure
from ..errors import UsageError
from ..state import is_database_url, shown_url

__all__ = ["ClusterConversation", "ClusterDriver", "FAILOVER_TIMEOUT", "namespace_of", "node_names"]

log = logging.getLogger("wippy_agents.cluster")

FAILOVER_TIMEOUT = 120.0
"""How long a request waits for Ray to bring a lost node back before it fails."""
READY_TIMEOUT = 120.0
"""How long the driver waits for every node to boot (an app's first boot on a new machine installs nothing)."""
EXCLUDED = [".wippy", ".git", ".venv", "__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache"]
"""What the nodes' copy of the app folder leaves out: the driver's state folder and caches."""
BY_TASK = {"tasks.cancel": "id", "tasks.signal": "id", "tasks.resume": "id", "tasks.upgrade": "id",
           "chat.events": "task", "chat.steps": "task"}
"""Ops on one task, and the field that names it."""
BY_APPROVAL = frozenset({"approvals.approve", "approvals.deny"})
"""Deciding an approval signals the task waiting for it: on the node that holds that task."""


def namespace_of(root: Path) -> str:
    """The Ray namespace of an app: its folder's name and a digest of its path (two apps never share nodes)."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    return f"wippy-{root.resolve().name}-{digest}"


def node_names(count: int) -> list[str]:
    return [f"node-{number}" for number in range(1, count + 1)]


class ClusterDriver:
    """Places an app's nodes on Ray and forwards requests to them: `async with ClusterDriver(root) as driver:`.

    `address` overrides `cluster.address` (tests hand in a `ray.cluster_utils.Cluster`'s); `state` overrides the
    state's location as in `App`.
    """

    def __init__(self, root: str | os.PathLike[str], *, address: str | None = None,
                 state: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).resolve()
        config = load_config(self.root)
        if config.cluster is None:
            raise UsageError(f"{self.root}/wippy.yaml has no `cluster:` section: the app runs on one node")
        self.settings: ClusterSettings = config.cluster
        self.address = address or self.settings.address
        location = state_location(config, self.root, state)
        if not is_database_url(location):
            raise UsageError(f"a cluster's nodes share their state, so it must be a Postgres database: set `state: "
                             f"postgresql://...` in {self.root}/wippy.yaml or WIPPY_STATE (it is {location})")
        self.state = str(location)
        self.namespace = namespace_of(self.root)
        self.names = node_names(self.settings.nodes)
        self.nodes: dict[str, Any] = {}
        """Each node's Ray actor handle, by node name."""
        self._files_node = Node("driver")
        self._files: AppFolder | None = None
        self._watcher: Watcher | None = None

    def __repr__(self) -> str:
        return f"ClusterDriver({str(self.root)!r}, nodes={self.names}, state={shown_url(self.state)!r})"

    async def __aenter__(self) -> ClusterDriver:
        await asyncio.to_thread(self._connect)
        try:
            await self._keep_files()
            self.nodes = await asyncio.to_thread(self._place)
            await asyncio.wait_for(asyncio.gather(*(self._ready(name) for name in self.names)), READY_TIMEOUT)
        except BaseException:
            await self._close_files()
            await asyncio.to_thread(self._disconnect)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _connect(self) -> None:
        import ray

        runtime_env = {"working_dir": str(self.root), "excludes": EXCLUDED}
        if self.address == "local":
            settings = self.settings
            ray.init(namespace=self.namespace, runtime_env=runtime_env, include_dashboard=False,
                     log_to_driver=True, _system_config={
                         "health_check_period_ms": settings.health_check_period_ms,
                         "health_check_timeout_ms": settings.health_check_timeout_ms,
                         "health_check_failure_threshold": settings.health_check_failure_threshold})
        else:
            ray.init(address=self.address, namespace=self.namespace, runtime_env=runtime_env)

    def _disconnect(self) -> None:
        import ray

        ray.shutdown()

    async def _keep_files(self) -> None:
        """Load the files into the shared state (before the nodes boot on it), then watch them and follow it."""
        await self._files_node.__aenter__()
        self._files = files = await asyncio.to_thread(AppFolder, self.root, node=self._files_node, state=self.state)
        files.registry.follow_announced(asyncio.get_running_loop())
        if files.config.watch:
            self._watcher = Watcher(self.root, files.folders, files.registry, step_ms=files.config.watch_step_ms)
            self._files_node.spawn(self._watcher.run)
            await asyncio.wait_for(self._watcher.watching.wait(), 10)

    async def _close_files(self) -> None:
        await self._files_node.stop()
        if self._files is not None:
            self._files.close()
            self._files = None

    def _place(self) -> dict[str, Any]:
        import ray

        from ._node import WippyNode

        actor = ray.remote(WippyNode)
        return {name: actor.options(
            name=name, namespace=self.namespace, get_if_exists=True, lifetime="detached", max_restarts=-1,
            max_task_retries=0, num_cpus=self.settings.node_cpus, scheduling_strategy="SPREAD",
        ).remote(name, self.state, self.names) for name in self.names}

    async def _ready(self, name: str, deadline: float | None = None) -> dict[str, Any]:
        """Wait for node `name` to boot (after a restart too); its status."""
        import ray

        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT if deadline is None else deadline
        delay = 0.1
        while True:
            try:
                status: dict[str, Any] = await self.nodes[name].ready.remote()
                return status
            except ray.exceptions.RayActorError as error:
                if loop.time() + delay > deadline:
                    raise ControlError(f"node {name} did not come back within the deadline: {error}",
                                       "NodeUnavailable") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def stop(self) -> None:
        """Stop every node (their apps shut down cleanly), then leave Ray."""
        import ray

        if not self.nodes:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(node.stop.remote() for node in self.nodes.values()),
                                                  return_exceptions=True), 30)
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                ray.kill(node, no_restart=True)
        self.nodes = {}
        await self._close_files()
        await asyncio.to_thread(self._disconnect)

    # -- forwarding ------------------------------------------------------------------------------

    def place(self, conversation: str) -> str:
        """The node a conversation runs on: the same for every turn, whichever driver asks."""
        return self.names[zlib.crc32(conversation.encode("utf-8", "surrogatepass")) % len(self.names)]

    async def handle(self, request: Any, emit: Emit) -> dict[str, Any]:
        """Answer one control request by forwarding it (the node checks it as it would its own)."""
        op = request.get("op") if isinstance(request, dict) else None
        try:
            if op == "cluster.status":
                return {"ok": True, "result": await self.status()}
            if op == "ask":
                return await self._ask(request, emit)
            if op == "watch":
                return await self._watch(emit)
            if op == "processes":
                return await self._gather(request)
            if op == "chat.turns" and isinstance(request.get("conversation"), str):
                return await self._forward(self.place(request["conversation"]), request, emit)
            if op in BY_TASK and isinstance(request.get(BY_TASK[op]), str):
                return await self._forward(await self._holder(request[BY_TASK[op]]), request, emit)
            if op in BY_APPROVAL and isinstance(request.get("id"), str):
                shown = await self._forward(self.names[0], {"op": "approvals.show", "id": request["id"]}, _ignore)
                task = shown.get("result", {}).get("task_id") if shown.get("ok") else None
                holder = await self._holder(task) if isinstance(task, str) else self.names[0]
                return await self._forward(holder, request, emit)
            return await self._forward(self.names[0], request, emit)
        except ControlError as error:
            return failure(error)

    async def _ask(self, request: dict[str, Any], emit: Emit) -> dict[str, Any]:
        conversation = request.get("conversation") or new_conversation_id()
        task_id = request.get("task_id") or f"turn:{conversation}:{uuid.uuid4().hex[:8]}"
        request = {**request, "conversation": conversation, "task_id": task_id}
        if not isinstance(conversation, str):
            return await self._forward(self.names[0], request, emit)  # the node names the bad field
        return await self._forward(self.place(conversation), request, emit, again=True)

    async def _gather(self, request: dict[str, Any]) -> dict[str, Any]:
        """Ask every node; the lists they answer, merged (a node that cannot answer now adds nothing)."""
        replies = await asyncio.gather(*(self._forward(name, request, _ignore) for name in self.names),
                                       return_exceptions=True)
        merged: list[Any] = []
        for reply in replies:
            if isinstance(reply, dict) and reply.get("ok"):
                merged += reply["result"]
            elif isinstance(reply, dict):
                return reply  # a bad request, refused by every node alike
        return {"ok": True, "result": merged}

    async def _watch(self, emit: Emit) -> dict[str, Any]:
        """Every node's events, one stream (see the module's docstring), until the client goes away."""
        sending = asyncio.Lock()
        first = self.names[0]

        def relay(name: str) -> Emit:
            async def send(event: Any) -> None:
                topic = event.get("topic", "") if isinstance(event, dict) else ""
                if topic.startswith("registry.") and name != first:
                    return
                async with sending:
                    await emit({**event, "node": name} if topic == "log" else event)
            return send

        async with asyncio.TaskGroup() as group:
            for name in self.names:
                group.create_task(self._forward(name, {"op": "watch"}, relay(name), again=True))
        raise ControlError("the nodes stopped sending events")

    async def _holder(self, task_id: str) -> str:
        reply = await self._forward(self.names[0], {"op": "tasks.show", "id": task_id}, _ignore)
        node = reply.get("result", {}).get("node") if reply.get("ok") else None
        return node if node in self.nodes else self.names[0]

    async def _forward(self, name: str, request: dict[str, Any], emit: Emit, *, again: bool = False) -> dict[str, Any]:
        """Send `request` to node `name`, relaying its events; `again`: when the node is lost, wait and resend."""
        import ray

        loop = asyncio.get_running_loop()
        deadline = loop.time() + FAILOVER_TIMEOUT
        while True:
            stream = self.nodes[name].request.remote(request)
            try:
                async for ref in stream:
                    kind, value = await ref
                    if kind == "event":
                        await emit(value)
                    else:
                        reply: dict[str, Any] = value
                        return reply
                raise ControlError(f"node {name} ended the request without a reply")
            except ray.exceptions.RayActorError as error:
                if not again:
                    raise ControlError(f"node {name} is unavailable: {error}", "NodeUnavailable") from None
                log.warning("node %s was lost while serving %s; asking again once Ray has restarted it",
                            name, request.get("op"))
                await self._ready(name, deadline)
                deadline = loop.time() + FAILOVER_TIMEOUT if request.get("op") == "watch" else deadline
            except BaseException:  # the client went away (or the driver stops): the node stops serving it too
                ray.cancel(stream)
                raise

    async def conversation(self, agent: str, id: str | None = None) -> ClusterConversation:
        """A conversation with `agent`, or conversation `id`, on the node it is placed on (as `App.conversation`)."""
        reply = await self._forward(self.names[0], {"op": "registry.show", "id": agent}, _ignore)
        if not reply.get("ok"):
            raise ControlError(reply["error"]["message"], reply["error"].get("type"))  # names the missing agent
        return ClusterConversation(self, agent, id or new_conversation_id())

    async def run(self, target: str, *args: Any, host: str | None = None) -> Any:
        """Run the process entry `target` on node `host` (the first node by default): its result, or what it raised."""
        name = host or self.names[0]
        if name not in self.nodes:
            raise UsageError(f"no node {name!r}: the nodes are {', '.join(self.names)}")
        return await self.nodes[name].run.remote(target, args)

    async def status(self) -> list[dict[str, Any]]:
        """`wippy cluster status`: every node's row; a node that does not answer says why."""
        rows = await asyncio.gather(*(self._status(name) for name in self.names))
        return list(rows)

    async def _status(self, name: str) -> dict[str, Any]:
        import ray

        try:
            row: dict[str, Any] = await asyncio.wait_for(self.nodes[name].ready.remote(), 5)
            return row
        except (ray.exceptions.RayActorError, TimeoutError) as error:
            return {"name": name, "host": None, "ray_node": None, "pid": None, "processes": None, "tasks": None,
                    "lease_age": None, "status": "unavailable", "problem": str(error).splitlines()[0] if str(error)
                    else type(error).__name__}


class ClusterConversation:
    """A handle on one conversation of a cluster app: its turns run on its node, and are asked again there (under
    the same task) when Ray restarts that node mid-turn."""

    _events: TypeAdapter[AgentEvent] = TypeAdapter(AgentEvent)

    def __init__(self, driver: ClusterDriver, agent: str, id: str) -> None:
        self.driver = driver
        self.agent = agent
        self.id = id

    def __repr__(self) -> str:
        return f"ClusterConversation({self.agent!r}, id={self.id!r})"

    @property
    def node(self) -> str:
        """The node the conversation runs on."""
        return self.driver.place(self.id)

    async def ask(self, text: str) -> Answer:
        """Run one turn and return its answer; `AgentError` if the turn fails."""
        return await answer_of(self.agent, self.stream(text))

    async def stream(self, text: str) -> AsyncIterator[AgentEvent]:
        """The turn's events as its node sends them, ending with `TurnDone` or `TurnFailed`."""
        events: asyncio.Queue[AgentEvent] = asyncio.Queue()

        async def emit(event: Any) -> None:
            events.put_nowait(self._events.validate_python(event))

        request = {"op": "ask", "agent": self.agent, "message": text, "conversation": self.id}
        asking = asyncio.create_task(self.driver.handle(request, emit))
        try:
            while True:
                waiting = asyncio.create_task(events.get())
                await asyncio.wait([waiting, asking], return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()
                    reply = asking.result()
                    if events.empty():
                        error = reply.get("error", {}).get("message", "the node ended the turn without an answer")
                        raise AgentError(f"{self.agent}: {error}")
                    continue
                event = waiting.result()
                yield event
                if isinstance(event, TurnDone | TurnFailed):
                    return
        finally:
            if not asking.done():
                asking.cancel()
                with contextlib.suppress(BaseException):
                    await asking


async def _ignore(event: Any) -> None:
    pass

