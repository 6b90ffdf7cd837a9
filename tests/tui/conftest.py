"""Running the TUI headless on a copy of the example app, and comparing screens with stored snapshots.

Typing and waiting for an answer go through the TUI's own widgets (`tui._chat`), found by class.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.app import App as TextualApp
from textual.pilot import Pilot

from wippy_agents import App
from wippy_agents.control import Attached, ControlServer, socket_path
from wippy_agents.llm import Model
from wippy_agents.testing import wait_until
from wippy_agents.tui import WippyApp
from wippy_agents.tui._chat import ChatInput, TurnView

SNAPSHOTS = Path(__file__).parent / "__snapshots__"
UPDATE = "WIPPY_UPDATE_SNAPSHOTS"

OpenTUI = Callable[..., AbstractAsyncContextManager[tuple[WippyApp, Pilot[None]]]]


@pytest.fixture(params=["hosted", "attached"])
def open_tui(example_app: Path, request: pytest.FixtureRequest) -> OpenTUI:
    """`async with open_tui(model=None, size=(100, 30), root=example_app, **app_args) as (app, pilot):`.

    Every test runs twice: with the TUI hosting the node, and attached to it
    through its control socket, as `wippy chat` attaches to a node `wippy run`
    serves; it must look and behave the same. Either way `app.application` is
    the node, for the test to act on it.
    """
    attached = request.param == "attached"

    @asynccontextmanager
    async def running(model: Model | None = None, size: tuple[int, int] = (100, 30), root: Path = example_app,
                      **app_args: Any) -> AsyncIterator[tuple[WippyApp, Pilot[None]]]:
        async with App(root=root, control=ControlServer(root) if attached else None) as wippy:
            if model is not None:
                wippy.agents.model_overrides["*"] = model
            if attached:
                app = WippyApp(Attached(socket_path(root)), config=wippy.config, **app_args)
                assert app.application is None
                app.application = wippy
            else:
                app = WippyApp(wippy, **app_args)
            async with app.run_test(size=size) as pilot:
                await pilot.pause()
                yield app, pilot

    return running


Send = Callable[[Pilot[None], str], Awaitable[TurnView]]


async def _send(pilot: Pilot[None], text: str) -> TurnView:
    screen = pilot.app.screen
    before = len(screen.query(TurnView))
    screen.query_one(ChatInput).insert(text)
    await pilot.press("enter")
    await wait_until(lambda: len(screen.query(TurnView)) > before and screen.query(TurnView).last().done)
    await wait_until(lambda: not any(worker.is_running for worker in pilot.app.workers if worker.group == "turn"))
    await pilot.pause()
    return screen.query(TurnView).last()


@pytest.fixture
def send() -> Send:
    """`await send(pilot, text)`: type `text` into the chat input, press enter, wait for the turn to end; its view."""
    return _send


def screen_text(svg: str) -> list[str]:
    """The characters on screen, line by line, out of a Textual SVG screenshot (for a readable diff)."""
    lines: dict[float, list[tuple[float, str]]] = {}
    for x, y, chars in re.findall(r'<text [^>]*?x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        lines.setdefault(float(y), []).append((float(x), html.unescape(chars).replace("\xa0", " ")))
    return ["".join(chars for _, chars in sorted(parts)).rstrip() for _, parts in sorted(lines.items())]


@pytest.fixture
def visible() -> Callable[[TextualApp[Any]], str]:
    """`visible(app)`: the characters on the app's screen now, lines joined."""
    return lambda app: "\n".join(screen_text(app.export_screenshot()))


@pytest.fixture
def snapshot(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[TextualApp[Any]], None]:
    """Compare the app's screen with `__snapshots__/<test name>.svg`; `WIPPY_UPDATE_SNAPSHOTS=1` (re)writes it.

    (pytest-textual-snapshot does the same, but it pins syrupy 4.8, which refuses pytest 9.)
    """

    def check(app: TextualApp[Any]) -> None:
        name = re.sub(r"\[(hosted|attached)\]$", "", re.sub(r"(?<=\[)(hosted|attached)-", "", request.node.name))
        expected_path = SNAPSHOTS / f"{name}.svg"  # hosting or attached, the TUI shows the same
        actual = app.export_screenshot()
        if os.environ.get(UPDATE):
            SNAPSHOTS.mkdir(exist_ok=True)
            expected_path.write_text(actual, encoding="utf-8")
            return
        assert expected_path.exists(), f"no snapshot {expected_path.name} yet: run with {UPDATE}=1 and review it"
        expected = expected_path.read_text(encoding="utf-8")
        if actual != expected:
            (tmp_path / expected_path.name).write_text(actual, encoding="utf-8")
            diff = "\n".join(f"- {a}\n+ {b}" for a, b in zip(screen_text(expected), screen_text(actual), strict=False)
                             if a != b)
            pytest.fail(f"the screen differs from {expected_path.name} (the new one is in {tmp_path}); "
                        f"{UPDATE}=1 accepts it.\n{diff or '(same characters, other colours or styles)'}")

    return check
