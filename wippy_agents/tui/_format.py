"""Plain text for the TUI: usage and cost, agent cards, registry activity, task summaries.

Kept apart from the widgets so the wording is the same everywhere it appears and
can be tested without a terminal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from rich.text import Text

from .._display import compaction_summary, short, tokens
from ..agents import Answer
from ..llm import Usage
from ..registry import Entry


def answer_footer(answer: Answer) -> str:
    """The usage line under a turn: tokens, how full the model's window was, cost, model calls, and why it stopped
    early if it did."""
    calls = f"{answer.steps} model call{'s' if answer.steps != 1 else ''}"
    stopped = f" · stopped: {answer.stopped}" if answer.stopped else ""
    return f"{tokens(answer.usage)}{context_use(answer)} · {dollars(answer.cost_usd)} · {calls}{stopped}"


def context_use(answer: Answer) -> str:
    """` · context 1,200 of 8,192 tokens (15%)`: what the turn's last call took of the window (empty if unknown)."""
    if not answer.context_window:
        return ""
    share = 100 * answer.context_tokens / answer.context_window
    return f" · context {answer.context_tokens:,} of {answer.context_window:,} tokens ({share:.0f}%)"


def seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 60 else f"{value / 60:.1f}min"


def duration(value: float) -> str:
    """A step's duration, in milliseconds below a second: `0.4ms`, `85ms`, `1.2s`, `2.5min`."""
    ms = value * 1000
    return f"{ms:.1f}ms" if ms < 9.95 else f"{ms:.0f}ms" if ms < 999.5 else seconds(value)


def in_out(usage: Usage) -> str:
    """`1,200→30`: tokens in and out, in a column headed so."""
    return f"{usage.input_tokens:,}→{usage.output_tokens:,}"


def dollars(value: float) -> str:
    return f"${value:.6f}"


def arguments(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)


class AgentCard(NamedTuple):
    """What the sidebar and the palette say about an agent entry."""

    id: str
    title: str
    description: str
    model: str

    @classmethod
    def of(cls, entry: Entry) -> AgentCard:
        return cls(entry.id, str(entry.meta.get("title") or entry.name), str(entry.meta.get("description") or ""),
                   str(entry.data.get("model") or "the default model"))

    def render(self) -> Text:
        """Three short lines for the sidebar: title, id and model, what it does."""
        text = Text.assemble((self.title, "bold"), "\n", (f"{self.id} · {self.model}", "dim"))
        if self.description:
            text.append("\n" + short(self.description, 26), "italic")
        return text


def version_line(version: int, author: str, reason: str, task: str | None, ids: Sequence[str]) -> Text:
    """A registry version in the activity pane: who changed which entries, in which task, and why."""
    text = Text.assemble((f"v{version} ", "bold"), (author, "cyan"), (f" task {task}" if task else "", "cyan"))
    if reason:
        text.append(f" · {reason}")
    text.append("\n    " + short(", ".join(ids), 300), "dim")
    return text


def unavailable_tools(tools: Iterable[Entry]) -> Text:
    """Tools listed but not offered to agents now (an MCP server down), grouped by why: empty when there are none."""
    by_reason: dict[str, list[str]] = {}
    for entry in tools:
        if reason := entry.meta.get("unavailable"):
            by_reason.setdefault(str(reason), []).append(entry.id)
    text = Text()
    for reason, ids in sorted(by_reason.items()):
        text.append("\n" if text else "")
        text.append_text(Text.assemble(("⚠ unavailable ", "bold"), short(", ".join(sorted(ids)), 200), f": {reason}"))
    return text


def refused_file(file: str, problems: Iterable[object]) -> Text:
    """A file the registry refused, with every problem: its last good entries stay in force."""
    text = Text.assemble(("✗ refused ", "bold red"), (file, "bold"), " (its last good version stays in force)")
    for problem in problems:
        text.append(f"\n    {problem}", "red")
    return text


def task_detail(shown: dict[str, Any]) -> Text:
    """A task as `tasks.show` gives it: what it is, its model calls' tokens and cost, and each step."""
    created = datetime.fromisoformat(shown["created"]).astimezone()
    text = Text.assemble((shown["id"], "bold"), f"  {shown['workflow']}  ",
                         (shown["status"], _status_style(shown["status"])))
    text.append(f"\ncreated {created:%Y-%m-%d %H:%M:%S}, registry version {shown['registry_version']}")
    text.append(f"\nargs {short(json.dumps(shown['args'], ensure_ascii=False, default=str), 200)}", "dim")
    if shown["usage"] is not None:
        text.append(f"\nmodel calls: {tokens(Usage(**shown['usage']))}, ${shown['cost_usd']:.6f}")
    if shown["error"]:
        text.append(f"\nerror: {shown['error']}", "red")
    steps = shown["steps"]
    text.append(f"\n{len(steps)} step(s)" if steps else "\nno steps yet")
    for step in steps:
        mark = ("ok", "green") if step["ok"] else ("FAILED", "red")
        text.append(f"\n  {step['seq']:>3}  {step['name']}  ")
        text.append(*mark)
        text.append(f"  {step['seconds']:.3f}s")
        if step["error"]:
            text.append(f"  {short(step['error'])}", "red")
        if step["name"].startswith("compact:") and isinstance(step["result"], dict):
            started = datetime.fromisoformat(step["started"]).astimezone()
            text.append(f"\n       {started:%H:%M:%S}: {compaction_summary(step['result'])}", "italic")
    return text


def _status_style(status: str) -> str:
    return {"completed": "green", "failed": "red", "cancelled": "yellow", "needs_attention": "bold red"}.get(
        status, "cyan")


def status_text(status: str) -> Text:
    return Text(status, _status_style(status))
