"""MCP benchmark: a tool call through our layer, beside the `mcp` SDK's client calling the same server directly.

Builds a temporary app with an `mcp_server` entry `app:calc` (a server written
here with the SDK's `MCPServer`, one tool `add(a, b)`, over stdio), boots
`App(root=app)`, waits for `mcp.calc:add` in the registry, and measures, in one
run and on the same connection to the same server process:

- ours: `await app.mcp.call(entry, spec, {"a": 1, "b": 2}, timeout)`, the call an
  agent's `ToolSet` makes for an `mcp.<server>:<tool>` entry (the server's client
  looked up, the call tracked for elicitation, the result's text taken out);
- sdk: `await client.call_tool("add", {"a": 1, "b": 2})` on that server's own
  `mcp.Client`, which our layer wraps.

The contenders take turns in blocks (`interleaved` of `benchmarks/llm.py`); every
call is timed by itself. Target: ours ≤ 1.2 × sdk + 0.3 ms at the medians.

Prints ONE JSON object:

    mode, python, mcp, machine{cores, platform, arch}, sizes{rounds, batch}
    call{sdk, ours: {n, p50_ms, p95_ms, min_ms, max_ms, mean_ms}, added_ms, ratio_vs_sdk}
    targets{call_p50_within_budget: {target, actual, met}}, all_met
        (actual: ours_p50 - (1.2 * sdk_p50 + 0.3), in ms: met at or below 0)

    python benchmarks/mcp.py            # full run, a few seconds on 2 cores
    python benchmarks/mcp.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from llm import Contender, interleaved, machine, ratio, verdict

from wippy_agents import App
from wippy_agents.testing import wait_until, write_file

# this folder is on the path for `llm` and `_timing`; it leaves it now, as this file's name hides the `mcp` SDK
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

SERVER = """
from mcp.server import MCPServer

server = MCPServer("calc")


@server.tool()
def add(a: int, b: int) -> int:
    \"\"\"Add two numbers.\"\"\"
    return a + b


server.run("stdio")
"""
ARGUMENTS = {"a": 1, "b": 2}
SLOPE, ALLOWANCE_MS = 1.2, 0.3


def an_app(root: Path) -> Path:
    write_file(root, "calc_server.py", SERVER)
    write_file(root, "registry/app/_index.yaml", f"""
        namespace: app
        entries:
          - {{name: calc, kind: mcp_server, command: {json.dumps(sys.executable)}, args: [calc_server.py]}}
        """)
    return root


async def run(rounds: int, batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        async with App(root=an_app(Path(folder) / "app"), state=":memory:") as app:
            await wait_until(lambda: "mcp.calc:add" in app.registry, timeout=30)
            entry, spec = app.registry.get("mcp.calc:add"), app.registry.spec("mcp.calc:add")
            client = app.mcp.clients["app:calc"]

            async def ours() -> None:
                assert await app.mcp.call(entry, spec, ARGUMENTS, 10.0) == "3"

            async def sdk() -> None:
                result = await client.call_tool("add", ARGUMENTS)
                assert result.content[0].text == "3"

            timings = await interleaved([Contender("sdk", sdk), Contender("ours", ours)], rounds, batch,
                                        warm_up=batch)
    sdk_ms, ours_ms = timings["sdk"].ms(), timings["ours"].ms()
    over = round(ours_ms - (SLOPE * sdk_ms + ALLOWANCE_MS), 4)
    targets = verdict({"call_p50_within_budget": over}, {"call_p50_within_budget": ("<=", 0.0)})
    targets["call_p50_within_budget"]["target"] = f"ours <= {SLOPE:g} x sdk + {ALLOWANCE_MS:g} ms (excess <= 0)"
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "mcp": version("mcp"),
        "machine": machine(),
        "sizes": {"rounds": rounds, "batch": batch},
        "call": {"sdk": timings["sdk"].summary(4), "ours": timings["ours"].summary(4),
                 "added_ms": round(ours_ms - sdk_ms, 4), "ratio_vs_sdk": ratio(ours_ms, sdk_ms)},
        "targets": targets,
        "all_met": all(target["met"] for target in targets.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    rounds, batch = (2, 20) if args.quick else (10, 200)
    report = asyncio.run(run(rounds, batch))
    print(json.dumps({"mode": "quick" if args.quick else "full", **report}, indent=2))


if __name__ == "__main__":
    main()
