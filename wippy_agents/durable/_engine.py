"""Durable tasks: workflows whose steps are journaled, so a restarted node replays instead of redoing.

A task runs its workflow function as a process. Every `ctx.step` is numbered in
call order; a finished step's result is in the journal, so when the task runs
again (after a crash, `kill -9` or a restart) the step returns the recorded result
without running, and only the interrupted step runs again. The replay checks
that the workflow asks for the same steps in the same order.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
import uuid
from collections import ChainMap
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .._runtime.node import current_process
from .._runtime.telemetry import OFF, AttributeValue, Telemetry
from .._runtime.types import SHUTDOWN, describe
from ..errors import ArgumentError, RunError, UsageError
from ..state import (
    FINISHED,
    TERMINAL,
    JournalStore,
    LeaseLost,
    Note,
    SignalRecord,
    StateUnavailable,
    StepRecord,
    TaskEvent,
    TaskRow,
    TaskStatus,
    TaskSummary,
)
from ._codec import dumps, loads

if TYPE_CHECKING:
    from .._runtime.node import Node
    from ..registry import Registry, RegistryView

__all__ = [
    "MAX_CRASHED_STARTS",
    "MAX_RECOVERIES",
    "TERMINAL",
    "WORKFLOWS",
    "NondeterminismError",
    "StepError",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskInfo",
    "TaskManager",
    "Upgradable",
    "UpgradeRefused",
    "Workflow",
    "idempotency_key",
    "step_error_type",
    "workflow",
]

log = logging.getLogger("wippy_agents.durable")

MAX_RECOVERIES = 3
"""A task that fails to make progress over this many recoveries is parked as `needs_attention`."""
MAX_CRASHED_STARTS = 2
"""A step marked as started this many times without finishing took the node down each time: it is parked."""

Workflow = Callable[..., Coroutine[Any, Any, Any]]


@runtime_checkable
class Upgradable(Protocol):
    """A workflow that can say whether a task may move to another registry version (`tasks.upgrade`)."""

    async def check_upgrade(self, task: TaskInfo, version: int) -> None:
        """Raise `UsageError` saying why the task's journal does not replay on the workflow as of `version`."""
WORKFLOWS: dict[str, Workflow] = {}
"""The workflows `@workflow` declares; every `TaskManager` offers them beside those registered on it."""

_step_key: contextvars.ContextVar[str] = contextvars.ContextVar("wippy_step_key")


def workflow(workflow_id: str) -> Callable[[Workflow], Workflow]:
    """Register `async def fn(ctx, *args)` as the durable workflow `workflow_id`."""

    def register(fn: Workflow) -> Workflow:
        if not inspect.iscoroutinefunction(fn):
            raise ArgumentError(f"workflow {workflow_id!r}: {fn.__qualname__} must be an async function (ctx, *args)")
        WORKFLOWS[workflow_id] = fn
        return fn

    return register


def idempotency_key() -> str:
    """Inside a step's function: `<task id>:<step number>`, the same on every retry and replay of the step."""
    try:
        return _step_key.get()
    except LookupError:
        raise UsageError("idempotency_key() is only known inside a durable step") from None


class NondeterminismError(UsageError):
    """On replay the workflow asked for a different step than the journal recorded at that position."""


class UpgradeRefused(UsageError):
    """`tasks.upgrade` refused: the task's journal would not replay on the workflow as of the newer version."""


class TaskNotFound(UsageError, LookupError):
    """There is no task with that id (or no workflow with that name) on this task manager."""


class TaskCancelled(RunError):
    """The task was cancelled; raised inside the workflow at its next step or wait."""


class StepError(RunError):
    """A step failed (after its retries); the message carries the original error, also on replay."""

    def __init__(self, step: str, error: str) -> None:
        super().__init__(f"step {step!r} failed: {error}")
        self.step = step
        self.error = error


class TaskFailed(RunError):
    """`tasks.result()` of a task that failed, was cancelled or needs attention."""


def step_error_type(error: BaseException) -> str:
    """A span's `error.type` for what left a step: the class of the error a `StepError` carries, if it still does."""
    cause = error.__cause__ if isinstance(error, StepError) else None
    return type(cause or error).__qualname__


@dataclass
class TaskInfo:
    id: str
    workflow: str
    status: TaskStatus
    created: datetime
    registry_version: int
    args: list[Any]
    result: Any = None
    error: str | None = None
    error_kind: str | None = None  # the exception class that failed the task
    steps: list[StepRecord] = field(default_factory=list)
    node: str = ""  # the name of the node that owns it (runs it, or last ran it)


@dataclass
class _Signal:
    id: str
    name: str
    payload: Any


class TaskContext:
    """What a workflow gets as `ctx`: durable steps, sleeps and signal waits."""

    def __init__(self, manager: TaskManager, task_id: str, registry_version: int, steps: dict[int, StepRecord],
                 signals: list[_Signal]) -> None:
        self._manager = manager
        self.task_id = task_id
        self.registry_version = registry_version
        self._recorded = steps
        self._signals = signals
        self._consumed = {loads(r.result)["id"] for r in steps.values() if r.name.startswith("signal:") and r.ok}
        self._seq = 0
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Future[Any]] = set()
        self.cancelled = False

    @property
    def registry(self) -> Registry | RegistryView:
        """The app's registry as of the version this task runs on (see `tasks.upgrade`)."""
        registry = self._manager.registry
        if registry is None:
            raise UsageError("these tasks run without a registry; an App hands its registry to its task manager")
        return registry.at(self.registry_version)

    def step(self, name: str, fn: Callable[..., Any], *args: Any, retries: int = 0,
             retry_delay: float = 0.5, mark_start: bool = False, span: str | None = None,
             attributes: Mapping[str, AttributeValue] | None = None) -> Awaitable[Any]:
        """Run `fn(*args)` once for this task and journal its result; on replay return the recorded result.

        The step's number is taken now, in call order, so steps started together
        (say with `asyncio.gather`) replay in the same positions. `mark_start`
        journals that the step started before running it, for code that could take
        the node down with it (a trusted tool): a step found started twice without
        finishing parks its task instead of crashing the node at every recovery.

        Traced, the step is one span, `step <name>` unless `span` names it (an agent's
        model call is `chat <model>`), with `attributes` and `wippy.task.id`,
        `wippy.step`, `wippy.replay`; `fn` runs inside it, so it can add what it learns.
        """
        seq = self._next()
        if not self._manager.telemetry.on:
            return self._step(seq, name, fn, args, retries, retry_delay, mark_start)
        return self._traced_step(seq, name, fn, args, retries, retry_delay, mark_start, span or f"step {name}",
                                 attributes or {})

    async def _traced_step(self, seq: int, name: str, fn: Callable[..., Any], args: tuple[Any, ...], retries: int,
                           retry_delay: float, mark_start: bool, span: str,
                           attributes: Mapping[str, AttributeValue]) -> Any:
        """A step in its span; a replayed one (its result returned from the journal) says so in `wippy.replay`."""
        attributes = {**attributes, "wippy.task.id": self.task_id, "wippy.step": name,
                      "wippy.replay": seq in self._recorded}
        with self._manager.telemetry.span(span, attributes, error_type=step_error_type):
            return await self._step(seq, name, fn, args, retries, retry_delay, mark_start)

    def replaying(self, ahead: int = 0) -> str | None:
        """The name of the step the next `step` call replays, None when it will run: a workflow whose choice of
        step rests on something that can change between runs (a clock, an estimate) follows what was recorded.
        `ahead`: of the step that many after it."""
        record = self._recorded.get(self._seq + ahead)
        return record.name if record is not None else None

    def recorded(self) -> list[StepRecord]:
        """The steps the journal held when this run began, in order: what replaying the workflow returns."""
        return [self._recorded[seq] for seq in sorted(self._recorded)]

    def skip(self, count: int) -> None:
        """Go past `count` recorded steps without calling them: code that replays them itself (a sandboxed
        workflow's, whose recorded results are sent to it) goes on at the step after."""
        self._seq += count

    def signal_ready(self, name: str) -> bool:
        """Whether `wait_signal(name)` would return at once: such a signal was sent and not yet consumed."""
        return any(s.name == name and s.id not in self._consumed for s in self._signals)

    def _next(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _replayed(self, seq: int, name: str) -> StepRecord | None:
        record = self._recorded.get(seq)
        if record is not None and record.name != name:
            raise NondeterminismError(
                f"task {self.task_id}: step {seq} was recorded as {record.name!r} but the workflow now asks for "
                f"{name!r}; the workflow's code changed under a running task"
            )
        return record

    async def _step(self, seq: int, name: str, fn: Callable[..., Any], args: tuple[Any, ...], retries: int,
                    retry_delay: float, mark_start: bool) -> Any:
        self._check_cancelled()
        record = self._replayed(seq, name)
        if record is not None:
            if record.ok:
                return loads(record.result)
            raise StepError(name, record.error or "")
        if mark_start:
            await self._manager.mark_started(self.task_id, seq, name)
        started, clock = self._manager.now(), time.monotonic()
        token = _step_key.set(f"{self.task_id}:{seq}")
        try:
            for attempt in range(retries + 1):
                self._check_cancelled()  # a cancel that came while the step's start was being journaled
                try:
                    value = fn(*args)
                    if inspect.isawaitable(value):
                        value = await self._interruptible(value)
                    text = dumps(value)
                    break
                except (TaskCancelled, StateUnavailable, LeaseLost):
                    raise
                except Exception as error:
                    if attempt == retries:
                        message = describe(error)
                        await self._manager.record_step(self.task_id, seq, name, False, None, message, started,
                                                       time.monotonic() - clock)
                        raise StepError(name, message) from error
                    await self._interruptible(asyncio.sleep(retry_delay * 2**attempt))
        finally:
            _step_key.reset(token)
        await self._manager.record_step(self.task_id, seq, name, True, text, None, started, time.monotonic() - clock)
        return loads(text)

    async def _interruptible(self, awaitable: Awaitable[Any]) -> Any:
        """Await a step's work as a task of its own, so that cancelling the task stops it mid-step.

        Cancelling the workflow's process cancels the awaited task with it; cancelling
        only the step (`TaskManager.cancel`) surfaces as `TaskCancelled`.
        """
        inner = asyncio.ensure_future(awaitable)
        self._inflight.add(inner)
        try:
            return await inner
        except asyncio.CancelledError:
            outer = asyncio.current_task()
            if self.cancelled and inner.cancelled() and outer is not None and not outer.cancelling():
                raise TaskCancelled(f"task {self.task_id} was cancelled") from None
            inner.cancel()
            raise
        finally:
            self._inflight.discard(inner)

    def interrupt(self) -> None:
        """Stop the steps in flight: the task was cancelled."""
        for inner in list(self._inflight):
            inner.cancel()

    async def sleep(self, seconds: float) -> None:
        """A durable timer: after a restart the task waits only for what is left."""
        wake_at = await self.step("sleep", self._manager.clock_plus, seconds)
        await self._wait_until(wake_at)

    async def wait_signal(self, name: str, timeout: float | None = None) -> Any:
        """Wait for `tasks.signal(task_id, name, payload)` (sent before, during or while the node was down)."""
        deadline = await self.step(f"wait:{name}", self._manager.clock_plus, timeout)
        seq = self._next()
        record = self._replayed(seq, f"signal:{name}")
        if record is not None:
            if not record.ok:
                raise TimeoutError(record.error)
            return loads(record.result)["payload"]
        while True:
            self._check_cancelled()
            signal = next((s for s in self._signals if s.name == name and s.id not in self._consumed), None)
            if signal is not None:
                self._consumed.add(signal.id)
                text = dumps({"id": signal.id, "payload": signal.payload})
                await self._manager.record_step(self.task_id, seq, f"signal:{name}", True, text, None,
                                               self._manager.now(), 0.0)
                return signal.payload
            if deadline is not None and self._manager.clock() >= deadline:
                message = f"no {name!r} signal within {timeout:g}s"
                await self._manager.record_step(self.task_id, seq, f"signal:{name}", False, None, message,
                                               self._manager.now(), 0.0)
                raise TimeoutError(message)
            await self._wait_until(deadline)

    async def _wait_until(self, deadline: float | None) -> None:
        """Sleep until `deadline` (wall clock), or until a signal or a cancel wakes the task."""
        self._wake.clear()
        remaining = None if deadline is None else deadline - self._manager.clock()
        if remaining is not None and remaining <= 0:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), remaining)
        except TimeoutError:
            pass
        self._check_cancelled()

    def _check_cancelled(self) -> None:
        if self.cancelled:
            raise TaskCancelled(f"task {self.task_id} was cancelled")

    def wake(self) -> None:
        self._wake.set()


@dataclass
class _Running:
    ctx: TaskContext
    done: asyncio.Future[Any]


@dataclass
class _Task:
    """What the node knows of a task between boots: the journal is written, this is read."""

    id: str
    workflow: str
    args: list[Any]
    registry_version: int
    created: datetime
    status: TaskStatus
    detail: Any = None
    cancel_requested: bool = False
    node: str | None = None  # the node that holds it, if another than this one

    @classmethod
    def of(cls, summary: TaskSummary) -> _Task:
        """The task as the journal's latest events leave it."""
        return cls(summary.id, summary.workflow, loads(summary.args), summary.registry_version, summary.created,
                   summary.status, loads(summary.detail), summary.cancel_requested, summary.node)


def _group_key(workflow_id: str, args: list[Any]) -> tuple[str, Any, Any] | None:
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        return workflow_id, args[0], args[1]
    return None


class TaskManager:
    """The node's durable tasks (`node.tasks`): start, attach, signal, cancel, recover.

    Task states are read from the journal once, at boot, and kept in memory; while
    the node runs the journal is only written (steps are read back when a task resumes).
    """

    def __init__(self, node: Node, journal: JournalStore, *, clock: Callable[[], float] = time.time,
                 registry: Registry | None = None, telemetry: Telemetry = OFF) -> None:
        self.node = node
        """The runtime that hosts each running task as a process."""
        self.journal = journal
        """Where the tasks' rows are kept (the app's state opens it, and closes it after the node stops)."""
        self.clock = clock
        self.registry = registry
        """Entries a task reads as of the registry version it started on (none: every task is on version 0)."""
        self.telemetry = telemetry
        """Where each step's span goes (off unless the app traces)."""
        journal.on_writable(self._storage_recovered)
        self.workflows: ChainMap[str, Workflow] = ChainMap({}, WORKFLOWS)
        """This manager's workflows: those registered on it, then every `@workflow`."""
        self.resolve: Callable[[str], Workflow | None] = lambda workflow_id: None
        """Finds a workflow none of those is (an app's registry `workflow` entries); None if there is none."""
        self._running: dict[str, _Running] = {}
        self._restarting: dict[str, asyncio.Task[None]] = {}
        self._resuming: dict[str, asyncio.Future[None]] = {}
        """Tasks between their claim and their launch: a second resume (boot recovery racing a client that
        asks for the task by id) waits for the first instead of claiming and noting a recovery again."""
        self._paused: set[str] = set()
        """Tasks stopped because the journal could not write; they resume when it can again."""
        self._unrecorded: dict[str, TaskRow] = {}
        """A task's first row until the journal has it: written again once it can write, if it could not (a task that
        goes on after the disk came back must not vanish at the next boot for want of it; with no event, a task
        reads as running)."""
        self._tasks: dict[str, _Task] = {}
        self._groups: dict[tuple[str, Any, Any], list[str]] = {}  # (workflow, args[0], args[1]) -> task ids
        for summary in journal.tasks():
            self._add(_Task.of(summary))

    def _add(self, state: _Task) -> None:
        self._tasks[state.id] = state
        key = _group_key(state.workflow, state.args)
        if key is not None:
            self._groups.setdefault(key, []).append(state.id)

    def register(self, workflow_id: str, fn: Workflow) -> None:
        """Offer `fn` as workflow `workflow_id` on this manager only (bound to what it needs, say with a partial)."""
        self.workflows.maps[0][workflow_id] = fn

    def workflow_of(self, workflow_id: str) -> Workflow | None:
        """The function that runs tasks of `workflow_id`: one registered here, else what `resolve` finds."""
        return self.workflows.get(workflow_id) or self.resolve(workflow_id)

    def _startable(self, workflow_id: str) -> bool:
        """Whether a new task of `workflow_id` may start: one registered here, or a registry entry as it is now (a
        deleted entry's function still runs the tasks that started on it, but starts no more)."""
        return workflow_id in self.workflows or self.registry is None or workflow_id in self.registry

    def _registry_version(self) -> int:
        return 0 if self.registry is None else self.registry.version

    def now(self) -> datetime:
        """The clock's time as a timestamp for the journal."""
        return datetime.fromtimestamp(self.clock(), UTC)

    def clock_plus(self, seconds: float | None) -> float | None:
        return None if seconds is None else self.clock() + seconds

    async def record_step(self, task: str, seq: int, name: str, ok: bool, result: str | None, error: str | None,
                          started: datetime, seconds: float) -> None:
        await self.journal.append([StepRecord(task, seq, name, ok, result, error, started, seconds)])

    async def mark_started(self, task: str, seq: int, name: str) -> None:
        await self._event(task, Note.STEP_STARTED, {"seq": seq, "name": name})

    def _event(self, task: str, status: TaskStatus | Note, detail: Any = None) -> asyncio.Future[None]:
        return self.journal.append([self._noted(task, status, detail)])

    def _noted(self, task: str, status: TaskStatus | Note, detail: Any = None) -> TaskEvent:
        """The event's row, its change already made to the task in memory."""
        state = self._tasks[task]
        if status == Note.CANCEL_REQUESTED:
            state.cancel_requested = True
        elif isinstance(status, TaskStatus):  # a note is not a state: an upgrade's version is replayed from it at boot
            state.status, state.detail = status, detail
        return TaskEvent(task, self.now(), status, dumps(detail))

    def _start_recorded(self, task_id: str, done: asyncio.Future[None]) -> None:
        """A task's first rows were written, or not (the disk refused them: written again once it can write)."""
        if not done.cancelled() and done.exception() is None:
            self._unrecorded.pop(task_id, None)

    def _task(self, task_id: str) -> _Task:
        try:
            return self._tasks[task_id]
        except KeyError:
            if self.journal.shared:
                self.refresh()  # another node may have started it
                if task_id in self._tasks:
                    return self._tasks[task_id]
            raise TaskNotFound(f"no task {task_id!r}") from None

    def refresh(self) -> None:
        """Read back from a shared journal the tasks other nodes hold: they start, run and finish them there."""
        for summary in self.journal.tasks():
            known = self._tasks.get(summary.id)
            if known is None:
                self._add(_Task.of(summary))
            elif summary.node not in (None, self.node.name) and summary.id not in self._running:
                self._tasks[summary.id] = _Task.of(summary)  # this node's own tasks it knows best: its writes may lag

    # -- starting and finishing ---------------------------------------------------------

    async def start(self, workflow_id: str, *args: Any, task_id: str | None = None) -> str:
        """Start a task, or attach to the task `task_id` if it exists already; returns its id.

        Raises `StateUnavailable` while the journal cannot write: no new durable work then.
        """
        if self.journal.problem is not None:
            raise StateUnavailable(self.journal.problem)
        if self.workflow_of(workflow_id) is None or (task_id not in self._tasks and not self._startable(workflow_id)):
            entries = [] if self.registry is None else [entry.id for entry in self.registry.find(kind="workflow")]
            known = ", ".join(sorted({*self.workflows, *entries})) or "none"
            raise TaskNotFound(f"no workflow {workflow_id!r} is registered or in the registry (the workflows are: "
                               f"{known})")
        task_id = task_id or uuid.uuid4().hex[:16]
        existing = self._tasks.get(task_id)
        if existing is not None:
            if task_id in self._running or task_id in self._restarting or task_id in self._resuming:
                return task_id
            parked = self._parked_for_stalling(existing)  # asking for it by id is a person's "try again"
            if parked or existing.status not in TERMINAL:
                await self._resume(task_id, retry=parked)
            return task_id
        version = self._registry_version()
        now = self.now()
        self._add(_Task(task_id, workflow_id, list(args), version, now, TaskStatus.RUNNING))
        # Not awaited: until its first step commits (in the same group or a later one) a task that is lost
        # in a crash had done nothing, so nothing is repeated or lost.
        row = self._unrecorded[task_id] = TaskRow(task_id, workflow_id, dumps(list(args)), version, now)
        self.journal.append([row, self._noted(task_id, TaskStatus.RUNNING)]).add_done_callback(
            functools.partial(self._start_recorded, task_id))
        self._launch(self._tasks[task_id], {}, [])
        return task_id

    async def run(self, workflow_id: str, *args: Any, task_id: str | None = None) -> Any:
        """Start (or attach to) a task and wait for its result."""
        return await self.result(await self.start(workflow_id, *args, task_id=task_id))

    async def result(self, task_id: str) -> Any:
        """Wait for the task to finish; its result, or `TaskFailed` saying why it did not complete (`StateUnavailable`
        while it is paused because its state cannot be written: it goes on when it can)."""
        state = self._task(task_id)
        while True:
            if (running := self._running.get(task_id)) is not None:
                await asyncio.shield(running.done)
            elif (restarting := self._restarting.get(task_id)) is not None:
                await asyncio.shield(restarting)
            elif (resuming := self._resuming.get(task_id)) is not None:
                await asyncio.shield(resuming)
            else:
                break
        if state.status == TaskStatus.COMPLETED:
            return state.detail["result"]
        if task_id in self._paused:  # not failed: it goes on when the state can be written again
            raise StateUnavailable(f"task {task_id} is paused until the app's state can be written again: "
                                   f"{self.journal.problem or 'the journal refused a write'}")
        error = state.detail.get("error") if isinstance(state.detail, dict) else None
        raise TaskFailed(f"task {task_id} {state.status}" + (f": {error}" if error else ""))

    def _launch(self, state: _Task, steps: dict[int, StepRecord], signals: list[_Signal]) -> None:
        ctx = TaskContext(self, state.id, state.registry_version, steps, signals)
        ctx.cancelled = state.cancel_requested
        self._paused.discard(state.id)
        done: asyncio.Future[Any] = self.node.loop.create_future()
        self._running[state.id] = _Running(ctx, done)
        fn = self.workflow_of(state.workflow)
        assert fn is not None, "only tasks whose workflow is known are launched"
        self.node.start(self._body, (state.id, fn, state.args, ctx, done),
                        name=f"task:{state.id}")

    async def _body(self, task_id: str, fn: Workflow, args: list[Any], ctx: TaskContext,
                    done: asyncio.Future[Any]) -> None:
        try:
            try:
                result = await fn(ctx, *args)
                dumps(result)  # a result the journal cannot store fails the task here, with its reason
            except TaskCancelled:
                await self._event(task_id, TaskStatus.CANCELLED)
            except (StateUnavailable, LeaseLost):
                raise
            except Exception as error:
                log.warning("task %s failed: %s", task_id, describe(error))
                await self._event(task_id, TaskStatus.FAILED, {"error": describe(error), "kind": type(error).__name__})
            else:
                await self._event(task_id, TaskStatus.COMPLETED, {"result": result})
        except StateUnavailable:
            # The journal refused a write: what it acknowledged stands; the rest runs again once it can write.
            self._tasks[task_id].status, self._tasks[task_id].detail = TaskStatus.RUNNING, None
            self._paused.add(task_id)
        except LeaseLost as lost:
            # Another node took the task over while this one could not renew its lease: that node continues it.
            log.warning("task %s is continued by node %s, which took it over; it stops here", task_id,
                        lost.holders.get(task_id, "(another node)"))
            self._tasks[task_id].status, self._tasks[task_id].detail = TaskStatus.RUNNING, None
            self._tasks[task_id].node = lost.holders.get(task_id)
        except BaseException:
            # The task's process was killed. At shutdown the task waits for the next boot; otherwise it is
            # started again at once and replays its journal, like a supervisor restarting a child.
            proc = current_process.get()
            if proc.exit_reason != SHUTDOWN:
                log.warning("task %s was stopped (%s); resuming it from its journal", task_id,
                            describe(proc.exit_reason or "killed"))
                self._restarting[task_id] = self.node.loop.create_task(self._restart(task_id))
            raise
        finally:
            self._running.pop(task_id, None)
            if not done.done():
                done.set_result(None)

    async def _restart(self, task_id: str) -> None:
        try:
            await self._resume(task_id)
        finally:
            self._restarting.pop(task_id, None)

    def _storage_recovered(self) -> None:
        """The state can be written again: write the task starts it refused, then resume the tasks that paused (they
        pause again if it fails anew)."""
        if self._paused:
            log.warning("resuming %d task(s) paused while the app's state could not be written", len(self._paused))
        if self._paused or self._unrecorded:
            self.node.loop.create_task(self._resume_paused(sorted(self._paused)))

    async def _resume_paused(self, task_ids: list[str]) -> None:
        try:
            starts = dict(self._unrecorded)
            if starts:
                await self.journal.append(list(starts.values()))
                for task_id in starts:
                    self._unrecorded.pop(task_id, None)
            await self._resume_all(task_ids)
        except StateUnavailable:
            pass  # still paused: the next recovery of the state tries again

    # -- signals and cancelling ----------------------------------------------------------

    async def signal(self, task_id: str, name: str, payload: Any = None) -> None:
        """Deliver a signal durably: a task waiting for it wakes; one not yet waiting finds it later."""
        self._task(task_id)
        signal = _Signal(uuid.uuid4().hex[:12], name, payload)
        await self.journal.append([SignalRecord(task_id, signal.id, name, dumps(payload), self.now())])
        running = self._running.get(task_id)
        if running is not None:
            running.ctx._signals.append(signal)
            running.ctx.wake()

    async def upgrade(self, task_id: str) -> int:
        """Move a task to the current registry version (from its next read of an entry on); returns it.

        A workflow that can check it (a restricted one replays the task's journal on its
        code as of that version) refuses with `UsageError` when the steps taken would not replay.
        """
        state = self._task(task_id)
        version = self._registry_version()
        fn = self.workflow_of(state.workflow)
        if isinstance(fn, Upgradable) and version != state.registry_version:
            await fn.check_upgrade(self.get(task_id), version)
        before = state.registry_version
        self._pin(task_id, version)  # before the note is durable: a task woken meanwhile already runs the new code
        try:
            await self._event(task_id, Note.UPGRADED, {"registry_version": version})
        except BaseException:
            self._pin(task_id, before)
            raise
        return version

    def _pin(self, task_id: str, version: int) -> None:
        self._tasks[task_id].registry_version = version
        running = self._running.get(task_id)
        if running is not None:
            running.ctx.registry_version = version

    async def cancel(self, task_id: str) -> None:
        """Record the cancel and stop the task: a step in progress is interrupted, a sleep or wait ends at once."""
        if self._task(task_id).status in TERMINAL:
            return
        await self._event(task_id, Note.CANCEL_REQUESTED)
        running = self._running.get(task_id)
        if running is not None:
            running.ctx.cancelled = True
            running.ctx.wake()
            running.ctx.interrupt()

    # -- retention ------------------------------------------------------------------------------

    def prune(self, older_than: float, *, keep_workflows: tuple[str, ...] = ()) -> int:
        """Delete finished tasks whose last event is older than `older_than` seconds; returns how many.

        Tasks of `keep_workflows` are kept (a conversation's turns are its history).
        """
        cutoff = datetime.fromtimestamp(self.clock() - older_than, UTC)
        doomed = self.journal.prune(cutoff, keep_workflows=keep_workflows, keep_tasks=list(self._running))
        for task in doomed:
            state = self._tasks.pop(task)
            key = _group_key(state.workflow, state.args)
            if key is not None:
                self._groups[key].remove(task)
                if not self._groups[key]:
                    del self._groups[key]  # a node that runs for months sees many groups come and go
        return len(doomed)

    def prune_groups(self, workflow_id: str, older_than: float) -> list[tuple[Any, Any]]:
        """Delete each group of `workflow_id`'s tasks (those with the same first two arguments: the turns of one
        agent's conversation) whose tasks have all finished, the newest begun more than `older_than` seconds ago;
        the first two arguments of each group deleted. A group goes whole or not at all."""
        cutoff = datetime.fromtimestamp(self.clock() - older_than, UTC)
        idle = [(key, ids) for key, ids in self._groups.items()
                if key[0] == workflow_id and ids and max(self._tasks[task].created for task in ids) < cutoff
                and all(self._tasks[task].status in FINISHED and task not in self._running for task in ids)]
        self.journal.delete([task for _, ids in idle for task in ids])
        for key, ids in idle:
            del self._groups[key]
            for task in ids:
                del self._tasks[task]
        return [(key[1], key[2]) for key, _ in idle]

    # -- recovery ---------------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Resume every unfinished task (at boot, before new work); returns their ids.

        All tasks are read back in a few queries and their "recovering" notes share
        one commit, so recovering a thousand tasks costs about what one does.
        """
        waiting = []
        for summary in self.journal.tasks(unfinished=True):
            if summary.id in self._running or summary.id in self._resuming:
                continue
            if self.workflow_of(summary.workflow) is None:  # a node that loads that code will resume it
                log.warning("task %s waits: its workflow %r is not registered in this process", summary.id,
                            summary.workflow)
                continue
            waiting.append(summary.id)
        return await self._resume_all(waiting)

    @staticmethod
    def _parked_for_stalling(state: _Task) -> bool:
        """Parked by recovery (not failed by its own code): asking for it again by id retries it."""
        return (state.status == TaskStatus.NEEDS_ATTENTION and isinstance(state.detail, dict)
                and "parked" in state.detail)

    async def _resume(self, task_id: str, *, retry: bool = False) -> None:
        state = self._task(task_id)
        if self.workflow_of(state.workflow) is None:
            raise TaskNotFound(f"task {task_id} runs workflow {state.workflow!r}, which is not registered in this "
                              "process or in the registry; import the module that defines it")
        await self._resume_all([task_id], retried=[task_id] if retry else [])

    async def _resume_all(self, task_ids: list[str], *, retried: Collection[str] = ()) -> list[str]:
        task_ids = [task_id for task_id in task_ids if task_id not in self._running and task_id not in self._resuming]
        if not task_ids:
            return []
        loop = self.node.loop
        for task_id in task_ids:
            self._resuming[task_id] = loop.create_future()
        try:
            return await self._claim_and_launch(task_ids, retried)
        finally:
            for task_id in task_ids:
                self._resuming.pop(task_id).set_result(None)

    async def _claim_and_launch(self, task_ids: list[str], retried: Collection[str] = ()) -> list[str]:
        """Claim the tasks, then resume each unless recovery parks it. `retried`: parked tasks a person asked for
        again, whose stall and crash counts start afresh (noted once the claim makes their rows this node's to
        write: a shared journal refuses the rows of a task whose lease another incarnation holds)."""
        held = [lease.task for lease in self.journal.claim(task_ids, self.node.name)]
        for task_id in held:
            self._task(task_id).node = None  # this node's now
        for task_id in sorted(set(task_ids) - set(held)):
            log.warning("task %s is not resumed here: another node holds it", task_id)
        await asyncio.gather(*(self._event(task_id, Note.RESUMED) for task_id in held if task_id in retried))
        recoveries = self.journal.recovery(held)
        notes, resumed = [], []
        for task_id in held:
            recovery = recoveries[task_id]
            crashed = [start for start in recovery.unfinished_starts if start.times >= MAX_CRASHED_STARTS]
            if crashed:
                seq, name, _ = crashed[-1]
                error = (f"step {seq} ({name}) was running each of the last {MAX_CRASHED_STARTS} times the node "
                         f"stopped without finishing it: it may be what stops the node. Look at it, then run "
                         f"`wippy tasks resume {task_id}` to try again or `wippy tasks cancel {task_id}`")
                log.error("task %s: %s", task_id, error)
                notes.append(self._event(task_id, TaskStatus.NEEDS_ATTENTION,
                                         {"error": error, "parked": "crashed_node"}))
            elif recovery.stalls >= MAX_RECOVERIES:
                log.error("task %s made no progress over %d recoveries; parking it as needs_attention", task_id,
                          MAX_RECOVERIES)
                notes.append(self._event(task_id, TaskStatus.NEEDS_ATTENTION, {
                    "error": f"no progress over {MAX_RECOVERIES} recoveries", "parked": "stalled"}))
            else:
                notes.append(self._event(task_id, TaskStatus.RECOVERING))
                resumed.append(task_id)
        await asyncio.gather(*notes)
        for task_id in resumed:
            recovery = recoveries[task_id]
            self._launch(self._tasks[task_id], {step.seq: step for step in recovery.steps},
                         [_Signal(s.id, s.name, loads(s.payload)) for s in recovery.signals])
        return resumed

    # -- reading ----------------------------------------------------------------------------

    def status(self, task_id: str) -> TaskStatus:
        status = self._task(task_id).status
        return TaskStatus.RUNNING if status == TaskStatus.RECOVERING and task_id in self._running else status

    def get(self, task_id: str, *, steps: bool = True) -> TaskInfo:
        """A task with its status, result or error (and its steps, read from the journal)."""
        state = self._task(task_id)
        info = TaskInfo(task_id, state.workflow, self.status(task_id), state.created, state.registry_version,
                        state.args, steps=self.journal.steps(task_id) if steps else [],
                        node=state.node or self.node.name)
        if isinstance(state.detail, dict):
            info.result, info.error = state.detail.get("result"), state.detail.get("error")
            info.error_kind = state.detail.get("kind")
        return info

    def tasks_of(self, workflow_id: str, first_args: tuple[Any, Any]) -> list[TaskInfo]:
        """The tasks of a workflow whose first two arguments are `first_args`, oldest first."""
        return [self.get(task_id, steps=False) for task_id in self._groups.get((workflow_id, *first_args), ())]

    def list(self, status: str | None = None) -> list[TaskInfo]:
        """Every task, oldest first (only those with `status`, if given), without their steps."""
        if self.journal.shared:
            self.refresh()
        infos = [self.get(task_id, steps=False) for task_id in self._tasks]
        return [info for info in infos if status is None or info.status == status]
