"""The offline model: no key, no network, deterministic, so an app runs (and calls tools) on a fresh machine.

- `/call <tool> <json arguments>` makes it call that tool (by offered name or registry id);
- after tool results it answers with a short summary of them;
- anything else gets a reply that says what it is, echoes the message and says how to set up a real model.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

from ._messages import (
    ChatMessage,
    Response,
    StreamEvent,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
    response_events,
)
from ._model import Model, Settings

HELP = (
    "To use a real model, set OPENAI_API_KEY or ANTHROPIC_API_KEY and point the agent's `model` at an "
    "openai or anthropic model entry (examples are in registry/app/_index.yaml), or run a local server "
    "such as Ollama with provider `openai-compatible`."
)


class OfflineModel(Model):
    provider = "offline"

    async def _stream(
        self, messages: list[ChatMessage], tools: list[ToolDefinition], settings: Settings
    ) -> AsyncIterator[StreamEvent]:
        text, calls = answer(messages, tools)
        usage = Usage(input_tokens=sum(_tokens(m) for m in messages), output_tokens=len(text.split()) + len(calls))
        response = Response(text=text, tool_calls=tuple(calls), finish_reason="tool_calls" if calls else "stop",
                            usage=usage, model=self.name)
        for event in response_events(response):
            yield event


def answer(messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> tuple[str, list[ToolCall]]:
    """The offline model's reply to a conversation: text, and the tool calls it makes."""
    if not messages:
        return "The offline model got an empty conversation.", []
    last = messages[-1]
    if isinstance(last, ToolResultMessage):
        results = []
        for message in reversed(messages):
            if not isinstance(message, ToolResultMessage):
                break
            results.append(message)
        lines = [f"- {r.name} {'failed' if r.is_error else 'returned'}: {r.content}" for r in reversed(results)]
        return "Here is what the tools said:\n" + "\n".join(lines), []
    if not isinstance(last, UserMessage):
        return "The offline model has nothing to add.", []
    text = last.content.strip()
    if text.startswith("/call"):
        return _tool_call(text, tools, len(messages))
    return f"This is the offline model: it needs no key and no network, and echoes you. You said: {text}\n{HELP}", []


def _tool_call(text: str, tools: Sequence[ToolDefinition], turn: int) -> tuple[str, list[ToolCall]]:
    parts = text.split(maxsplit=2)
    if len(parts) < 2:
        return "Usage: /call <tool> <json arguments>, for example /call tools.calc:add {\"a\": 2, \"b\": 3}", []
    wanted, raw = parts[1], parts[2] if len(parts) > 2 else "{}"
    tool = next((t for t in tools if wanted in (t.name, t.id)), None)
    if tool is None:
        offered = ", ".join(t.id or t.name for t in tools) or "none"
        return f"The offline model cannot call {wanted!r}: this agent has no such tool (its tools: {offered}).", []
    try:
        arguments = json.loads(raw)
    except json.JSONDecodeError as error:
        return f"The arguments for {wanted!r} are not valid JSON ({error.msg} at column {error.colno}): {raw}", []
    if not isinstance(arguments, dict):
        return f"The arguments for {wanted!r} must be a JSON object, like {{\"a\": 1}}; got {raw}", []
    return "", [ToolCall(id=f"offline_{turn}", name=tool.name, arguments=arguments)]


def _tokens(message: ChatMessage) -> int:
    content = getattr(message, "content", "")
    return len(content.split()) if isinstance(content, str) else 0
