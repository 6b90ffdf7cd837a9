"""How the CLI and the TUI put a task's steps, tokens and long text into words, the same way in both.

A step's result is stored as journal JSON; `step_json` decodes it once for both
(and for the control socket, which sends steps to the CLI), so a model call's
usage and cost read the same wherever they are shown.
"""

from __future__ import annotations

from typing import Any

from .durable import JournalTypeError, StepRecord, loads
from .llm import Response, Usage

__all__ = ["compaction_summary", "short", "step_json", "tokens"]


def step_json(step: StepRecord) -> dict[str, Any]:
    """A step with its decoded result; a model call's (an `llm.Response`), or a compaction's that made one, also
    gives its usage and cost."""
    try:
        result = loads(step.result)
    except (JournalTypeError, ValueError):
        result = step.result
    call = result if isinstance(result, Response) else getattr(result, "response", None)  # a compaction's call
    usage = call.usage if isinstance(call, Response) else None
    return {"seq": step.seq, "name": step.name, "ok": step.ok, "started": step.started, "seconds": step.seconds,
            "error": step.error, "result": result, "usage": usage,
            "cost_usd": call.cost_usd if isinstance(call, Response) else None}


def short(text: str, limit: int = 80) -> str:
    """One line of at most `limit` characters (an ellipsis marks a cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tokens(usage: Usage) -> str:
    """`120 tokens in (20 cached), 30 out`."""
    cached = f" ({usage.cached_tokens} cached)" if usage.cached_tokens else ""
    return f"{usage.input_tokens} tokens in{cached}, {usage.output_tokens} out"


def compaction_summary(result: dict[str, Any]) -> str:
    """What a compaction step (`compact:N`, as `step_json` gives its result) did to the conversation's history."""
    done = "folded into the summary" if result.get("strategy") == "summary" else "dropped"
    turns = result.get("turns", 0)
    return (f"{turns} turn{'s' if turns != 1 else ''} up to turn {result.get('through')} {done}; "
            f"history ~{result.get('tokens_before', 0):,} -> ~{result.get('tokens_after', 0):,} tokens")
