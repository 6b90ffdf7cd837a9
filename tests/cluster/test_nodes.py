"""Processes on two wippy nodes on different machines of a Ray cluster: send, call, monitor, link, names, loss."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wippy_agents.cluster import ClusterDriver

from .conftest import ClusterApp

pytestmark = pytest.mark.timeout(240)


async def test_processes_on_two_machines_exchange_messages_in_order_and_see_each_others_exits(
    cluster_app: ClusterApp,
) -> None:
    async with ClusterDriver(cluster_app.root) as driver:
        rows = {row["name"]: row for row in await driver.status()}
        assert rows["node-1"]["ray_node"] != rows["node-2"]["ray_node"]  # spread over the machines
        result = await driver.run("app:exchange", "node-2", 2000, host="node-1")
        assert result == {"in_order": True, "answer": "pong", "down": "bye", "exit": "linked", "node": "node-2",
                          "here": "node-1"}


async def test_a_lost_node_fires_monitors_and_breaks_links_with_noconnection(
    cluster_app: ClusterApp, ray_cluster: Any
) -> None:
    async with ClusterDriver(cluster_app.root) as driver:
        rows = {row["name"]: row for row in await driver.status()}
        watching = asyncio.create_task(driver.run("app:watch", "node-2", host="node-1"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while await driver.run("app:whereis", "watcher", host="node-1") is None:
            assert loop.time() < deadline and not watching.done(), "the watcher never registered"
            await asyncio.sleep(0.05)
        [machine] = [node for node in ray_cluster.worker_nodes if node.node_id == rows["node-2"]["ray_node"]]
        ray_cluster.remove_node(machine, allow_graceful=False)
        assert await asyncio.wait_for(watching, 60) == {"down": "noconnection", "exit": "noconnection"}
    ray_cluster.add_node(num_cpus=1)
    ray_cluster.wait_for_nodes()
