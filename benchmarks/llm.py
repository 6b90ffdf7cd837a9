"""Model-layer benchmarks: the time `wippy_agents.llm` adds around a model's answer, beside a bare floor and the SDK.

Measures, in one run, the per-call time of:

- scripted: `await model.complete([UserMessage])` and `async for event in model.stream(...)`
  on a `testing.ScriptedModel` answering a prepared `Response` (with pricing set, so the
  whole framework path runs: settings merge, stream events, pricing), beside the floor of
  constructing the same `Response` (and its stream events) directly in a coroutine;
- loopback: an OpenAI-compatible HTTP server on 127.0.0.1 (a `ThreadingHTTPServer` in a
  background thread of this process, keep-alive, one fixed chat completion, or the same
  answer as server-sent events) called by the official `openai.AsyncOpenAI` SDK directly
  (`chat.completions.create`, and with `stream=True` iterating the chunks), beside our
  `openai-compatible` provider from `load_model` (`complete`, and `stream`).

Contenders of one figure take turns in blocks (A B, then B A, ...), so drift in CPU
speed hits them alike; every call is timed by itself, and the figures are medians of
the calls. "added" is ours minus the floor (or the SDK) at the median.

Prints ONE JSON object. Every latency block has the same shape, from the one timing
helper (`Timings.summary` of `_timing.py`): `{"n", "p50_ms", "p95_ms", "min_ms", "max_ms", "mean_ms"}`. Keys:

    mode, python, openai, machine{cores, platform, arch}
    sizes{rounds, scripted_batch, loopback_batch}
    scripted{floor_complete, complete, added_complete_ms, floor_stream, stream, added_stream_ms,
             ratio_complete_vs_floor, ratio_stream_vs_floor}
    loopback{sdk_complete, complete, added_complete_ms, sdk_stream, stream, added_stream_ms,
             ratio_complete_vs_sdk, ratio_stream_vs_sdk, server}
    targets{<name>: {target, actual, met}}, all_met

The same helper (`Contender`, `Timings`, `interleaved`) times `benchmarks/agents.py`.

    python benchmarks/llm.py          # full run, well under a minute on 2 cores
    python benchmarks/llm.py --quick  # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from time import perf_counter
from typing import Any

import openai
from _timing import Timings, machine

from wippy_agents.llm import Response, ResponseDone, StreamEvent, Usage, UserMessage, load_model
from wippy_agents.llm._messages import response_events
from wippy_agents.registry import ModelSpec, Pricing
from wippy_agents.testing import ScriptedModel

TARGET_ADDED_MS = 0.3
TARGETS: dict[str, tuple[str, float]] = {
    "scripted_complete_added_ms": ("<", TARGET_ADDED_MS),
    "scripted_stream_added_ms": ("<", TARGET_ADDED_MS),
    "loopback_complete_added_ms": ("<", TARGET_ADDED_MS),
    "loopback_stream_added_ms": ("<", TARGET_ADDED_MS),
}

TEXT = "The sum of one and two is three, as you asked."
USAGE = Usage(input_tokens=12, output_tokens=11, cached_tokens=4)
PRICING = Pricing(input=0.4, output=1.6, cached=0.1)
MESSAGES = [UserMessage(content="What is 1 + 2?")]


@dataclass(frozen=True)
class Sizes:
    """How many interleaved rounds, and how many calls each contender makes per round."""

    rounds: int
    scripted_batch: int
    loopback_batch: int


FULL = Sizes(rounds=10, scripted_batch=2_000, loopback_batch=100)
QUICK = Sizes(rounds=3, scripted_batch=300, loopback_batch=15)


# -- contenders taking turns (benchmarks/agents.py uses them too) -----------------------


@dataclass(frozen=True)
class Contender:
    """One thing to time: `call()` is one operation; `prepare(n)` (untimed) readies the next `n` calls."""

    key: str
    call: Callable[[], Awaitable[object]]
    prepare: Callable[[int], Awaitable[None]] | None = None


async def interleaved(contenders: list[Contender], rounds: int, batch: int, warm_up: int = 0) -> dict[str, Timings]:
    """Time `batch` calls of each contender per round, taking turns (forwards, then backwards) for `rounds` rounds.

    Every call is timed by itself; `warm_up` untimed calls of each come first.
    """
    timings = {c.key: Timings() for c in contenders}
    for c in contenders:
        if c.prepare is not None:
            await c.prepare(warm_up)
        for _ in range(warm_up):
            await c.call()
    for round_ in range(rounds):
        for c in contenders if round_ % 2 == 0 else contenders[::-1]:
            if c.prepare is not None:
                await c.prepare(batch)
            gc.collect()
            samples, call = timings[c.key].samples, c.call
            for _ in range(batch):
                start = perf_counter()
                await call()
                samples.append(perf_counter() - start)
    return timings


def added_ms(ours: Timings, base: Timings) -> float:
    """What ours adds to `base` per call, at the medians."""
    return round(ours.ms() - base.ms(), 4)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3)


def verdict(actual: dict[str, float], targets: dict[str, tuple[str, float]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (op, target) in targets.items():
        value = actual[name]
        met = {"<": value < target, "<=": value <= target, ">=": value >= target}[op]
        out[name] = {"target": f"{op} {target:g}", "actual": value, "met": met}
    return out


# -- scripted: the framework path around a test double ------------------------------------


async def measure_scripted(sizes: Sizes) -> dict[str, Any]:
    prepared = Response(text=TEXT, usage=USAGE, model="scripted")
    model = ScriptedModel(name="scripted")
    model.pricing = PRICING

    async def refill(n: int) -> None:
        model.requests.clear()
        model.script.clear()
        model.add(*[prepared] * n)

    async def floor_complete() -> Response:
        return Response(text=TEXT, usage=USAGE, model="scripted")

    async def complete() -> Response:
        return await model.complete(MESSAGES)

    async def floor_events() -> AsyncIterator[StreamEvent]:
        for event in response_events(Response(text=TEXT, usage=USAGE, model="scripted")):
            yield event

    async def floor_stream() -> None:
        async for _ in floor_events():
            pass

    async def stream() -> None:
        async for event in model.stream(MESSAGES):
            if isinstance(event, ResponseDone):
                assert event.response.cost_usd > 0

    await refill(1)
    checked = await complete()
    assert checked.text == TEXT and checked.cost_usd > 0, checked
    runs = await interleaved(
        [
            Contender("floor_complete", floor_complete),
            Contender("complete", complete, refill),
            Contender("floor_stream", floor_stream),
            Contender("stream", stream, refill),
        ],
        sizes.rounds, sizes.scripted_batch, warm_up=200,
    )
    return {
        "floor_complete": runs["floor_complete"].summary(4),
        "complete": runs["complete"].summary(4),
        "added_complete_ms": added_ms(runs["complete"], runs["floor_complete"]),
        "floor_stream": runs["floor_stream"].summary(4),
        "stream": runs["stream"].summary(4),
        "added_stream_ms": added_ms(runs["stream"], runs["floor_stream"]),
        "ratio_complete_vs_floor": ratio(runs["complete"].ms(), runs["floor_complete"].ms()),
        "ratio_stream_vs_floor": ratio(runs["stream"].ms(), runs["floor_stream"].ms()),
    }


# -- loopback: an OpenAI-compatible server on 127.0.0.1 ----------------------------------------


def completion_body() -> bytes:
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": USAGE.input_tokens, "completion_tokens": USAGE.output_tokens,
                  "total_tokens": USAGE.total_tokens, "prompt_tokens_details": {"cached_tokens": USAGE.cached_tokens}},
    }).encode()


def stream_body() -> bytes:
    """The same answer as server-sent events: a role chunk, one chunk per word, a finish chunk, a usage chunk."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "m"}
    words = TEXT.split(" ")
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": word + (" " if i < len(words) - 1 else "")} for i, word in enumerate(words)]
    chunks = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({**base, "choices": [], "usage": json.loads(completion_body())["usage"]})
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


class ChatHandler(BaseHTTPRequestHandler):
    """POST /v1/chat/completions: the fixed completion, or its event stream when the body asks for one."""

    protocol_version = "HTTP/1.1"  # keep-alive: the clients reuse their connection, as they do with real servers
    disable_nagle_algorithm = True
    COMPLETION = completion_body()
    STREAM = stream_body()

    def do_POST(self) -> None:  # the name http.server dispatches on
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        streaming = json.loads(body).get("stream", False)
        payload, kind = (self.STREAM, "text/event-stream") if streaming else (self.COMPLETION, "application/json")
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def loopback_server() -> Iterator[int]:
    """A chat-completions server on 127.0.0.1 in a background thread; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def measure_loopback(sizes: Sizes) -> dict[str, Any]:
    with loopback_server() as port:
        base_url = f"http://127.0.0.1:{port}/v1"
        sdk = openai.AsyncOpenAI(api_key="not-needed", base_url=base_url, max_retries=2)
        model = load_model(ModelSpec(provider="openai-compatible", model="m", base_url=base_url, pricing=PRICING),
                           environ={})
        wire_messages: list[Any] = [{"role": "user", "content": MESSAGES[0].content}]

        async def sdk_complete() -> None:
            completion = await sdk.chat.completions.create(model="m", messages=wire_messages)
            assert completion.choices[0].message.content == TEXT

        async def complete() -> None:
            response = await model.complete(MESSAGES)
            assert response.text == TEXT

        async def sdk_stream() -> None:
            chunks = await sdk.chat.completions.create(model="m", messages=wire_messages, stream=True,
                                                       stream_options={"include_usage": True})
            async with chunks:
                async for _ in chunks:
                    pass

        async def stream() -> None:
            async for event in model.stream(MESSAGES):
                if isinstance(event, ResponseDone):
                    assert event.response.text == TEXT and event.response.usage == USAGE

        try:
            runs = await interleaved(
                [
                    Contender("sdk_complete", sdk_complete),
                    Contender("complete", complete),
                    Contender("sdk_stream", sdk_stream),
                    Contender("stream", stream),
                ],
                sizes.rounds, sizes.loopback_batch, warm_up=20,
            )
        finally:
            await sdk.close()
            await model.aclose()
    return {
        "sdk_complete": runs["sdk_complete"].summary(4),
        "complete": runs["complete"].summary(4),
        "added_complete_ms": added_ms(runs["complete"], runs["sdk_complete"]),
        "sdk_stream": runs["sdk_stream"].summary(4),
        "stream": runs["stream"].summary(4),
        "added_stream_ms": added_ms(runs["stream"], runs["sdk_stream"]),
        "ratio_complete_vs_sdk": ratio(runs["complete"].ms(), runs["sdk_complete"].ms()),
        "ratio_stream_vs_sdk": ratio(runs["stream"].ms(), runs["sdk_stream"].ms()),
        "server": "http.server.ThreadingHTTPServer on 127.0.0.1, in a thread of this process, keep-alive",
    }


# -- putting it together ------------------------------------------------------------------------


async def run(sizes: Sizes) -> dict[str, Any]:
    """Every measurement, as the JSON-ready report."""
    scripted = await measure_scripted(sizes)
    loopback = await measure_loopback(sizes)
    actual = {
        "scripted_complete_added_ms": scripted["added_complete_ms"],
        "scripted_stream_added_ms": scripted["added_stream_ms"],
        "loopback_complete_added_ms": loopback["added_complete_ms"],
        "loopback_stream_added_ms": loopback["added_stream_ms"],
    }
    targets = verdict(actual, TARGETS)
    return {
        "mode": "quick" if sizes is QUICK else "full",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "openai": version("openai"),
        "machine": machine(),
        "sizes": {"rounds": sizes.rounds, "scripted_batch": sizes.scripted_batch,
                  "loopback_batch": sizes.loopback_batch},
        "scripted": scripted,
        "loopback": loopback,
        "targets": targets,
        "all_met": all(t["met"] for t in targets.values()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (a few seconds)")
    args = parser.parse_args(argv)
    report = asyncio.run(run(QUICK if args.quick else FULL))
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
