"""Load: thousands of conversations at once on one node, every turn calling a tool, the model answering at once.

`make test` runs 300 conversations; `make soak` 10,000. Every turn must end with the answer
its tool call implies (nothing dropped or crossed between conversations), and once all have
ended no turn task and no relay process is left (the conversations themselves stay, idle,
as they should). The figures (turns per second, p50 and p99 turn latency, the memory the run added)
are printed, and in a soak run kept for the benchmark report.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from wippy_agents import App
from wippy_agents.llm import Response, ToolCall, ToolResultMessage, UserMessage
from wippy_agents.testing import FunctionModel, ModelRequest

from ._figures import Figures, latency_summary


def calculator(request: ModelRequest) -> Response:
    """Asked "add A and B", call the calculator; given its result, answer with it."""
    last = request.messages[-1]
    if isinstance(last, ToolResultMessage):
        return Response(text=f"the sum is {last.content}")
    assert isinstance(last, UserMessage)
    _, a, _, b = str(last.content).split()
    return Response(tool_calls=(ToolCall(id="c1", name="tools_calc_add", arguments={"a": int(a), "b": int(b)}),))


async def test_thousands_of_conversations_at_once_all_end_right_and_leave_nothing_behind(
        example_app: Path, soak: bool, figures: Figures) -> None:
    count = 10_000 if soak else 300
    before = resident_mb()
    async with App(root=example_app) as app:
        app.agents.model_overrides["*"] = FunctionModel(calculator)
        conversations = await asyncio.gather(*(app.conversation("app:assistant") for _ in range(count)))
        baseline = {info.pid for info in app.processes()}
        latencies: list[float] = []

        async def turn(number: int) -> str:
            started = time.perf_counter()
            answer = await conversations[number].ask(f"add {number} and 1")
            latencies.append(time.perf_counter() - started)
            return answer.text

        started = time.perf_counter()
        answers = await asyncio.gather(*(turn(number) for number in range(count)))
        elapsed = time.perf_counter() - started

        assert answers == [f"the sum is {number + 1.0}" for number in range(count)]  # the calculator adds floats
        left = [f"{info.name or info.function} ({info.status})" for info in app.processes()
                if info.pid not in baseline]
        assert left == [], f"{len(left)} process(es) outlived their turns, such as {left[:5]}"
        assert all(app.tasks.status(info.id) == "completed" for info in app.tasks.list())
        held = resident_mb() - before
    figures.record("load", {"conversations": count, "turns_per_s": round(count / elapsed, 1),
                            **latency_summary(latencies), "rss_growth_mb": round(held, 1)})


def resident_mb() -> float:
    """This process's resident memory now (not its peak, which earlier tests of the run may have set)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
