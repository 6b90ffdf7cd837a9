"""One process: its task, its mailbox with selective receive, its links and monitors.

Everything here runs on the node's event loop thread; nothing is locked. The
mailbox hands a message straight to a waiting `receive` when the topic matches,
so a message that is awaited never touches the queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .types import ExitReason, Message, Pid, Ref, RemoteRef

if TYPE_CHECKING:
    from .node import Node

ProcessFn = Callable[..., Coroutine[Any, Any, Any]]

RUNNING = "running"
WAITING = "waiting"
EXITING = "exiting"
DEAD = "dead"


class Process:
    """The runtime's record of one live process (never handed to user code)."""

    __slots__ = (
        "node",
        "pid",
        "fn",
        "name",
        "task",
        "mailbox",
        "waiter",
        "waiter_topic",
        "status",
        "trap_exits",
        "links",
        "monitors",
        "watchers",
        "calls",
        "exit_reason",
        "result",
        "exit_waiters",
        "supervisor",
        "restarts",
        "started",
    )

    def __init__(self, node: Node, pid: Pid, fn: ProcessFn) -> None:
        self.node = node
        self.pid = pid
        self.fn = fn
        self.name: str | None = None
        self.task: asyncio.Task[Any] | None = None
        self.mailbox: deque[Message] | None = None
        self.waiter: asyncio.Future[Message] | None = None
        self.waiter_topic: str | None = None
        self.status = RUNNING
        self.trap_exits = False
        # The sets and dicts below stay None until first used: most processes
        # never link or monitor, and an idle process should cost little memory.
        self.links: set[Pid] | None = None
        self.monitors: dict[Ref, Pid] | None = None  # refs this process holds -> watched pid
        self.watchers: dict[Ref | RemoteRef, Pid] | None = None  # refs held on this process -> watcher pid
        self.calls: set[Ref | RemoteRef] | None = None  # calls waiting for this process to reply
        self.exit_reason: ExitReason | None = None  # set once the process is doomed or done
        self.result: Any = None
        self.exit_waiters: list[asyncio.Future[ExitReason]] | None = None
        self.supervisor: Pid | None = None
        self.restarts = 0
        self.started = False

    def __repr__(self) -> str:
        return f"Process({self.pid!r}, name={self.name!r}, status={self.status})"

    @property
    def alive(self) -> bool:
        return self.exit_reason is None

    # -- mailbox -------------------------------------------------------------

    def deliver(self, msg: Message) -> None:
        waiter = self.waiter
        if waiter is not None and (self.waiter_topic is None or self.waiter_topic == msg.topic):
            self.waiter = None
            if not waiter.done():
                waiter.set_result(msg)
                return
        mailbox = self.mailbox
        if mailbox is None:
            mailbox = self.mailbox = deque()
        mailbox.append(msg)

    def take(self, topic: str | None) -> Message | None:
        """Remove and return the oldest message with `topic` (any topic for None)."""
        mailbox = self.mailbox
        if not mailbox:
            return None
        if topic is None:
            return mailbox.popleft()
        for index, msg in enumerate(mailbox):
            if msg.topic == topic:
                del mailbox[index]
                return msg
        return None

    async def receive(self, topic: str | None, timeout: float | None) -> Message:
        if self.exit_reason is not None:
            raise asyncio.CancelledError()  # doomed: a process that swallowed its exit dies here
        mailbox = self.mailbox
        if topic is None and mailbox:
            return mailbox.popleft()
        msg = self.take(topic)
        if msg is not None:
            return msg
        if timeout is not None and timeout <= 0:
            raise TimeoutError(_timeout_text(topic, timeout))
        loop = self.node.loop
        waiter: asyncio.Future[Message] = loop.create_future()
        self.waiter = waiter
        self.waiter_topic = topic
        self.status = WAITING
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter, topic, timeout)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled after a message was handed over but before we resumed:
            # put it back so a caller that survives the cancellation still sees it.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.deliver_first(waiter.result())
            raise
        finally:
            if self.waiter is waiter:
                self.waiter = None
            if self.exit_reason is None:
                self.status = RUNNING
            if timer is not None:
                timer.cancel()

    def deliver_first(self, msg: Message) -> None:
        if self.mailbox is None:
            self.mailbox = deque()
        self.mailbox.appendleft(msg)

    def drop(self, predicate: Callable[[Message], bool]) -> None:
        if self.mailbox:
            self.mailbox = deque(m for m in self.mailbox if not predicate(m))

    # -- bookkeeping helpers ---------------------------------------------------

    def add_link(self, pid: Pid) -> None:
        if self.links is None:
            self.links = set()
        self.links.add(pid)

    def add_watcher(self, ref: Ref | RemoteRef, watcher: Pid) -> None:
        if self.watchers is None:
            self.watchers = {}
        self.watchers[ref] = watcher

    def add_monitor(self, ref: Ref, target: Pid) -> None:
        if self.monitors is None:
            self.monitors = {}
        self.monitors[ref] = target

    def wait_exit(self) -> asyncio.Future[ExitReason]:
        """A future that resolves to the exit reason once the process is gone."""
        future: asyncio.Future[ExitReason] = self.node.loop.create_future()
        if self.status == DEAD:
            future.set_result(self.exit_reason if self.exit_reason is not None else "noproc")
            return future
        if self.exit_waiters is None:
            self.exit_waiters = []
        self.exit_waiters.append(future)
        return future


def _timeout_text(topic: str | None, timeout: float) -> str:
    what = "any message" if topic is None else f"a message with topic {topic!r}"
    return f"receive timed out after {timeout:g}s waiting for {what}"


def _expire(waiter: asyncio.Future[Message], topic: str | None, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(_timeout_text(topic, timeout)))
