"""A turn's steps as a waterfall: a row per step, its bar placed by when it started and as long as it took.

The steps come from the journal (`chat.steps`), not from the events a turn
streamed, so any turn shows, from this session or an earlier one, with or without
a tracing exporter. A delegate's steps sit indented under the tool call that
asked it, on the same time line.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Label, Static

from ..agents import StepSpan, TurnSteps
from ..control import ControlError
from ._format import dollars, duration, in_out
from ._link import NodeLink

LABEL, TIME, TOKENS, COST = 30, 9, 15, 11
"""The widths of a row's columns around its bar (the label's at most: a narrow screen gives the bar room first)."""
MIN_LABEL, MIN_BAR = 14, 16
"""The narrowest label and bar: on a screen too narrow even for those, the figures are cut at the right."""
BAR = "█"


class Line(Widget):
    """One line of the waterfall: a label, the bar area (as wide as the line leaves), then the figures."""

    DEFAULT_CSS = """
    Line { height: 1; }
    Line.heading { text-style: bold; color: $text-muted; }
    Line.totals { text-style: bold; }
    """

    def __init__(self, label: str, time: str, tokens: str = "", cost: str = "", classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.label, self.time, self.tokens, self.cost = label, time, tokens, cost

    def bar(self, width: int) -> Text:
        return Text(" " * width)

    def label_style(self) -> Style | str:
        return ""

    def render(self) -> Text:
        figures = TIME + TOKENS + COST + 1
        label_width = max(MIN_LABEL, min(LABEL, self.content_size.width - figures - MIN_BAR))
        label = Text(self.label, self.label_style())
        label.truncate(label_width, overflow="ellipsis", pad=True)
        width = max(MIN_BAR, self.content_size.width - label_width - figures)
        return Text.assemble(label, " ", self.bar(width), self.time.rjust(TIME), self.tokens.rjust(TOKENS),
                             self.cost.rjust(COST), no_wrap=True, overflow="crop")


class StepRow(Line):
    """A step: its label (indented by how deep a delegate it ran in), its bar, its duration, tokens and cost."""

    COMPONENT_CLASSES = {"step-row--model", "step-row--tool", "step-row--delegate", "step-row--other",
                         "step-row--failed"}
    DEFAULT_CSS = """
    StepRow > .step-row--model { color: $accent; }
    StepRow > .step-row--tool { color: $success; }
    StepRow > .step-row--delegate { color: $secondary; }
    StepRow > .step-row--other { color: $text-muted; }
    StepRow > .step-row--failed { color: $error; }
    """

    def __init__(self, span: StepSpan, depth: int, total: float) -> None:
        super().__init__("  " * depth + ("✗ " if not span.ok else "") + span.label, duration(span.seconds),
                         in_out(span.usage) if span.usage is not None else "",
                         dollars(span.cost_usd) if span.cost_usd is not None else "")
        self.span, self.depth, self.total = span, depth, total
        self.tooltip = f"{span.name}: {span.error}" if span.error else span.name

    def kind_style(self) -> Style:
        """The step's colour, by its kind (the theme's, from the CSS); a failed step's is the error colour."""
        return self.get_component_rich_style(f"step-row--{'failed' if not self.span.ok else self.span.kind}",
                                             partial=True)

    def label_style(self) -> Style | str:
        return self.kind_style() if not self.span.ok else ""

    def bar(self, width: int) -> Text:
        """The step's bar at its place in the turn: every cell the step ran in, at least one."""
        start, end = placed(self.span.offset, self.span.seconds, self.total, width)
        return Text.assemble(" " * start, (BAR * (end - start), self.kind_style()), " " * (width - end))


def placed(offset: float, seconds: float, total: float, width: int) -> tuple[int, int]:
    """The cells `[start, end)` of a bar `width` cells wide for a span of the `total` seconds shown."""
    if total <= 0:
        return 0, 1
    start = min(width - 1, max(0, int(offset / total * width)))
    return start, min(width, max(start + 1, round((offset + seconds) / total * width)))


class WaterfallScreen(ModalScreen[None]):
    """Turn `task`'s steps as a waterfall, read in a worker; escape closes it."""

    BINDINGS = [Binding("escape,q,w", "dismiss(None)", "Close")]
    DEFAULT_CSS = """
    WaterfallScreen { align: center middle; }
    WaterfallScreen > Vertical { width: 100%; max-width: 160; height: auto; max-height: 100%; margin: 1;
                                 border: thick $accent; background: $surface; padding: 0 1; }
    WaterfallScreen #heading { text-style: bold; }
    WaterfallScreen #heading.-error { color: $error; }
    WaterfallScreen #steps { height: 1fr; scrollbar-size-vertical: 1; scrollbar-gutter: stable; }
    WaterfallScreen Line.heading, WaterfallScreen Line.totals { padding-right: 1; }
    WaterfallScreen .hint { color: $text-muted; }
    """

    def __init__(self, link: NodeLink, task: str) -> None:
        super().__init__()
        self.link, self.turn_task = link, task
        self.steps: TurnSteps | None = None
        """The turn's steps, once read."""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(f"reading the steps of {self.turn_task}…"), id="heading")
            yield Line("step", "time", "tokens in→out", "cost", classes="heading")
            yield VerticalScroll(id="steps")
            yield Label("bars: when each step ran in the turn · ✗ failed · esc closes", classes="hint")

    def on_mount(self) -> None:
        self.load()

    @work(exit_on_error=False)
    async def load(self) -> None:
        heading = self.query_one("#heading", Static)
        try:
            steps = await self.link.steps(self.turn_task)
        except (ControlError, OSError) as error:
            heading.update(Text(f"the steps of {self.turn_task} cannot be read: {error}"))
            heading.add_class("-error")
            return
        heading.update(Text(f"{steps.agent} · turn {steps.turn} · {steps.status} · task {steps.task}"))
        total = steps.seconds
        spans = list(steps.spans())
        calls = any(span.usage is not None for _, span in spans)
        totals = Line(f"total: {len(spans)} step{'s' if len(spans) != 1 else ''}", duration(total),
                      in_out(steps.usage) if calls else "", dollars(steps.cost_usd) if calls else "", classes="totals")
        await self.query_one("#steps").mount_all(StepRow(span, depth, total) for depth, span in spans)
        await self.query_one(Vertical).mount(totals, after="#steps")
        self.steps = steps
