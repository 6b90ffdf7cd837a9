"""The node's control socket: how the CLI reaches the node that owns an app.

DuckDB lets one process write the state file, so one node owns an app. That node
listens on a Unix socket, and every `wippy` command sends its request there when
a node runs, starting an embedded node only when none does: the TUI can stay open
while the CLI is used in another terminal.

Protocol: JSON lines. A request is one object `{"op": "tasks.show", "id": ...}`;
the answer is zero or more event lines `{"event": ...}` (streaming ops such as
`ask` and `tasks.resume`), then one final line, `{"ok": true, "result": ...}` or
`{"ok": false, "error": "...", "kind": "ExceptionClassName"}`. A connection may
carry several requests, one after the other. `ping` answers the node's pid, app
root, start time, wippy version and protocol number.

Files: the socket is `<root>/.wippy/node.sock` and the owner's pid is in
`<root>/.wippy/node.pid`. A socket path must fit in about 100 bytes
(`sockaddr_un`), so for a deeper root the socket is
`/tmp/wippy-<uid>/<hash of the root>.sock` instead (a folder only its user may
enter); both sides derive the path from the root, so nothing records it.

Ownership: before opening the state file a node pings the socket; an answer
means a node runs the app (`StateFileBusy` naming its pid). A socket nobody
answers on, with a pid file naming a dead process, was left by a killed node and
is removed. Once the node holds the state file (DuckDB's lock dies with its
process), whatever socket is left is stale by definition and is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from . import __version__

if TYPE_CHECKING:
    from ._app import App
    from ._runtime.node import Node
    from .agents import Conversation
    from .durable import StepRecord, TaskInfo, TaskManager
    from .policy import Approvals
    from .registry import Entry, Registry

log = logging.getLogger("wippy_agents.control")

PROTOCOL = 1
LINE_LIMIT = 64 * 1024 * 1024
"""The longest line either side reads (a large registry diff or task result is one line)."""
MAX_SOCKET_PATH = 100
"""Bytes; `sockaddr_un` holds 108 on Linux and 104 on macOS, with the final NUL."""
PING_TIMEOUT = 5.0
BOOT_WAIT = 15.0
"""How long the CLI waits for a node that holds the state file but does not answer yet (it is booting)."""

Needs = Literal["none", "files", "state", "node"]
"""What an op needs when no node runs: nothing, the app's files, its state file, or a whole node."""
Emit = Callable[[Any], Awaitable[None]]


class ControlError(Exception):
    """A request failed, on the node or on the way; `kind` names the exception the node raised."""

    status = 1

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class _Disconnected(Exception):
    """The client went away while a streaming op was sending it events."""


# -- where the files are -----------------------------------------------------------------


def socket_path(root: Path) -> Path:
    """The app's control socket: in `.wippy/`, or under /tmp when that path is too long for a socket."""
    root = root.resolve()
    path = root / ".wippy" / "node.sock"
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:24]
    return Path("/tmp") / f"wippy-{os.getuid()}" / f"{digest}.sock"


def pid_path(root: Path) -> Path:
    return root.resolve() / ".wippy" / "node.pid"


def _private_folder(folder: Path) -> None:
    """Make the folder for a socket under /tmp, refusing one that another user made or could enter."""
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ControlError(f"{folder} must be a folder of yours that nobody else may enter; remove it or fix it")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# -- the wire --------------------------------------------------------------------------


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def to_json(value: Any) -> Any:
    """JSON data for a result or event: models, dataclasses and datetimes as the wire carries them."""
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value, fallback=str)


def _unwrap(reply: dict[str, Any]) -> Any:
    if reply.get("ok"):
        return reply.get("result")
    raise ControlError(str(reply.get("error", "the node gave no reason")), reply.get("kind"))


# -- what the node serves --------------------------------------------------------------------


class Target(Protocol):
    """What ops act on: a node, or the lighter stand-in the CLI opens when no node runs."""

    @property
    def registry(self) -> Registry: ...

    @property
    def tasks(self) -> TaskManager: ...

    @property
    def approvals(self) -> Approvals: ...

    async def conversation(self, agent: str, id: str | None = None) -> Conversation: ...


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Op:
    """A request the node serves; `needs` says what to open for it when no node runs."""

    needs: Needs
    handler: Handler


OPS: dict[str, Op] = {}


def _op(name: str, needs: Needs) -> Callable[[Handler], Handler]:
    """Register `async def handler(target, emit, **params)` as op `name`."""

    def register(handler: Handler) -> Handler:
        OPS[name] = Op(needs, handler)
        return handler

    return register


async def dispatch(request: Any, open_target: Callable[[Needs], contextlib.AbstractAsyncContextManager[Target]],
                   emit: Emit) -> dict[str, Any]:
    """Run one request and return its final line; a failure is an error reply, never an exception.

    The server and the CLI's embedded mode both come through here, so a command
    behaves the same whether or not a node runs.
    """
    try:
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            raise ControlError('a request is a JSON object with an "op" field')
        name = request["op"]
        op = OPS.get(name)
        if op is None:
            raise ControlError(f"unknown op {name!r}; the ops are {', '.join(sorted(OPS))}")
        params = {key: value for key, value in request.items() if key != "op"}
        try:
            inspect.signature(op.handler).bind(None, None, **params)
        except TypeError as error:
            raise ControlError(f"bad {name} request: {error}") from None

        async def emit_json(event: Any) -> None:
            await emit(to_json(event))

        async with open_target(op.needs) as target:
            result = await op.handler(target, emit_json, **params)
        return {"ok": True, "result": to_json(result)}
    except _Disconnected:
        raise
    except Exception as error:
        if not _expected(error):
            log.exception("control request %s failed", request.get("op") if isinstance(request, dict) else request)
        kind = getattr(error, "kind", None) if isinstance(error, ControlError) else None
        return {"ok": False, "error": _message(error), "kind": kind or type(error).__name__}


def _expected(error: Exception) -> bool:
    """Errors that are about the request (a bad id, a refused change), not a bug in the node."""
    from ._state import StateFileBusy
    from .agents import AgentError
    from .durable import TaskFailed
    from .llm import ModelError
    from .policy import ApprovalError
    from .registry import RegistryError

    return isinstance(error, ControlError | LookupError | RegistryError | AgentError | ModelError | TaskFailed
                      | StateFileBusy | ApprovalError)


def _message(error: Exception) -> str:
    if type(error) is KeyError and error.args:  # str() of a KeyError quotes its message
        return str(error.args[0])
    return str(error) or type(error).__name__


def _entry_json(registry: Registry, entry: Entry) -> dict[str, Any]:
    origin = registry.origin(entry.id)
    return entry.to_json() | {"file": origin.file if origin else None, "line": origin.line if origin else None}


@_op("registry.list", "files")
async def _registry_list(target: Target, emit: Emit, kind: str | None = None, ns: str | None = None) -> Any:
    registry = target.registry
    return [_entry_json(registry, entry) for entry in registry.find(kind=kind, namespace=ns)]


@_op("registry.show", "files")
async def _registry_show(target: Target, emit: Emit, id: str) -> Any:
    return _entry_json(target.registry, target.registry.get(id))


@_op("registry.lint", "files")
async def _registry_lint(target: Target, emit: Emit) -> Any:
    registry = target.registry
    problems = [str(p) for file_problems in registry.problems.values() for p in file_problems]
    return {"entries": len(registry), "problems": problems}


@_op("registry.history", "state")
async def _registry_history(target: Target, emit: Emit, id: str | None = None) -> Any:
    return target.registry.history(id)


@_op("registry.diff", "state")
async def _registry_diff(target: Target, emit: Emit, v1: int, v2: int) -> Any:
    def as_json(entry: Entry | None) -> dict[str, Any] | None:
        return None if entry is None else entry.to_json()

    return [{"op": change.op, "id": change.id, "before": as_json(change.before), "after": as_json(change.after)}
            for change in target.registry.diff(v1, v2)]


@_op("registry.rollback", "state")
async def _registry_rollback(target: Target, emit: Emit, version: int, author: str | None = None) -> Any:
    before = target.registry.version
    return {"before": before, "version": target.registry.rollback(version, author=author)}


def _task_json(info: TaskInfo, steps: list[StepRecord]) -> dict[str, Any]:
    return {"id": info.id, "workflow": info.workflow, "status": info.status, "created": info.created,
            "registry_version": info.registry_version, "args": info.args, "result": info.result,
            "error": info.error, "step_count": len(steps)}


def step_json(step: StepRecord) -> dict[str, Any]:
    """A step with its decoded result; a model call's (an `llm.Response`) also gives its usage and cost."""
    from .durable._codec import JournalTypeError, loads
    from .llm import Response

    try:
        result = loads(step.result)
    except (JournalTypeError, ValueError):
        result = step.result
    usage = result.usage if isinstance(result, Response) else None
    return {"seq": step.seq, "name": step.name, "ok": step.ok, "started": step.started, "seconds": step.seconds,
            "error": step.error, "result": result, "usage": usage,
            "cost_usd": result.cost_usd if isinstance(result, Response) else None}


@_op("tasks.list", "state")
async def _tasks_list(target: Target, emit: Emit, status: str | None = None) -> Any:
    tasks = target.tasks
    return [_task_json(info, tasks.get(info.id).steps) for info in tasks.list(status)]


@_op("tasks.show", "state")
async def _tasks_show(target: Target, emit: Emit, id: str) -> Any:
    info = target.tasks.get(id)
    steps = [step_json(step) for step in info.steps]
    calls = [step for step in steps if step["usage"] is not None]
    usage = None
    if calls:
        usage = {field: sum(getattr(step["usage"], field) for step in calls)
                 for field in ("input_tokens", "output_tokens", "cached_tokens")}
    return _task_json(info, info.steps) | {
        "steps": steps, "usage": usage, "cost_usd": sum(step["cost_usd"] for step in calls) if calls else None}


@_op("tasks.cancel", "state")
async def _tasks_cancel(target: Target, emit: Emit, id: str) -> Any:
    from .durable._engine import TERMINAL

    before = target.tasks.status(id)
    await target.tasks.cancel(id)
    return {"before": before, "status": target.tasks.status(id), "requested": before not in TERMINAL}


@_op("tasks.signal", "state")
async def _tasks_signal(target: Target, emit: Emit, id: str, name: str, payload: Any = None) -> Any:
    await target.tasks.signal(id, name, payload)
    return {"status": target.tasks.status(id)}


@_op("tasks.resume", "node")
async def _tasks_resume(target: Target, emit: Emit, id: str) -> Any:
    """Run the task to its end (resuming it if it is unfinished and not running) and return its result."""
    from .durable._engine import TERMINAL

    tasks = target.tasks
    info = tasks.get(id)
    if info.status not in TERMINAL or info.status == "needs_attention":
        await tasks.start(info.workflow, task_id=id)  # attaches if it runs; retries a task parked for stalling
    await emit({"task": id, "workflow": info.workflow, "status": tasks.status(id)})
    return await tasks.result(id)


@_op("tasks.upgrade", "state")
async def _tasks_upgrade(target: Target, emit: Emit, id: str) -> Any:
    return await target.tasks.upgrade(id)


@_op("ask", "node")
async def _ask(target: Target, emit: Emit, agent: str, message: str, conversation: str | None = None,
               task_id: str | None = None) -> Any:
    """One agent turn, streamed: every event as it happens, then the answer."""
    from .agents import TurnDone, TurnFailed

    conv = await target.conversation(agent, id=conversation)
    async for event in conv.stream(message, task_id=task_id):
        await emit(event.model_dump(mode="json"))
        if isinstance(event, TurnDone):
            return event.answer
        if isinstance(event, TurnFailed):
            raise ControlError(f"{agent}: {event.error}", event.kind)
    raise ControlError(f"{agent}: the turn ended without an answer")


@_op("approvals.list", "state")
async def _approvals_list(target: Target, emit: Emit, status: str | None = "pending") -> Any:
    return target.approvals.list(status)


@_op("approvals.show", "state")
async def _approvals_show(target: Target, emit: Emit, id: str) -> Any:
    return target.approvals.get(id)


@_op("approvals.approve", "node")
async def _approvals_approve(target: Target, emit: Emit, id: str, by: str, reason: str = "") -> Any:
    return await target.approvals.approve(id, by=by, reason=reason)


@_op("approvals.deny", "node")
async def _approvals_deny(target: Target, emit: Emit, id: str, by: str, reason: str = "") -> Any:
    return await target.approvals.deny(id, by=by, reason=reason)


@_op("approvals.audit", "state")
async def _approvals_audit(target: Target, emit: Emit, subject: str | None = None, resource: str | None = None,
                           limit: int = 100) -> Any:
    return target.approvals.audit.list(subject=subject, resource=resource, limit=limit)


# -- the server ---------------------------------------------------------------------------------


class ControlServer:
    """The socket of a node that owns an app: `claim` before the state file opens, `start` after boot."""

    def __init__(self, node: Node, root: Path) -> None:
        self.node = node
        self.root = root.resolve()
        self.path = socket_path(self.root)
        self.pid_file = pid_path(self.root)
        self.started = datetime.now(UTC)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def claim(self) -> None:
        """Refuse to run a second node on the app; clear the socket and pid file a killed node left."""
        if not await self._refuse_if_served():
            return
        pid = _read_pid(self.pid_file)
        if pid is None or not _alive(pid):
            log.info("removing %s left by a node that is gone (pid %s)", self.path, pid)
            _remove(self.path, self.pid_file)
        # else a live process that does not answer (yet): the state file's lock decides

    async def _refuse_if_served(self) -> bool:
        """`StateFileBusy` if a node answers on the socket; whether a socket file is there at all."""
        if not os.path.lexists(self.path):
            return False
        info = await _ping(self.path)
        if info is not None:
            from ._state import StateFileBusy

            started = datetime.fromisoformat(info["started"]).astimezone()
            raise StateFileBusy(f"the app in {self.root} is already run by wippy node pid {info['pid']} (started "
                                f"{started:%Y-%m-%d %H:%M:%S}); stop it or use the CLI, which talks to it")
        return True

    async def start(self) -> None:
        """Listen, replacing a socket nobody answers on (the node holds the state file, so it is stale)."""
        if self.path.parent != self.pid_file.parent:
            _private_folder(self.path.parent)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        if await self._refuse_if_served():  # asked again: another node may have booted meanwhile (`:memory:` state)
            _remove(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=LINE_LIMIT)
        os.chmod(self.path, 0o600)
        self.pid_file.write_text(f"{os.getpid()}\n")

    async def close(self) -> None:
        """Stop listening, end the connections (a streaming client sees the node stop), remove the files."""
        if self._server is None:
            return
        self._server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        if _read_pid(self.pid_file) == os.getpid():
            _remove(self.path, self.pid_file)

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "root": str(self.root), "node": self.node.name, "version": __version__,
                "protocol": PROTOCOL, "started": self.started.isoformat()}

    @contextlib.asynccontextmanager
    async def _target(self, needs: Needs) -> AsyncIterator[Target]:
        yield self.node

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)

        async def emit(event: Any) -> None:
            try:
                writer.write(_line({"event": event}))
                await writer.drain()
            except ConnectionError as error:
                raise _Disconnected() from error

        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                except ValueError:
                    reply: dict[str, Any] = {"ok": False, "error": "a request is one line of JSON",
                                             "kind": "ControlError"}
                else:
                    is_ping = isinstance(request, dict) and request.get("op") == "ping"
                    reply = {"ok": True, "result": self.info()} if is_ping else await dispatch(
                        request, self._target, emit)
                writer.write(_line(reply))
                await writer.drain()
        except (_Disconnected, ConnectionError, ValueError):  # gone, or a line over LINE_LIMIT
            pass
        finally:
            self._connections.discard(task)
            writer.close()


# -- the client --------------------------------------------------------------------------------------


class ControlClient:
    """A connection to the node that runs an app."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.info: dict[str, Any] = {}
        """The node's answer to `ping`: pid, root, started, version, protocol."""

    @classmethod
    async def open(cls, path: Path, timeout: float = PING_TIMEOUT) -> ControlClient:
        """Connect and ping; `OSError` when nothing listens, `TimeoutError` when the node does not answer."""
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=LINE_LIMIT), timeout)
        client = cls(reader, writer)
        try:
            client.info = await asyncio.wait_for(client.request("ping"), timeout)
        except BaseException:
            await client.close()
            raise
        if client.info.get("protocol") != PROTOCOL:
            await client.close()
            raise ControlError(f"the node (pid {client.info.get('pid')}) runs wippy {client.info.get('version')}, "
                               f"which speaks another control protocol; stop it or use its own `wippy` command")
        return client

    async def request(self, op: str, on_event: Callable[[Any], None] | None = None, **params: Any) -> Any:
        """Send one request; pass each event to `on_event`; return the result or raise `ControlError`."""
        self._writer.write(_line({"op": op, **params}))
        await self._writer.drain()
        while True:
            line = await self._reader.readline()
            if not line:
                raise ControlError("the node closed the connection before it answered (did it stop?)")
            message = json.loads(line)
            if "event" not in message:
                return _unwrap(message)
            if on_event is not None:
                on_event(message["event"])

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


async def _ping(path: Path) -> dict[str, Any] | None:
    """The node's ping answer, or None if nothing answers there."""
    try:
        client = await ControlClient.open(path)
    except (OSError, TimeoutError, ValueError):
        return None
    await client.close()
    return client.info


# -- without a node: the CLI's embedded mode -----------------------------------------------------------


class _Light:
    """An app opened without a node, for ops that only read or record: no supervisors, no task recovery.

    Recovery would resume every unfinished task inside a short-lived command (and
    park those whose workflow this process never imported), so listing or
    signalling tasks must not boot a node.
    """

    def __init__(self, app: App | None, tasks: TaskManager | None) -> None:
        self.app = app
        self._tasks = tasks

    @property
    def registry(self) -> Registry:
        if self.app is None:
            raise ControlError("this op needs the app")
        return self.app.registry

    @property
    def tasks(self) -> TaskManager:
        if self._tasks is None:
            raise ControlError("this op needs the app's state file")
        return self._tasks

    @property
    def approvals(self) -> Approvals:
        """Reading approvals and the audit trail needs only the state file (deciding needs a node)."""
        from ._runtime.node import Node
        from .policy import Approvals, Audit

        if self.app is None:
            raise ControlError("this op needs the app's state file")
        return Approvals(Node("cli"), self.app.registry, self.app.db, Audit(self.app.db))

    async def conversation(self, agent: str, id: str | None = None) -> Conversation:
        raise ControlError("this op needs a running node")


@contextlib.asynccontextmanager
async def open_embedded(root: Path, needs: Needs) -> AsyncIterator[Target]:
    """What an op needs when no node runs, opened for one request and closed after it."""
    from ._app import App
    from ._runtime.node import Node
    from .durable import TaskManager

    if needs == "node":
        async with Node(root=root) as node:
            yield node
    elif needs == "none":
        yield _Light(None, None)
    else:
        with App(root, files_only=needs == "files") as app:
            tasks = None if needs == "files" else TaskManager(Node("cli"), app.db, log_path=app.journal_path,
                                                               registry_version=lambda: app.registry.version)
            try:
                yield _Light(app, tasks)
            finally:
                if tasks is not None:
                    tasks.close()


class Embedded:
    """Serves requests in this process, through the same ops a node serves, when no node runs the app."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def request(self, op: str, on_event: Callable[[Any], None] | None = None, **params: Any) -> Any:
        async def emit(event: Any) -> None:
            if on_event is not None:
                on_event(event)

        def open_target(needs: Needs) -> contextlib.AbstractAsyncContextManager[Target]:
            return open_embedded(self.root, needs)

        request = {"op": op, **params}
        reply = await dispatch(request, open_target, emit)
        deadline = time.monotonic() + BOOT_WAIT
        if reply.get("kind") == "StateFileBusy":  # a node still booting, or another command: wait for either
            print(f"wippy: the app's state file is busy; waiting up to {BOOT_WAIT:g}s for it", file=sys.stderr,
                  flush=True)
        while reply.get("kind") == "StateFileBusy" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            client = await self._node()
            if client is not None:
                try:
                    return await client.request(op, on_event, **params)
                finally:
                    await client.close()
            reply = await dispatch(request, open_target, emit)  # it failed opening the file: nothing was done
        return _unwrap(reply)

    async def _node(self) -> ControlClient | None:
        """The node that now answers on the app's socket, if one does."""
        path = socket_path(self.root.resolve())
        if os.path.lexists(path):
            with contextlib.suppress(OSError, TimeoutError, ValueError):
                return await ControlClient.open(path)
        return None


class Backend(Protocol):
    async def request(self, op: str, on_event: Callable[[Any], None] | None = None, **params: Any) -> Any: ...


@contextlib.asynccontextmanager
async def connect(root: Path) -> AsyncIterator[Backend]:
    """The node that runs the app at `root` if one answers on its socket, else an embedded one."""
    root = root.resolve()
    path = socket_path(root)
    client = None
    if os.path.lexists(path):
        with contextlib.suppress(OSError, TimeoutError):  # a stale socket; the state file's lock will tell
            client = await ControlClient.open(path)
    if client is None:
        yield Embedded(root)
        return
    try:
        yield client
    finally:
        await client.close()
