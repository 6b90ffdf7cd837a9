"""How much a model can read at once, and how many tokens a request holds before it is sent.

The window comes from the model entry's `context_window`, else from the known
windows of common OpenAI and Anthropic model names below. Before a call, tokens
are estimated offline: no tokenizer ships its encodings in a package here
(tiktoken downloads its files on first use), so the estimate is a stated,
conservative one: a token per 3 bytes of UTF-8 text (English runs about 4
characters a token; CJK text about one character, 3 bytes) plus `MESSAGE_OVERHEAD`
tokens per message and per tool definition. After a call the provider's reported
usage is the count.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..registry import ModelSpec
from ._messages import AssistantMessage, ChatMessage, ToolDefinition

KNOWN_CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-5": 400_000,
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "claude-": 200_000,
}
"""Tokens per request of common models, by name prefix (the longest matching prefix wins)."""

DEFAULT_CONTEXT_WINDOW = 8_192
"""The window of a model whose name is not known and whose entry sets none: small, so history is folded early."""

MESSAGE_OVERHEAD = 8
"""Tokens counted for each message and tool definition beyond its text (role, separators, call framing)."""


def context_window(spec: ModelSpec) -> int:
    """The tokens one request to this model may hold: the entry's `context_window`, else the known default."""
    if spec.context_window is not None:
        return spec.context_window
    name = spec.model.lower().rsplit("/", 1)[-1]  # openrouter-style "anthropic/claude-..." names too
    known = [prefix for prefix in KNOWN_CONTEXT_WINDOWS if name.startswith(prefix)]
    return KNOWN_CONTEXT_WINDOWS[max(known, key=len)] if known else DEFAULT_CONTEXT_WINDOW


def estimate_text(text: str) -> int:
    """Tokens of `text`, estimated: one per 3 bytes of UTF-8, rounded up."""
    return -(-len(text.encode("utf-8", "surrogatepass")) // 3)


def estimate_tokens(messages: Iterable[ChatMessage], tools: Iterable[ToolDefinition] = ()) -> int:
    """Tokens of a request's messages and tool definitions, estimated offline (see the module's docstring)."""
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD + estimate_text(message.content or "")
        if isinstance(message, AssistantMessage):
            total += sum(MESSAGE_OVERHEAD + estimate_text(call.name + json.dumps(call.arguments, ensure_ascii=False))
                         for call in message.tool_calls)
    for tool in tools:
        total += MESSAGE_OVERHEAD + estimate_text(tool.name + tool.description + json.dumps(tool.parameters))
    return total
