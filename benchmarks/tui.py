"""TUI benchmark: a 5,000-token answer streamed into the chat, and the TUI starting on an app of 100 agents.

Both run headless (`WippyApp.run_test()`), so they measure the app's own work
(layout, Markdown parsing, compositing), not a terminal's drawing.

- stream: a model sends `tokens` small text deltas of a Markdown answer (headings,
  paragraphs, lists, code), yielding to the event loop after each one as a network
  stream would, as fast as the UI takes them. `seconds` runs from pressing enter to
  the answer fully rendered (the turn's usage line shown, the Markdown caught up, the
  screen refreshed). `longest_gap_ms` is the longest the event loop went without
  waking a ticker that asks to run every 5 ms: no frame can be drawn during a gap.
- markdown_stream: the peer, once: the same pieces written into Textual's own
  `Markdown` widget through `Markdown.get_stream` in a bare app (no node, no
  agent), timed the same way. It makes a widget of every Markdown block, and every
  frame's layout visits them all; the chat renders an answer in a few widgets instead.
- startup: a temporary app with `agents` agent entries; `boot_ms` is `App(root=...)`
  booting it, `first_screen_ms` the app from start until the sidebar lists every
  agent, `total_ms` both: what a person waits after `wippy chat` once Python has
  imported the package (`import_ms`, measured in a fresh interpreter, is the rest).
  The first boot records the registry in a new state file; the second reads it back.

Prints ONE JSON object:

    mode, python, textual, machine{cores, platform, arch}, sizes{tokens, runs, agents}
    stream{deltas, chars, seconds{n, p50_ms, ...}, seconds_p50, longest_gap_ms, gaps_over_100ms}
    markdown_stream{seconds, longest_gap_ms, gaps_over_100ms}
    startup{first_boot|second_boot: {boot_ms, first_screen_ms, total_ms}, import_ms}
    targets{stream_seconds, stream_longest_gap_ms, startup_total_ms: {target, actual, met}}, all_met

    python benchmarks/tui.py            # full run, about 20 s on 2 cores
    python benchmarks/tui.py --quick    # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path
from time import perf_counter

from _timing import Timings, machine
from textual.app import App as TextualApp
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.pilot import Pilot
from textual.widgets import Markdown, OptionList

from wippy_agents import App
from wippy_agents.llm import (
    ChatMessage,
    Model,
    Response,
    ResponseDone,
    Settings,
    StreamEvent,
    TextDelta,
    ToolDefinition,
    Usage,
)
from wippy_agents.testing import wait_until, write_file
from wippy_agents.tui import WippyApp
from wippy_agents.tui._chat import ChatInput, MarkdownText, TurnView

STREAM_SECONDS = 2.0
GAP_MS = 100.0
STARTUP_MS = 1000.0
TICK = 0.005
SIZE = (100, 30)

SECTION = """\
## Step {n}: what to do

Streaming a long answer must keep the interface responsive, so the text arrives in small pieces and
the **Markdown** widget parses only the block being written. Each piece is a few characters, like a
model's tokens, and the view scrolls to follow it unless the person scrolled away.

- read the request and the tool results so far
- decide the next step, and say *why* in one line
- call the tool with `arguments` that match its schema

```python
def step_{n}(state: dict[str, int]) -> int:
    return sum(state.values()) + {n}
```

"""


def answer(tokens: int) -> list[str]:
    """A Markdown answer cut into `tokens` pieces: words with their trailing space or newline."""
    pieces: list[str] = []
    n = 0
    while len(pieces) < tokens:
        n += 1
        pieces += re.findall(r"\S+\s*|\s+", SECTION.format(n=n))
    return pieces[:tokens]


class StreamingModel(Model):
    """Sends its pieces one delta at a time, yielding to the event loop between them."""

    provider = "benchmark"

    def __init__(self, pieces: list[str]) -> None:
        super().__init__("streaming")
        self.pieces = pieces

    async def _stream(self, messages: list[ChatMessage], tools: list[ToolDefinition],
                      settings: Settings) -> AsyncIterator[StreamEvent]:
        for piece in self.pieces:
            yield TextDelta(text=piece)
            await asyncio.sleep(0)
        yield ResponseDone(response=Response(text="".join(self.pieces),
                                             usage=Usage(input_tokens=10, output_tokens=len(self.pieces))))


async def ticker(gaps: list[float], stop: asyncio.Event) -> None:
    """Record how long each 5 ms sleep really took: the event loop's longest stall is the longest gap."""
    last = perf_counter()
    while not stop.is_set():
        await asyncio.sleep(TICK)
        now = perf_counter()
        gaps.append(now - last)
        last = now


def write_app(root: Path, agents: int) -> Path:
    entries = "".join(f"""
  - name: agent_{i:03}
    kind: agent
    meta: {{title: Agent {i}, description: "Agent number {i}, one of many in the sidebar."}}
    model: app:offline
    max_steps: 4
""" for i in range(agents))
    write_file(root, "wippy.yaml", "name: bench\nwatch: false\n")
    write_file(root, "registry/_index.yaml", f"""
namespace: app
entries:
  - name: offline
    kind: model
    provider: offline
    model: wippy-offline
{entries}""")
    return root


async def one_answer(app: WippyApp, pilot: Pilot[None], text: str) -> tuple[float, list[float]]:
    """Ask in a new conversation; seconds until the answer is on screen, and the ticker's gaps meanwhile."""
    await pilot.press("ctrl+n")
    await pilot.pause()
    app.screen.query_one(ChatInput).insert("write the long answer")
    stop, gaps = asyncio.Event(), []
    tick = asyncio.create_task(ticker(gaps, stop))
    start = perf_counter()
    await pilot.press("enter")
    await wait_until(lambda: app.screen.query(TurnView), timeout=60)
    view = app.screen.query_one(TurnView)
    await wait_until(lambda: view.done, timeout=60)
    await pilot.pause()
    seconds = perf_counter() - start
    stop.set()
    await tick
    assert "".join(part.source for part in view.body.query(MarkdownText)) == text
    return seconds, gaps


async def stream(root: Path, tokens: int, runs: int) -> dict[str, object]:
    pieces = answer(tokens)
    text = "".join(pieces)
    timings, gaps = Timings(), []
    async with App(root=root) as wippy:
        wippy.agents.model_overrides["*"] = StreamingModel(pieces)
        app = WippyApp(wippy)
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(runs):
                seconds, run_gaps = await one_answer(app, pilot, text)
                timings.add(seconds)
                gaps += run_gaps
    longest = max(gaps) * 1000
    return {"deltas": len(pieces), "chars": len(text), "seconds": timings.summary(),
            "seconds_p50": round(timings.ms() / 1000, 3), "longest_gap_ms": round(longest, 1),
            "gaps_over_100ms": sum(gap * 1000 > GAP_MS for gap in gaps)}


class MarkdownStreamApp(TextualApp[None]):
    """The peer: Textual's own `Markdown` widget fed through `Markdown.get_stream`, with no node behind it."""

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown()


async def markdown_stream(tokens: int) -> dict[str, object]:
    pieces = answer(tokens)
    app, gaps, stop = MarkdownStreamApp(), [], asyncio.Event()
    async with app.run_test(size=SIZE) as pilot:
        app.query_one(VerticalScroll).anchor()
        markdown = app.query_one(Markdown)
        stream = Markdown.get_stream(markdown)
        tick = asyncio.create_task(ticker(gaps, stop))
        start = perf_counter()
        for piece in pieces:
            await stream.write(piece)  # yields to the loop after each piece, as our model does
        await stream.stop()
        await pilot.pause()
        seconds = perf_counter() - start
        stop.set()
        await tick
        assert markdown.source == "".join(pieces)
    return {"seconds": round(seconds, 3), "longest_gap_ms": round(max(gaps) * 1000, 1),
            "gaps_over_100ms": sum(gap * 1000 > GAP_MS for gap in gaps)}


async def startup(root: Path, agents: int) -> dict[str, float]:
    start = perf_counter()
    async with App(root=root) as wippy:
        booted = perf_counter()
        app = WippyApp(wippy)
        async with app.run_test(size=SIZE):
            listing = app.screen.query_one("#agents", OptionList)
            await wait_until(lambda: listing.option_count >= agents)
            shown = perf_counter()
    return {"boot_ms": round((booted - start) * 1000, 1), "first_screen_ms": round((shown - booted) * 1000, 1),
            "total_ms": round((shown - start) * 1000, 1)}


def import_ms() -> float:
    """Milliseconds a fresh interpreter takes to import what `wippy chat` needs."""
    code = "import time; t = time.perf_counter(); import wippy_agents.cli, wippy_agents.tui; "\
           "print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return round(float(done.stdout) * 1000, 1)


async def run(tokens: int, runs: int, agents: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        streamed = await stream(write_app(Path(folder) / "stream", 1), tokens, runs)
        peer = await markdown_stream(tokens)
        root = write_app(Path(folder) / "agents", agents)
        boots = {"first_boot": await startup(root, agents), "second_boot": await startup(root, agents)}
    total = max(boot["total_ms"] for boot in boots.values())
    seconds, gap = streamed["seconds_p50"], streamed["longest_gap_ms"]
    assert isinstance(seconds, float) and isinstance(gap, float)
    targets = {
        "stream_seconds": {"target": f"< {STREAM_SECONDS:g}", "actual": seconds, "met": seconds < STREAM_SECONDS},
        "stream_longest_gap_ms": {"target": f"< {GAP_MS:g}", "actual": gap, "met": gap < GAP_MS},
        "startup_total_ms": {"target": f"< {STARTUP_MS:g}", "actual": total, "met": total < STARTUP_MS},
    }
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "textual": version("textual"),
        "machine": machine(),
        "sizes": {"tokens": tokens, "runs": runs, "agents": agents},
        "stream": streamed,
        "markdown_stream": peer,
        "startup": {**boots, "import_ms": import_ms()},
        "targets": targets,
        "all_met": all(target["met"] for target in targets.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    tokens, runs, agents = (500, 1, 20) if args.quick else (5000, 5, 100)
    report = asyncio.run(run(tokens, runs, agents))
    print(json.dumps({"mode": "quick" if args.quick else "full", **report}, indent=2))


if __name__ == "__main__":
    main()
