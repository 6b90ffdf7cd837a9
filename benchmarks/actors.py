"""Actor runtime benchmarks: wippy processes side by side with raw asyncio and pykka 4 thread actors.

Measures, in one run, one-way send throughput, call round trips per second,
spawns per second and memory per idle process, and prints ONE JSON object with
the absolute figures, the ratios and whether each target is met.

Every rate is the median of `repeats` runs (the contenders of one figure take
turns, so drift in CPU speed hits them alike); each run times only the pattern
itself, on a fresh event loop (or a fresh pykka actor). The median, not the
best: pykka's thread hand-offs are bimodal (fast when the OS keeps both threads
hot, several times slower when a wake-up crosses cores), and a best-of would
report the rare fast mode.

    python benchmarks/actors.py          # full run, well under a minute on 2 cores
    python benchmarks/actors.py --quick  # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from time import perf_counter
from typing import Any

import pykka
from _timing import machine

from wippy_agents import Node, Pid, process

Bench = Callable[[int], "float | Coroutine[Any, Any, float]"]
"""Runs a pattern `n` times and returns the seconds the pattern itself took."""

Population = Callable[[int], AbstractAsyncContextManager[None]]
"""Keeps `n` idle processes (or tasks) alive for the duration of the block."""

TARGETS: dict[str, tuple[str, float]] = {
    "send_vs_asyncio": (">=", 0.5),
    "send_vs_pykka": (">=", 5.0),
    "call_vs_asyncio": (">=", 0.4),
    "call_vs_pykka": (">=", 10.0),
    "spawn_vs_asyncio": (">=", 0.5),
    "memory_bytes_per_idle_process": ("<=", 4096.0),
}
REFERENCE_BYTES_PER_IDLE_PROCESS = {"wippy_go": 13 * 1024, "erlang": 2662}


@dataclass(frozen=True)
class Sizes:
    """How many operations each measurement does."""

    repeats: int
    send: int
    call: int
    pykka_ask: int
    spawn: int
    idle: int
    fanout: int  # messages spread over each number of processes in `spread`
    spread: tuple[int, ...]


FULL = Sizes(repeats=5, send=50_000, call=50_000, pykka_ask=5_000, spawn=50_000, idle=10_000, fanout=100_000,
             spread=(1, 10, 100, 1_000, 10_000))
QUICK = Sizes(repeats=2, send=10_000, call=5_000, pykka_ask=500, spawn=5_000, idle=2_000, fanout=10_000,
              spread=(1, 100, 1_000))


# -- the one timing helper ---------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    key: str
    bench: Bench
    n: int


def median_rates(contenders: list[Contender], repeats: int) -> dict[str, float]:
    """Operations per second of each contender, the median of `repeats` interleaved runs."""
    times: dict[str, list[float]] = {c.key: [] for c in contenders}
    for _ in range(repeats):
        for c in contenders:
            gc.collect()
            result = c.bench(c.n)
            times[c.key].append(asyncio.run(result) if isinstance(result, Coroutine) else result)
    return {c.key: c.n / statistics.median(times[c.key]) for c in contenders}


async def in_node(main: Callable[[int], Coroutine[Any, Any, float]], n: int) -> float:
    """Run `main(n)` as a process on a fresh node."""
    async with Node() as node:
        result: float = await node.run(main, n)
        return result


# -- fan-out: one producer, n messages spread round-robin over many consumers ----------------


def wippy_fanout(processes: int) -> Bench:
    async def main(n: int) -> float:
        async def consumer(count: int, parent: Pid) -> None:
            for _ in range(count):
                await process.receive()
            process.send(parent, "done")

        async def producer(n: int) -> float:
            pids = [process.spawn(consumer, n // processes, process.self()) for _ in range(processes)]
            await asyncio.sleep(0)  # every consumer is now waiting in receive
            start = perf_counter()
            for i in range(n // processes * processes):
                process.send(pids[i % processes], "msg", i)
            for _ in range(processes):
                await process.receive("done")
            return perf_counter() - start

        return await in_node(producer, n)

    return main


def asyncio_fanout(processes: int) -> Bench:
    async def main(n: int) -> float:
        async def consumer(queue: asyncio.Queue[int], count: int) -> None:
            for _ in range(count):
                await queue.get()

        queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(processes)]
        tasks = [asyncio.create_task(consumer(queue, n // processes)) for queue in queues]
        await asyncio.sleep(0)
        start = perf_counter()
        for i in range(n // processes * processes):
            queues[i % processes].put_nowait(i)
        await asyncio.gather(*tasks)
        return perf_counter() - start

    return main


def fanout_series(sizes: Sizes) -> dict[str, Any]:
    """Messages per second as the same messages spread over more and more processes (wippy, asyncio queues)."""
    lines: dict[str, list[list[float]]] = {"wippy": [], "asyncio": []}
    for processes in sizes.spread:
        rates = median_rates([Contender("wippy", wippy_fanout(processes), sizes.fanout),
                              Contender("asyncio", asyncio_fanout(processes), sizes.fanout)], sizes.repeats)
        for key, rate in rates.items():
            lines[key].append([processes, round(rate)])
    return {"title": f"messages per second, {sizes.fanout:,} messages over N processes", "x": "processes",
            "y": "messages per second", "log": True, "lines": lines}


# -- one-way send: one producer, one consumer that takes all n then says done ------------


async def wippy_send(n: int) -> float:
    async def consumer(n: int, parent: Pid) -> None:
        for _ in range(n):
            await process.receive()
        process.send(parent, "done")

    async def producer(n: int) -> float:
        pid = process.spawn(consumer, n, process.self())
        await asyncio.sleep(0)  # the consumer is now waiting in receive
        start = perf_counter()
        for i in range(n):
            process.send(pid, "msg", i)
        await process.receive("done")
        return perf_counter() - start

    return await in_node(producer, n)


async def asyncio_send(n: int) -> float:
    async def consumer(queue: asyncio.Queue[int], n: int, done: asyncio.Event) -> None:
        for _ in range(n):
            await queue.get()
        done.set()

    queue: asyncio.Queue[int] = asyncio.Queue()
    done = asyncio.Event()
    task = asyncio.create_task(consumer(queue, n, done))
    await asyncio.sleep(0)
    start = perf_counter()
    for i in range(n):
        queue.put_nowait(i)
    await done.wait()
    elapsed = perf_counter() - start
    await task
    return elapsed


class Counter(pykka.ThreadingActor):
    """Counts `tell`s; answers an `ask` of "count" with the total so far."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if message == "count":
            return self.count
        self.count += 1
        return None


def pykka_tell(n: int) -> float:
    ref = Counter.start()
    try:
        start = perf_counter()
        for i in range(n):
            ref.tell(i)
        received = ref.ask("count")
        elapsed = perf_counter() - start
    finally:
        ref.stop()
    assert received == n, received
    return elapsed


# -- call: one client doing n sequential request/replies with one server ----------------


async def wippy_call(n: int) -> float:
    async def echo() -> None:
        while True:
            msg = await process.receive()
            if msg.topic == "stop":
                return
            process.reply(msg, msg.payload)

    async def client(n: int) -> float:
        pid = process.spawn(echo)
        start = perf_counter()
        for i in range(n):
            await process.call(pid, "ping", i)
        elapsed = perf_counter() - start
        process.send(pid, "stop")
        return elapsed

    return await in_node(client, n)


Request = tuple[int, "asyncio.Future[int]"]


async def asyncio_call(n: int) -> float:
    async def server(queue: asyncio.Queue[Request | None]) -> None:
        while (request := await queue.get()) is not None:
            payload, future = request
            future.set_result(payload)

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Request | None] = asyncio.Queue()
    task = asyncio.create_task(server(queue))
    start = perf_counter()
    for i in range(n):
        future: asyncio.Future[int] = loop.create_future()
        queue.put_nowait((i, future))
        await future
    elapsed = perf_counter() - start
    queue.put_nowait(None)
    await task
    return elapsed


class Echo(pykka.ThreadingActor):
    """Answers every `ask` with the message itself."""

    def on_receive(self, message: Any) -> Any:
        return message


def pykka_ask(n: int) -> float:
    ref = Echo.start()
    try:
        start = perf_counter()
        for i in range(n):
            ref.ask(i)
        return perf_counter() - start
    finally:
        ref.stop()


# -- spawn: n processes that return at once ---------------------------------------------


async def trivial() -> None:
    return None


async def wippy_spawn(n: int) -> float:
    """`process.spawn` from inside a process, then yield until the node holds only the spawner."""
    async with Node() as node:

        async def spawner(n: int) -> float:
            start = perf_counter()
            for _ in range(n):
                process.spawn(trivial)
            while len(node.table) > 1:
                await asyncio.sleep(0)
            return perf_counter() - start

        result: float = await node.run(spawner, n)
        return result


async def asyncio_spawn(n: int) -> float:
    start = perf_counter()
    tasks = [asyncio.create_task(trivial()) for _ in range(n)]
    for task in tasks:
        await task
    return perf_counter() - start


# -- memory per idle process ----------------------------------------------------------


async def idle_in_receive() -> None:
    await process.receive()


@asynccontextmanager
async def wippy_idle(n: int) -> AsyncIterator[None]:
    async with Node() as node:
        for _ in range(n):
            node.spawn(idle_in_receive)
        yield


async def idle_on_queue(queue: asyncio.Queue[None]) -> None:
    await queue.get()


@asynccontextmanager
async def asyncio_idle(n: int) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(idle_on_queue(asyncio.Queue())) for _ in range(n)]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def rss_bytes() -> int:
    """Resident set size from /proc/self/statm (0 where there is no /proc)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


POPULATIONS: dict[str, Population] = {"wippy": wippy_idle, "asyncio_task": asyncio_idle}


async def bytes_per_idle(population: Population, n: int, *, traced: bool) -> float:
    """Memory that `n` idle processes add, per process: tracemalloc's count, or the RSS growth."""
    gc.collect()
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else rss_bytes()
    try:
        async with population(n):
            for _ in range(3):  # every process reaches its receive; finished spawns are cleaned up
                await asyncio.sleep(0)
            after = tracemalloc.get_traced_memory()[0] if traced else rss_bytes()
    finally:
        if traced:
            tracemalloc.stop()
    return (after - before) / n


def rss_per_idle(name: str, n: int) -> float:
    """RSS growth per idle process, in a fresh interpreter: memory freed by earlier runs would hide it."""
    probe = subprocess.run(
        [sys.executable, __file__, "--rss-probe", name, str(n)], capture_output=True, text=True, check=True
    )
    return float(probe.stdout)


def footprints(n: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name, population in POPULATIONS.items():
        figures[f"{name}_bytes"] = asyncio.run(bytes_per_idle(population, n, traced=True))
        figures[f"{name}_rss_bytes"] = rss_per_idle(name, n)
    return figures


# -- putting it together ------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    return round(a / b, 3)


def run(sizes: Sizes) -> dict[str, Any]:
    """Every measurement, as the JSON-ready report."""
    memory = footprints(sizes.idle)
    send = median_rates(
        [
            Contender("wippy", wippy_send, sizes.send),
            Contender("asyncio", asyncio_send, sizes.send),
            Contender("pykka", pykka_tell, sizes.send),
        ],
        sizes.repeats,
    )
    call = median_rates(
        [
            Contender("wippy", wippy_call, sizes.call),
            Contender("asyncio", asyncio_call, sizes.call),
            Contender("pykka", pykka_ask, sizes.pykka_ask),
        ],
        sizes.repeats,
    )
    spawn = median_rates(
        [Contender("wippy", wippy_spawn, sizes.spawn), Contender("asyncio", asyncio_spawn, sizes.spawn)],
        sizes.repeats,
    )
    pykka.ActorRegistry.stop_all()
    fanout = fanout_series(sizes)

    actual = {
        "send_vs_asyncio": ratio(send["wippy"], send["asyncio"]),
        "send_vs_pykka": ratio(send["wippy"], send["pykka"]),
        "call_vs_asyncio": ratio(call["wippy"], call["asyncio"]),
        "call_vs_pykka": ratio(call["wippy"], call["pykka"]),
        "spawn_vs_asyncio": ratio(spawn["wippy"], spawn["asyncio"]),
        "memory_bytes_per_idle_process": round(memory["wippy_bytes"]),
    }
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "pykka": version("pykka"),
        "machine": machine(),
        "mode": "quick" if sizes is QUICK else "full",
        "repeats": sizes.repeats,
        "statistic": "median",
        "send": {
            "n": sizes.send,
            "pykka_n": sizes.send,
            "wippy_per_s": round(send["wippy"]),
            "asyncio_queue_per_s": round(send["asyncio"]),
            "pykka_tell_per_s": round(send["pykka"]),
            "ratio_vs_asyncio": actual["send_vs_asyncio"],
            "ratio_vs_pykka": actual["send_vs_pykka"],
        },
        "call": {
            "n": sizes.call,
            "pykka_n": sizes.pykka_ask,
            "wippy_per_s": round(call["wippy"]),
            "asyncio_future_per_s": round(call["asyncio"]),
            "pykka_ask_per_s": round(call["pykka"]),
            "ratio_vs_asyncio": actual["call_vs_asyncio"],
            "ratio_vs_pykka": actual["call_vs_pykka"],
        },
        "spawn": {
            "n": sizes.spawn,
            "wippy_per_s": round(spawn["wippy"]),
            "asyncio_task_per_s": round(spawn["asyncio"]),
            "ratio_vs_asyncio": actual["spawn_vs_asyncio"],
        },
        "memory": {
            "n": sizes.idle,
            "wippy_bytes_per_idle_process": round(memory["wippy_bytes"]),
            "asyncio_task_bytes": round(memory["asyncio_task_bytes"]),
            "wippy_rss_bytes_per_idle_process": round(memory["wippy_rss_bytes"]),
            "asyncio_task_rss_bytes": round(memory["asyncio_task_rss_bytes"]),
            "ratio_vs_asyncio": ratio(memory["wippy_bytes"], memory["asyncio_task_bytes"]),
            "reference_bytes": REFERENCE_BYTES_PER_IDLE_PROCESS,
        },
        "targets": {
            key: {"target": target, "op": op, "actual": actual[key], "met": _meets(actual[key], op, target)}
            for key, (op, target) in TARGETS.items()
        },
        "series": {"fanout": fanout},
    }


def _meets(actual: float, op: str, target: float) -> bool:
    return actual >= target if op == ">=" else actual <= target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test in a few seconds")
    parser.add_argument("--rss-probe", nargs=2, metavar=("POPULATION", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_probe:
        name, n = args.rss_probe
        print(asyncio.run(bytes_per_idle(POPULATIONS[name], int(n), traced=False)))
        return
    json.dump(run(QUICK if args.quick else FULL), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
