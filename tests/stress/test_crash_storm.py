"""Crash storms: under load, tools raise, hang or exit and conversations are killed at random, one over and over.

Healthy conversations run their turns twice: once in calm, once while storm conversations
call a tool that fails at random, a killer kills storm conversations mid-turn, and one
poison conversation is killed each time it comes back. The supervisor of conversations
restarts each killed one within its intensity and gives up on the poison one alone (it is
logged); the node, the supervisor and every healthy turn go on, each healthy answer right.
The healthy turns' p99 latency in the storm against the calm run is the figure kept.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path

import pytest

from wippy_agents import App
from wippy_agents.agents import AgentError, Conversation
from wippy_agents.llm import Response, ToolCall, ToolResultMessage, UserMessage
from wippy_agents.testing import FunctionModel, ModelRequest, write_file

from ._figures import Figures, latency_summary

STORM_TOOL = '''
import asyncio

from wippy_agents.tools import tool


@tool(timeout=0.2)
async def flaky(mode: str) -> str:
    """Fail as told: raise, hang past the timeout or exit; anything else answers ok."""
    if mode == "raise":
        raise RuntimeError("the storm says no")
    if mode == "hang":
        await asyncio.sleep(3600)
    if mode == "exit":
        raise SystemExit(3)
    return "ok"
'''
MODES = ("raise", "hang", "exit", "ok")


def model(request: ModelRequest) -> Response:
    """`add A and B` calls the calculator, `storm MODE` the flaky tool; a tool's result is answered with."""
    last = request.messages[-1]
    if isinstance(last, ToolResultMessage):
        return Response(text=f"the sum is {last.content}" if last.name == "tools_calc_add" else "weathered")
    assert isinstance(last, UserMessage)
    words = str(last.content).split()
    if words[0] == "storm":
        return Response(tool_calls=(ToolCall(id="s1", name="tools_storm_flaky", arguments={"mode": words[1]}),))
    return Response(tool_calls=(ToolCall(id="c1", name="tools_calc_add",
                                         arguments={"a": int(words[1]), "b": int(words[3])}),))


async def healthy_turns(app: App, count: int, turns: int) -> list[float]:
    """`count` conversations asking `turns` sums each, all checked; the latency of every turn."""
    conversations = [await app.conversation("app:assistant") for _ in range(count)]
    latencies: list[float] = []

    async def converse(number: int, conversation: Conversation) -> None:
        for turn in range(turns):
            started = time.perf_counter()
            answer = await conversation.ask(f"add {number} and {turn}")
            latencies.append(time.perf_counter() - started)
            assert answer.text == f"the sum is {float(number + turn)}"

    await asyncio.gather(*(converse(number, c) for number, c in enumerate(conversations)))
    return latencies


async def test_a_crash_storm_leaves_the_node_and_the_healthy_conversations_standing(
        example_app: Path, soak: bool, figures: Figures, caplog: pytest.LogCaptureFixture) -> None:
    healthy, stormy, turns = (1000, 300, 10) if soak else (40, 20, 3)
    write_file(example_app, "tools/storm.py", STORM_TOOL)
    rng = random.Random(19)
    caplog.set_level(logging.ERROR, "wippy_agents.supervisor")
    async with App(root=example_app) as app:
        app.agents.model_overrides["*"] = FunctionModel(model)
        supervisor = app.node.whereis("wippy:agents")
        calm = await healthy_turns(app, healthy, turns)

        storm_conversations = [await app.conversation("app:assistant") for _ in range(stormy)]
        poison = await app.conversation("app:assistant")
        storming = asyncio.Event()
        ended: list[str] = []

        async def storm(conversation: Conversation) -> None:
            for _ in range(turns):
                try:
                    await conversation.ask(f"storm {rng.choice(MODES)}")
                    ended.append("answered")
                except AgentError as error:  # killed mid-turn: the turn fails, saying the agent crashed
                    assert "crashed" in str(error) or "did not come back up" in str(error), error
                    ended.append("crashed")

        async def killer() -> None:
            while storming.is_set():
                victim = app.node.whereis(f"conversation:{rng.choice(storm_conversations).id}")
                if victim is not None:  # not between a kill and its restart
                    app.node.exit(None, victim, "kill")
                await asyncio.sleep(0.01)

        async def poisoner() -> None:
            kills = 0
            while storming.is_set() and kills < 10:
                victim = app.node.whereis(f"conversation:{poison.id}")
                if victim is not None:
                    app.node.exit(None, victim, "kill")
                    kills += 1
                await asyncio.sleep(0)

        storming.set()
        chaos = [asyncio.ensure_future(killer()), asyncio.ensure_future(poisoner())]
        try:
            stormy_turns = asyncio.gather(*(storm(c) for c in storm_conversations))
            under_storm = await healthy_turns(app, healthy, turns)
            await stormy_turns
        finally:
            storming.clear()
            await asyncio.gather(*chaos)

        assert len(ended) == stormy * turns  # every storm turn ended, one way or the other
        assert app.node.whereis("wippy:agents") == supervisor  # never escalated: the same supervisor
        assert "gave up on child" in caplog.text and poison.id in caplog.text  # the poison one, reported
        answer = await (await app.conversation("app:assistant")).ask("add 2 and 2")
        assert answer.text == "the sum is 4.0"
    calm_summary, storm_summary = latency_summary(calm), latency_summary(under_storm)
    figures.record("crash_storm", {
        "healthy_turns": len(calm), "storm_turns": len(ended), "storm_turns_crashed": ended.count("crashed"),
        "calm_p99_ms": calm_summary["p99_ms"], "storm_p99_ms": storm_summary["p99_ms"],
        "p99_ratio": round(storm_summary["p99_ms"] / calm_summary["p99_ms"], 2)})
