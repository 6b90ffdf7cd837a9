"""The ops a node serves: one table, each op a handler whose signature is its request's model.

Nothing a client sends is trusted: every request is checked against its op's
model (read from the handler's signature: types, bounds, no unknown fields), its
strings are made valid text (`clean_data`), and a bad one gets an error reply
naming the op and the field, never a traceback in the log. The server and the
CLI's embedded mode both come through `dispatch`, so a command behaves the same
whether or not a node runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import logging
import os
import re
import socket
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from .. import process
from .._display import step_json
from .._runtime.text import clean_data, clean_text
from .._runtime.types import KILL
from ..agents import (
    TURN_WORKFLOW,
    Conversation,
    Memory,
    TurnArgs,
    TurnDone,
    TurnFailed,
    TurnStarted,
    note_json,
    turns,
)
from ..app import App, AppFolder, load_config, state_location
from ..durable import StepRecord, TaskInfo, TaskManager
from ..errors import WippyError
from ..policy import Approvals
from ..registry import Entry, Registry
from ..state import TERMINAL, McpToken, State, StateUnavailable, TokenStore, check_journal, shown_url
from . import _wire
from ._wire import MAX_DEPTH, ControlError, Disconnected, deeper_than, failure, file_problem, to_json

if TYPE_CHECKING:
    from pydantic import BaseModel, Field, ValidationError

__all__ = ["OPS", "Emit", "Needs", "Op", "Target", "dispatch", "emitting_to", "node_status"]

log = logging.getLogger("wippy_agents.control")

Needs = Literal["none", "files", "state", "node"]
"""What an op needs when no node runs: nothing, the app's files, its state file, or a whole node."""
Emit = Callable[[Any], Awaitable[None]]


def emitting_to(on_event: Callable[[Any], None] | None) -> Emit:
    """The `emit` of a request served in this process, handing each event to `on_event` (or dropping it)."""

    async def emit(event: Any) -> None:
        if on_event is not None:
            on_event(event)

    return emit


class Target(Protocol):
    """What ops act on: a running app, or the lighter stand-in the CLI opens when no node runs."""

    @property
    def root(self) -> Path: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def tasks(self) -> TaskManager: ...

    @property
    def approvals(self) -> Approvals: ...

    @property
    def folder(self) -> AppFolder | None:
        """The app's folder and its state (None: an op that opened neither)."""
        ...

    async def conversation(self, agent: str, id: str | None = None) -> Conversation: ...


Handler = Callable[..., Awaitable[Any]]

TOKEN_NAME = r"^[A-Za-z0-9_.@-]{1,64}$"
"""What a token's name may be: it is shown in lists and typed on command lines."""


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
            if deeper_than(value, MAX_DEPTH):
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
    except Disconnected:
        raise
    except Exception as error:
        if not _expected(error):
            log.exception("control request %s failed", request.get("op") if isinstance(request, dict) else request)
        return failure(error)


def _expected(error: Exception) -> bool:
    """Whether an error is about the request or the app's files (a bad id, a refused change, a full disk): every
    exception the package raises derives from `WippyError`; anything else is a bug, logged with its traceback."""
    return isinstance(error, WippyError) or file_problem(error) is not None


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
    by_file = {file: [str(p) for p in file_problems] for file, file_problems in registry.problems.items()}
    return {"entries": len(registry), "problems": problems, "by_file": by_file}


@_op("registry.history", "state")
async def _registry_history(target: Target, emit: Emit, id: str | None = None,
                            last: Annotated[int, Field(ge=1)] | None = None) -> Any:
    """Every version (that changed entry `id`), oldest first; `last`: only the newest that many."""
    versions = target.registry.history(id)
    return versions if last is None else versions[-last:]


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


@_op("registry.apply", "state")
async def _registry_apply(target: Target, emit: Emit, entries: list[dict[str, Any]], reason: str,
                          author: str | None = None) -> Any:
    """Commit `entries` (as `registry show --json` prints them) as one version in a person's name.

    Whoever can reach the control socket is the app's owner (the socket is theirs
    alone), so the change is the person's, as an edit of the files would be.
    """
    from ..policy import person

    try:
        changed = [Entry.from_json(entry) for entry in entries]
    except (KeyError, TypeError, ValueError) as error:
        raise ControlError(f"bad registry.apply request: entries: each needs id and kind ({_wire.message(error)})") from None
    return {"version": target.registry.apply(changed, author=author or person(), reason=reason)}


def _task_json(info: TaskInfo, steps: list[StepRecord]) -> dict[str, Any]:
    return {"id": info.id, "workflow": info.workflow, "status": info.status, "created": info.created,
            "registry_version": info.registry_version, "args": info.args, "result": info.result,
            "error": info.error, "step_count": len(steps), "node": info.node}


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
    before = target.tasks.status(id)
    await target.tasks.cancel(id)
    return {"before": before, "status": target.tasks.status(id), "requested": before not in TERMINAL}


@_op("tasks.signal", "state")
async def _tasks_signal(target: Target, emit: Emit, id: str, name: str, payload: Any = None) -> Any:
    await target.tasks.signal(id, name, payload)
    return {"status": target.tasks.status(id)}


@_op("tasks.start", "node")
async def _tasks_start(target: Target, emit: Emit, workflow: str, args: Any = None, task_id: str | None = None,
                       wait: bool = False) -> Any:
    """Start a task of `workflow`, or attach to task `task_id` if it exists; with `wait`, return its result.

    `args` is the JSON a person gave: an array is the positional arguments, any
    other value (an object, a string, a number) the one argument, none (or null)
    no arguments; so a restricted workflow, whose host function takes one dict of
    keyword arguments, gets an object's fields. Attaching keeps the arguments the
    task started with; a `task_id` that names a task of another workflow is
    refused. The answer is `{task, workflow, status}`; with `wait` that is sent
    as an event once the task runs, and the answer is its result.
    """
    tasks = target.tasks
    if task_id is not None:
        try:
            existing = tasks.get(task_id, steps=False).workflow
        except LookupError:  # a new task under the id the client chose
            existing = workflow
        if existing != workflow:
            raise ControlError(f"task {task_id} runs workflow {existing!r}, not {workflow!r}; start {workflow} under "
                               "another task id")
    positional = args if isinstance(args, list) else [] if args is None else [args]
    task = await _started(tasks, workflow, positional, task_id)
    return await _status_or_result(tasks, task, workflow, wait, emit)


@_op("tasks.resume", "node")
async def _tasks_resume(target: Target, emit: Emit, id: str, wait: bool = True) -> Any:
    """Resume the task if it is unfinished and not running; with `wait`, run it to its end and return its result.

    Without `wait` the answer is its status once it runs again (a UI's resume key).
    """
    tasks = target.tasks
    info = tasks.get(id, steps=False)
    if info.status not in TERMINAL or info.status == "needs_attention":
        await _started(tasks, info.workflow, [], id)  # attaches if it runs; retries a task parked for stalling
    return await _status_or_result(tasks, id, info.workflow, wait, emit)


async def _started(tasks: TaskManager, workflow: str, args: list[Any], task_id: str | None) -> str:
    """`tasks.start`; a workflow this node does not know is a `ControlError` naming those it knows."""
    try:
        return await tasks.start(workflow, *args, task_id=task_id)
    except LookupError as error:  # its workflow's code is not loaded on this node
        raise ControlError(_wire.message(error), "LookupError") from None


async def _status_or_result(tasks: TaskManager, task: str, workflow: str, wait: bool, emit: Emit) -> Any:
    """The task's `{task, workflow, status}`; with `wait`, that as an event, and its result once it ends."""
    status = {"task": task, "workflow": workflow, "status": tasks.status(task)}
    if not wait:
        return status
    await emit(status)
    return await tasks.result(task)


@_op("tasks.upgrade", "state")
async def _tasks_upgrade(target: Target, emit: Emit, id: str) -> Any:
    return await target.tasks.upgrade(id)


@_op("ask", "node")
async def _ask(target: Target, emit: Emit, agent: str, message: str, conversation: str | None = None,
               task_id: str | None = None, cancel_on_disconnect: bool = True) -> Any:
    """One agent turn, streamed: every event as it happens, then the answer.

    A client that goes away (Ctrl+C on `wippy ask`) cancels the turn: nobody is
    left to read its answer, and a model call under way is stopped, not paid for.
    A UI that stops watching a turn to show another conversation passes
    `cancel_on_disconnect=False`: the turn goes on and its answer is kept.
    """
    conv = await target.conversation(agent, id=conversation)
    turn: str | None = None
    async for event in conv.stream(message, task_id=task_id):
        if isinstance(event, TurnStarted):
            turn = event.task
        try:
            await emit(event.model_dump(mode="json"))
        except Disconnected:
            if turn is not None and cancel_on_disconnect:
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
    if isinstance(target, App):  # a node has the journal open: look, but do not touch
        if repair:
            raise ControlError(f"the node (pid {os.getpid()}) has the journal open; stop it, then repair")
        return target.folder.state.journal.check()
    root = target.root
    location = state_location(load_config(root), root)
    if location is None:
        raise ControlError("this app keeps its state in memory (`state: :memory:`): there is no journal to check")
    if isinstance(location, str):
        raise ControlError(f"this app keeps its state in Postgres ({shown_url(location)}), which keeps its own "
                           "write-ahead log: there is no journal file to check")
    return check_journal(location, repair=repair)


@_op("cluster.status", "none")
async def _cluster_status(target: Target, emit: Emit) -> Any:
    """The nodes that run the app, each with where it runs and what it holds; none when no node runs it.

    On one machine that is the node serving this socket; nodes on Ray join this list with their Ray node.
    """
    if not isinstance(target, App):
        return []
    return [node_status(target)]


def node_status(app: App) -> dict[str, Any]:
    """A row of `wippy cluster status` for the node running `app` here; its task count is None while its state
    cannot be reached (the row says why)."""
    name = app.node.name
    journal = app.folder.state.journal
    problem, lease_age = journal.problem, journal.lease_age
    tasks = None
    if problem is None:
        try:
            tasks = sum(info.node == name and info.status not in TERMINAL for info in app.tasks.list())
        except StateUnavailable as error:  # lost since the node last wrote
            problem = str(error)
    return {"name": name, "host": socket.gethostname(), "ray_node": None, "pid": os.getpid(),
            "processes": len(app.processes()), "tasks": tasks,
            "lease_age": None if lease_age is None else round(lease_age, 1),
            "status": "up" if problem is None else "state unavailable", "problem": problem}


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


# -- bearer tokens of `wippy mcp serve --http` (only their digests reach the node) --------------------------


def _state(target: Target) -> State:
    if target.folder is None:
        raise ControlError("this op needs the app's state file")
    return target.folder.state


def _tokens(target: Target) -> TokenStore:
    return _state(target).tokens


@_op("mcp.token.create", "state")
async def _mcp_token_create(target: Target, emit: Emit, name: Annotated[str, Field(pattern=TOKEN_NAME)],
                            digest: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")], agents: str = "*") -> Any:
    """Keep a new token's digest (the CLI makes the token and shows it once) under `name`, for `agents`."""
    token = McpToken(name, digest, agents, datetime.now(UTC))
    if not _tokens(target).add(token):
        raise ControlError(f"there is already a token named {name!r}; revoke it first (`wippy mcp token revoke "
                           f"{name}`) or pick another name")
    return {"name": name, "agents": agents, "created": token.created}


@_op("mcp.token.list", "state")
async def _mcp_token_list(target: Target, emit: Emit) -> Any:
    """Every token's name, agents pattern and creation time (never its digest)."""
    return [{"name": token.name, "agents": token.agents, "created": token.created} for token in _tokens(target).list()]


@_op("mcp.token.revoke", "state")
async def _mcp_token_revoke(target: Target, emit: Emit, name: str) -> Any:
    if not _tokens(target).revoke(name):
        names = ", ".join(token.name for token in _tokens(target).list()) or "none"
        raise ControlError(f"there is no token named {name!r} (the tokens: {names})")
    return {"name": name}


@_op("mcp.token.check", "state")
async def _mcp_token_check(target: Target, emit: Emit, digest: str) -> Any:
    """The token whose digest is `digest` ({name, agents}), or None; every digest is compared in constant time."""
    found = None
    for token in _tokens(target).list():
        if hmac.compare_digest(token.digest.encode(), digest.encode()):
            found = {"name": token.name, "agents": token.agents}
    return found


# -- agents' memory (`wippy memory`, the TUI's memory view) -----------------------------------------------


def _memory(target: Target) -> Memory:
    return Memory(_state(target).memory)


@_op("memory.list", "state")
async def _memory_list(target: Target, emit: Emit, agent: str | None = None) -> Any:
    """`agent`'s notes, oldest first; without an agent, the agents that have notes and how many ({agent: n})."""
    memory = _memory(target)
    if agent is None:
        return memory.agents()
    return [note_json(note) for note in memory.notes(agent)]


@_op("memory.show", "state")
async def _memory_show(target: Target, emit: Emit, agent: str, note: Annotated[int, Field(ge=1)] | None = None) -> Any:
    """Every version of `agent`'s memory (of note `note` when given), oldest first, each with its author and task."""
    versions = _memory(target).history(agent, note)
    if not versions:
        raise ControlError(f"{agent} has no note {note}" if note is not None else f"{agent} has no memory")
    return [note_json(version) for version in versions]


@_op("memory.forget", "state")
async def _memory_forget(target: Target, emit: Emit, agent: str, note: Annotated[int, Field(ge=1)], by: str) -> Any:
    """Forget `agent`'s note `note` in `by`'s name: a new version (the note's history stays)."""
    try:
        return note_json(_memory(target).forget(agent, note, author=by))
    except LookupError as error:
        raise ControlError(str(error)) from None


# -- what agents' model calls spent (`wippy usage`) ------------------------------------------------------


@_op("usage", "state")
async def _usage(target: Target, emit: Emit, agent: str | None = None, since: str | None = None) -> Any:
    """Model calls added up per UTC day, agent and model (of `agent`, from the day `since` on), oldest day first."""
    try:
        first = None if since is None else date.fromisoformat(since)
    except ValueError:
        raise ControlError(f"since: {since!r} is not a day; write it as YYYY-MM-DD, such as 2026-01-31") from None
    return [{**row.__dict__, "day": row.day.isoformat()} for row in _state(target).usage.daily(agent=agent, since=first)]


# -- conversations, from the index the agents keep as turns happen ----------------------------------------

CONVERSATIONS_LIMIT = 10_000
SEARCH_CHARS = 500
"""The longest search of conversations: a few words (each one more pass over the messages)."""
_RELATIVE = re.compile(r"^(\d{1,6})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@_op("conversations.list", "state")
async def _conversations_list(target: Target, emit: Emit, agent: str | None = None, since: str | None = None,
                              until: str | None = None,
                              text: Annotated[str, Field(max_length=SEARCH_CHARS)] | None = None,
                              limit: Annotated[int, Field(ge=1, le=CONVERSATIONS_LIMIT)] = 50) -> Any:
    """Conversations people had, latest activity first: of `agent`, active from `since` and before `until` (an ISO
    date or time, or a span back from now such as 30m, 12h, 7d, 2w), holding every word of `text` in their messages.
    Each with its turn count and first message (`wippy conversations`, the TUI's sidebar)."""
    return [info._asdict() for info in _state(target).conversations.list(
        agent=agent, since=_moment("since", since), until=_moment("until", until), text=text, limit=limit)]


def _moment(field: str, text: str | None) -> datetime | None:
    """`text` as a time: an ISO date or time (local time unless it names its zone), or a span back from now."""
    if text is None:
        return None
    relative = _RELATIVE.match(text.strip())
    if relative:
        return datetime.now(UTC) - timedelta(**{_UNITS[relative[2]]: int(relative[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ControlError(f"bad {field}: {text!r} is neither an ISO date or time (2026-12-01, 2026-12-01T09:30) "
                           "nor a span back from now (30m, 12h, 7d, 2w)") from None
    return moment if moment.tzinfo is not None else moment.astimezone()


# -- what a UI watching the node reads (`wippy chat`, hosting the node or attached to it) -----------------


def _app_of(target: Target) -> App:
    """The running app behind a `node` op (the CLI's embedded mode boots one for it)."""
    assert isinstance(target, App), "ops that need a node are served by a running app"
    return target


WATCH_BACKLOG = 10_000
"""Events kept for a client that reads slower than they happen; past that they are dropped and counted."""
HEARTBEAT = 1.0
"""Seconds between `heartbeat` events when nothing happens: a client gone away is noticed within one."""


@_op("watch", "node")
async def _watch(target: Target, emit: Emit) -> Any:
    """Stream what a UI shows live, until the client goes away.

    Events: `registry.commit` (version, author, reason, task, ids, and whether an
    agent entry changed), `registry.error` (a refused file: author and problems),
    `approval` (one asked for or decided), `log` (a warning or error the node
    logged), `lost` (events dropped for a client that fell behind) and `heartbeat`.
    """
    app = _app_of(target)
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(WATCH_BACKLOG)
    lost = 0

    def put(event: dict[str, Any]) -> None:
        nonlocal lost
        try:
            events.put_nowait(event)
        except asyncio.QueueFull:
            lost += 1

    loop = asyncio.get_running_loop()
    handler = _LogRelay(lambda record: loop.call_soon_threadsafe(put, record))
    logging.getLogger("wippy_agents").addHandler(handler)
    forwarder = app.node.spawn(forward_events, app, put)
    try:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), HEARTBEAT)
            except TimeoutError:
                event = {"topic": "heartbeat"}
            if lost:
                await emit({"topic": "lost", "count": lost})
                lost = 0
            await emit(event)
    finally:
        logging.getLogger("wippy_agents").removeHandler(handler)
        app.node.exit(None, forwarder, KILL)


async def forward_events(app: App, put: Callable[[dict[str, Any]], None]) -> None:
    """The process behind a `watch`: hears every registry change and approval, `put`s each as a watch event."""
    app.registry.subscribe("*")
    app.approvals.subscribe()
    agents_touched = False
    while True:
        msg = await process.receive()
        payload = msg.payload
        if msg.topic in ("registry.create", "registry.update", "registry.delete"):
            agents_touched = agents_touched or payload.kind == "agent"
        elif msg.topic == "registry.commit":
            put({"topic": msg.topic, "version": payload.version, "author": payload.author, "reason": payload.reason,
                 "task": payload.task, "ids": list(payload.ids), "agents": agents_touched})
            agents_touched = False
        elif msg.topic == "registry.error":
            put({"topic": msg.topic, "author": payload.author, "problems": [str(p) for p in payload.problems]})
        elif msg.topic.startswith("approval."):
            put({"topic": "approval", "approval": to_json(payload)})


class _LogRelay(logging.Handler):
    """Hands the node's warnings and errors to a watching UI, from whichever thread logs them."""

    def __init__(self, relay: Callable[[dict[str, Any]], Any]) -> None:
        super().__init__(logging.WARNING)
        self.relay = relay

    def emit(self, record: logging.LogRecord) -> None:
        self.relay({"topic": "log", "level": record.levelname.lower(), "name": record.name,
                    "message": clean_text(record.getMessage())})


@_op("processes", "node")
async def _processes(target: Target, emit: Emit) -> Any:
    """Every live process of the node, oldest first (each pid names its node)."""
    return _app_of(target).processes()


@_op("chat.turns", "node")
async def _chat_turns(target: Target, emit: Emit, agent: str, conversation: str) -> Any:
    """A conversation's turns in order: each turn's task, number, status and message (`chat.events` has the rest)."""
    return [{"task": info.id, "turn": args.turn, "agent": args.agent, "text": args.text, "status": info.status}
            for info in turns(_app_of(target).tasks, agent, conversation) for args in [TurnArgs(*info.args)]]


def _turn(app: App, task: str) -> TaskInfo:
    """Task `task`, which must be an agent's turn."""
    info = app.tasks.get(task)
    if info.workflow != TURN_WORKFLOW:
        raise ControlError(f"task {task} is a {info.workflow} task, not an agent turn")
    return info


@_op("chat.events", "node")
async def _chat_events(target: Target, emit: Emit, task: str) -> Any:
    """The events turn `task` streamed, rebuilt from the journal: a UI shows a past turn as it showed it live."""
    app = _app_of(target)
    return [event.model_dump(mode="json") for event in app.agents.turn_events(_turn(app, task))]


@_op("chat.steps", "node")
async def _chat_steps(target: Target, emit: Emit, task: str) -> Any:
    """Turn `task`'s steps timed from its start, a delegate's nested, from the journal (the TUI's waterfall)."""
    app = _app_of(target)
    return app.agents.turn_steps(_turn(app, task))
