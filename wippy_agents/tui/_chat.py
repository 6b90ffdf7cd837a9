"""The conversation view: user messages, agent turns streaming as Markdown, tool blocks, delegated work, input.

One `TurnBody` renders the events of a turn as they come (`conv.stream(...)`) and,
for a past turn, the same events rebuilt from the journal (`turn_events`), so a
reopened conversation looks as it did live. A delegate's events nest inside the
tool block of the call that asked it, as another `TurnBody`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable

from rich.markdown import Markdown as RichMarkdown
from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.geometry import Size
from textual.markup import escape
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Button, Collapsible, Static, TextArea

from .._display import tokens
from ..agents import (
    AgentEvent,
    ApprovalRequested,
    Delegated,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnDone,
    TurnFailed,
    TurnStarted,
    UsageReport,
)
from ..llm import Usage
from ._format import answer_footer, arguments, seconds
from ._link import PastTurn

BLOCKS = re.compile(r"(?<=\n\n)")
"""Where a top-level Markdown block may begin: after a blank line."""
CHUNK = 600
"""Characters of text after which the next top-level Markdown block goes into a new widget."""
FRAME = 1 / 60
"""Seconds between redraws of text being streamed."""
PAGE = 20
"""Past turns mounted at a time: a long conversation opens fast and loads older turns on request."""


async def _no_events(task: str) -> list[AgentEvent]:
    return []


class UserMessage(Static):
    DEFAULT_CSS = """
    UserMessage {
        margin: 1 0 0 0;
        padding: 0 1;
        border-left: thick $accent;
        background: $boost;
    }
    """

    def __init__(self, text: str) -> None:
        super().__init__(Text(text), classes="user")


class ToolBlock(Collapsible):
    """One tool call: the tool, its arguments, its result or error and how long it took."""

    DEFAULT_CSS = """
    ToolBlock { margin: 0 0 0 0; padding-bottom: 0; }
    ToolBlock CollapsibleTitle { width: 1fr; }  /* an auto width was measured once and now and then kept */
    ToolBlock.-error CollapsibleTitle { color: $error; }
    ToolBlock .result { margin-top: 1; }
    ToolBlock.-error .result { color: $error; }
    """

    def __init__(self, event: ToolStarted) -> None:
        self.tool = event.tool
        self.result = Static("", classes="result")
        self.delegate: TurnBody | None = None
        super().__init__(Static(Text(arguments(event.arguments)), classes="arguments"), self.result,
                         title=self.label("…", "running"))

    def label(self, mark: str, status: str) -> str:
        return escape(f"{mark} {self.tool} · {status}")

    def finish(self, event: ToolFinished) -> None:
        failed = event.is_error
        self.title = self.label("✗" if failed else "✓", f"{'failed' if failed else 'done'} in {seconds(event.seconds)}")
        self.set_class(failed, "-error")
        self.result.update(Text(event.result))

    def waiting(self, event: ApprovalRequested) -> None:
        """The call waits for a person: say so where the result will be, until `finish` replaces it."""
        self.title = self.label("⏸", "waiting for your approval (f5)")
        self.result.update(Text(f"approval {event.approval}: {event.summary}", "italic"))
        self.collapsed = False

    async def delegated(self, event: Delegated) -> None:
        """Show a delegate's event inside this block (opened, so the nested work is seen as it happens)."""
        if self.delegate is None:
            self.delegate = TurnBody(classes="delegate")
            self.collapsed = False
            contents = self.query_one(Collapsible.Contents)
            await contents.mount(Static(Text(f"↳ {event.agent} works on it", "italic")), self.delegate,
                                 before=self.result)
        await self.delegate.handle(event.event)


class MarkdownText(Widget):
    """Markdown rendered by Rich into lines once per change (and width), however fast text is appended.

    Textual's `Markdown` widget makes a widget of every block, and every frame's
    layout visits them all: a streamed 5,000-token answer stalls the screen for
    most of a second at a time (benchmarks/tui.py measures both). Here a long
    answer is a few of these, each short, so re-rendering the one being written
    stays cheap; the others keep their lines.
    """

    DEFAULT_CSS = """
    MarkdownText { height: auto; width: 100%; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.source = ""
        self._version = 0
        self._lines: tuple[tuple[int, int, str], list[Strip]] = ((-1, 0, ""), [])  # rendered for: version, width, theme
        self._refresh_due = False

    def takes(self, text: str) -> bool:
        """Whether `text` goes on in this widget: no once it is long and `text` starts a new top-level block."""
        return (len(self.source) < CHUNK or not self.source.endswith("\n\n") or not text or text[0].isspace()
                or sum(line.lstrip().startswith("```") for line in self.source.splitlines()) % 2 == 1)

    def append(self, text: str) -> None:
        """Add text; the screen shows it with the next frame (a delta at a time would cost a refresh each)."""
        self.source += text
        self._version += 1
        if not self._refresh_due:
            self._refresh_due = True
            self.set_timer(FRAME, self._show)

    def _show(self) -> None:
        self._refresh_due = False
        self.refresh(layout=True)

    def lines(self, width: int) -> list[Strip]:
        """The text rendered at `width`, kept until the text, the width or the theme changes."""
        key = (self._version, width, self.app.theme)
        if self._lines[0] != key:
            console = self.app.console
            code_theme = "monokai" if self.app.current_theme.dark else "default"
            segments = console.render(RichMarkdown(self.source, code_theme=code_theme),
                                      console.options.update_width(width))
            lines = [strip.adjust_cell_length(width) for strip in Strip.from_lines(list(Segment.split_lines(segments)))]
            self._lines = (key, lines)
        return self._lines[1]

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.lines(width))

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        if not width:
            return Strip.blank(0)
        lines = self.lines(width)
        return (lines[y] if y < len(lines) else Strip.blank(width)).apply_style(self.rich_style)


class TurnBody(Vertical):
    """An agent's side of one turn: its text as Markdown between tool blocks, in the order things happened."""

    DEFAULT_CSS = """
    TurnBody { height: auto; }
    TurnBody.delegate { border-left: solid $secondary; padding-left: 1; }
    """

    def __init__(self, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.tools: dict[str, ToolBlock] = {}
        self._text: MarkdownText | None = None

    async def handle(self, event: AgentEvent) -> None:
        """Show one event; new widgets are mounted before it returns, so the next event finds them."""
        if isinstance(event, TextDelta):
            await self._write(event.text)
        elif isinstance(event, ToolStarted):
            self._text = None  # text after the tool call goes below its block
            block = self.tools[event.call_id] = ToolBlock(event)
            await self.mount(block)
        elif isinstance(event, ToolFinished) and event.call_id in self.tools:
            self.tools[event.call_id].finish(event)
        elif isinstance(event, ApprovalRequested) and event.call_id in self.tools:
            self.tools[event.call_id].waiting(event)
        elif isinstance(event, Delegated) and event.call_id in self.tools:
            await self.tools[event.call_id].delegated(event)

    async def _write(self, text: str) -> None:
        for piece in BLOCKS.split(text):
            if self._text is None or not self._text.takes(piece):
                self._text = MarkdownText()
                await self.mount(self._text)
            self._text.append(piece)


class TurnView(Vertical, can_focus=True):
    """An agent's turn with its usage line; a failed turn says why, inline. Focus one to see its waterfall (w)."""

    DEFAULT_CSS = """
    TurnView { height: auto; margin: 1 0 0 0; }
    TurnView:focus { background: $boost; }
    TurnView .agent { color: $text-accent; text-style: bold; }
    TurnView .footer { color: $text-muted; }
    TurnView .error { color: $error; }
    TurnView .note { color: $warning; }
    """

    def __init__(self, agent: str) -> None:
        super().__init__()
        self.agent = agent
        self.body = TurnBody()
        self.footer = Static("", classes="footer")
        self.usage = Usage()
        self.done = False
        self.turn_task: str | None = None
        """The turn's durable task, once it started."""

    def compose(self) -> ComposeResult:
        yield Static(Text(self.agent), classes="agent")
        yield self.body
        yield self.footer

    async def handle(self, event: AgentEvent) -> None:
        await self.body.handle(event)
        if isinstance(event, TurnStarted):
            self.turn_task = event.task
        elif isinstance(event, UsageReport):
            self.usage += event.usage
            self.footer.update(f"working… {tokens(self.usage)} so far (esc cancels)")
        elif isinstance(event, TurnDone):
            self.done = True
            self.footer.update(answer_footer(event.answer))
        elif isinstance(event, TurnFailed):
            self.done = True
            self.footer.update("")
            await self.mount(Static(Text(f"✗ the turn failed ({event.kind}): {event.error}"), classes="error"),
                             before=self.footer)

    def show_note(self, text: str) -> None:
        self.mount(Static(Text(text), classes="note"), before=self.footer)

    def interrupted(self) -> None:
        """The person stopped watching (cancelled, or switched away): say what happens to the turn."""
        self.footer.update("")
        self.show_note("Cancelled: the agent stopped, a model call under way included; reopening the conversation "
                       "shows what it completed.")


class EarlierTurns(Button):
    """Loads the next page of older turns above the ones shown."""

    def __init__(self, hidden: int) -> None:
        super().__init__(f"↑ show {min(hidden, PAGE)} earlier turns ({hidden} not shown)", classes="earlier")


class ChatView(VerticalScroll):
    """The scrolling conversation; it stays at the bottom while answers stream unless the person scrolls up."""

    BINDINGS = [Binding("w", "waterfall", "Waterfall")]
    DEFAULT_CSS = """
    ChatView { padding: 0 1; }
    ChatView .earlier { width: 100%; }
    ChatView .hint { color: $text-muted; margin: 1 0; }
    """

    class WaterfallAsked(Message):
        """The person asked for the waterfall of turn `task` (the screen opens it)."""

        def __init__(self, task: str) -> None:
            super().__init__()
            self.task = task

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self._pending: list[PastTurn] = []
        self._events_of: Callable[[str], Awaitable[list[AgentEvent]]] = _no_events

    async def show(self, hint: str, turns: list[PastTurn],
                   events_of: Callable[[str], Awaitable[list[AgentEvent]]]) -> None:
        """Replace what is shown: a hint line, then the newest page of past turns (their events from `events_of`)."""
        await self.remove_children()
        self._pending, self._events_of = turns, events_of
        await self.mount(Static(Text(hint), classes="hint"))
        await self._mount_page()
        self.anchor()

    async def _mount_page(self) -> None:
        page, self._pending = self._pending[-PAGE:], self._pending[:-PAGE]
        views = [TurnView(turn.agent) for turn in page]
        earlier = self.query(EarlierTurns)
        anchor = earlier.first() if earlier else self.query_one(".hint")
        await self.mount_all([w for turn, view in zip(page, views, strict=True) for w in (UserMessage(turn.text), view)],
                             after=anchor)
        for turn, view in zip(page, views, strict=True):
            for event in await self._events_of(turn.task):
                await view.handle(event)
        await earlier.remove()
        if self._pending:
            await self.mount(EarlierTurns(len(self._pending)), after=self.query_one(".hint"))

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if isinstance(event.button, EarlierTurns):
            event.stop()
            self.release_anchor()
            await self._mount_page()

    def chosen_turn(self) -> str | None:
        """The task of the turn in focus (or holding the focus), else of the newest turn; None before any."""
        focused = self.screen.focused
        around = focused.ancestors_with_self if focused is not None else []
        views = [node for node in around if isinstance(node, TurnView)] + list(reversed(self.query(TurnView)))
        return next((view.turn_task for view in views if view.turn_task is not None), None)

    def action_waterfall(self) -> None:
        task = self.chosen_turn()
        if task is None:
            self.notify("No turn yet: send a message first.")
            return
        self.post_message(self.WaterfallAsked(task))

    async def add_turn(self, text: str, agent: str) -> TurnView:
        """Show a message the person just sent and an empty live turn for the answer."""
        view = TurnView(agent)
        await self.mount_all([UserMessage(text), view])
        self.anchor()
        return view


class ChatInput(TextArea):
    """Multi-line input: enter sends, ctrl+j or shift+enter starts a new line, up and down recall earlier messages."""

    DEFAULT_CSS = """
    ChatInput { height: auto; max-height: 10; min-height: 3; border: tall $accent; }
    """

    NEWLINE_KEYS = ("ctrl+j", "shift+enter")

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id, soft_wrap=True, show_line_numbers=False, tab_behavior="focus", compact=False)
        self.sent: list[str] = []
        self._recalled: int | None = None  # index into history while the person walks through it
        self._draft = ""

    def remember(self, texts: Iterable[str]) -> None:
        """Offer these earlier messages to up and down (say, the user messages of a reopened conversation)."""
        self.sent = [text for text in texts if text.strip()]
        self._recalled = None

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            self._stop(event)
            self._submit()
        elif event.key in self.NEWLINE_KEYS:
            self._stop(event)
            self.insert("\n")
        elif event.key == "up" and self.cursor_location[0] == 0 and self._recall(-1):
            self._stop(event)
        elif event.key == "down" and self.cursor_location[0] == self.document.line_count - 1 and self._recall(1):
            self._stop(event)
        else:
            await super()._on_key(event)

    @staticmethod
    def _stop(event: events.Key) -> None:
        event.stop()
        event.prevent_default()

    def _submit(self) -> None:
        text = self.text.strip()
        if not text:
            return
        if not self.sent or self.sent[-1] != text:
            self.sent.append(text)
        self._recalled = None
        self.clear()
        self.post_message(self.Submitted(text))

    def _recall(self, step: int) -> bool:
        """Show the previous (-1) or next (+1) remembered message; False when there is none that way."""
        if self._recalled is None:
            if step > 0 or not self.sent:
                return False
            self._draft = self.text
            index = len(self.sent) - 1
        else:
            index = self._recalled + step
            if index < 0:
                return True  # already at the oldest: stay there
        if index >= len(self.sent):
            self._recalled = None
            self.load_text(self._draft)
        else:
            self._recalled = index
            self.load_text(self.sent[index])
        self.move_cursor(self.document.end)
        return True
