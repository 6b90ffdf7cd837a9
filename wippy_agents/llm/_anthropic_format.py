"""The Anthropic Messages API wire format: our conversation to request parameters, the SDK's answers back.

Pure functions and one small stream assembler, no I/O, so the mapping reads in one
place and is testable without HTTP. Choices made here:

- **System messages**, wherever they stand, join (a blank line apart) the top-level `system`.
- **Turns alternate**: consecutive same-role messages merge into one turn, so a turn's
  tool results, and a user message right after them, share one user message. Empty
  assistant text is left out (the API refuses empty text blocks).
- **Tool input** streams as partial JSON: none is `{}`, anything but a JSON object (a
  call cut off by `max_tokens`) is kept as `{RAW_ARGUMENTS_KEY: raw}` like the OpenAI
  provider does. Our stream events number tool calls in order, not by content block.
- **Usage**: Anthropic's `input_tokens` leaves out cache reads and writes; ours adds both,
  and `cached_tokens` is the reads.
- **Sampling**: `temperature` is not sent; API version 2026-10-21, which SDK 2.x speaks,
  refuses every sampling parameter with a 400, even at its default.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from anthropic.types import (
    ContentBlockParam,
    Message,
    MessageDeltaUsage,
    MessageParam,
    RawMessageStreamEvent,
    ToolParam,
    ToolResultBlockParam,
)
from anthropic.types import Usage as WireUsage
from anthropic.types.message_create_params import MessageCreateParamsBase

from ._messages import (
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

DEFAULT_MAX_TOKENS = 4096
"""`max_tokens` when neither the entry nor the call sets one: Anthropic requires it, and 4096 fits every Claude."""

FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # only server-side tools pause, and we offer none
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}

Role = Literal["user", "assistant"]
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def request_params(
    model: str, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition], settings: Settings
) -> MessageCreateParamsBase:
    """Keyword arguments for `messages.create` (all but `stream`); `settings.temperature` is not sent."""
    system, turns = conversation(messages)
    params = MessageCreateParamsBase(
        model=model, max_tokens=settings.max_tokens or DEFAULT_MAX_TOKENS, messages=turns
    )
    if system:
        params["system"] = system
    if tools:
        params["tools"] = [tool_param(tool) for tool in tools]
    return params


def conversation(messages: Sequence[ChatMessage]) -> tuple[str, list[MessageParam]]:
    """The top-level system prompt and the turns, consecutive same-role messages merged into one turn.

    The API wants user and assistant turns to alternate, and every tool result of a
    turn in the one user message that follows it, so tool results (and a user
    message right after them) share a user turn. System messages, wherever they
    stand, join the system prompt.
    """
    system: list[str] = []
    turns: list[tuple[Role, list[ContentBlockParam]]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            system.append(message.content)
            continue
        role, blocks = _blocks(message)
        if not blocks:
            continue  # the API rejects empty content; dropping it keeps the roles alternating
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    return "\n\n".join(system), [_turn(role, blocks) for role, blocks in turns]


def _blocks(message: UserMessage | AssistantMessage | ToolResultMessage) -> tuple[Role, list[ContentBlockParam]]:
    if isinstance(message, UserMessage):
        return "user", [{"type": "text", "text": message.content}]
    if isinstance(message, ToolResultMessage):
        result = ToolResultBlockParam(type="tool_result", tool_use_id=message.tool_call_id,
                                      is_error=message.is_error)
        if message.content:  # optional in the API: an empty result sends none
            result["content"] = message.content
        return "user", [result]
    blocks: list[ContentBlockParam] = []
    if message.content.strip():
        blocks.append({"type": "text", "text": message.content})
    blocks.extend({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                  for call in message.tool_calls)
    return "assistant", blocks


def _turn(role: Role, blocks: list[ContentBlockParam]) -> MessageParam:
    if role == "user":
        return {"role": "user", "content": blocks}
    return {"role": "assistant", "content": blocks}


def tool_param(tool: ToolDefinition) -> ToolParam:
    param = ToolParam(name=tool.name, input_schema=tool.parameters)
    if tool.description:
        param["description"] = tool.description
    return param


def usage(wire: WireUsage | MessageDeltaUsage) -> Usage:
    """Our usage from Anthropic's, whose `input_tokens` leaves out the tokens read from and written to the cache."""
    cache_read = wire.cache_read_input_tokens or 0
    cache_write = wire.cache_creation_input_tokens or 0
    return Usage(
        input_tokens=(wire.input_tokens or 0) + cache_read + cache_write,
        output_tokens=wire.output_tokens,
        cached_tokens=cache_read,
    )


def finish_reason(stop_reason: str | None) -> FinishReason:
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def response(message: Message) -> Response:
    """Our response from a non-streamed message: all text blocks joined, then the tool calls in order."""
    text = "".join(block.text for block in message.content if block.type == "text")
    calls = tuple(ToolCall(id=block.id, name=block.name, arguments=block.input)
                  for block in message.content if block.type == "tool_use")
    return Response(text=text, tool_calls=calls, finish_reason=finish_reason(message.stop_reason),
                    usage=usage(message.usage), model=message.model)


@dataclass
class _PendingCall:
    id: str
    name: str
    fragments: list[str] = field(default_factory=list)


@dataclass
class StreamAssembler:
    """Turns raw stream events into ours as they come, and remembers what the final `Response` needs.

    Tool calls are numbered in order of appearance (the `index` of our events),
    not by Anthropic's content-block index, which counts text blocks too.
    """

    model: str = ""
    stop_reason: str | None = None
    started: bool = False  # saw message_start: the server does speak the Messages API
    finished: bool = False  # saw message_stop: a stream cut short must not pass for a whole answer
    _usage: MessageDeltaUsage = field(default_factory=lambda: MessageDeltaUsage(output_tokens=0))
    _text: list[str] = field(default_factory=list)
    _calls: list[_PendingCall] = field(default_factory=list)
    _ordinals: dict[int, int] = field(default_factory=dict)  # content-block index -> tool-call ordinal

    def feed(self, event: RawMessageStreamEvent) -> list[StreamEvent]:
        if event.type == "message_start":
            self.started = True
            self.model = event.message.model
            self._merge_usage(event.message.usage)
        elif event.type == "content_block_start":
            block = event.content_block
            if block.type == "text" and block.text:
                self._text.append(block.text)
                return [TextDelta(text=block.text)]
            if block.type == "tool_use":
                ordinal = self._ordinals[event.index] = len(self._calls)
                self._calls.append(_PendingCall(block.id, block.name))
                opened: list[StreamEvent] = [ToolCallStart(index=ordinal, id=block.id, name=block.name)]
                if block.input:  # the API starts with {}, but a proxy may send the whole input here
                    return opened + self._arguments(ordinal, json.dumps(block.input))
                return opened
        elif event.type == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta" and delta.text:
                self._text.append(delta.text)
                return [TextDelta(text=delta.text)]
            if delta.type == "input_json_delta" and delta.partial_json and event.index in self._ordinals:
                return self._arguments(self._ordinals[event.index], delta.partial_json)
        elif event.type == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self._merge_usage(event.usage)
        elif event.type == "message_stop":
            self.finished = True
        return []

    def _arguments(self, ordinal: int, fragment: str) -> list[StreamEvent]:
        self._calls[ordinal].fragments.append(fragment)
        return [ToolCallDelta(index=ordinal, arguments=fragment)]

    def _merge_usage(self, wire: WireUsage | MessageDeltaUsage) -> None:
        """message_start carries the input counts, message_delta the (cumulative) output and any updated input."""
        updates = {name: value for name in _USAGE_FIELDS if (value := getattr(wire, name)) is not None}
        self._usage = self._usage.model_copy(update=updates)

    def response(self) -> Response:
        calls = tuple(ToolCall(id=call.id, name=call.name, arguments=parse_arguments("".join(call.fragments)))
                      for call in self._calls)
        return Response(text="".join(self._text), tool_calls=calls, finish_reason=finish_reason(self.stop_reason),
                        usage=usage(self._usage), model=self.model)
