"""The app folder lives with the driver: what is saved there reaches every node through the shared state, and
what an agent (or a person) changes on a node is written through to the driver's files."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wippy_agents.cluster import ClusterDriver

from ._model import ChatServer
from .conftest import ClusterApp

pytestmark = pytest.mark.timeout(240)


async def eventually(check: Any, timeout: float = 10.0) -> None:
    """Wait for the async predicate `check()`; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"not within {timeout:g}s"
        await asyncio.sleep(0.02)


async def test_a_prompt_saved_with_the_driver_reaches_every_node_and_a_node_s_rollback_reaches_the_files(
    cluster_app: ClusterApp, chat: ChatServer
) -> None:
    prompt = cluster_app.root / "prompts/agent.md"
    async with ClusterDriver(cluster_app.root) as driver:
        prompt.write_text("You are version two.\n")

        async def everywhere(text: str) -> bool:
            data = await asyncio.gather(*(driver.run("app:entry_data", "prompts:agent", host=name)
                                          for name in driver.names))
            return all(text in str(entry["template"]) for entry in data)

        await eventually(lambda: everywhere("version two"))
        reply = await driver.handle({"op": "ask", "agent": "app:agent", "conversation": "r1",
                                     "message": 'call tools_work_quick {"text": "p"}'}, _ignore)
        assert reply["ok"], reply
        assert "You are version two." in chat.system[-1]  # the next turn, on whichever node, used it

        history = await driver.handle({"op": "registry.history", "id": "prompts:agent"}, _ignore)
        first = history["result"][0]["version"]
        rolled = await driver.handle({"op": "registry.rollback", "version": first, "author": "user:test"}, _ignore)
        assert rolled["ok"], rolled  # node-1 served it: the version is in the state, and the driver writes it
        await eventually(lambda: _true("version one" in prompt.read_text()))
        await eventually(lambda: everywhere("version one"))


async def _ignore(event: Any) -> None:
    pass


async def _true(value: bool) -> bool:
    return value
