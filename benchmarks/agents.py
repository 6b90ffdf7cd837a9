"""Agent benchmarks: a one-tool turn beside pydantic-ai's `Agent.run`, conversation starts, idle conversations' memory,
a turn late in a long conversation.

Builds a temporary app (an offline `model` entry, an agent `app:assistant` with
`tools: ["tools.*:*"]` and `max_steps: 5`, and `tools/calc.py` with a typed
`add(a: int, b: int) -> int`), boots `App(root=app)` with a `testing.FunctionModel`
in `app.agents.model_overrides["*"]` (it calls `tools_calc_add` when the last
message is the user's, and answers "3" after the tool result), and measures, in one run:

- turn: `await conv.ask("1+2?")`, a turn of two model calls and one tool call, on a
  fresh conversation each time (started untimed just before) and on one conversation
  that goes on (its history grows by four messages a turn, each turn appended to
  DuckDB), beside pydantic-ai's `await Agent(TestModel(), tools=[add]).run("1+2?")`,
  the same one-tool turn with no persistence. The time spent in the model function
  and in the history write are measured inside the turns (means per turn);
  `overhead_*_ms` is the median turn less the model function's time;
- start: `await node.conversation("app:assistant")` (a supervised process under
  `wippy:agents` whose start is a row of the conversations' index in the journal's
  next group commit), beside spawning a bare idle process, each timed by itself; then
  `starts` conversations one after another, timed as a whole until the last one's row
  is durable (`conversations_per_s`, target >= 10,000), beside as many bare processes;
- long: one conversation taking `long_turns` turns; the overhead (turn less model
  function) of turns 10-19 beside that of the last ten (`ratio_late_vs_early`, target
  <= 1.2: a turn's cost must not grow with the conversation's length);
- tracing: the same fresh-conversation turn on an app that traces into the
  OpenTelemetry SDK's in-memory exporter (`App(tracer_provider=...)`, a
  SimpleSpanProcessor: each span exported as it ends, inside the turn) beside one that
  traces nothing, taking turns in one run, journaled (the app as it runs by default)
  and in memory; `cost_ratio` is what tracing adds to the median turn over the untraced
  turn's overhead (target < 0.1 on the journaled turn). With tracing off a turn runs a
  few hooks that return at once (a shared null context, `None`, `{}`): the same calls a
  one-tool turn makes are timed by themselves, and `off_ratio` is them over the
  in-memory untraced overhead (target < 0.01: too small to see beside a turn's noise);
- index: `indexed` conversations of one turn each noted in the conversations' index
  (as turns note them, through the journal), then the latest 50 listed, those of one
  agent, and a search by a word in a tenth of them and by one in a single one, each
  the median of 5 (targets: list < 50 ms, search < 250 ms);
- memory: `traced_idle` conversations started and left waiting, counted by
  tracemalloc in this process, and `idle` (100,000 in a full run) in a fresh
  interpreter, whose whole RSS with all of them resident is the measured figure
  (`idle_conversations_rss_mb`, target < 1 GB), beside as many bare idle processes.
  Starting stops after `memory_budget_s` per population; a population that stops
  short reports how many it reached and projects its total (a projected figure
  never meets the target).

The one timing helper (`Contender`, `Timings`, `interleaved`) is `benchmarks/llm.py`'s:
contenders take turns in blocks and every operation is timed by itself. Prints ONE
JSON object; latency blocks are `{"n", "p50_ms", "p95_ms", "min_ms", "mean_ms"}`. Keys:

    mode, python, pydantic_ai, machine{cores, platform, arch}
    sizes{rounds, turn_batch, start_ops, starts, idle, traced_idle, memory_budget_s, long_turns}
    turn{in_memory|journaled: {fresh_conversation, same_conversation, pydantic_ai (null without pydantic-ai), pydantic_ai_reference_ms,
         model_fn_ms_per_turn, journal_commits_per_turn, overhead_fresh_ms, overhead_same_ms,
         ratio_fresh_vs_pydantic_ai, ratio_same_vs_pydantic_ai, same_conversation_messages_at_end}}
        (in_memory: `state: ":memory:"`, the journal without fsync; journaled: the state file)
    tracing{journaled|in_memory: {untraced, traced (latency blocks), overhead_untraced_ms, traced_added_ms,
            spans_per_turn, cost_ratio}, off_hooks_us_per_turn, off_ratio}
    start{conversation, bare_process (latency blocks), batch, conversations_per_s, bare_processes_per_s,
          ratio_vs_bare_process, journal_commits}
    long{turns, early_turns, late_turns, model_fn_ms_per_turn, early_overhead_ms, late_overhead_ms,
         ratio_late_vs_early}
    index{conversations, noted_s, list_ms, list_agent_ms, search_ms, search_rare_ms, found}
    memory{idle, traced_idle, conversation, bare_process, conversation_rss, bare_process_rss, bytes_per_conversation,
           rss_bytes_per_conversation, total_mb, rss_total_mb, rss_process_mb, ratio_vs_bare_process}
        (each population: reached, projected, seconds, starts_per_s, starts_per_s_by_tenth, bytes_per, total_mb,
         process_mb; total_mb is bytes_per times its size, projected when fewer were reached; process_mb the
         whole process's RSS at the end)
    targets{<name>: {target, actual, met}}, all_met

    python benchmarks/agents.py            # full run, a few minutes on 2 cores
    python benchmarks/agents.py --quick    # smoke test, a few seconds
    python benchmarks/agents.py --profile  # cProfile of same-conversation turns on stderr, no JSON
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gc
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import tracemalloc
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from statistics import median
from time import perf_counter
from typing import Any

from llm import Contender, interleaved, machine, ratio, verdict
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from wippy_agents import App, process
from wippy_agents._runtime.telemetry import OFF, Telemetry
from wippy_agents.agents import Conversation
from wippy_agents.agents._history import load_history
from wippy_agents.llm import Response, ToolCall, UserMessage
from wippy_agents.state import ConversationInfo, ConversationMessage
from wippy_agents.testing import FunctionModel, ModelRequest, write_file

AGENT = "app:assistant"
QUESTION = "1+2?"
TARGETS: dict[str, tuple[str, float]] = {
    "turn_overhead_in_memory_ms": ("<", 1.0),
    "turn_overhead_journaled_ms": ("<", 5.0),  # below pydantic-ai's in-memory figure for this turn
    "conversations_started_per_s": (">=", 10_000.0),
    "idle_conversations_rss_mb": ("<", 1024.0),  # the whole process, `idle` (100,000) conversations resident
    "long_conversation_turn_ratio": ("<=", 1.2),  # turn overhead late in a long conversation over turn 10's
    "index_list_ms": ("<", 50.0),  # the latest 50 of `indexed` (100,000) conversations
    "index_search_ms": ("<", 250.0),  # those whose messages hold a word
    "tracing_cost_ratio": ("<", 0.1),  # of the untraced turn's overhead, journaled
    "tracing_off_ratio": ("<", 0.01),
}
PYDANTIC_AI_REFERENCE_MS = 5.0  # the figure for this one-tool turn with TestModel, 2 cores

INDEX = """
namespace: app
entries:
  - name: m
    kind: model
    provider: offline
    model: wippy-offline
  - name: assistant
    kind: agent
    model: app:m
    tools: ["tools.*:*"]
    max_steps: 5
"""

CALC = '''
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b
'''


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b


@dataclass(frozen=True)
class Sizes:
    rounds: int
    turn_batch: int
    start_ops: int  # starts timed one by one
    starts: int  # starts timed as a whole
    idle: int  # conversations resident in the fresh interpreter (RSS)
    traced_idle: int  # conversations counted by tracemalloc
    memory_budget_s: float
    long_turns: int
    indexed: int  # conversations in the index that is listed and searched


FULL = Sizes(rounds=8, turn_batch=40, start_ops=500, starts=10_000, idle=100_000, traced_idle=10_000,
             memory_budget_s=240.0, long_turns=1000, indexed=100_000)
QUICK = Sizes(rounds=2, turn_batch=10, start_ops=50, starts=500, idle=2000, traced_idle=500, memory_budget_s=10.0,
              long_turns=30, indexed=2000)


def make_app(root: Path, *, in_memory: bool = False) -> Path:
    write_file(root, "registry/app/_index.yaml", INDEX)
    write_file(root, "tools/calc.py", CALC)
    if in_memory:
        write_file(root, "wippy.yaml", 'state: ":memory:"\n')  # the journal without fsync: the framework's own cost
    return root


class TimedModel:
    """The scripted model of every turn: a tool call, then the answer; counts the time spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.model = FunctionModel(self.answer, name="bench")

    def answer(self, request: ModelRequest) -> Response:
        start = perf_counter()
        if isinstance(request.messages[-1], UserMessage):
            response = Response(tool_calls=(ToolCall(id="c1", name="tools_calc_add", arguments={"a": 1, "b": 2}),),
                                finish_reason="tool_calls")
        else:
            response = Response(text="3")
        self.seconds += perf_counter() - start
        return response


async def settle() -> None:
    """Let newly started processes run up to their first receive."""
    for _ in range(3):
        await asyncio.sleep(0)


# -- turn --------------------------------------------------------------------------------


def pydantic_ai_contender() -> tuple[Contender | None, str]:
    """pydantic-ai's `Agent.run` on the same one-tool turn, and its version (or why it is missing)."""
    try:
        from pydantic_ai import Agent
        from pydantic_ai.models.test import TestModel
    except ImportError as error:
        return None, f"not installed ({error})"
    agent = Agent(TestModel(), tools=[add])

    async def run() -> None:
        result = await agent.run(QUESTION)
        assert "add" in str(result.output), result.output

    return Contender("pydantic_ai", run), version("pydantic-ai-slim")


async def measure_turn(root: Path, sizes: Sizes, pydantic_ai: Contender | None) -> dict[str, Any]:
    scripted = TimedModel()
    async with App(root=root) as app:
        app.agents.model_overrides["*"] = scripted.model
        same = await app.conversation(AGENT)
        fresh: deque[Conversation] = deque()

        async def start_fresh(n: int) -> None:
            for _ in range(n):
                fresh.append(await app.conversation(AGENT))
            await settle()

        async def ask_fresh() -> None:
            answer = await fresh.popleft().ask(QUESTION)
            assert answer.text == "3" and answer.steps == 2, answer

        async def ask_same() -> None:
            answer = await same.ask(QUESTION)
            assert answer.text == "3" and answer.steps == 2, answer

        contenders = [Contender("fresh_conversation", ask_fresh, start_fresh), Contender("same_conversation", ask_same)]
        if pydantic_ai is not None:
            contenders.append(pydantic_ai)
        warm_up = 5
        model_s0, commits0 = scripted.seconds, app.tasks.journal.commits
        runs = await interleaved(contenders, sizes.rounds, sizes.turn_batch, warm_up=warm_up)
        turns = 2 * (warm_up + sizes.rounds * sizes.turn_batch)
        model_ms = (scripted.seconds - model_s0) / turns * 1000
        commits = (app.tasks.journal.commits - commits0) / turns
        messages = len(load_history(app.tasks, AGENT, same.id, before=10**9).messages())

    report: dict[str, Any] = {
        "fresh_conversation": runs["fresh_conversation"].summary(4),
        "same_conversation": runs["same_conversation"].summary(4),
        "pydantic_ai": runs["pydantic_ai"].summary(4) if pydantic_ai else None,
        "pydantic_ai_reference_ms": PYDANTIC_AI_REFERENCE_MS,
        "model_fn_ms_per_turn": round(model_ms, 4),
        "journal_commits_per_turn": round(commits, 2),
        "overhead_fresh_ms": round(runs["fresh_conversation"].ms() - model_ms, 4),
        "overhead_same_ms": round(runs["same_conversation"].ms() - model_ms, 4),
        "ratio_fresh_vs_pydantic_ai": None,
        "ratio_same_vs_pydantic_ai": None,
        "same_conversation_messages_at_end": messages,
    }
    if pydantic_ai is not None:
        peer = runs["pydantic_ai"].ms()
        report["ratio_fresh_vs_pydantic_ai"] = ratio(runs["fresh_conversation"].ms(), peer)
        report["ratio_same_vs_pydantic_ai"] = ratio(runs["same_conversation"].ms(), peer)
    return report


# -- tracing -----------------------------------------------------------------------------------


def off_hooks(telemetry: Telemetry) -> None:
    """The telemetry calls a one-tool turn (two model calls, one tool call) makes, in its order."""
    telemetry.carrier()  # the ask
    with telemetry.span("invoke_agent", None, parent=telemetry.parent_of(None)) as span:
        telemetry.record(span, "gen_ai.input.messages", str)
        telemetry.current()  # the model's name and provider
        for step in range(3):  # model, tool, model
            assert not telemetry.on  # ctx.step: an untraced step, and (model steps) no attributes built
            if step == 1:
                assert not telemetry.on  # the tool call's span arguments
            telemetry.current()  # what the call learned
        telemetry.record(span, "gen_ai.output.messages", str)


def off_hooks_us(calls: int = 20_000) -> float:
    """Microseconds per turn spent in the hooks of an app that traces nothing (the best of three runs)."""
    best = float("inf")
    for _ in range(3):
        start = perf_counter()
        for _ in range(calls):
            off_hooks(OFF)
        best = min(best, perf_counter() - start)
    return best / calls * 1e6


async def measure_tracing(root: Path, sizes: Sizes, *, in_memory: bool) -> dict[str, Any]:
    """Fresh-conversation turns on an app traced into the in-memory exporter beside an untraced one, taking turns."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    models = {"untraced": TimedModel(), "traced": TimedModel()}
    async with App(root=make_app(root / "untraced", in_memory=in_memory)) as untraced, \
            App(root=make_app(root / "traced", in_memory=in_memory), tracer_provider=provider) as traced:
        apps = {"untraced": untraced, "traced": traced}
        fresh: dict[str, deque[Conversation]] = {key: deque() for key in apps}
        for key, app in apps.items():
            app.agents.model_overrides["*"] = models[key].model

        def contender(key: str) -> Contender:
            async def start_fresh(n: int) -> None:
                if key == "traced":
                    exporter.clear()  # the spans of its last batch are counted at the end
                for _ in range(n):
                    fresh[key].append(await apps[key].conversation(AGENT))
                await settle()

            async def ask() -> None:
                answer = await fresh[key].popleft().ask(QUESTION)
                assert answer.text == "3" and answer.steps == 2, answer

            return Contender(key, ask, start_fresh)

        warm_up = 5
        runs = await interleaved([contender("untraced"), contender("traced")], sizes.rounds, sizes.turn_batch,
                                 warm_up=warm_up)
        spans = len(exporter.get_finished_spans()) / sizes.turn_batch
    turns = warm_up + sizes.rounds * sizes.turn_batch
    overhead = runs["untraced"].ms() - models["untraced"].seconds / turns * 1000
    added = runs["traced"].ms() - runs["untraced"].ms()
    return {
        "untraced": runs["untraced"].summary(4),
        "traced": runs["traced"].summary(4),
        "overhead_untraced_ms": round(overhead, 4),
        "traced_added_ms": round(added, 4),
        "spans_per_turn": spans,
        "cost_ratio": ratio(added, overhead),
    }


async def measure_all_tracing(work: Path, sizes: Sizes) -> dict[str, Any]:
    report = {"journaled": await measure_tracing(work / "traced-journaled", sizes, in_memory=False),
              "in_memory": await measure_tracing(work / "traced-memory", sizes, in_memory=True)}
    off_us = off_hooks_us()
    report["off_hooks_us_per_turn"] = round(off_us, 3)
    report["off_ratio"] = ratio(off_us / 1000, report["in_memory"]["overhead_untraced_ms"])
    return report


# -- start -------------------------------------------------------------------------------------


async def idle_in_receive() -> None:
    await process.receive()


async def measure_start(root: Path, sizes: Sizes) -> dict[str, Any]:
    async with App(root=root) as app:

        async def conversation() -> None:
            await app.conversation(AGENT)
            await asyncio.sleep(0)  # the process journals its start and waits for a message

        async def bare_process() -> None:
            app.node.spawn(idle_in_receive)
            await asyncio.sleep(0)

        rounds = max(sizes.rounds // 2, 1)
        runs = await interleaved([Contender("conversation", conversation), Contender("bare_process", bare_process)],
                                 rounds, sizes.start_ops // rounds, warm_up=5)
        journal = app.tasks.journal
        commits = journal.commits
        start = perf_counter()
        for _ in range(sizes.starts):
            await app.conversation(AGENT)
        await settle()
        await journal.append([])  # an empty group after every start's row: once it is durable, they all are
        conversations_s = perf_counter() - start
        commits = journal.commits - commits
        start = perf_counter()
        for n in range(sizes.starts):
            app.node.spawn(idle_in_receive)
            if n % 100 == 0:
                await asyncio.sleep(0)
        await settle()
        processes_s = perf_counter() - start
    rates = {"conversation": sizes.starts / conversations_s, "bare_process": sizes.starts / processes_s}
    return {
        "conversation": runs["conversation"].summary(4),
        "bare_process": runs["bare_process"].summary(4),
        "batch": {"n": sizes.starts, "conversations_s": round(conversations_s, 3),
                  "bare_processes_s": round(processes_s, 3)},
        "conversations_per_s": round(rates["conversation"]),
        "bare_processes_per_s": round(rates["bare_process"]),
        "ratio_vs_bare_process": ratio(rates["conversation"], rates["bare_process"]),
        "journal_commits": commits,
    }


# -- long ---------------------------------------------------------------------------------------


async def measure_long(root: Path, sizes: Sizes) -> dict[str, Any]:
    """One conversation's turns one after another: the overhead of turns 10-19 beside that of its last ten."""
    scripted = TimedModel()
    early, late = range(10, 20), range(sizes.long_turns - 9, sizes.long_turns + 1)
    overheads: dict[int, float] = {}
    async with App(root=root) as app:
        app.agents.model_overrides["*"] = scripted.model
        conversation = await app.conversation(AGENT)
        for turn in range(1, sizes.long_turns + 1):
            model_s = scripted.seconds
            start = perf_counter()
            answer = await conversation.ask(QUESTION)
            overheads[turn] = perf_counter() - start - (scripted.seconds - model_s)
            assert answer.text == "3" and answer.turn == turn, answer
    early_ms = median(overheads[turn] for turn in early) * 1000
    late_ms = median(overheads[turn] for turn in late) * 1000
    step = max(sizes.long_turns // 10, 1)
    by_length = [[first + step - 1, round(median(overheads[t] for t in range(first, first + step)) * 1000, 4)]
                 for first in range(1, sizes.long_turns - step + 2, step)]
    return {
        "turns": sizes.long_turns,
        "overhead_ms_by_turn": by_length,
        "early_turns": [early.start, early.stop - 1],
        "late_turns": [late.start, late.stop - 1],
        "model_fn_ms_per_turn": round(scripted.seconds / sizes.long_turns * 1000, 4),
        "early_overhead_ms": round(early_ms, 4),
        "late_overhead_ms": round(late_ms, 4),
        "ratio_late_vs_early": ratio(late_ms, early_ms),
    }


# -- index ------------------------------------------------------------------------------------

TOPICS = ("weather", "invoices", "kubernetes", "recipes", "travel", "python", "taxes", "music", "football", "garden")


async def measure_index(root: Path, sizes: Sizes) -> dict[str, Any]:
    """`indexed` conversations of one turn each in the index, then listing and searching them."""
    async with App(root=root) as app:
        index = app.agents.store
        origin = datetime.now(UTC) - timedelta(seconds=sizes.indexed)
        start = perf_counter()
        pending: list[asyncio.Future[None]] = []
        for n in range(sizes.indexed):
            id, at = f"{n:012x}", origin + timedelta(seconds=n)
            asked = f"question {n} about {TOPICS[n % len(TOPICS)]}" + (" and zeppelins" if n == sizes.indexed // 2 else "")
            pending.append(index.note([ConversationInfo(id, AGENT if n % 2 else "app:other", at, at, 1, asked),
                                       ConversationMessage(id, 1, at, "user", asked),
                                       ConversationMessage(id, 1, at, "assistant", f"answer {n}")]))
            if len(pending) == 1000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        index.list(limit=1)  # every row copied into the tables before timing reads
        noted_s = perf_counter() - start

        def timed(**filters: Any) -> tuple[float, int]:
            runs = []
            for _ in range(5):
                began = perf_counter()
                found = len(index.list(**filters))
                runs.append((perf_counter() - began) * 1000)
            return median(runs), found

        listed, latest = timed()
        by_agent, _ = timed(agent=AGENT)
        searched, topical = timed(text="KUBERNETES", limit=sizes.indexed)
        rare, single = timed(text="zeppelins")
    return {
        "conversations": sizes.indexed,
        "noted_s": round(noted_s, 3),
        "list_ms": round(listed, 3),
        "list_agent_ms": round(by_agent, 3),
        "search_ms": round(searched, 3),
        "search_rare_ms": round(rare, 3),
        "found": {"list": latest, "search": topical, "search_rare": single},
    }


# -- memory ------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size from /proc/self/statm (0 where there is no /proc)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


@asynccontextmanager
async def counting(traced: bool) -> AsyncIterator[Callable[[], int]]:
    """Yields a reader of the memory in use: tracemalloc's count (traced) or the RSS."""
    gc.collect()
    if not traced:
        yield rss_bytes
        return
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


async def population(root: Path, kind: str, n: int, budget_s: float, traced: bool) -> dict[str, Any]:
    """Start up to `n` idle conversations (or bare processes) within `budget_s`; the memory they hold."""
    async with App(root=root) as app:
        await app.conversation(AGENT)  # one-time costs (first start, first history query) before counting
        app.node.spawn(idle_in_receive)
        await settle()
        tenth = max(n // 10, 1)
        marks: list[float] = []
        held: list[list[float]] = []  # [started so far, MB held by them]
        async with counting(traced) as used:
            before = used()
            start = perf_counter()
            deadline = start + budget_s
            reached = 0
            while reached < n and perf_counter() < deadline:
                if kind == "conversation":
                    await app.conversation(AGENT)
                else:
                    app.node.spawn(idle_in_receive)
                    if reached % 100 == 0:
                        await asyncio.sleep(0)
                reached += 1
                if reached % tenth == 0:
                    marks.append(perf_counter())
                    held.append([reached, round((used() - before) / 2**20, 2)])
            await settle()
            seconds = perf_counter() - start
            gc.collect()
            after = used()
            process = rss_bytes()
    per = (after - before) / reached
    edges = [start, *marks]
    return {
        "reached": reached,
        "projected": reached < n,
        "seconds": round(seconds, 3),
        "starts_per_s": round(reached / seconds),
        "starts_per_s_by_tenth": [round(tenth / (b - a)) for a, b in zip(edges, edges[1:], strict=False)],
        "mb_by_tenth": held,
        "bytes_per": round(per),
        "total_mb": round(per * n / 2**20, 1),
        "process_mb": round(process / 2**20, 1),
    }


def rss_population(root: Path, kind: str, n: int, budget_s: float) -> dict[str, Any]:
    """`population` by RSS growth, in a fresh interpreter: memory freed by earlier runs would hide it."""
    probe = subprocess.run(
        [sys.executable, __file__, "--rss-probe", str(root), kind, str(n), str(budget_s)],
        capture_output=True, text=True, check=True,
    )
    result: dict[str, Any] = json.loads(probe.stdout)
    return result


async def measure_memory(work: Path, sizes: Sizes) -> dict[str, Any]:
    traced = {kind: await population(make_app(work / f"traced-{kind}"), kind, sizes.traced_idle,
                                     sizes.memory_budget_s, traced=True)
              for kind in ("conversation", "bare_process")}
    rss = {kind: rss_population(make_app(work / f"rss-{kind}"), kind, sizes.idle, sizes.memory_budget_s)
           for kind in ("conversation", "bare_process")}
    conversation = traced["conversation"]
    return {
        "idle": sizes.idle,
        "traced_idle": sizes.traced_idle,
        "conversation": conversation,
        "bare_process": traced["bare_process"],
        "conversation_rss": rss["conversation"],
        "bare_process_rss": rss["bare_process"],
        "bytes_per_conversation": conversation["bytes_per"],
        "rss_bytes_per_conversation": rss["conversation"]["bytes_per"],
        "total_mb": conversation["total_mb"],
        "rss_total_mb": rss["conversation"]["total_mb"],
        "rss_process_mb": rss["conversation"]["process_mb"],
        "ratio_vs_bare_process": ratio(conversation["bytes_per"], traced["bare_process"]["bytes_per"]),
    }


# -- putting it together -----------------------------------------------------------------------


SECTIONS = ("turn", "tracing", "start", "long", "index", "memory")


async def run(sizes: Sizes, work: Path, sections: tuple[str, ...] = SECTIONS) -> dict[str, Any]:
    """The measurements of `sections` (every one by default), as the JSON-ready report; targets of those run."""
    report: dict[str, Any] = {}
    actual: dict[str, float] = {}
    if "turn" in sections:
        peer, report["pydantic_ai"] = pydantic_ai_contender()
        turn = report["turn"] = {
            "in_memory": await measure_turn(make_app(work / "turn-memory", in_memory=True), sizes, None),
            "journaled": await measure_turn(make_app(work / "turn"), sizes, peer),
        }
        actual["turn_overhead_in_memory_ms"] = turn["in_memory"]["overhead_fresh_ms"]
        actual["turn_overhead_journaled_ms"] = turn["journaled"]["overhead_fresh_ms"]
    if "tracing" in sections:
        tracing = report["tracing"] = await measure_all_tracing(work, sizes)
        actual["tracing_cost_ratio"] = tracing["journaled"]["cost_ratio"]
        actual["tracing_off_ratio"] = tracing["off_ratio"]
    if "start" in sections:
        start = report["start"] = await measure_start(make_app(work / "start"), sizes)
        actual["conversations_started_per_s"] = start["conversations_per_s"]
    if "long" in sections:
        long = report["long"] = await measure_long(make_app(work / "long"), sizes)
        actual["long_conversation_turn_ratio"] = long["ratio_late_vs_early"]
    if "index" in sections:
        index = report["index"] = await measure_index(make_app(work / "index"), sizes)
        actual["index_list_ms"] = index["list_ms"]
        actual["index_search_ms"] = index["search_ms"]
    if "memory" in sections:
        memory = report["memory"] = await measure_memory(work, sizes)
        actual["idle_conversations_rss_mb"] = memory["rss_process_mb"]
    targets = verdict(actual, {name: target for name, target in TARGETS.items() if name in actual})
    series = {}
    if "long" in sections:
        series["long"] = {"title": "a turn's overhead (less the model) as its conversation grows", "x": "turn",
                          "y": "ms per turn", "lines": {"wippy": report["long"]["overhead_ms_by_turn"]}}
    if "memory" in sections:
        memory = report["memory"]
        series["memory"] = {"title": "memory held by idle conversations (RSS growth)", "x": "idle conversations",
                            "y": "MB", "lines": {"conversations": memory["conversation_rss"]["mb_by_tenth"],
                                                 "bare processes": memory["bare_process_rss"]["mb_by_tenth"]}}
    if "memory" in sections and report["memory"]["conversation_rss"]["projected"]:
        targets["idle_conversations_rss_mb"]["met"] = False  # fewer were resident than the target names
    return {
        "mode": "quick" if sizes is QUICK else "full",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": machine(),
        "sizes": dataclasses.asdict(sizes),
        **report,
        "targets": targets,
        "all_met": all(t["met"] for t in targets.values()),
        "series": series,
    }


async def profile_turns(root: Path, turns: int) -> None:
    """cProfile of `turns` same-conversation turns; the top functions on stderr."""
    async with App(root=root) as app:
        app.agents.model_overrides["*"] = TimedModel().model
        conv = await app.conversation(AGENT)
        for _ in range(20):
            await conv.ask(QUESTION)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(turns):
            await conv.ask(QUESTION)
        profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats("wippy_agents", 30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (a few seconds)")
    parser.add_argument("--profile", action="store_true", help="profile same-conversation turns (stderr)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"the sections to run, comma-separated (default: all of {', '.join(SECTIONS)})")
    parser.add_argument("--rss-probe", nargs=4, metavar=("ROOT", "KIND", "N", "BUDGET_S"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_probe:
        root, kind, n, budget = args.rss_probe
        print(json.dumps(asyncio.run(population(Path(root), kind, int(n), float(budget), traced=False))))
        return
    with tempfile.TemporaryDirectory(prefix="wippy-agents-bench-") as work:
        if args.profile:
            asyncio.run(profile_turns(make_app(Path(work) / "profile"), 500))
            return
        sections = tuple(section.strip() for section in args.only.split(","))
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            parser.error(f"no section {', '.join(sorted(unknown))}; the sections are {', '.join(SECTIONS)}")
        report = asyncio.run(run(QUICK if args.quick else FULL, Path(work), sections))
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
