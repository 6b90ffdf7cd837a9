"""The app folder lives with the driver: what is saved there reaches every node through the shared state, and
what an agent (or a person) changes on a node is written through to the driver's files."""

from __future__ import annotations

import asyncio

import pytest

from wippy_agents.cluster import ClusterDriver

from ._model import ChatServer
from .conftest import ClusterApp, ignore, until

pytestmark = pytest.mark.timeout(240)


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

        await until(lambda: everywhere("version two"), 10)
        reply = await driver.handle({"op": "ask", "agent": "app:agent", "conversation": "r1",
                                     "message": 'call tools_work_quick {"text": "p"}'}, ignore)
        assert reply["ok"], reply
        assert "You are version two." in chat.system[-1]  # the next turn, on whichever node, used it

        history = await driver.handle({"op": "registry.history", "id": "prompts:agent"}, ignore)
        first = history["result"][0]["version"]
        rolled = await driver.handle({"op": "registry.rollback", "version": first, "author": "user:test"}, ignore)
        assert rolled["ok"], rolled  # node-1 served it: the version is in the state, and the driver writes it
        await until(lambda: "version one" in prompt.read_text(), 10)
        await until(lambda: everywhere("version one"), 10)
