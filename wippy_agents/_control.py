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

Nothing a client sends is trusted: every request is checked against its op's
model (read from the handler's signature: types, bounds, no unknown fields), its
strings are made valid text (`clean_data`), and a malformed, too deep or too long
line gets an error reply, never a dropped connection or a traceback in the log.
A node serves at most `MAX_CONNECTIONS` connections at once (the next one gets
one error line), and closes a connection that sends no complete request line
within `IDLE_TIMEOUT`.

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
import errno
import hashlib
import inspect
import json
import logging
import os
import stat
import sys
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, cast

from . import __version__
from ._runtime.text import clean_data, clean_text
from .errors import RunError

if TYPE_CHECKING:
    from pydantic import BaseModel, Field, ValidationError

    from .agents import Conversation
    from .app import App, AppFolder
    from .durable import StepRecord, TaskInfo, TaskManager
    from .policy import Approvals
    from .registry import Entry, Registry

log = logging.getLogger("wippy_agents.control")

PROTOCOL = 1
MIB = 1024 * 1024
LINE_LIMIT = 64 * MIB
"""The longest answer line the client reads (a large registry diff or task result is one line)."""
REQUEST_LIMIT = 1 * MIB
"""The longest request line the node reads; a longer one is skipped and answered with an error."""
MAX_DEPTH = 64
"""How deeply a request's JSON may nest (a signal's payload is the only field that nests at all)."""
MAX_CONNECTIONS = 128
"""Connections a node serves at once; each holds a file descriptor and a read buffer."""
BACKLOG = 1024
"""Connections the OS queues for the node to accept (capped by net.core.somaxconn); a burst beyond it is refused."""
IDLE_TIMEOUT = 300.0
"""Seconds a connection may take to send a whole request line (or sit idle) before the node closes it."""
MAX_SOCKET_PATH = 100
"""Bytes; `sockaddr_un` holds 108 on Linux and 104 on macOS, with the final NUL."""
PING_TIMEOUT = 5.0
BOOT_WAIT = 15.0
"""How long the CLI waits for a node that holds the state file but does not answer yet (it is booting)."""

Needs = Literal["none", "files", "state", "node"]
"""What an op needs when no node runs: nothing, the app's files, its state file, or a whole node."""
Emit = Callable[[Any], Awaitable[None]]


class ControlError(RunError):
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
    """The pid in a pid file; None unless it holds one (0, -1 or a huge number would mean other processes)."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if 0 < pid < 2**31 else None


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
    """One line of the wire, valid UTF-8 whatever text it carries (a lone surrogate becomes U+FFFD)."""
    return clean_text(json.dumps(message, separators=(",", ":"), ensure_ascii=False)).encode() + b"\n"


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

    name: str
    needs: Needs
    handler: Handler

    @cached_property
    def model(self) -> type[BaseModel]:
        """The request's fields as a pydantic model, read from the handler's signature after `(target, emit)`.

        Built on first use, so pydantic loads only in a process that serves
        requests and a command that just talks to a node starts fast; that is also
        why `Field` in the handlers' annotations is resolved here.
        """
        from pydantic import ConfigDict, Field, create_model

        hints = typing.get_type_hints(self.handler, localns={"Field": Field}, include_extras=True)
        params = list(inspect.signature(self.handler).parameters.values())[2:]
        fields: dict[str, Any] = {
            param.name: (hints[param.name], ... if param.default is param.empty else param.default) for param in params}
        return create_model(f"{self.name} request", __config__=ConfigDict(extra="forbid", strict=True), **fields)

    def parse(self, params: dict[str, Any]) -> dict[str, Any]:
        """The handler's keyword arguments: `params` checked against the model, every string made valid text."""
        from pydantic import ValidationError

        for field, value in params.items():
            if _deeper_than(value, MAX_DEPTH):
                raise ControlError(f"bad {self.name} request: {field}: nested more than {MAX_DEPTH} levels deep")
        try:
            return dict(self.model.model_validate(clean_data(params)))
        except ValidationError as error:
            raise ControlError(f"bad {self.name} request: {self._problems(error)}") from None

    def _problems(self, error: ValidationError) -> str:
        fields = list(self.model.model_fields)
        takes = f"{self.name} takes {', '.join(fields)}" if fields else f"{self.name} takes no fields"
        return "; ".join(
            f"{'.'.join(map(str, e['loc']))}: "
            + (f"unknown field ({takes})" if e["type"] == "extra_forbidden" else e["msg"])
            for e in error.errors(include_url=False))


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON data nests more than `limit` lists or objects deep (level by level: no recursion to overflow)."""
    level = [value]
    for _ in range(limit):
        level = [child for item in level if isinstance(item, dict | list)
                 for child in (item.values() if isinstance(item, dict) else item)]
    return any(isinstance(item, dict | list) for item in level)


OPS: dict[str, Op] = {}


def _op(name: str, needs: Needs) -> Callable[[Handler], Handler]:
    """Register `async def handler(target, emit, **params)` as op `name`."""

    def register(handler: Handler) -> Handler:
        OPS[name] = Op(name, needs, handler)
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
        name = clean_text(request["op"])
        op = OPS.get(name)
        if op is None:
            raise ControlError(f"unknown op {name!r}; the ops are {', '.join(sorted(OPS))}")
        params = op.parse({key: value for key, value in request.items() if key != "op"})

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
        return _failure(error)


def _failure(error: Exception) -> dict[str, Any]:
    """The final line of a request that failed: a message for a person and the exception's class name."""
    kind = getattr(error, "kind", None) if isinstance(error, ControlError) else None
    return {"ok": False, "error": file_problem(error) or _message(error), "kind": kind or type(error).__name__}


def _expected(error: Exception) -> bool:
    """Errors that are about the request (a bad id, a refused change), not a bug in the node."""
    from ._state import StateFileBusy
    from .agents import AgentError
    from .durable import JournalDamaged, StateUnavailable, TaskFailed
    from .llm import ModelError
    from .policy import ApprovalError
    from .registry import RegistryError

    return file_problem(error) is not None or isinstance(
        error, ControlError | LookupError | RegistryError | AgentError | ModelError | TaskFailed | StateFileBusy
        | ApprovalError | JournalDamaged | StateUnavailable)


_FOLDER_IN_THE_WAY = "wippy needs a folder there, and a file is in the way; move it away"
FILE_ADVICE = {
    errno.EACCES: "make it writable by the user who runs wippy",
    errno.EPERM: "make it writable by the user who runs wippy",
    errno.EROFS: "it is on a read-only file system; move the app somewhere writable",
    errno.ENOSPC: "the disk is full; free some space and try again",
    errno.EDQUOT: "the disk quota is used up; free some space and try again",
    errno.EEXIST: _FOLDER_IN_THE_WAY,  # what `mkdir(exist_ok=True)` says about a file in its place
    errno.ENOTDIR: _FOLDER_IN_THE_WAY,
}
"""What to do about a file the app cannot use, by the error number the OS gave."""


def file_problem(error: BaseException) -> str | None:
    """A clear message for a file the app cannot use (no permission, read-only, disk full), naming it; else None.

    DuckDB reports its own I/O errors (`duckdb.IOException`, not an `OSError`) in
    the OS's words, which pick the advice.
    """
    duckdb = sys.modules.get("duckdb")  # loaded if it raised
    if isinstance(error, OSError) and (error.filename is not None or error.errno in FILE_ADVICE):
        code = error.errno
        what = f"cannot use {error.filename}: {error.strerror}" if error.filename is not None else str(error)
    elif duckdb is not None and isinstance(error, duckdb.IOException):
        what = str(error)
        code = next((number for number in FILE_ADVICE if os.strerror(number) in what), None)
    else:
        return None
    advice = FILE_ADVICE[code] if code in FILE_ADVICE else "check that the app's folder and .wippy/ are writable"
    return f"{what}; {advice}"


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
    """One agent turn, streamed: every event as it happens, then the answer.

    A client that goes away (Ctrl+C on `wippy ask`) cancels the turn: nobody is
    left to read its answer, and a model call under way is stopped, not paid for.
    """
    from .agents import TurnDone, TurnFailed, TurnStarted

    conv = await target.conversation(agent, id=conversation)
    turn: str | None = None
    async for event in conv.stream(message, task_id=task_id):
        if isinstance(event, TurnStarted):
            turn = event.task
        try:
            await emit(event.model_dump(mode="json"))
        except _Disconnected:
            if turn is not None:
                await target.tasks.cancel(turn)
            raise
        if isinstance(event, TurnDone):
            return event.answer
        if isinstance(event, TurnFailed):
            raise ControlError(f"{agent}: {event.error}", event.kind)
    raise ControlError(f"{agent}: the turn ended without an answer")


@_op("state.check", "none")
async def _state_check(target: Target, emit: Emit, repair: bool = False) -> Any:
    """What the journal holds and whether any of it is damaged; `repair` keeps every intact line (no node running)."""
    from ._state import open_state
    from .app import load_config
    from .durable._engine import TABLES
    from .durable._journal import check_log

    if not isinstance(target, _Light):  # a node has the journal open: look, but do not touch
        if repair:
            raise ControlError(f"the node (pid {os.getpid()}) has the journal open; stop it, then repair")
        folder = cast("App", target).folder
        assert folder.journal_path is not None
        row = folder.db.execute("SELECT copied_group FROM journal_position").fetchone()
        return check_log(folder.journal_path, TABLES, int(row[0]) if row else 0)
    config = load_config(target.root)
    if config.state == ":memory:":
        raise ControlError("this app keeps its state in memory (`state: :memory:`): there is no journal to check")
    state = target.root / config.state
    db = open_state(state)  # holding its lock, no node can start on the journal meanwhile
    try:
        row = db.execute("SELECT copied_group FROM journal_position").fetchone()
        return check_log(state.with_name("journal.log"), TABLES, int(row[0]) if row else 0, repair=repair)
    finally:
        db.close()


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
                           limit: Annotated[int, Field(ge=1, le=10_000)] = 100) -> Any:
    return target.approvals.audit.list(subject=subject, resource=resource, limit=limit)


# -- the server ---------------------------------------------------------------------------------


class ControlServer:
    """The socket of the app a node runs: `claim` before the state file opens, `start` after boot.

    Hand it to the app (`App(root, control=ControlServer(root))`): the app calls it in its boot order.
    """

    def __init__(self, root: Path) -> None:
        self.app: App | None = None
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

    async def start(self, app: App) -> None:
        """Listen, replacing a socket nobody answers on (the node holds the state file, so it is stale)."""
        self.app = app
        if self.path.parent != self.pid_file.parent:
            _private_folder(self.path.parent)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        if await self._refuse_if_served():  # asked again: another node may have booted meanwhile (`:memory:` state)
            _remove(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=REQUEST_LIMIT,
                                                       backlog=BACKLOG)
        os.chmod(self.path, 0o600)
        fd = os.open(self.pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the state folder is private
        with os.fdopen(fd, "w") as pid_file:
            pid_file.write(f"{os.getpid()}\n")

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
        node = "" if self.app is None else self.app.node.name
        return {"pid": os.getpid(), "root": str(self.root), "node": node, "version": __version__,
                "protocol": PROTOCOL, "started": self.started.isoformat()}

    @contextlib.asynccontextmanager
    async def _target(self, needs: Needs) -> AsyncIterator[Target]:
        assert self.app is not None
        yield self.app

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                await _refuse(reader, writer, ControlError(
                    f"the node (pid {os.getpid()}) already serves {MAX_CONNECTIONS} connections; try again when "
                    f"some have closed", "NodeBusy"))
            else:
                await self._answer_requests(reader, writer)
        except (_Disconnected, ConnectionError, TimeoutError):  # gone, or silent for IDLE_TIMEOUT
            pass
        except asyncio.CancelledError:  # the node stops; Python 3.11's stream callback would log the cancel
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def emit(event: Any) -> None:
            try:
                writer.write(_line({"event": event}))
                await writer.drain()
            except ConnectionError as error:
                raise _Disconnected() from error

        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    line = await _read_line(reader)
            except _LineTooLong:
                reply = _failure(ControlError(f"a request is one line of at most {REQUEST_LIMIT // MIB} MiB; "
                                              f"this one is longer"))
            else:
                if not line:
                    return
                reply = await self._answer(line, emit)
            writer.write(_line(reply))
            await writer.drain()

    async def _answer(self, line: bytes, emit: Emit) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return _failure(ControlError("a request is one line of JSON"))
        except RecursionError:
            return _failure(ControlError(f"a request is one line of JSON nested at most {MAX_DEPTH} levels deep"))
        if isinstance(request, dict) and request.get("op") == "ping":
            return {"ok": True, "result": self.info()}
        return await dispatch(request, self._target, emit)


class _LineTooLong(Exception):
    """A request line longer than `REQUEST_LIMIT`; it has been read to its end and dropped."""


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    """The next line (b"" at the end), holding at most about `REQUEST_LIMIT` of it in memory.

    An over-long line is read to its newline and dropped, then `_LineTooLong`
    raised, so the client's next line is read as its next request.
    """
    too_long = False
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as error:  # the end: what came after the last newline, if anything
            line = error.partial
        except asyncio.LimitOverrunError as error:  # `consumed` bytes hold no newline: drop them, read on
            await reader.readexactly(error.consumed)
            too_long = True
            continue
        if too_long:
            raise _LineTooLong()
        return line


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, error: ControlError) -> None:
    """Answer a connection with one error line and end it.

    The node stops writing, then reads (and drops) what the client sends until
    it closes: closing a socket with unread data resets the connection, and the
    client would lose the line.
    """
    writer.write(_line(_failure(error)))
    writer.write_eof()
    async with asyncio.timeout(PING_TIMEOUT):  # a client reads the line at once; one that does not is not waited for
        while await reader.read(64 * 1024):
            pass


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
            info = await asyncio.wait_for(client.request("ping"), timeout)
        except BaseException:
            await client.close()
            raise
        client.info = info if isinstance(info, dict) else {}
        if client.info.get("protocol") != PROTOCOL:
            await client.close()
            raise ControlError(f"the node (pid {client.info.get('pid')}) runs wippy {client.info.get('version')}, "
                               f"which speaks another control protocol; stop it or use its own `wippy` command")
        return client

    async def request(self, op: str, on_event: Callable[[Any], None] | None = None, **params: Any) -> Any:
        """Send one request; pass each event to `on_event`; return the result or raise `ControlError`.

        `ConnectionError` when the connection breaks (the node stopped or was killed).
        """
        self._writer.write(_line({"op": op, **params}))
        await self._writer.drain()
        while True:
            message = await self._message()
            if "event" not in message:
                return _unwrap(message)
            if on_event is not None:
                on_event(message["event"])

    async def _message(self) -> dict[str, Any]:
        """The node's next line, which the protocol says is a JSON object."""
        try:
            line = await self._reader.readline()
        except ValueError:  # longer than LINE_LIMIT
            raise ControlError(f"the node's answer is over {LINE_LIMIT // MIB} MiB, more than this client reads") \
                from None
        if not line:
            raise ControlError("the node closed the connection before it answered (did it stop?)")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            raise ControlError("the node sent a line that is not a JSON object; is it a wippy node?")
        return message

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

    def __init__(self, root: Path, folder: AppFolder | None, tasks: TaskManager | None) -> None:
        self.root = root
        self.folder = folder
        self._tasks = tasks

    @property
    def registry(self) -> Registry:
        if self.folder is None:
            raise ControlError("this op needs the app")
        return self.folder.registry

    @property
    def tasks(self) -> TaskManager:
        if self._tasks is None:
            raise ControlError("this op needs the app's state file")
        return self._tasks

    @property
    def approvals(self) -> Approvals:
        """Reading approvals and the audit trail needs only the state file (deciding needs a node)."""
        from .policy import Approvals, Audit

        if self.folder is None:
            raise ControlError("this op needs the app's state file")
        return Approvals(self.folder.registry, self.folder.db, Audit(self.folder.db))

    async def conversation(self, agent: str, id: str | None = None) -> Conversation:
        raise ControlError("this op needs a running node")


@contextlib.asynccontextmanager
async def open_embedded(root: Path, needs: Needs) -> AsyncIterator[Target]:
    """What an op needs when no node runs, opened for one request and closed after it."""
    from ._runtime.node import Node
    from .app import App, AppFolder
    from .durable import TaskManager

    if needs == "node":
        async with App(root) as app:
            yield app
    elif needs == "none":
        yield _Light(root, None, None)
    else:
        with AppFolder(root, files_only=needs == "files") as folder:
            tasks = None if needs == "files" else TaskManager(Node("cli"), folder.db, log_path=folder.journal_path,
                                                               registry=folder.registry)
            try:
                yield _Light(root, folder, tasks)
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
