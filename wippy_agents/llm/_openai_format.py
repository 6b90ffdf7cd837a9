"""The Chat Completions wire format: our messages and tools to request params, SDK responses and chunks back.

Kept apart from the client (`_openai.py`) so the mapping is plain data in, plain data
out, shared by OpenAI and every OpenAI-compatible server, and testable without HTTP.

Choices made here, because servers differ and models misbehave:

- **Tool-call arguments** arrive as JSON text. Text that is not a JSON object (a model
  can emit broken JSON, or a list) does not crash the call: the tool call gets
  `arguments={RAW_ARGUMENTS_KEY: "<the text as sent>"}`. The key starts with an
  underscore, which no tool parameter can (pydantic keeps such names private), so the
  agent layer can tell it apart and report the bad arguments back to the model; even
  unhandled, the tool's validation rejects it as an unknown argument. Empty text is `{}`.
- **Streaming tool calls** are keyed by the chunk's `index`; a new `id` at a known index
  starts a new call (some servers number every call 0). Our event indexes count calls
  in order of appearance. A call without an id gets `call_<index>`.
- **Finish reasons**: stop, length and content_filter map to themselves, tool_calls and
  the legacy function_call to `tool_calls`; an unknown one is `stop`, and `stop` with
  tool calls present is `tool_calls` (some local servers say `stop`). A stream with no
  finish reason at all was cut short, and is refused (see `_api.APIModel`).
- **Chunks without choices** (usage-only chunks, keep-alives, events of kinds we do
  not know) and choices without a delta carry nothing for us, and are passed over.
- **Refusals** (`refusal` instead of `content`) become the response text: it is what
  the model said.
- **Tool errors** have no flag in this format, so an error result's content is sent
  prefixed with `Error: ` (unless it already says so).
- **max_tokens** is sent as `max_completion_tokens` to OpenAI (the old name is refused by
  its reasoning models) and as `max_tokens` to OpenAI-compatible servers, which often
  know only the old name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from openai.types import CompletionUsage
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall
from openai.types.shared_params import FunctionDefinition

from ..errors import ArgumentError
from ._messages import (
    RAW_ARGUMENTS_KEY,
    AssistantMessage,
    ChatMessage,
    FinishReason,
    Response,
    StreamEvent,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
    parse_arguments,
)
from ._model import Settings

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
}


def request_params(
    model: str, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition], settings: Settings, *,
    provider: str, stream: bool,
) -> dict[str, Any]:
    """The keyword arguments of `chat.completions.create` (and the JSON body it sends)."""
    params: dict[str, Any] = {"model": model, "messages": [message_param(m) for m in messages]}
    if tools:  # OpenAI refuses an empty list
        params["tools"] = [tool_param(t) for t in tools]
    if settings.max_tokens is not None:
        params["max_completion_tokens" if provider == "openai" else "max_tokens"] = settings.max_tokens
    if settings.temperature is not None:
        params["temperature"] = settings.temperature
    if stream:
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}
    return params


def message_param(message: ChatMessage) -> ChatCompletionMessageParam:
    """One of our messages as a Chat Completions message."""
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": message.content}
    if isinstance(message, UserMessage):
        return {"role": "user", "content": message.content}
    if isinstance(message, ToolResultMessage):
        content = message.content
        if message.is_error and not content.lower().startswith("error"):
            content = f"Error: {content}"
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": content}
    if isinstance(message, AssistantMessage):
        if not message.tool_calls:
            return {"role": "assistant", "content": message.content}
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [_tool_call_param(call) for call in message.tool_calls],
        }
    raise ArgumentError(f"not a chat message: {message!r}")


def _tool_call_param(call: ToolCall) -> ChatCompletionMessageFunctionToolCallParam:
    if set(call.arguments) == {RAW_ARGUMENTS_KEY}:  # send back what the model wrote, not our wrapper
        arguments = str(call.arguments[RAW_ARGUMENTS_KEY])
    else:
        arguments = json.dumps(call.arguments, ensure_ascii=False)
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def tool_param(tool: ToolDefinition) -> ChatCompletionFunctionToolParam:
    """A tool definition as a Chat Completions function tool (the registry id stays with us)."""
    function: FunctionDefinition = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def usage_from(usage: CompletionUsage | None) -> Usage:
    """Token counts; `prompt_tokens` already includes the cached ones, which some servers don't report."""
    if usage is None:
        return Usage()
    details = usage.prompt_tokens_details
    cached = details.cached_tokens if details is not None else None
    return Usage(input_tokens=usage.prompt_tokens or 0, output_tokens=usage.completion_tokens or 0,
                 cached_tokens=cached or 0)


def finish_reason(raw: str | None, *, has_tool_calls: bool) -> FinishReason:
    """Our finish reason for the wire's (see the module doc)."""
    reason = _FINISH_REASONS.get(raw or "", "stop")
    return "tool_calls" if has_tool_calls and reason == "stop" else reason


def response_from_completion(completion: ChatCompletion) -> Response:
    """A non-streaming answer (with at least one choice) as our `Response`: the first choice, we never ask for more."""
    usage = usage_from(completion.usage)
    choice = completion.choices[0]
    message = choice.message
    calls = tuple(
        ToolCall(id=call.id, name=call.function.name, arguments=parse_arguments(call.function.arguments))
        for call in message.tool_calls or ()
        if isinstance(call, ChatCompletionMessageFunctionToolCall)
    )
    return Response(
        text=message.content or message.refusal or "",
        tool_calls=calls,
        finish_reason=finish_reason(choice.finish_reason, has_tool_calls=bool(calls)),
        usage=usage,
        model=completion.model or "",
    )


@dataclass
class _PartialCall:
    index: int
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class StreamAssembler:
    """Turns streamed chunks into our events as they come, and remembers enough to build the whole response."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: list[_PartialCall] = []
        self._by_wire_index: dict[int | None, _PartialCall] = {}
        self._finish: str | None = None
        self._usage: CompletionUsage | None = None
        self._model = ""
        self.started = False  # a chunk came: the server does speak Chat Completions

    def feed(self, chunk: ChatCompletionChunk) -> list[StreamEvent]:
        """The events one chunk carries (often none: role-only, usage-only and finish chunks)."""
        self.started = True
        self._model = chunk.model or self._model
        if chunk.usage is not None:  # the last chunk with include_usage; some servers put it on every chunk
            self._usage = chunk.usage
        events: list[StreamEvent] = []
        for choice in chunk.choices or ():
            delta = choice.delta
            if delta is not None:
                for piece in (delta.content, delta.refusal):
                    if piece:
                        self._text.append(piece)
                        events.append(TextDelta(text=piece))
                for wire_call in delta.tool_calls or ():
                    events.extend(self._tool_call(wire_call))
            if choice.finish_reason:
                self._finish = choice.finish_reason
        return events

    @property
    def finished(self) -> bool:
        """Whether a finish reason came: a stream cut short must not pass for a whole answer."""
        return self._finish is not None

    def _tool_call(self, wire: ChoiceDeltaToolCall) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        call = self._by_wire_index.get(wire.index)
        if call is None or (wire.id and wire.id != call.id):
            index = len(self._calls)
            name = wire.function.name if wire.function and wire.function.name else ""
            call = _PartialCall(index=index, id=wire.id or f"call_{index}", name=name)
            self._calls.append(call)
            self._by_wire_index[wire.index] = call
            events.append(ToolCallStart(index=index, id=call.id, name=call.name))
        elif wire.function and wire.function.name and not call.name:
            call.name = wire.function.name
        fragment = wire.function.arguments if wire.function else None
        if fragment:
            call.arguments.append(fragment)
            events.append(ToolCallDelta(index=call.index, arguments=fragment))
        return events

    def response(self) -> Response:
        """Everything streamed so far as one `Response`, as `complete` would have returned it."""
        calls = tuple(
            ToolCall(id=call.id, name=call.name, arguments=parse_arguments("".join(call.arguments)))
            for call in self._calls
        )
        return Response(
            text="".join(self._text),
            tool_calls=calls,
            finish_reason=finish_reason(self._finish, has_tool_calls=bool(calls)),
            usage=usage_from(self._usage),
            model=self._model,
        )
