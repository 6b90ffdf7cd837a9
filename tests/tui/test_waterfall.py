"""The waterfall of a turn: its steps read from the journal, each a row with its bar, time, tokens and cost.

Driven with Textual's pilot on a copy of the example app and its offline model,
hosting the node and attached to it (`open_tui`); the rows are the TUI's own
widgets (`tui._waterfall.StepRow`), found by class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from wippy_agents import App
from wippy_agents.testing import wait_until
from wippy_agents.tui import WippyApp
from wippy_agents.tui._chat import TurnView
from wippy_agents.tui._chat_screen import ChatScreen
from wippy_agents.tui._format import duration, in_out
from wippy_agents.tui._waterfall import StepRow, WaterfallScreen

ADD = '/call tools.calc:add {"a": 2, "b": 3}'


async def opened(app: WippyApp, pilot: Pilot[None]) -> WaterfallScreen:
    """The waterfall screen on top, once it has read the turn's steps."""
    await wait_until(lambda: isinstance(app.screen, WaterfallScreen) and app.screen.steps is not None)
    await pilot.pause()
    assert isinstance(app.screen, WaterfallScreen)
    return app.screen


async def test_w_on_a_turn_shows_its_model_tool_model_steps_with_times_and_tokens(open_tui: Any, send: Any,
                                                                                   visible: Any) -> None:
    async with open_tui(size=(120, 30)) as (app, pilot):
        view = await send(pilot, ADD)
        view.focus()
        await pilot.press("w")
        screen = await opened(app, pilot)
        rows = list(screen.query(StepRow))
        assert [(row.span.kind, row.span.label, row.span.ok) for row in rows] == [
            ("model", "wippy-offline", True), ("tool", "tools.calc:add", True), ("model", "wippy-offline", True)]
        assert screen.steps is not None and screen.steps.task == view.turn_task
        lines = visible(app).splitlines()
        for row in rows:  # each on a line of its own: label, bar, duration, and a model call's tokens
            usage = row.span.usage
            shown = [row.span.label, "█", duration(row.span.seconds), *([in_out(usage)] if usage is not None else [])]
            assert any(all(part in line for part in shown) for line in lines), shown
            assert (usage is not None and usage.total_tokens > 0) == (row.span.kind == "model")
        total = next(line for line in lines if "total: 3 steps" in line)
        assert in_out(screen.steps.usage) in total and duration(screen.steps.seconds) in total
        await pilot.press("escape")
        await wait_until(lambda: isinstance(app.screen, ChatScreen))


async def test_a_turn_of_an_earlier_session_shows_from_the_palette_with_a_failed_call_marked(
        open_tui: Any, example_app: Path, visible: Any) -> None:
    async with App(root=example_app) as earlier:  # the session before: the TUI never saw this turn's events
        conversation = await earlier.conversation("app:assistant")
        await conversation.ask('/call tools.calc:add {"a": "two"}')
    async with open_tui(conversation=conversation.id) as (app, pilot):
        await wait_until(lambda: len(app.screen.query(TurnView)) == 1)
        await pilot.press("ctrl+p")
        await pilot.press(*"waterfall")
        await wait_until(lambda: "The steps of the turn in focus" in visible(app))
        await pilot.press("enter")
        screen = await opened(app, pilot)
        rows = list(screen.query(StepRow))
        assert [(row.span.kind, row.span.ok) for row in rows] == [("model", True), ("tool", False), ("model", True)]
        assert "✗ tools.calc:add" in visible(app)
        assert rows[1].span.error is not None and "invalid arguments" in rows[1].span.error
