"""A virtual clock for asyncio: time stands still while anything can run and jumps when all wait.

Like trio's `MockClock(autojump_threshold=...)`. The loop's `time()` reads the
virtual clock; when the loop would sleep until its next timer and no I/O arrives
within `autojump_threshold` real seconds, the clock jumps straight to that timer.
A test of a 5-second restart window or a 30-second backoff then takes
microseconds and gives the same answer on a loaded CI machine.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class VirtualClock:
    """Virtual time for an event loop made by `new_event_loop()`, or for `run(coro)`."""

    def __init__(self, start: float = 0.0, autojump_threshold: float = 0.0) -> None:
        self.now = start
        self.autojump_threshold = autojump_threshold

    def time(self) -> float:
        """The virtual time, usable as a wall clock: `Node(root=..., wall_clock=clock.time)`."""
        return self.now

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _VirtualTimeLoop(self)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run `main` to completion on a fresh loop driven by this clock."""
        with asyncio.Runner(loop_factory=self.new_event_loop) as runner:
            return runner.run(main)


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            return super().select(timeout)
        events = super().select(min(timeout, self._clock.autojump_threshold))
        if not events:
            self._clock.now += timeout
        return events


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        super().__init__(_JumpingSelector(clock))

    def time(self) -> float:
        return self._clock.now
