"""Sandbox benchmark: a warm call of a small tool, beside a fresh `python -I` subprocess per call.

Prints ONE JSON object:

    mode, python, machine{cores, platform, arch}, sizes{calls, fresh_calls}
    warm{n, p50_ms, p95_ms, min_ms, max_ms, mean_ms}     `await sb.run(TOOL, "main", {...})` on a warm pool
    fresh{...}                                          the same source run by a new `python -I -c` process
    ratio_fresh_vs_warm_p50
    targets{warm_call_p50_ms: {target, actual, met}}, all_met

    python benchmarks/sandbox.py            # full run, about 20 s on 2 cores
    python benchmarks/sandbox.py --quick    # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
from time import perf_counter

from _timing import Timings, machine

from wippy_agents.sandbox import Sandbox

TOOL = """
def main(words, n):
    counts = {}
    for word in words:
        counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])[:n]
"""
ARGS = {"words": ["a", "b", "a", "c", "b", "a"] * 5, "n": 2}
FRESH = (
    "import json, sys\n"
    + TOOL
    + "\nprint(json.dumps(main(**json.loads(sys.argv[1]))))\n"
)
TARGET_MS = 1.0


async def warm(calls: int) -> Timings:
    timings = Timings()
    async with Sandbox() as sb:
        for _ in range(20):  # warm the pool and the compile cache
            await sb.run(TOOL, "main", ARGS)
        for _ in range(calls):
            start = perf_counter()
            await sb.run(TOOL, "main", ARGS)
            timings.add(perf_counter() - start)
    return timings


async def fresh(calls: int) -> Timings:
    timings = Timings()
    argument = json.dumps(ARGS)
    for _ in range(calls):
        start = perf_counter()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-I", "-c", FRESH, argument,
                                                    stdout=asyncio.subprocess.PIPE, env={})
        await proc.communicate()
        timings.add(perf_counter() - start)
    return timings


async def run(calls: int, fresh_calls: int) -> dict[str, object]:
    ours, peer = await warm(calls), await fresh(fresh_calls)
    actual = round(ours.ms(), 4)
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": machine(),
        "sizes": {"calls": calls, "fresh_calls": fresh_calls},
        "warm": ours.summary(4),
        "fresh": peer.summary(4),
        "ratio_fresh_vs_warm_p50": round(peer.ms() / ours.ms(), 1),
        "targets": {"warm_call_p50_ms": {"target": f"< {TARGET_MS:g}", "actual": actual, "met": actual < TARGET_MS}},
        "all_met": actual < TARGET_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    calls, fresh_calls = (200, 10) if args.quick else (5000, 100)
    report = asyncio.run(run(calls, fresh_calls))
    print(json.dumps({"mode": "quick" if args.quick else "full", **report}, indent=2))


if __name__ == "__main__":
    main()
