"""A real Ray cluster of three Ray nodes on this machine, shared by the cluster tests, and an app to put on it.

The head reserves no CPU, so wippy nodes (which reserve a little) run on the two
worker nodes: a test can remove the machine under a node without taking the
head, Ray's own single point of failure, with it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wippy_agents.testing import TemporaryPostgres, write_file

from ._model import APP, ChatServer

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests here share one Ray cluster: under pytest-xdist they run in one worker (`--dist loadgroup`)."""
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.xdist_group("ray"))

HEALTH = {"health_check_period_ms": 500, "health_check_timeout_ms": 500, "health_check_failure_threshold": 2}

WORK = '''
import os
import time

LOG = {log!r}
RELEASE = {release!r}


def _note(line: str) -> None:
    with open(LOG, "a") as log:
        log.write(line + "\\n")


def quick(text: str) -> str:
    """Note a quick step."""
    _note(f"quick {{text}}")
    return f"quick {{text}}"


def slow(text: str) -> str:
    """A slow step: it waits until the test lets it finish."""
    _note(f"slow-start {{text}}")
    deadline = time.monotonic() + 90
    while not os.path.exists(RELEASE):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never let the slow step finish")
        time.sleep(0.02)
    _note(f"slow-end {{text}}")
    return f"slow {{text}}"
'''


PEER = '''
from wippy_agents import process
from wippy_agents.process import DOWN, EXIT
from wippy_agents.registry import Registry


async def echo() -> None:
    while True:
        msg = await process.receive()
        if msg.topic == "crash":
            raise RuntimeError(msg.payload)
        if msg.ref is not None:
            process.reply(msg, msg.payload)
        else:
            process.send(msg.sender, "echoed", msg.payload)


async def exchange(host: str, count: int) -> dict:
    far = process.spawn("app:echo", host=host)
    for n in range(count):
        process.send(far, "n", n)
    got = [(await process.receive("echoed")).payload for _ in range(count)]
    answer = await process.call(far, "ping", "pong")
    process.monitor(far)
    process.send(far, "crash", "bye")
    down = (await process.receive(DOWN)).payload
    process.trap_exits()
    linked = process.spawn_link("app:echo", host=host)
    process.send(linked, "crash", "linked")
    exit = (await process.receive(EXIT)).payload
    return {"in_order": got == list(range(count)), "answer": answer, "down": str(down.reason),
            "exit": str(exit.reason), "node": far.node, "here": process.node().name}


async def watch(host: str) -> dict:
    """Monitor one process on `host` and link to another, then report how each ended."""
    process.trap_exits()
    process.monitor(process.spawn("app:echo", host=host))
    process.link(process.spawn("app:echo", host=host))
    process.register("watcher")
    down = (await process.receive(DOWN)).payload
    exit = (await process.receive(EXIT)).payload
    return {"down": str(down.reason), "exit": str(exit.reason)}


async def whereis(name: str) -> object:
    return process.whereis(name)


async def entry_data(entry_id: str, registry: Registry) -> dict:
    return dict(registry.get(entry_id).data)
'''

PROCESSES = """
  - name: echo
    kind: process
    file: processes/peer.py
    function: echo
  - name: exchange
    kind: process
    file: processes/peer.py
    function: exchange
  - name: watch
    kind: process
    file: processes/peer.py
    function: watch
  - name: whereis
    kind: process
    file: processes/peer.py
    function: whereis
  - name: entry_data
    kind: process
    file: processes/peer.py
    function: entry_data
"""


async def until(condition: Any, timeout: float) -> None:
    """Wait for `condition()` (a plain or an async predicate) to hold; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ((await value) if asyncio.iscoroutine(value := condition()) else value):
        assert loop.time() < deadline, f"not within {timeout:g}s"
        await asyncio.sleep(0.05)


async def ignore(event: Any) -> None:
    """An `emit` for requests whose events a test does not read."""


@pytest.fixture(scope="package")  # gone after these tests: Ray's processes would slow every test after them
def ray_cluster() -> Iterator[object]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": dict(HEALTH)})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer()
    try:
        yield server
    finally:
        server.close()


class ClusterApp:
    """An app folder whose nodes run on the test cluster, with the files its tool writes and waits for."""

    def __init__(self, root: Path, state: str, address: str, chat: ChatServer, nodes: int) -> None:
        self.root = root
        self.log = root.parent / "work.log"
        self.release = root.parent / "release"
        write_file(root, "wippy.yaml", f"state: {state}\ncluster:\n  address: {address}\n  nodes: {nodes}\n")
        write_file(root, "registry/app/_index.yaml", APP.format(base_url=chat.base_url) + PROCESSES)
        write_file(root, "processes/peer.py", PEER)
        write_file(root, "prompts/agent.md", "You are version one.\n")
        write_file(root, "tools/work.py", WORK.format(log=str(self.log), release=str(self.release)))

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def cluster_app(tmp_path: Path, postgres: TemporaryPostgres, ray_cluster: object, chat: ChatServer) -> ClusterApp:
    return ClusterApp(tmp_path / "app", postgres.database(), ray_cluster.address, chat, nodes=2)  # type: ignore[attr-defined]
