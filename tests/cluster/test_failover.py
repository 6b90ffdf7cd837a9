"""A task whose machine dies finishes on another: Ray restarts the node elsewhere, and it takes the task over."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from wippy_agents.cluster import ClusterDriver

from ._model import ChatServer
from .conftest import ClusterApp, ignore, until

pytestmark = pytest.mark.timeout(240)


def ask(conversation: str, tool: str, text: str) -> dict[str, Any]:
    return {"op": "ask", "agent": "app:agent", "conversation": conversation,
            "message": f"call tools_work_{tool} {json.dumps({'text': text})}"}


async def test_a_turn_whose_machine_dies_mid_tool_call_finishes_on_another_machine_running_each_step_once(
    cluster_app: ClusterApp, ray_cluster: Any, chat: ChatServer
) -> None:
    async with ClusterDriver(cluster_app.root) as driver:
        conversation = "failover-1"
        conv = await driver.conversation("app:agent", id=conversation)  # as App.conversation, wherever it runs
        assert conv.node == driver.place(conversation)
        first = await conv.ask(ask(conversation, "quick", "a")["message"])
        assert first.text == "done: quick a"
        [row] = (await driver.handle({"op": "tasks.list"}, ignore))["result"]
        assert row["node"] == conv.node

        turn = asyncio.create_task(conv.ask(ask(conversation, "slow", "b")["message"]))  # waits through the failover
        await until(lambda: "slow-start b" in cluster_app.lines(), 60)
        name = driver.place(conversation)
        [before] = [row for row in await driver.status() if row["name"] == name]
        [machine] = [node for node in ray_cluster.worker_nodes if node.node_id == before["ray_node"]]
        ray_cluster.remove_node(machine, allow_graceful=False)

        async def restarted() -> bool:
            [row] = [row for row in await driver.status() if row["name"] == name]
            return row["status"] == "up" and row["incarnation"] != before["incarnation"]

        await until(restarted, 60)
        cluster_app.release.touch()  # only now: the step on the dead machine can never finish
        answer = await asyncio.wait_for(turn, 90)
        assert answer.text == "done: slow b"
        [after] = [row for row in await driver.status() if row["name"] == name]
        assert after["ray_node"] != before["ray_node"]

        # the step under way when the machine died ran again; every finished step ran once
        assert cluster_app.lines() == ["quick a", "slow-start b", "slow-start b", "slow-end b"]
        assert chat.calls(ask(conversation, "slow", "b")["message"]) == [1, 2]
        assert chat.calls(ask(conversation, "quick", "a")["message"]) == [1, 2]

        third = await driver.handle(ask(conversation, "quick", "c"), ignore)  # the conversation goes on
        assert third["ok"] and third["result"]["text"] == "done: quick c"
    ray_cluster.add_node(num_cpus=1)  # the next test gets a cluster of three machines again
    ray_cluster.wait_for_nodes()

