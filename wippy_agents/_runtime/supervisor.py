"""Supervisors: processes that start children, watch them and restart them by a strategy (OTP).

```python
sup = Supervisor([ChildSpec("db", db_worker), ChildSpec("web", web_worker, restart="transient")],
                 strategy="rest_for_one", max_restarts=3, max_seconds=5)
pid = process.spawn(sup)
```

A supervisor traps exits. A child's exit is handled by its restart type and the
strategy; more than `max_restarts` restarts within `max_seconds` makes the
supervisor stop its children (in reverse order) and exit with `SupervisorError`,
which its own supervisor sees as a crash: the failure escalates up the tree.
With `give_up_on_children` (a one_for_one supervisor of many independent children,
such as conversations) the intensity is counted per child instead: a child over it
is given up on (removed, and logged with its last exit) and the others go on.
An abnormal exit signal from anyone but a child (its parent's `"shutdown"`,
`node.stop()`) makes it stop its children in reverse order and exit with that reason.
Calls `which_children`, `start_child` and `terminate_child` manage a running one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

from ..errors import ArgumentError, RunError
from . import api as process
from .node import Dest, current_process
from .proc import Process, ProcessFn
from .types import EXIT, NORMAL, SHUTDOWN, Exit, ExitReason, Message, Pid, describe

__all__ = ["Backoff", "ChildInfo", "ChildSpec", "Supervisor", "SupervisorError", "start_child", "terminate_child",
           "which_children"]

log = logging.getLogger("wippy_agents.supervisor")

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]


class SupervisorError(RunError):
    """A supervisor gave up (restart intensity exceeded, a child failed to start) or refused a request."""


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child and when to restart it.

    `fn(*args)` is the child's body (a list of args becomes a tuple). `restart`:
    `permanent` (always), `transient` (only after an abnormal exit, not `"normal"`
    or `"shutdown"`), `temporary` (never; forgotten once it exits). `shutdown`:
    seconds the child gets to exit after a `"shutdown"` signal before it is
    killed (0 kills at once). `name`: a registered name the child runs under,
    taken again by each restart.
    """

    id: str
    fn: ProcessFn | str
    args: tuple[Any, ...] = ()
    restart: Restart = "permanent"
    shutdown: float = 5.0
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ArgumentError(f"ChildSpec id must be a non-empty string, not {self.id!r}")
        if not (callable(self.fn) or isinstance(self.fn, str)):
            raise ArgumentError(f"child {self.id!r}: fn must be an async function or a registry id, not {self.fn!r}")
        if isinstance(self.args, list):
            object.__setattr__(self, "args", tuple(self.args))
        elif not isinstance(self.args, tuple):
            raise ArgumentError(f"child {self.id!r}: args must be a tuple, not {type(self.args).__name__}")
        if self.restart not in get_args(Restart):
            raise ArgumentError(
                f"child {self.id!r}: restart must be one of {', '.join(get_args(Restart))}, not {self.restart!r}"
            )
        if not _is_number(self.shutdown) or self.shutdown < 0:
            raise ArgumentError(
                f"child {self.id!r}: shutdown is the seconds to wait before a kill and cannot be negative, "
                f"not {self.shutdown!r}"
            )
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ArgumentError(f"child {self.id!r}: name must be a non-empty string or None, not {self.name!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential delay before a restart: `initial * multiplier**(n-1)`, capped, ±`jitter`.

    `n` counts the restarts inside the current intensity window, so a child that
    keeps crashing waits longer each time and a calm period resets the delay.
    """

    initial: float = 0.1
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        for field_name in ("initial", "maximum", "multiplier", "jitter"):
            if not _is_number(getattr(self, field_name)):
                raise ArgumentError(f"Backoff {field_name} must be a number, not {getattr(self, field_name)!r}")
        if self.initial < 0 or self.maximum < 0:
            raise ArgumentError(f"Backoff delays cannot be negative (initial={self.initial}, maximum={self.maximum})")
        if self.multiplier < 1:
            raise ArgumentError(f"Backoff multiplier must be >= 1 so delays never shrink, not {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ArgumentError(f"Backoff jitter is a fraction of the delay between 0 and 1, not {self.jitter}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        try:
            base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        except OverflowError:  # thousands of restarts in one window: long past the cap
            base = self.maximum
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rng.random() - 1.0)))


class ChildInfo(NamedTuple):
    id: str
    pid: Pid | None  # None while waiting to be restarted or after a transient child ended
    restart: Restart
    restarts: int


@dataclass
class Supervisor:
    """A process body that supervises `children`; spawn it like any process function."""

    children: Iterable[ChildSpec] = ()
    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    max_seconds: float = 5.0
    backoff: Backoff | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)
    give_up_on_children: bool = False

    def __post_init__(self) -> None:
        self.children = tuple(self.children)
        if self.strategy not in get_args(Strategy):
            raise ArgumentError(f"strategy must be one of {', '.join(get_args(Strategy))}, not {self.strategy!r}")
        if not isinstance(self.max_restarts, int) or isinstance(self.max_restarts, bool) or self.max_restarts < 0:
            raise ArgumentError(f"max_restarts must be an int >= 0, not {self.max_restarts!r}")
        if not _is_number(self.max_seconds) or self.max_seconds <= 0:
            raise ArgumentError(f"max_seconds must be a number of seconds > 0, not {self.max_seconds!r}")
        if self.give_up_on_children and self.strategy != "one_for_one":
            raise ArgumentError("give_up_on_children counts restarts per child, which only one_for_one supervisors do")
        if self.backoff is not None and not isinstance(self.backoff, Backoff):
            raise ArgumentError(f"backoff must be a Backoff or None, not {self.backoff!r}")
        seen: set[str] = set()
        for spec in self.children:
            if not isinstance(spec, ChildSpec):
                raise ArgumentError(f"children must be ChildSpec objects, not {spec!r}")
            if spec.id in seen:
                raise ArgumentError(f"two children share the id {spec.id!r}; child ids must be unique")
            seen.add(spec.id)

    async def __call__(self) -> None:
        await _Run(self, current_process.get()).run()


@dataclass(eq=False)
class _Child:
    spec: ChildSpec
    pid: Pid | None = None
    restarts: int = 0
    restart_times: deque[float] | None = None  # its own intensity window, when the supervisor counts per child


class _Run:
    """The state of one running incarnation of a supervisor."""

    def __init__(self, sup: Supervisor, me: Process) -> None:
        self.sup = sup
        self.me = me
        self.node = me.node
        self.children = [_Child(spec) for spec in sup.children]
        # Indexes, so a supervisor of thousands (the conversations under wippy:agents) stays quick.
        self.by_pid: dict[Pid, _Child] = {}
        self.by_id = {child.spec.id: child for child in self.children}
        self.restart_times: deque[float] = deque()
        self.delayed: list[tuple[float, list[_Child]]] = []  # (when, group) restarts waiting out a backoff
        self.expected_exits: set[Pid] = set()

    async def run(self) -> None:
        self.me.trap_exits = True
        for child in self.children:
            try:
                self.start(child)
            except Exception as error:
                await self.shutdown()
                raise SupervisorError(f"child {child.spec.id!r} failed to start: {describe(error)}") from error
        while True:
            msg = await self.next_message()
            if msg is not None:
                await self.handle(msg)
            # Checked after every message, so a busy mailbox cannot hold a due restart back.
            await self.restart_due()

    async def handle(self, msg: Message) -> None:
        if msg.topic == EXIT:
            await self.on_exit(msg.payload)
        elif msg.ref is not None:
            await self.on_call(msg)
        else:
            log.debug("supervisor %s ignored a %r message", self.me.pid, msg.topic)

    async def next_message(self) -> Message | None:
        """The next message, or None once the earliest delayed restart is due."""
        timeout = None
        if self.delayed:
            timeout = max(0.0, min(when for when, _ in self.delayed) - self.node.loop.time())
        try:
            return await self.me.receive(None, timeout)
        except TimeoutError:
            return None

    def start(self, child: _Child) -> None:
        proc = self.node.start(
            self.node.resolve(child.spec.fn), child.spec.args, parent=self.me, link=True, name=child.spec.name,
            supervisor=self.me.pid, restarts=child.restarts,
        )
        child.pid = proc.pid
        self.by_pid[proc.pid] = child

    def unbind(self, child: _Child) -> Pid | None:
        """Forget the child's process (it exited or is being stopped); return its pid."""
        pid, child.pid = child.pid, None
        if pid is not None:
            self.by_pid.pop(pid, None)
        return pid

    def forget(self, children: list[_Child]) -> None:
        """Remove children from the supervisor for good."""
        gone = set(map(id, children))
        self.children = [c for c in self.children if id(c) not in gone]
        for child in children:
            self.by_id.pop(child.spec.id, None)

    def find(self, pid: Pid | None) -> _Child | None:
        if pid is None:  # an exit signal from outside any process (node.stop), never a child
            return None
        return self.by_pid.get(pid)

    async def on_exit(self, signal: Exit) -> None:
        if signal.pid in self.expected_exits:
            self.expected_exits.discard(signal.pid)
            return
        child = self.find(signal.pid)
        if child is not None:
            self.unbind(child)
            await self.child_exited(child, signal.reason)
        elif signal.reason != NORMAL:
            await self.shutdown()
            process.exit(self.me.pid, signal.reason)

    async def child_exited(self, child: _Child, reason: ExitReason) -> None:
        restart = child.spec.restart
        if restart == "temporary":
            self.forget([child])
            return
        if restart == "transient" and reason in (NORMAL, SHUTDOWN):
            return
        if not await self.count_restart(child, reason):
            return
        group = self.affected_by(child)
        for other in reversed(group):
            if other is not child:
                await self.terminate(other)
        # Temporary siblings stopped for the strategy's sake are not restarted: they are forgotten.
        forgotten = [c for c in group if c is not child and c.spec.restart == "temporary"]
        self.forget(forgotten)
        group = [c for c in group if c not in forgotten]
        # A child restarts once, with its newest group: drop it from any group still waiting.
        self.delayed = [(when, rest) for when, g in self.delayed if (rest := [c for c in g if c not in group])]
        delay = 0.0 if self.sup.backoff is None else self.sup.backoff.delay(len(self.restart_times), self.sup.rng)
        if delay > 0:
            self.delayed.append((self.node.loop.time() + delay, group))
        else:
            await self.restart(group)

    def affected_by(self, child: _Child) -> list[_Child]:
        """The children the strategy restarts when `child` exits, in start order."""
        if self.sup.strategy == "one_for_one":
            return [child]
        if self.sup.strategy == "one_for_all":
            return list(self.children)
        return self.children[self.children.index(child) :]  # rest_for_one: it and those started after it

    async def count_restart(self, child: _Child, reason: ExitReason) -> bool:
        """Record a restart; whether to make it. One too many for the window: give up on the child (counted per
        child), or on everything (stop every child, raise)."""
        now = self.node.loop.time()
        if self.sup.give_up_on_children:
            times = child.restart_times = child.restart_times if child.restart_times is not None else deque()
        else:
            times = self.restart_times
        times.append(now)
        while now - times[0] > self.sup.max_seconds:
            times.popleft()
        if len(times) <= self.sup.max_restarts:
            return True
        if self.sup.give_up_on_children:
            log.error("supervisor %s gave up on child %r: %d restarts within %gs exceed max_restarts=%d; it exited "
                      "last with %s", self.me.pid, child.spec.id, len(times), self.sup.max_seconds,
                      self.sup.max_restarts, describe(reason))
            self.forget([child])
            return False
        await self.shutdown()
        raise SupervisorError(
            f"supervisor {self.me.pid} gave up: {len(times)} restarts within {self.sup.max_seconds:g}s exceed "
            f"max_restarts={self.sup.max_restarts}; the last was for child {child.spec.id!r}, which exited with "
            f"{describe(reason)}"
        )

    async def restart(self, group: list[_Child]) -> None:
        for child in group:
            if self.by_id.get(child.spec.id) is not child or child.pid is not None:
                continue  # removed meanwhile, or already restarted by a later failure's restart
            child.restarts += 1
            try:
                self.start(child)
            except Exception as error:
                log.error("supervisor %s could not restart child %r: %s", self.me.pid, child.spec.id, describe(error))
                await self.child_exited(child, error)  # counts as a crash, so it escalates in the end

    async def restart_due(self) -> None:
        if not self.delayed:
            return
        now = self.node.loop.time()
        due = [group for when, group in self.delayed if when <= now]
        self.delayed = [(when, group) for when, group in self.delayed if when > now]
        for group in due:
            await self.restart(group)

    async def terminate(self, child: _Child) -> None:
        """Stop one child: a `"shutdown"` signal, then a kill after `spec.shutdown` seconds."""
        pid = self.unbind(child)
        if pid is None:
            return
        self.expected_exits.add(pid)
        proc = self.node.table.get(pid)
        if proc is None:
            return
        if child.spec.shutdown > 0:
            exited = proc.wait_exit()
            self.node.exit(self.me.pid, pid, SHUTDOWN)
            done, _ = await asyncio.wait({exited}, timeout=child.spec.shutdown)
            if done:
                return
            log.warning(
                "child %r (%s) did not stop within %gs of shutdown; killing it", child.spec.id, pid,
                child.spec.shutdown,
            )
        await self.node.kill([proc])

    async def shutdown(self) -> None:
        self.delayed.clear()
        for child in reversed(self.children):
            await self.terminate(child)

    async def on_call(self, msg: Message) -> None:
        try:
            if msg.topic == "which_children":
                value: Any = [ChildInfo(c.spec.id, c.pid, c.spec.restart, c.restarts) for c in self.children]
            elif msg.topic == "start_child":
                value = self.start_child(msg.payload)
            elif msg.topic == "terminate_child":
                await self.terminate_child(msg.payload)
                value = None
            else:
                raise SupervisorError(
                    f"unknown request {msg.topic!r}; a supervisor answers which_children, start_child, terminate_child"
                )
        except SupervisorError as error:
            self.node.reply(msg, _Failed(str(error)))
        else:
            self.node.reply(msg, value)

    def start_child(self, spec: object) -> Pid:
        if not isinstance(spec, ChildSpec):
            raise SupervisorError(f"start_child takes a ChildSpec, not {spec!r}")
        if spec.id in self.by_id:
            raise SupervisorError(f"a child with id {spec.id!r} already exists")
        child = _Child(spec)
        try:
            self.start(child)
        except Exception as error:
            raise SupervisorError(f"child {spec.id!r} failed to start: {describe(error)}") from error
        self.children.append(child)
        self.by_id[spec.id] = child
        assert child.pid is not None
        return child.pid

    async def terminate_child(self, child_id: object) -> None:
        child = self.by_id.get(child_id) if isinstance(child_id, str) else None
        if child is None:
            raise SupervisorError(f"no child with id {child_id!r}")
        await self.terminate(child)
        self.forget([child])


class _Failed(NamedTuple):
    error: str


async def _ask(sup: Dest, topic: str, payload: Any) -> Any:
    # No timeout: terminate_child may wait out a child's shutdown time, and a supervisor
    # that dies first fails the call with ProcessError.
    answer = await process.call(sup, topic, payload, timeout=None)
    if isinstance(answer, _Failed):
        raise SupervisorError(answer.error)
    return answer


async def which_children(sup: Dest) -> list[ChildInfo]:
    """The supervisor's children in start order."""
    result: list[ChildInfo] = await _ask(sup, "which_children", None)
    return result


async def start_child(sup: Dest, spec: ChildSpec) -> Pid:
    """Add a child to a running supervisor and start it."""
    pid: Pid = await _ask(sup, "start_child", spec)
    return pid


async def terminate_child(sup: Dest, child_id: str) -> None:
    """Stop a child and remove its spec."""
    await _ask(sup, "terminate_child", child_id)
