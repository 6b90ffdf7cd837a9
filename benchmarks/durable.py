"""Durable task benchmarks: wippy's journaled steps side by side with DBOS (SQLite) and LangGraph (SqliteSaver).

Measures, in one run, on files in a temporary folder:

- sequential: one task of `seq_steps` trivial steps; the latency of each step, taken
  inside the workflow (wippy: each `await ctx.step(...)`; DBOS: each `await step()` of an
  `@DBOS.step()`; LangGraph: the time between two entries of a looping node, that is one
  superstep with its checkpoint written, `durability="sync"`), beside the floor of the
  journal's database: one step row committed by itself in a DuckDB file, with the
  statement the journal's writer issues for a group of one;
- concurrent: `tasks` tasks of `steps_per_task` steps each, all started at once, then
  waited for; steps/s = tasks * steps_per_task / the wall time from the first start to
  the last result. wippy runs at the full size (for the target) and at the peers' size
  (for the ratios); `last_step_s` is when the last step of any task returned, so
  `wall_s - last_step_s` is what collecting the results cost;
- recovery: `tasks` tasks that each do one step and then wait for a "go" signal are
  started in a child process, which is killed with SIGKILL once every task waits (a
  crash: nothing is shut down). Then, in a fresh process on the same files, the time to
  reopen (wippy: `Node.__aenter__`, which runs `tasks.recover()`; DBOS: `DBOS.launch()`;
  LangGraph: opening the saver and `aget_state` of every thread), until every task has
  re-reached its wait (wippy and DBOS replay the workflow; LangGraph resumes from its
  checkpoint, so it has no such phase), and until every task, signalled, has finished.
  `steps_rerun` counts first steps that ran again instead of being replayed (must be 0).
- restricted: an agent-written (restricted) workflow beside the same workflow written as a
  Python `@durable.workflow`, in one process, taking turns. Steps: a task of
  `restricted_steps` `now` steps (`ctx.now()` in the sandbox's worker; `await
  ctx.step("now", time.time)` in Python), its wall time less a task of none, per step.
  Resumption: a task takes k `now` steps and waits for a signal; the time from the signal
  to the result, less the same with k = 0. A Python task waits in memory; a restricted
  one gave its worker back, so its code runs again from the top and its k operations are
  answered from the journal inside the worker: `replayed_ms` is what they cost.

Each contender runs in fresh interpreters of its own (`--probe`), so no framework's
threads, caches or imports weigh on another's figures; contenders take turns. One
process per contender and repeat runs its sequential task and then (first repeat
only) its concurrent runs, each on its own files and event loop; the sequential
samples of all repeats are pooled. A recovery takes two processes: the one killed
and the one that recovers.
DBOS runs on SQLite (`system_database_url="sqlite:///..."`) with the notification
poll at 10 ms (its default of 1 s would dominate signal latency). The peers run the
concurrent and recovery work at a smaller size (`peer_tasks`): at the full size they
would take minutes.

Prints ONE JSON object. Every latency block has the same shape, from one helper:
`{"n", "p50_ms", "p95_ms", "min_ms", "max_ms", "mean_ms"}`. Keys:

    mode, python, machine, versions{wippy_agents, duckdb, dbos, langgraph, langgraph_checkpoint_sqlite},
    sizes{seq_steps, seq_repeats, tasks, peer_tasks, steps_per_task, recovery_tasks, peer_recovery_tasks,
        warm_up_steps}
    skipped{<peer>: reason}, reference{dbos_sqlite_step_p50_ms_2_cores}
    sequential{wippy, dbos, langgraph, duckdb_commit_floor: <latency block> + wall_s,
        wippy_vs_dbos_p50, wippy_vs_langgraph_p50, wippy_vs_floor_p50}
    concurrent{wippy, wippy_at_peer_size, dbos, langgraph:
        {tasks, steps, start_s, last_step_s, wall_s, steps_per_s},
        wippy_vs_dbos, wippy_vs_langgraph}
    recovery{wippy, wippy_at_peer_size, dbos, langgraph:
        {tasks, prepare_s, reopen_s, rewait_s, done_s, steps_rerun},
        wippy_vs_dbos_rewait, wippy_vs_langgraph_done}
    restricted{steps: {n, python, restricted: {task_ms, empty_task_ms, per_step_ms}, ratio, target, met},
        resumption: {<k>: {python_ms, restricted_ms, replayed_ms}}}
    series{resumption: {title, x, y, lines: {python, restricted: [[k, ms], ...]}, log}}
    targets{<name>: {target, actual, met}}, all_met, elapsed_s

A figure that failed holds {"error": ...} instead (a peer that is not installed is
listed in `skipped`, with the reason); wippy's figures are produced regardless.
The targets: `sequential_step_p50_ms` (wippy's sequential p50), `concurrent_steps_per_s`
(wippy at the full size), `recovery_s` (wippy's `rewait_s` for `recovery_tasks` tasks),
`restricted_step_ms` (at most 3 times Python's step plus 1 ms) and `restricted_replay_1000_ms`
(the `replayed_ms` of 1,000 operations). Restricted figures are medians of `restricted_repeats`.

Ratios `wippy_vs_<peer>` are peer time / wippy time (or wippy rate / peer rate), so
above 1 means wippy is faster; they compare runs of the same size.

    python benchmarks/durable.py          # full run, about 2 minutes on 2 cores
    python benchmarks/durable.py --quick  # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from time import perf_counter
from typing import Any, TypedDict

from _timing import Timings, machine

TARGETS: dict[str, tuple[str, float]] = {
    "sequential_step_p50_ms": ("<=", 1.0),
    "concurrent_steps_per_s": (">=", 20_000.0),
    "recovery_s": ("<", 2.0),
    "restricted_replay_1000_ms": ("<", 50.0),
}
RESTRICTED_STEP_TARGET = (3.0, 1.0)
"""A restricted workflow's step costs at most this many times a Python workflow's, plus this many ms."""
REFERENCE = {"dbos_sqlite_step_p50_ms_2_cores": 1.41}
PROBE_TIMEOUT_S = 300.0
DBOS_POLL_S = 0.01
DBOS_DATABASE_VARIABLE = "WIPPY_BENCH_DBOS_DATABASE"
"""Set, DBOS's system database (`benchmarks/cluster.py` puts it on Postgres, beside wippy's `WIPPY_STATE`)."""


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    seq_steps: int
    seq_repeats: int
    tasks: int
    peer_tasks: int
    steps_per_task: int
    recovery_tasks: int
    peer_recovery_tasks: int
    warm_up_steps: int
    """Steps of one task run before a sequential or concurrent measurement (imports, first queries)."""
    restricted_steps: int
    restricted_repeats: int
    replayed: tuple[int, ...]
    """The operations a restricted task takes before its wait, one resumption measured for each."""
    concurrency: tuple[int, ...]
    """Numbers of tasks run at once, for the plot of steps per second against them (wippy)."""
    peer_concurrency: tuple[int, ...]
    """The same for the peers (smaller: their large sizes take minutes)."""


FULL = Sizes(seq_steps=1000, seq_repeats=2, tasks=1000, peer_tasks=100, steps_per_task=20, recovery_tasks=1000,
             peer_recovery_tasks=100, warm_up_steps=50, restricted_steps=1000, restricted_repeats=9,
             replayed=(10, 100, 1000), concurrency=(1, 10, 100, 1000, 5000), peer_concurrency=(1, 10, 100))
QUICK = Sizes(seq_steps=100, seq_repeats=1, tasks=10, peer_tasks=10, steps_per_task=20, recovery_tasks=10,
              peer_recovery_tasks=10, warm_up_steps=10, restricted_steps=50, restricted_repeats=1, replayed=(10, 100),
              concurrency=(10,), peer_concurrency=())


async def until(done: Callable[[], bool], timeout: float = 120.0, every: float = 0.001) -> None:
    """Poll `done()` every `every` seconds; TimeoutError after `timeout` seconds."""
    deadline = perf_counter() + timeout
    while not done():
        if perf_counter() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(every)


def crash(report: dict[str, Any]) -> None:
    """Print the probe's report, then die as a crash does: SIGKILL, nothing shut down or flushed."""
    print(json.dumps([report]), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


# Every contender's workflows count into these (per probe process).
STEP_TIMES: list[float] = []
FIRST_STEP_RUNS: list[int] = [0]
REACHED: set[str] = set()
LAST_STEP: list[float] = [0.0]


def noop() -> None:
    return None


def first_step() -> None:
    FIRST_STEP_RUNS[0] += 1


# -- wippy ----------------------------------------------------------------------------


def wippy_workflows() -> None:
    from wippy_agents import durable

    @durable.workflow("bench:seq")
    async def seq(ctx: Any, n: int) -> int:
        for i in range(n):
            start = perf_counter()
            await ctx.step(f"s{i}", noop)
            STEP_TIMES.append(perf_counter() - start)
        return n

    @durable.workflow("bench:conc")
    async def conc(ctx: Any, n: int) -> int:
        for i in range(n):
            await ctx.step(f"s{i}", noop)
        LAST_STEP[0] = perf_counter()
        return n

    @durable.workflow("bench:wait")
    async def wait(ctx: Any) -> str:
        await ctx.step("first", first_step)
        REACHED.add(ctx.task_id)
        go: str = await ctx.wait_signal("go")
        return go

    @durable.workflow("bench:steps")
    async def steps(ctx: Any, n: int) -> int:
        for _ in range(n):
            await ctx.step("now", time.time)
        return n

    @durable.workflow("bench:resume")
    async def resume(ctx: Any, n: int) -> Any:
        for _ in range(n):
            await ctx.step("now", time.time)
        return await ctx.wait_signal("go")


async def wippy_seq(work: Path, n: int, warm_up: int) -> dict[str, Any]:
    from wippy_agents import App

    async with App(root=work) as app:
        await app.tasks.run("bench:seq", warm_up)
        STEP_TIMES.clear()
        start = perf_counter()
        assert await app.tasks.run("bench:seq", n) == n
        wall = perf_counter() - start
    return {"samples": list(STEP_TIMES), "wall_s": wall}


async def wippy_conc(work: Path, tasks: int, steps: int, warm_up: int) -> dict[str, Any]:
    from wippy_agents import App

    async with App(root=work) as app:
        await app.tasks.run("bench:conc", warm_up)
        start = perf_counter()
        ids = await asyncio.gather(*(app.tasks.start("bench:conc", steps) for _ in range(tasks)))
        started = perf_counter()
        results = await asyncio.gather(*(app.tasks.result(task_id) for task_id in ids))
        wall = perf_counter() - start
    assert results == [steps] * tasks
    return {"start_s": started - start, "last_step_s": LAST_STEP[0] - start, "wall_s": wall}


async def wippy_prepare(work: Path, tasks: int) -> None:
    from wippy_agents import App

    start = perf_counter()
    async with App(root=work) as app:
        await asyncio.gather(*(app.tasks.start("bench:wait", task_id=f"w{k}") for k in range(tasks)))
        await until(lambda: len(REACHED) == tasks)
        await asyncio.sleep(0.2)  # each task's wait is journaled too
        crash({"prepare_s": perf_counter() - start})


async def wippy_recover(work: Path, tasks: int) -> dict[str, Any]:
    from wippy_agents import App

    app = App(root=work)
    start = perf_counter()
    await app.__aenter__()
    try:
        reopened = perf_counter()
        await until(lambda: len(REACHED) == tasks)
        rewaited = perf_counter()
        ids = [f"w{k}" for k in range(tasks)]
        await asyncio.gather(*(app.tasks.signal(task_id, "go", "went") for task_id in ids))
        results = await asyncio.gather(*(app.tasks.result(task_id) for task_id in ids))
        done = perf_counter()
    finally:
        await app.__aexit__(None, None, None)
    assert results == ["went"] * tasks
    return {"reopen_s": reopened - start, "rewait_s": rewaited - start, "done_s": done - start,
            "steps_rerun": FIRST_STEP_RUNS[0]}


RESTRICTED_WORKFLOWS = {
    "steps": "def main(ctx, n: int):\n    for i in range(n):\n        ctx.now()\n    return n\n",
    "resume": "def main(ctx, n: int):\n    for i in range(n):\n        ctx.now()\n    return ctx.wait_signal('go')\n",
}
"""The restricted twins of bench:steps and bench:resume, as `flows:<name>` entries."""


def restricted_app(work: Path) -> None:
    """An app folder holding the restricted workflows (JSON is YAML), each allowed more operations than it takes."""
    entries = [{"name": name, "kind": "workflow", "runtime": "restricted", "max_operations": 2000,
                "max_value_bytes": 4096,
                "description": f"The twin of bench:{name}.", "source": source}
               for name, source in RESTRICTED_WORKFLOWS.items()]
    (work / "registry" / "flows").mkdir(parents=True)
    (work / "registry" / "flows" / "_index.yaml").write_text(json.dumps({"namespace": "flows", "entries": entries}))
    (work / "wippy.yaml").write_text("name: bench\nwatch: false\n")


async def wippy_restricted(work: Path, steps: int, repeats: int, *replayed: int) -> dict[str, Any]:
    """Task walls (steps) and signal-to-result times (resumption) of both runtimes, in seconds, taking turns."""
    from wippy_agents import App

    restricted_app(work)
    async with App(root=work) as app:
        workflows = {"python": ("bench:steps", "bench:resume"), "restricted": ("flows:steps", "flows:resume")}

        def arguments(runtime: str, n: int) -> Any:
            return {"n": n} if runtime == "restricted" else n

        def waiting(task_id: str) -> bool:
            taken = app.tasks.get(task_id).steps
            return bool(taken) and taken[-1].name == "wait:go"

        for runtime, (name, _) in workflows.items():  # imports, first queries, the workflows' sandbox pool
            await app.tasks.run(name, arguments(runtime, 10))
        walls: dict[str, dict[int, list[float]]] = {runtime: {0: [], steps: []} for runtime in workflows}
        resumed: dict[str, dict[int, list[float]]] = {runtime: {k: [] for k in (0, *replayed)} for runtime in workflows}
        for _ in range(repeats):
            for runtime, (name, _) in workflows.items():
                for n in (0, steps):
                    start = perf_counter()
                    assert await app.tasks.run(name, arguments(runtime, n)) == n
                    walls[runtime][n].append(perf_counter() - start)
            for k in (0, *replayed):
                for runtime, (_, name) in workflows.items():
                    task_id = await app.tasks.start(name, arguments(runtime, k))
                    await until(partial(waiting, task_id), every=0.02)  # reading a task's steps is not free
                    await asyncio.sleep(0.05)  # the journal's writer done with the task's last rows
                    start = perf_counter()
                    await app.tasks.signal(task_id, "go", "went")
                    assert await app.tasks.result(task_id) == "went"
                    resumed[runtime][k].append(perf_counter() - start)
    return {"steps": walls, "resumed": resumed}


# -- DBOS (SQLite system database) --------------------------------------------------------------

DBOS_FUNCTIONS: dict[str, Any] = {}


def dbos_workflows() -> None:
    """Register the DBOS workflows: the same set in every DBOS probe, so the application version matches."""
    from dbos import DBOS

    @DBOS.step()
    async def dbos_noop() -> None:
        return None

    @DBOS.step()
    async def dbos_first() -> None:
        first_step()

    @DBOS.workflow()
    async def dbos_seq(n: int) -> int:
        for _ in range(n):
            start = perf_counter()
            await dbos_noop()
            STEP_TIMES.append(perf_counter() - start)
        return n

    @DBOS.workflow()
    async def dbos_conc(n: int) -> int:
        for _ in range(n):
            await dbos_noop()
        LAST_STEP[0] = perf_counter()
        return n

    @DBOS.workflow()
    async def dbos_wait() -> str:
        await dbos_first()
        REACHED.add(DBOS.workflow_id or "")
        go: str = await DBOS.recv_async("go", timeout_seconds=600)
        return go

    DBOS_FUNCTIONS.update(seq=dbos_seq, conc=dbos_conc, wait=dbos_wait)


def dbos_launch(work: Path) -> None:
    from dbos import DBOS, DBOSConfig

    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": os.environ.get(DBOS_DATABASE_VARIABLE) or f"sqlite:///{work / 'dbos.sqlite'}",
        "log_level": "ERROR",
        "notification_listener_polling_interval_sec": DBOS_POLL_S,
    }
    DBOS(config=config)
    DBOS.launch()


async def dbos_seq(work: Path, n: int, warm_up: int) -> dict[str, Any]:
    from dbos import DBOS

    dbos_launch(work)
    try:
        await DBOS_FUNCTIONS["seq"](warm_up)
        STEP_TIMES.clear()
        start = perf_counter()
        assert await DBOS_FUNCTIONS["seq"](n) == n
        wall = perf_counter() - start
    finally:
        DBOS.destroy()
    return {"samples": list(STEP_TIMES), "wall_s": wall}


async def dbos_conc(work: Path, tasks: int, steps: int, warm_up: int) -> dict[str, Any]:
    from dbos import DBOS

    dbos_launch(work)
    try:
        await DBOS_FUNCTIONS["conc"](warm_up)
        start = perf_counter()
        handles = await asyncio.gather(*(DBOS.start_workflow_async(DBOS_FUNCTIONS["conc"], steps)
                                         for _ in range(tasks)))
        started = perf_counter()
        results = await asyncio.gather(*(handle.get_result() for handle in handles))
        wall = perf_counter() - start
    finally:
        DBOS.destroy()
    assert results == [steps] * tasks
    return {"start_s": started - start, "last_step_s": LAST_STEP[0] - start, "wall_s": wall}


async def dbos_prepare(work: Path, tasks: int) -> None:
    from dbos import DBOS, SetWorkflowID

    start = perf_counter()
    dbos_launch(work)

    async def start_one(k: int) -> None:
        with SetWorkflowID(f"w{k}"):
            await DBOS.start_workflow_async(DBOS_FUNCTIONS["wait"])

    await asyncio.gather(*(start_one(k) for k in range(tasks)))
    await until(lambda: len(REACHED) == tasks)
    await asyncio.sleep(0.2)
    crash({"prepare_s": perf_counter() - start})


async def dbos_recover(work: Path, tasks: int) -> dict[str, Any]:
    from dbos import DBOS

    start = perf_counter()
    dbos_launch(work)  # recovers this executor's pending workflows (through its internal queue)
    try:
        reopened = perf_counter()
        await until(lambda: len(REACHED) == tasks)
        rewaited = perf_counter()
        ids = [f"w{k}" for k in range(tasks)]
        await asyncio.gather(*(DBOS.send_async(workflow_id, "went", "go") for workflow_id in ids))
        results = []
        for workflow_id in ids:  # one poller at a time, every 10 ms: most are done once the first is
            handle: Any = await DBOS.retrieve_workflow_async(workflow_id)
            results.append(await handle.get_result(polling_interval_sec=DBOS_POLL_S))
        done = perf_counter()
    finally:
        DBOS.destroy()
    assert results == ["went"] * tasks
    return {"reopen_s": reopened - start, "rewait_s": rewaited - start, "done_s": done - start,
            "steps_rerun": FIRST_STEP_RUNS[0]}


# -- LangGraph (SqliteSaver / AsyncSqliteSaver, durability="sync") ------------------------------


class Loop(TypedDict):
    """The looping graph's state: `i` supersteps done out of `n`."""

    i: int
    n: int


class Wait(TypedDict, total=False):
    """The waiting graph's state: the signal's payload once resumed."""

    thread: str
    go: str


def langgraph_graphs() -> dict[str, Any]:
    """The uncompiled graphs: `loop` (one node, run `n` times) and `wait` (a step, then an interrupt)."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    def step(state: Loop) -> dict[str, int]:
        STEP_TIMES.append(perf_counter())  # entry times; their differences are the supersteps
        return {"i": state["i"] + 1}

    def more(state: Loop) -> str:
        if state["i"] < state["n"]:
            return "step"
        LAST_STEP[0] = perf_counter()
        return END

    loop = StateGraph(Loop)
    loop.add_node("step", step)
    loop.add_edge(START, "step")
    loop.add_conditional_edges("step", more)

    def first(state: Wait) -> dict[str, str]:
        first_step()
        return {}

    def wait(state: Wait) -> dict[str, str]:
        return {"go": interrupt("go")}

    waiting = StateGraph(Wait)
    waiting.add_node("first", first)
    waiting.add_node("wait", wait)
    waiting.add_edge(START, "first")
    waiting.add_edge("first", "wait")
    waiting.add_edge("wait", END)
    return {"loop": loop, "wait": waiting}


def thread(name: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": name}, "recursion_limit": 100_000}


async def langgraph_seq(work: Path, n: int, warm_up: int) -> dict[str, Any]:
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(work / "langgraph.sqlite", check_same_thread=False)
    try:
        graph = langgraph_graphs()["loop"].compile(checkpointer=SqliteSaver(conn))
        graph.invoke({"i": 0, "n": warm_up}, thread("warm-up"), durability="sync")
        STEP_TIMES.clear()
        start = perf_counter()
        assert graph.invoke({"i": 0, "n": n}, thread("seq"), durability="sync")["i"] == n
        wall = perf_counter() - start
    finally:
        conn.close()
    entries = STEP_TIMES
    return {"samples": [b - a for a, b in zip(entries, entries[1:], strict=False)], "wall_s": wall}


async def langgraph_conc(work: Path, tasks: int, steps: int, warm_up: int) -> dict[str, Any]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(str(work / "langgraph.sqlite")) as saver:
        graph = langgraph_graphs()["loop"].compile(checkpointer=saver)
        await graph.ainvoke({"i": 0, "n": warm_up}, thread("warm-up"), durability="sync")
        start = perf_counter()
        runs = [asyncio.ensure_future(graph.ainvoke({"i": 0, "n": steps}, thread(f"t{k}"), durability="sync"))
                for k in range(tasks)]
        started = perf_counter()
        results = await asyncio.gather(*runs)
        wall = perf_counter() - start
    assert [r["i"] for r in results] == [steps] * tasks
    return {"start_s": started - start, "last_step_s": LAST_STEP[0] - start, "wall_s": wall}


async def langgraph_prepare(work: Path, tasks: int) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    start = perf_counter()
    async with AsyncSqliteSaver.from_conn_string(str(work / "langgraph.sqlite")) as saver:
        graph = langgraph_graphs()["wait"].compile(checkpointer=saver)
        await asyncio.gather(*(graph.ainvoke({"thread": f"w{k}"}, thread(f"w{k}"), durability="sync")
                               for k in range(tasks)))  # each returns at its interrupt, checkpointed
        crash({"prepare_s": perf_counter() - start})


async def langgraph_recover(work: Path, tasks: int) -> dict[str, Any]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.types import Command

    start = perf_counter()
    async with AsyncSqliteSaver.from_conn_string(str(work / "langgraph.sqlite")) as saver:
        graph = langgraph_graphs()["wait"].compile(checkpointer=saver)
        ids = [f"w{k}" for k in range(tasks)]
        states = await asyncio.gather(*(graph.aget_state(thread(t)) for t in ids))
        assert all(state.next == ("wait",) for state in states), [s.next for s in states[:3]]
        reopened = perf_counter()
        results = await asyncio.gather(*(graph.ainvoke(Command(resume="went"), thread(t), durability="sync")
                                         for t in ids))
        done = perf_counter()
    assert [r["go"] for r in results] == ["went"] * tasks
    return {"reopen_s": reopened - start, "rewait_s": None, "done_s": done - start,
            "steps_rerun": FIRST_STEP_RUNS[0]}


# -- the DuckDB floor -------------------------------------------------------------------------


async def duckdb_seq(work: Path, n: int, warm_up: int) -> dict[str, Any]:
    """One step row per commit, the statement the journal's writer issues for a group of one step.

    A `task_steps`-shaped table (JSON result, TIMESTAMPTZ start) and one
    `INSERT ... SELECT unnest(?)` that commits by itself: what DuckDB alone costs per durable step.
    """
    import duckdb

    db = duckdb.connect(str(work / "floor.duckdb"))
    try:
        db.execute("""CREATE TABLE task_steps (task VARCHAR NOT NULL, seq INTEGER NOT NULL, name VARCHAR NOT NULL,
                      ok BOOLEAN NOT NULL, result JSON, error VARCHAR, started TIMESTAMPTZ NOT NULL,
                      seconds DOUBLE NOT NULL)""")
        insert = ("INSERT INTO task_steps (task, seq, name, ok, result, error, started, seconds) SELECT unnest(?), "
                  "unnest(?), unnest(?), unnest(?), unnest(?)::JSON, unnest(?), unnest(?), unnest(?)")
        samples = []
        for i in range(warm_up + n):
            begin = perf_counter()
            db.execute(insert, [["t"], [i], [f"s{i}"], [True], ["null"], [None], [datetime.now(UTC)], [0.0]])
            samples.append(perf_counter() - begin)
    finally:
        db.close()
    return {"samples": samples[warm_up:], "wall_s": sum(samples[warm_up:])}


# -- probes: one measurement in a fresh interpreter -------------------------------------------------

Probe = Callable[..., Coroutine[Any, Any, Any]]

PROBES: dict[str, tuple[Callable[[], Any] | None, dict[str, Probe]]] = {
    "wippy": (wippy_workflows, {"seq": wippy_seq, "conc": wippy_conc, "prepare": wippy_prepare,
                                "recover": wippy_recover, "restricted": wippy_restricted}),
    "dbos": (dbos_workflows, {"seq": dbos_seq, "conc": dbos_conc, "prepare": dbos_prepare,
                              "recover": dbos_recover}),
    "langgraph": (None, {"seq": langgraph_seq, "conc": langgraph_conc, "prepare": langgraph_prepare,
                         "recover": langgraph_recover}),
    "duckdb": (None, {"seq": duckdb_seq}),
}


def probe_main(contender: str, work: str, jobs: list[str]) -> None:
    """Run `jobs` ("figure:size:size...") one after another, each in its own folder and event loop."""
    register, probes = PROBES[contender]
    if register is not None:
        register()
    reports = []
    for index, job in enumerate(jobs):
        figure, *sizes = job.split(":")
        folder = Path(work) if figure in ("prepare", "recover") else Path(work) / f"{index}-{figure}"
        folder.mkdir(parents=True, exist_ok=True)
        STEP_TIMES.clear()
        reports.append(asyncio.run(probes[figure](folder, *map(int, sizes))))
    print(json.dumps(reports), flush=True)


def probe(contender: str, work: Path, *jobs: str, crashes: bool = False) -> list[dict[str, Any]]:
    """Run `jobs` of one contender in a fresh interpreter; a report per job, each {"error": ...} on failure."""
    command = [sys.executable, __file__, "--probe", contender, str(work), *jobs]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [{"error": f"timed out after {PROBE_TIMEOUT_S:g}s"}] * len(jobs)
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    expected = -signal.SIGKILL if crashes else 0
    if done.returncode != expected or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return [{"error": f"exit {done.returncode}: {tail}"}] * len(jobs)
    reports: list[dict[str, Any]] = json.loads(lines[-1])
    return reports


def job(figure: str, *sizes: int) -> str:
    return ":".join([figure, *map(str, sizes)])


# -- the figures -------------------------------------------------------------------------------------


def throughput(report: dict[str, Any], tasks: int, steps: int) -> dict[str, Any]:
    if "error" in report:
        return report
    total = tasks * steps
    return {"tasks": tasks, "steps": total, "start_s": round(report["start_s"], 3),
            "last_step_s": round(report["last_step_s"], 3), "wall_s": round(report["wall_s"], 3),
            "steps_per_s": round(total / report["wall_s"])}


def step_figures(sizes: Sizes, work: Path, peers: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sequential and the concurrent figures: one process per contender and repeat, contenders taking turns.

    The concurrent runs go with each contender's first repeat, after its sequential run.
    """
    contenders = ["wippy", *peers, "duckdb"]
    timings = {c: Timings() for c in contenders}
    walls: dict[str, list[float]] = {c: [] for c in contenders}
    errors: dict[str, str] = {}
    steps, warm_up = sizes.steps_per_task, sizes.warm_up_steps
    conc: dict[str, Any] = {}
    for repeat in range(sizes.seq_repeats):
        for contender in contenders:
            keys: list[tuple[str, int]] = []
            if repeat == 0 and contender == "wippy":
                keys = [("wippy", sizes.tasks)]
                if sizes.peer_tasks != sizes.tasks:
                    keys.append(("wippy_at_peer_size", sizes.peer_tasks))
            elif repeat == 0 and contender in peers:
                keys = [(contender, sizes.peer_tasks)]
            jobs = [job("seq", sizes.seq_steps, warm_up), *(job("conc", n, steps, warm_up) for _, n in keys)]
            seq, *concs = probe(contender, work / f"steps-{contender}-{repeat}", *jobs)
            for (key, n), report in zip(keys, concs, strict=True):
                conc[key] = throughput(report, n, steps)
            if "error" in seq:
                errors[contender] = seq["error"]
                continue
            timings[contender].samples += seq["samples"]
            walls[contender].append(seq["wall_s"])

    out: dict[str, Any] = {}
    for contender in contenders:
        key = "duckdb_commit_floor" if contender == "duckdb" else contender
        if contender in errors:
            out[key] = {"error": errors[contender]}
        else:
            out[key] = {**timings[contender].summary(), "wall_s": round(min(walls[contender]), 3)}
    wippy = out.get("wippy", {}).get("p50_ms")
    for key, other in (("dbos", "dbos"), ("langgraph", "langgraph"), ("floor", "duckdb_commit_floor")):
        theirs = out.get(other, {}).get("p50_ms")
        if wippy and theirs:
            out[f"wippy_vs_{key}_p50"] = round(theirs / wippy, 3)

    conc.setdefault("wippy_at_peer_size", conc["wippy"])
    ours = conc["wippy_at_peer_size"].get("steps_per_s")
    for peer in peers:
        theirs = conc[peer].get("steps_per_s")
        if ours and theirs:
            conc[f"wippy_vs_{peer}"] = round(ours / theirs, 3)
    return out, conc


def recovery_of(contender: str, work: Path, tasks: int) -> dict[str, Any]:
    (prepared,) = probe(contender, work, job("prepare", tasks), crashes=True)
    if "error" in prepared:
        return {"tasks": tasks, "error": f"prepare: {prepared['error']}"}
    (report,) = probe(contender, work, job("recover", tasks))
    if "error" in report:
        return {"tasks": tasks, "error": f"recover: {report['error']}"}
    return {"tasks": tasks, "prepare_s": round(prepared["prepare_s"], 3),
            **{k: (v if v is None or isinstance(v, int) else round(v, 3)) for k, v in report.items()}}


def recovery(sizes: Sizes, work: Path, peers: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"wippy": recovery_of("wippy", work / "rec-wippy", sizes.recovery_tasks)}
    if sizes.peer_recovery_tasks == sizes.recovery_tasks:
        out["wippy_at_peer_size"] = out["wippy"]
    else:
        out["wippy_at_peer_size"] = recovery_of("wippy", work / "rec-wippy-peer", sizes.peer_recovery_tasks)
    for peer in peers:
        out[peer] = recovery_of(peer, work / f"rec-{peer}", sizes.peer_recovery_tasks)
    ours = out["wippy_at_peer_size"]
    if "dbos" in out and ours.get("rewait_s") and out["dbos"].get("rewait_s"):
        out["wippy_vs_dbos_rewait"] = round(out["dbos"]["rewait_s"] / ours["rewait_s"], 3)
    if "langgraph" in out and ours.get("done_s") and out["langgraph"].get("done_s"):
        out["wippy_vs_langgraph_done"] = round(out["langgraph"]["done_s"] / ours["done_s"], 3)
    return out


def restricted_figures(sizes: Sizes, work: Path) -> dict[str, Any]:
    """The restricted workflows beside their Python twins: per-step cost and resumption, medians in ms."""
    (report,) = probe("wippy", work / "restricted", job("restricted", sizes.restricted_steps,
                                                        sizes.restricted_repeats, *sizes.replayed))
    if "error" in report:
        return report
    n = sizes.restricted_steps
    steps: dict[str, Any] = {"n": n}
    for runtime, walls in report["steps"].items():
        task, empty = Timings(walls[str(n)]).ms(), Timings(walls["0"]).ms()
        steps[runtime] = {"task_ms": round(task, 3), "empty_task_ms": round(empty, 3),
                          "per_step_ms": round((task - empty) / n, 4)}
    ours, theirs = steps["restricted"]["per_step_ms"], steps["python"]["per_step_ms"]
    times, plus = RESTRICTED_STEP_TARGET
    steps["ratio"] = round(ours / theirs, 2) if theirs > 0 else None
    steps["target"] = f"restricted per step <= {times:g} x python per step + {plus:g} ms (= {times * theirs + plus:.3f} ms)"
    steps["met"] = ours <= times * theirs + plus
    resumed = {runtime: {k: Timings(samples).ms() for k, samples in by_k.items()}
               for runtime, by_k in report["resumed"].items()}
    resumption = {k: {"python_ms": round(resumed["python"][k], 3), "restricted_ms": round(ms, 3),
                      "replayed_ms": round(ms - resumed["restricted"]["0"], 3)}
                  for k, ms in resumed["restricted"].items()}
    return {"steps": steps, "resumption": resumption}


def concurrency_series(sizes: Sizes, work: Path, peers: list[str]) -> dict[str, Any]:
    """Steps per second as more tasks run at once: each contender's sizes in one fresh interpreter of its own."""
    lines: dict[str, list[list[float]]] = {}
    for contender in ["wippy", *peers]:
        counts = sizes.concurrency if contender == "wippy" else sizes.peer_concurrency
        if not counts:
            continue
        reports = probe(contender, work / f"concurrency-{contender}",
                        *(job("conc", n, sizes.steps_per_task, sizes.warm_up_steps) for n in counts))
        lines[contender] = [[n, throughput(report, n, sizes.steps_per_task)["steps_per_s"]]
                            for n, report in zip(counts, reports, strict=True) if "error" not in report]
    return {"title": f"durable steps per second by tasks at once ({sizes.steps_per_task} steps each)",
            "x": "concurrent tasks", "y": "steps per second", "lines": lines, "log": True}


def resumption_series(restricted: dict[str, Any]) -> dict[str, Any]:
    """The resumption figures as a plot (`benchmarks/report.py`): what a signal costs as the steps before it grow."""
    if "resumption" not in restricted:
        return {}
    points = {runtime: [[int(k), figures[f"{runtime}_ms"]] for k, figures in restricted["resumption"].items()]
              for runtime in ("python", "restricted")}
    return {"resumption": {"title": "A workflow's signal to its result, by the steps taken before its wait",
                           "x": "steps before the wait", "y": "ms (median)", "lines": points, "log": False}}


def verdict(actual: dict[str, float | None], extra: dict[str, tuple[str, float]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (op, target) in {**TARGETS, **extra}.items():
        value = actual[name]
        met = value is not None and {"<": value < target, "<=": value <= target, ">=": value >= target}[op]
        out[name] = {"target": f"{op} {target:g}", "actual": value, "met": met}
    return out


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for package in ("wippy_agents", "duckdb", "dbos", "langgraph", "langgraph-checkpoint-sqlite"):
        try:
            out[package.replace("-", "_")] = version(package)
        except PackageNotFoundError:
            out[package.replace("-", "_")] = None
    return out


def available_peers() -> tuple[list[str], dict[str, str]]:
    needs = {"dbos": ("dbos",), "langgraph": ("langgraph", "langgraph.checkpoint.sqlite", "aiosqlite")}
    peers, skipped = [], {}
    for peer, modules in needs.items():
        missing = [m for m in modules if _missing(m)]
        if missing:
            skipped[peer] = f"not installed: {', '.join(missing)} (pip install -e '.[dev]')"
        else:
            peers.append(peer)
    return peers, skipped


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    """Every measurement, as the JSON-ready report."""
    peers, skipped = available_peers()
    seq, conc = step_figures(sizes, work, peers)
    rec = recovery(sizes, work, peers)
    restricted = restricted_figures(sizes, work)
    steps, replays = restricted.get("steps", {}), restricted.get("resumption", {})
    actual: dict[str, float | None] = {
        "sequential_step_p50_ms": seq["wippy"].get("p50_ms"),
        "concurrent_steps_per_s": conc["wippy"].get("steps_per_s"),
        "recovery_s": rec["wippy"].get("rewait_s"),
        "restricted_step_ms": steps.get("restricted", {}).get("per_step_ms"),
        "restricted_replay_1000_ms": replays.get("1000", {}).get("replayed_ms"),
    }
    python_step = steps.get("python", {}).get("per_step_ms")
    times, plus = RESTRICTED_STEP_TARGET
    targets = verdict(actual, {"restricted_step_ms": ("<=", times * python_step + plus if python_step else plus)})
    return {
        "mode": "quick" if sizes is QUICK else "full",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": machine(),
        "versions": versions(),
        "sizes": asdict(sizes),
        "skipped": skipped,
        "reference": REFERENCE,
        "sequential": seq,
        "concurrent": conc,
        "recovery": rec,
        "restricted": restricted,
        "series": {**resumption_series(restricted), "concurrency": concurrency_series(sizes, work, peers)},
        "targets": targets,
        "all_met": all(t["met"] for t in targets.values()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (a few seconds)")
    parser.add_argument("--probe", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        contender, work, *jobs = args.probe
        probe_main(contender, work, jobs)
        return
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wippy-durable-bench-") as work:
        report = run(QUICK if args.quick else FULL, Path(work))
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
