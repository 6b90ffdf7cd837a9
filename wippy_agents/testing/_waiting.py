"""Waiting in a test for something that happens on its own time, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(condition: Callable[[], object], timeout: float = 10.0, poll: float = 0.005) -> None:
    """Wait for `condition()` to become true (say, the file watcher applying a saved file); fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"the condition did not become true within {timeout:g}s")
        await asyncio.sleep(poll)
