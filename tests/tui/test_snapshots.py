"""The main screens as they look, compared with reviewed SVG snapshots (`WIPPY_UPDATE_SNAPSHOTS=1` rewrites them).

Each is made deterministic: a small app of its own (the snapshots do not change
whenever the example app does), a fixed terminal size and conversation id, no
clock in view, tool durations masked, the input's cursor not blinking. Those last two are
settings of the TUI's own widgets (`tui._chat`), patched for the test. The waterfall
gets the turn's real steps with steady times in place of the measured ones (which place
its bars), through its link (`tui._link.NodeLink.steps`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable

from wippy_agents.agents import TurnSteps
from wippy_agents.testing import wait_until, write_file
from wippy_agents.tui import _chat
from wippy_agents.tui._chat import ChatInput, TurnView
from wippy_agents.tui._link import NodeLink
from wippy_agents.tui._waterfall import WaterfallScreen

REGISTRY = """
namespace: app
entries:
  - name: offline
    kind: model
    provider: offline
    model: wippy-offline
  - name: assistant
    kind: agent
    meta: {title: Assistant, description: Adds numbers and asks the researcher.}
    model: app:offline
    tools: ["tools.*:*"]
    delegates: [app:researcher]
  - name: researcher
    kind: agent
    meta: {title: Researcher, description: Looks things up.}
    model: app:offline
"""

CALC = '''
def add(a: float, b: float) -> float:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b
'''


@pytest.fixture
def app_root(tmp_path: Path) -> Path:
    root = tmp_path / "snapshots"
    write_file(root, "wippy.yaml", "name: snapshots\n")
    write_file(root, "registry/_index.yaml", REGISTRY)
    write_file(root, "tools/calc.py", CALC)
    return root


@pytest.fixture(autouse=True)
def steady(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_chat, "seconds", lambda value: "0.1s")
    monkeypatch.setattr(ChatInput, "cursor_blink", False)


@pytest.mark.parametrize("size", [(100, 30), (80, 24)])
async def test_chat_after_a_tool_call(open_tui: Any, app_root: Path, send: Any, snapshot: Any, visible: Any,
                                      size: tuple[int, int]) -> None:
    async with open_tui(size=size, root=app_root, conversation="snapshot") as (app, pilot):
        await send(pilot, '/call tools.calc:add {"a": 2, "b": 3}')
        await wait_until(lambda: "done in 0.1s" in visible(app), poll=0.05)  # the tool block's new title is laid out
        snapshot(app)


async def test_the_waterfall_of_a_turn_with_a_tool_call(open_tui: Any, app_root: Path, send: Any, snapshot: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    read = NodeLink.steps

    async def steady_steps(link: NodeLink, task: str) -> TurnSteps:
        """The turn's steps, each starting a quarter second after the last began and taking half a second."""
        steps = await read(link, task)
        return steps.model_copy(update={"steps": tuple(
            span.model_copy(update={"offset": 0.25 + 0.25 * number, "seconds": 0.5})
            for number, span in enumerate(steps.steps))})

    monkeypatch.setattr(NodeLink, "steps", steady_steps)
    async with open_tui(root=app_root, conversation="snapshot") as (app, pilot):
        await send(pilot, '/call tools.calc:add {"a": 2, "b": 3}')
        app.screen.query_one(TurnView).focus()
        await pilot.press("w")
        await wait_until(lambda: isinstance(app.screen, WaterfallScreen) and app.screen.steps is not None)
        await pilot.pause()
        snapshot(app)


async def test_activity_with_a_refused_file(open_tui: Any, app_root: Path, snapshot: Any) -> None:
    write_file(app_root, "registry/broken/_index.yaml", "namespace: app.broken\nentries:\n  - name: x\n")
    async with open_tui(root=app_root) as (app, pilot):
        await pilot.press("f3")
        await pilot.pause()
        snapshot(app)


async def test_processes(open_tui: Any, app_root: Path, snapshot: Any) -> None:
    async with open_tui(root=app_root) as (app, pilot):
        await pilot.press("f4")
        await wait_until(lambda: app.screen.query_one(DataTable).row_count > 0)
        await pilot.pause()
        snapshot(app)


async def test_help(open_tui: Any, app_root: Path, snapshot: Any) -> None:
    async with open_tui(root=app_root) as (app, pilot):
        await pilot.press("f1")
        await pilot.pause()
        snapshot(app)
