"""Test doubles for models: scripted answers, or answers a function decides, and a guard against real requests."""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple, TypeAlias

from ..errors import UsageError
from ..llm import _guard
from ..llm._messages import ChatMessage, Response, ResponseDone, StreamEvent, ToolDefinition, response_events
from ..llm._model import Model, Settings

Scripted: TypeAlias = "Response | str | Sequence[StreamEvent] | BaseException"
"""One scripted answer: a response, plain text, the exact stream events, or an exception to raise."""


class ModelRequest(NamedTuple):
    """What a test double was asked: the conversation, the tools offered and the settings."""

    messages: list[ChatMessage]
    tools: list[ToolDefinition]
    settings: Settings


class ScriptExhausted(UsageError, AssertionError):
    """A `ScriptedModel` was called more often than it has responses, or left some unused."""


class _TestModel(Model):
    provider = "test"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.requests: list[ModelRequest] = []

    async def _stream(
        self, messages: list[ChatMessage], tools: list[ToolDefinition], settings: Settings
    ) -> AsyncIterator[StreamEvent]:
        self.requests.append(ModelRequest(messages, tools, settings))
        item = await self._next(self.requests[-1])
        if isinstance(item, BaseException):
            raise item
        events = response_events(Response(text=item)) if isinstance(item, str) else (
            response_events(item) if isinstance(item, Response) else list(item))
        if not events or not isinstance(events[-1], ResponseDone):
            raise ScriptExhausted(f"{self!r}: a scripted stream must end with ResponseDone; got {events!r}")
        for event in events:
            yield event

    async def _next(self, request: ModelRequest) -> Scripted:
        raise NotImplementedError


class ScriptedModel(_TestModel):
    """Answers from a queue of scripted responses, recording every request in `requests`."""

    def __init__(self, script: Iterable[Scripted] = (), *, name: str = "scripted") -> None:
        super().__init__(name)
        self.script: deque[Scripted] = deque(script)

    def add(self, *items: Scripted) -> None:
        self.script.extend(items)

    async def _next(self, request: ModelRequest) -> Scripted:
        if not self.script:
            last = request.messages[-1] if request.messages else None
            raise ScriptExhausted(
                f"{self!r} ran out of responses at call {len(self.requests)}; the last message was {last!r}"
            )
        return self.script.popleft()

    def assert_all_used(self) -> None:
        if self.script:
            raise ScriptExhausted(f"{self!r} was left with {len(self.script)} unused response(s): {list(self.script)!r}")

    def __enter__(self) -> ScriptedModel:
        return self

    def __exit__(self, kind: object, *exc_info: object) -> None:
        if kind is None:
            self.assert_all_used()


class FunctionModel(_TestModel):
    """Answers with whatever `fn(request)` returns (sync or async): a Response, text, events or an exception."""

    def __init__(self, fn: Callable[[ModelRequest], Scripted | Awaitable[Scripted]], *, name: str = "function") -> None:
        super().__init__(name)
        self.fn = fn

    async def _next(self, request: ModelRequest) -> Scripted:
        result = self.fn(request)
        return await result if inspect.isawaitable(result) else result


@contextmanager
def forbid_model_requests() -> Iterator[None]:
    """Inside this block any request to a real (networked) model raises `RealModelRequestError`."""
    _guard.forbid(1)
    try:
        yield
    finally:
        _guard.forbid(-1)
