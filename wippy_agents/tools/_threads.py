"""Where a synchronous tool runs: a few threads of its own, so a tool that hangs exhausts only its own."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import queue
import threading
import typing
from collections.abc import Callable
from typing import Any

from ._errors import ToolBusy

T = typing.TypeVar("T")

IDLE_SECONDS = 60.0
"""How long an idle tool thread waits for the next call before it ends."""


class ToolThreads:
    """The threads of one synchronous tool: a few of its own, so a tool that hangs exhausts only its own.

    Python cannot stop a thread, so a call that runs past its timeout is abandoned:
    the caller gets `TimeoutError` at once while the thread keeps its place until the
    function returns. A call waits for a free thread without that counting against its
    timeout, which starts when its thread starts; once every thread is held by
    abandoned calls, a new call fails at once with `ToolBusy` instead of waiting for
    ever. Threads are daemons, so a hung tool never keeps the process from exiting;
    an idle thread waits `IDLE_SECONDS` for the next call before it ends, so a busy
    tool does not pay for a new thread on every call.
    """

    def __init__(self, name: str, size: int = 8) -> None:
        self.name = name
        self.size = size
        self._lock = threading.Lock()
        self._running = 0  # threads in use, abandoned calls included
        self._abandoned = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle: list[_Worker] = []

    @property
    def abandoned(self) -> int:
        """Calls that ran past their timeout and still hold a thread."""
        return self._abandoned

    async def run(self, fn: Callable[[], T], timeout: float | None) -> T:
        """`fn()` in a thread of this tool, with `contextvars` as the caller has them."""
        await self._take_thread()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        call = _ThreadCall(self, done)
        context = contextvars.copy_context()
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        (worker or _Worker(self)).jobs.put(functools.partial(call.work, context, fn))
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(done)
        except BaseException:
            call.abandon()
            raise

    async def _take_thread(self) -> None:
        while True:
            with self._lock:
                if self._abandoned >= self.size:
                    raise ToolBusy(f"tool {self.name!r} is busy: {self._abandoned} earlier call(s) are still running "
                                   "past their timeout; it takes new calls once they return")
                if self._running < self.size:
                    self._running += 1
                    return
                waiter = asyncio.get_running_loop().create_future()
                self._waiting.append(waiter)
            await waiter

    def _give_back(self, abandoned: bool) -> None:
        """A thread finished (from that thread): wake a caller waiting for one."""
        with self._lock:
            self._running -= 1
            self._abandoned -= abandoned
            self._wake(1)

    def _park(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def _retire(self, worker: _Worker) -> bool:
        """An idle worker's wait ran out: it ends, unless a call was handed to it meanwhile."""
        with self._lock:
            if worker not in self._idle:
                return False
            self._idle.remove(worker)
            return True

    def _abandon_one(self) -> None:
        """A call ran past its timeout: once every thread is held so, the waiting callers learn it at once."""
        with self._lock:
            self._abandoned += 1
            if self._abandoned >= self.size:
                self._wake(len(self._waiting))

    def _wake(self, count: int) -> None:
        """Wake up to `count` waiting callers (the lock is held): each takes a thread or learns why it cannot."""
        while count and self._waiting:
            waiter = self._waiting.popleft()
            try:
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
            except RuntimeError:
                continue  # that loop has closed
            count -= 1


class _Worker:
    """One daemon thread of a tool: it runs the calls handed to it, one at a time, until it idles too long."""

    def __init__(self, threads: ToolThreads) -> None:
        self.threads = threads
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        threading.Thread(target=self._work, name=f"wippy-tool {threads.name}", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                job = self.jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                if self.threads._retire(self):
                    return
                continue
            job()
            self.threads._park(self)


class _ThreadCall:
    """One call on a `ToolThreads` thread: hands the outcome to the caller's loop, or drops it if abandoned."""

    def __init__(self, threads: ToolThreads, done: asyncio.Future[Any]) -> None:
        self.threads = threads
        self.done = done
        self._lock = threading.Lock()
        self._finished = False
        self._abandoned = False

    def work(self, context: contextvars.Context, fn: Callable[[], Any]) -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (context.run(fn), None)
        except Exception as error:
            outcome = (None, error)
        except BaseException as error:  # SystemExit, KeyboardInterrupt: a tool's failure, never the node's exit
            outcome = (None, RuntimeError(f"the tool raised {type(error).__name__}: {error}"))
        with self._lock:
            self._finished = True
            abandoned = self._abandoned
        self.threads._give_back(abandoned)
        if not abandoned:
            try:
                self.done.get_loop().call_soon_threadsafe(_settle, self.done, *outcome)
            except RuntimeError:
                pass  # the loop has closed

    def abandon(self) -> None:
        """The caller stopped waiting (timeout, cancel): the thread's place stays taken until it returns."""
        with self._lock:
            if self._finished or self._abandoned:
                return
            self._abandoned = True
        self.threads._abandon_one()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _settle(done: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(value)
    else:
        done.set_exception(error)
