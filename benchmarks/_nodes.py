"""Probes of wippy nodes on a Ray cluster of this machine, for `cluster.py`: cross-node messages and takeover.

A `ray.cluster_utils.Cluster` of a head (no CPUs, so nothing of wippy lands on it)
and two worker Ray nodes; a wippy cluster app of two nodes spread over the workers.

- send: a process on node-1 sends `messages` one-way messages to a process on node-2,
  yielding to the loop every `burst` sends (so they travel in batches of about that
  size); the clock stops when the receiver's count, asked by a call made after the
  last send (a call arrives after every message sent before it), covers them all.
- call: `calls` sequential calls from node-1 to an echo process on node-2, each
  timed, beside as many calls of a bare Ray actor method with the same argument
  (the node-2 actor's own `ping`, which hands it back) made from the same process,
  taking turns in rounds of `round_size`.
- takeover: an agent turn on node-2 is in a slow tool call when the Ray node under
  node-2 is removed (no graceful shutdown); the time from the removal to the tool
  step starting again on the surviving machine (read from the tool's own log).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from _timing import Timings

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

HEALTH = {"health_check_period_ms": 500, "health_check_timeout_ms": 500, "health_check_failure_threshold": 2}

REGISTRY = """
namespace: bench
entries:
  - {name: sink, kind: process, file: processes/bench.py, function: sink}
  - {name: echo, kind: process, file: processes/bench.py, function: echo}
  - {name: flood, kind: process, file: processes/bench.py, function: flood}
  - {name: calls, kind: process, file: processes/bench.py, function: calls}
  - {name: offline, kind: model, provider: offline, model: wippy-offline}
  - {name: agent, kind: agent, model: "bench:offline", tools: ["tools.*:*"]}
"""

PROCESSES = '''
import asyncio
import time

from wippy_agents import process


async def sink():
    count = 0
    while True:
        msg = await process.receive()
        if msg.ref is None:
            count += 1
        else:
            process.reply(msg, count)


async def echo():
    while True:
        msg = await process.receive()
        process.reply(msg, msg.payload)


async def flood(host, messages, burst):
    far = process.spawn("bench:sink", host=host)
    await process.call(far, "count")  # it is up before the clock starts
    started = time.perf_counter()
    for n in range(messages):
        process.send(far, "n", n)
        if n % burst == burst - 1:
            await asyncio.sleep(0)
    got = await process.call(far, "count", timeout=300)
    return {"messages": got, "seconds": time.perf_counter() - started}


async def calls(host, count, round_size, warm_up):
    """Sequential calls of a process on `host` and of a bare method of `host`'s actor, taking turns; seconds of each."""
    import ray

    bare = await asyncio.to_thread(ray.get_actor, host)
    far = process.spawn("bench:echo", host=host)
    for n in range(warm_up):
        await process.call(far, "ping", n)
        await bare.ping.remote(n)
    ours, theirs = [], []
    clock = time.perf_counter
    for start in range(0, count, round_size):
        for n in range(start, min(count, start + round_size)):
            began = clock()
            await process.call(far, "ping", n)
            ours.append(clock() - began)
        for n in range(start, min(count, start + round_size)):
            began = clock()
            await bare.ping.remote(n)
            theirs.append(clock() - began)
    return {"wippy": ours, "ray": theirs}
'''

TOOL = '''
import os
import time

LOG = {log!r}
RELEASE = {release!r}


def slow(text: str) -> str:
    """A tool call that takes as long as the benchmark wants."""
    with open(LOG, "a") as log:
        log.write(f"{{time.time()}}\\n")
    deadline = time.monotonic() + 120
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "slow " + text
'''


def write_app(root: Path, state: str, address: str) -> tuple[Path, Path]:
    log, release = root.parent / "takeover.log", root.parent / "release"
    (root / "registry/bench").mkdir(parents=True)
    (root / "processes").mkdir()
    (root / "tools").mkdir()
    (root / "wippy.yaml").write_text(f"state: {state}\ncluster:\n  address: {address}\n  nodes: 2\n")
    (root / "registry/bench/_index.yaml").write_text(REGISTRY)
    (root / "processes/bench.py").write_text(PROCESSES)
    (root / "tools/work.py").write_text(TOOL.format(log=str(log), release=str(release)))
    return log, release


async def measure(root: Path, cluster: Any, sizes: Any, log: Path, release: Path) -> dict[str, Any]:
    from wippy_agents.cluster import ClusterDriver

    async with ClusterDriver(root) as driver:
        rows = {row["name"]: row for row in await driver.status()}
        flood = await driver.run("bench:flood", "node-2", sizes.messages, sizes.burst, host="node-1")
        samples = await driver.run("bench:calls", "node-2", sizes.calls, sizes.round_size, sizes.warm_up,
                                   host="node-1")
        ours, theirs = Timings(), Timings()
        ours.samples, theirs.samples = samples["wippy"], samples["ray"]
        call = {"wippy": ours.summary(), "bare_ray_actor": theirs.summary()}
        call["wippy_vs_ray_p50"] = round(call["wippy"]["p50_ms"] / call["bare_ray_actor"]["p50_ms"], 3)
        send = {"messages": flood["messages"], "seconds": round(flood["seconds"], 3),
                "msgs_per_s": round(flood["messages"] / flood["seconds"])}
        takeover = await _takeover(driver, cluster, rows, log, release)
    return {"ray_nodes": len(cluster.list_all_nodes()), "send": send, "call": call, "takeover": takeover}


async def _takeover(driver: Any, cluster: Any, rows: dict[str, Any], log: Path, release: Path) -> dict[str, Any]:
    conversation = next(f"takeover-{n}" for n in range(1000) if driver.place(f"takeover-{n}") == "node-2")
    request = {"op": "ask", "agent": "bench:agent", "conversation": conversation,
               "message": '/call tools.work:slow {"text": "x"}'}

    async def ignore(event: Any) -> None:
        pass

    turn = asyncio.create_task(driver.handle(request, ignore))
    await _until(lambda: len(_starts(log)) == 1, 60)
    [machine] = [node for node in cluster.worker_nodes if node.node_id == rows["node-2"]["ray_node"]]
    killed = time.time()
    cluster.remove_node(machine, allow_graceful=False)
    await _until(lambda: len(_starts(log)) == 2, 120)
    seconds = _starts(log)[1] - killed
    release.touch()
    reply = await asyncio.wait_for(turn, 120)
    cluster.add_node(num_cpus=1)
    return {"seconds": round(seconds, 2), "turn_ok": reply["ok"],
            "health_check": HEALTH}


def _starts(log: Path) -> list[float]:
    return [float(line) for line in log.read_text().split()] if log.exists() else []


async def _until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g}s")
        await asyncio.sleep(0.02)


def node_figures(sizes: Any, state: str, work: Path) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": dict(HEALTH)})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        root = work / "nodes-app"
        log, release = write_app(root, state, cluster.address)
        return asyncio.run(measure(root, cluster, sizes, log, release))
    finally:
        cluster.shutdown()

