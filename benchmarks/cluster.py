"""Cluster benchmarks: the journal on a shared Postgres beside DBOS 3.4, and wippy nodes on a Ray cluster beside
bare Ray actor calls, each pair in the same run.

Starts a private PostgreSQL server (`wippy_agents.testing.TemporaryPostgres`; `fsync`
off for both contenders alike), gives each contender a database of its own on it, and
runs the probes of `benchmarks/durable.py` in fresh interpreters: wippy with
`WIPPY_STATE` set to its database, DBOS with its system database there.

- sequential: one task of `seq_steps` trivial steps, the latency of each step taken
  inside the workflow (pooled over `seq_repeats` processes per contender, taking turns);
- concurrent: `tasks` tasks of `steps_per_task` steps started at once, waited for;
  steps/s = all steps / wall time. wippy runs at the full size (for the target) and at
  DBOS's size (`peer_tasks`, for the ratio).

Then the nodes on Ray (`benchmarks/_nodes.py` says how): cross-node one-way sends,
cross-node calls beside a bare Ray actor's, and the takeover of a turn whose machine
is removed.

Prints ONE JSON object. Keys:

    mode, python, machine, versions{wippy_agents, dbos, psycopg, postgres, ray}, sizes{...}
    postgres_journal{sequential{wippy, dbos: <latency block> + wall_s, wippy_vs_dbos_p50},
                     concurrent{wippy, wippy_at_peer_size, dbos: {tasks, steps, ..., steps_per_s}, wippy_vs_dbos}}
    nodes{ray_nodes, send{messages, seconds, msgs_per_s}, call{wippy, bare_ray_actor: <latency block>,
          wippy_vs_ray_p50}, takeover{seconds, turn_ok, health_check}}
    targets{<name>: {target, actual, met}}, all_met, elapsed_s

    python benchmarks/cluster.py          # full run
    python benchmarks/cluster.py --quick  # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _nodes import node_figures
from _timing import Timings, machine
from durable import DBOS_DATABASE_VARIABLE, job, probe, throughput

from wippy_agents.app import STATE_VARIABLE
from wippy_agents.testing import TemporaryPostgres

TARGETS: dict[str, tuple[str, float]] = {
    "postgres_sequential_step_p50_ms": ("<=", 2.0),
    "postgres_concurrent_steps_per_s": (">=", 10_000.0),
    "postgres_concurrent_vs_dbos": (">=", 5.0),
    "cross_node_send_msgs_per_s": (">=", 50_000.0),
    "cross_node_call_vs_ray_p50": ("<=", 1.5),
    "takeover_s": ("<", 10.0),
}


@dataclass(frozen=True)
class Sizes:
    seq_steps: int
    seq_repeats: int
    tasks: int
    peer_tasks: int
    steps_per_task: int
    warm_up_steps: int
    messages: int
    burst: int
    calls: int
    round_size: int
    warm_up: int


FULL = Sizes(seq_steps=1000, seq_repeats=2, tasks=1000, peer_tasks=100, steps_per_task=20, warm_up_steps=50,
             messages=200_000, burst=1000, calls=2000, round_size=100, warm_up=200)
QUICK = Sizes(seq_steps=50, seq_repeats=1, tasks=10, peer_tasks=10, steps_per_task=5, warm_up_steps=5,
              messages=2000, burst=100, calls=50, round_size=10, warm_up=10)


def journal_figures(sizes: Sizes, server: TemporaryPostgres, work: Path) -> dict[str, Any]:
    """Sequential and concurrent steps of each contender, each process on a fresh database of the server."""
    timings = {"wippy": Timings(), "dbos": Timings()}
    walls: dict[str, list[float]] = {"wippy": [], "dbos": []}
    errors: dict[str, str] = {}
    conc: dict[str, Any] = {}
    steps, warm_up = sizes.steps_per_task, sizes.warm_up_steps
    for repeat in range(sizes.seq_repeats):
        for contender, variable in (("wippy", STATE_VARIABLE), ("dbos", DBOS_DATABASE_VARIABLE)):
            keys: list[tuple[str, int]] = []
            if repeat == 0:
                keys = [("dbos", sizes.peer_tasks)] if contender == "dbos" else [("wippy", sizes.tasks)]
                if contender == "wippy" and sizes.peer_tasks != sizes.tasks:
                    keys.append(("wippy_at_peer_size", sizes.peer_tasks))
            os.environ[variable] = server.database()
            try:
                seq, *concs = probe(contender, work / f"{contender}-{repeat}", job("seq", sizes.seq_steps, warm_up),
                                    *(job("conc", n, steps, warm_up) for _, n in keys))
            finally:
                del os.environ[variable]
            for (key, n), report in zip(keys, concs, strict=True):
                conc[key] = throughput(report, n, steps)
            if "error" in seq:
                errors[contender] = seq["error"]
                continue
            timings[contender].samples += seq["samples"]
            walls[contender].append(seq["wall_s"])
    sequential: dict[str, Any] = {
        name: {"error": errors[name]} if name in errors
        else {**timings[name].summary(), "wall_s": round(min(walls[name]), 3)}
        for name in timings}
    ours, theirs = sequential["wippy"].get("p50_ms"), sequential["dbos"].get("p50_ms")
    if ours and theirs:
        sequential["wippy_vs_dbos_p50"] = round(theirs / ours, 3)
    conc.setdefault("wippy_at_peer_size", conc["wippy"])
    ours, theirs = conc["wippy_at_peer_size"].get("steps_per_s"), conc["dbos"].get("steps_per_s")
    if ours and theirs:
        conc["wippy_vs_dbos"] = round(ours / theirs, 3)
    return {"sequential": sequential, "concurrent": conc}


def verdict(actual: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (op, target) in TARGETS.items():
        value = actual[name]
        met = value is not None and {"<=": value <= target, "<": value < target, ">=": value >= target}[op]
        out[name] = {"target": f"{op} {target:g}", "actual": value, "met": met}
    return out


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    with TemporaryPostgres() as server:
        postgres = subprocess.run(["postgres", "--version"], capture_output=True, text=True).stdout.strip()
        journal = journal_figures(sizes, server, work)
        nodes = node_figures(sizes, server.database(), work)
    targets = verdict({
        "postgres_sequential_step_p50_ms": journal["sequential"]["wippy"].get("p50_ms"),
        "postgres_concurrent_steps_per_s": journal["concurrent"]["wippy"].get("steps_per_s"),
        "postgres_concurrent_vs_dbos": journal["concurrent"].get("wippy_vs_dbos"),
        "cross_node_send_msgs_per_s": nodes["send"]["msgs_per_s"],
        "cross_node_call_vs_ray_p50": nodes["call"]["wippy_vs_ray_p50"],
        "takeover_s": nodes["takeover"]["seconds"],
    })
    return {
        "mode": "quick" if sizes is QUICK else "full",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": machine(),
        "versions": {"wippy_agents": version("wippy-agents"), "dbos": version("dbos"), "psycopg": version("psycopg"),
                     "postgres": postgres, "ray": version("ray")},
        "sizes": asdict(sizes),
        "postgres_journal": journal,
        "nodes": nodes,
        "targets": targets,
        "all_met": all(t["met"] for t in targets.values()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (a few seconds)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report_to = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # Ray prints its nodes' logs on stdout: they go to stderr
    with tempfile.TemporaryDirectory(prefix="wippy-cluster-bench-") as work:
        report = run(QUICK if args.quick else FULL, Path(work))
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    with report_to:
        json.dump(report, report_to, indent=2)
        report_to.write("\n")


if __name__ == "__main__":
    main()
