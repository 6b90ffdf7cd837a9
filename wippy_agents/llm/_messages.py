"""The provider-neutral conversation: messages, tool definitions and calls, responses and stream events.

Frozen pydantic models: they validate what crosses from an SDK, and they dump to
JSON with a `role` or `type` tag, which is how the journal stores them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._runtime.text import clean_data, deeper_than, is_clean


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Value = TypeVar("Value", bound=_Frozen)


def clean(value: Value) -> Value:
    """`value` with every string in it valid text (see `_runtime.text`); `value` itself when it already was.

    Checked field by field without dumping the model: every stream event passes here.
    """
    if not _dirty(value):
        return value
    return type(value).model_validate(clean_data(value.model_dump()))


def _dirty(value: Any) -> bool:
    """Whether any string in `value` (a model, or JSON-like data) holds a surrogate."""
    if isinstance(value, str):
        return not is_clean(value)
    if isinstance(value, BaseModel):
        return any(_dirty(item) for item in value.__dict__.values())
    if isinstance(value, dict):
        return any(_dirty(key) or _dirty(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_dirty(item) for item in value)
    return False


class SystemMessage(_Frozen):
    role: Literal["system"] = "system"
    content: str


class UserMessage(_Frozen):
    role: Literal["user"] = "user"
    content: str


RAW_ARGUMENTS_KEY = "_raw_arguments"
"""A tool call whose arguments are not a JSON object carries the model's raw text under this key alone."""

MAX_ARGUMENTS_DEPTH = 64
"""How deep a tool call's arguments may nest: deeper ones (a model gone astray) cannot be journaled and are kept
raw, as arguments that are not JSON are."""


def parse_arguments(raw: str) -> dict[str, Any]:
    """A tool call's JSON arguments as a dict; anything but a JSON object is kept raw, under `RAW_ARGUMENTS_KEY`."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return {RAW_ARGUMENTS_KEY: raw}
    return value if isinstance(value, dict) and not deeper_than(value, MAX_ARGUMENTS_DEPTH) else {RAW_ARGUMENTS_KEY: raw}


class ToolCall(_Frozen):
    """A model's request to run tool `name` with `arguments`; `id` pairs it with its result."""

    id: str
    name: str
    arguments: dict[str, Any] = {}

    @field_validator("arguments")
    @classmethod
    def _not_too_deep(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        """Arguments nested too deeply (built by a model implementation itself) become raw text naming them."""
        if deeper_than(arguments, MAX_ARGUMENTS_DEPTH):
            deep = [name for name, value in arguments.items() if deeper_than(value, MAX_ARGUMENTS_DEPTH - 1)]
            return {RAW_ARGUMENTS_KEY: f"{', '.join(deep)}: nested more than {MAX_ARGUMENTS_DEPTH} levels deep"}
        return arguments


class AssistantMessage(_Frozen):
    role: Literal["assistant"] = "assistant"
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


class ToolResultMessage(_Frozen):
    """The outcome of one tool call, sent back to the model (an error too, so it can correct itself)."""

    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolResultMessage, Field(discriminator="role")
]


class ToolDefinition(_Frozen):
    """A tool as offered to a model: a provider-safe `name`, what it does, its JSON schema.

    `id` is the registry id behind the name (never sent to a provider).
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = {"type": "object", "properties": {}}
    id: str | None = None


class Usage(_Frozen):
    """Tokens of one or more calls. `input_tokens` includes the `cached_tokens` read from a prompt cache."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


FinishReason = Literal["stop", "tool_calls", "length", "content_filter", "error"]


class Response(_Frozen):
    """One model answer: text (possibly before tool calls), tool calls, why it stopped, usage and cost."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason = "stop"
    usage: Usage = Usage()
    model: str = ""
    cost_usd: float = 0.0

    def message(self) -> AssistantMessage:
        """The assistant message to append to the conversation."""
        return AssistantMessage(content=self.text, tool_calls=self.tool_calls)


class TextDelta(_Frozen):
    type: Literal["text"] = "text"
    text: str


class ToolCallStart(_Frozen):
    """A tool call begins; its arguments follow as `ToolCallDelta`s with the same `index`."""

    type: Literal["tool_call_start"] = "tool_call_start"
    index: int
    id: str
    name: str


class ToolCallDelta(_Frozen):
    type: Literal["tool_call_delta"] = "tool_call_delta"
    index: int
    arguments: str  # a fragment of the JSON arguments


class ResponseDone(_Frozen):
    """The last event of every stream: the whole response, as `complete` would return it."""

    type: Literal["response"] = "response"
    response: Response


StreamEvent = Annotated[TextDelta | ToolCallStart | ToolCallDelta | ResponseDone, Field(discriminator="type")]


def response_events(response: Response) -> list[StreamEvent]:
    """The stream a provider would send for `response`: text in word pieces, each tool call, then the response."""
    events: list[StreamEvent] = []
    if response.text:
        words = response.text.split(" ")
        events += [TextDelta(text=word + " ") for word in words[:-1]]
        if words[-1]:
            events.append(TextDelta(text=words[-1]))
    for index, call in enumerate(response.tool_calls):
        events.append(ToolCallStart(index=index, id=call.id, name=call.name))
        events.append(ToolCallDelta(index=index, arguments=json.dumps(call.arguments)))
    events.append(ResponseDone(response=response))
    return events
