"""The one interface agents call: `await model.complete(...)` and `async for event in model.stream(...)`.

A provider implements `_stream` (and `_complete` when its API has a cheaper
non-streaming call); this base merges the entry's default settings with the
caller's and prices every response from the entry's pricing. It is also the one
way out of every model, so it holds what must be true whatever the provider does:

- a call ends within `timeout` seconds in all (connecting, every retry, the whole
  stream), else `ModelTimeoutError`: the SDKs' own timeouts bound one read, so a
  server trickling a chunk a second could hold a turn forever;
- what the model says is valid text (a `"\\ud800"` escape in a provider's JSON
  becomes U+FFFD), so the journal can always store it;
- an error's message never shows the key the model was built with.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from ..errors import ArgumentError
from ..registry import Pricing
from . import _guard
from ._errors import InvalidResponseError, ModelError, ModelTimeoutError, scrub
from ._messages import ChatMessage, Response, ResponseDone, StreamEvent, ToolDefinition, clean
from ._usage import cost_usd

DEFAULT_TIMEOUT = 600.0
"""Seconds a model call may take in all when its entry sets no `timeout`: long answers stream for minutes."""

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Per-call knobs; None leaves the provider's default."""

    max_tokens: int | None = None
    temperature: float | None = None

    def merged(self, overrides: dict[str, Any]) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ArgumentError(f"unknown model setting(s) {', '.join(unknown)}; the settings are {', '.join(sorted(known))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


class Model(ABC):
    """A model ready to call, configured by a `model` entry (or a test double)."""

    provider = ""
    networked = False  # True for providers that send requests over the network

    def __init__(
        self, name: str, *, pricing: Pricing | None = None, settings: Settings = Settings(),
        timeout: float | None = None, secret: str | None = None,
    ) -> None:
        self.name = name
        self.pricing = pricing
        self.settings = settings
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        """The total deadline of one call, in seconds (the entry's `timeout`)."""
        self._secret = secret  # the API key: never shown in an error

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    async def complete(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition] = (), **settings: Any
    ) -> Response:
        """One answer: text, tool calls, finish reason, usage and cost."""
        if self.networked:
            _guard.check(self.provider, self.name)
        call = self._complete(list(messages), list(tools), self.settings.merged(settings))
        return self._finished(await self._within(self._deadline(), call))

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition] = (), **settings: Any
    ) -> AsyncIterator[StreamEvent]:
        """Text and tool-call deltas as they arrive, then `ResponseDone` with the whole priced response."""
        if self.networked:
            _guard.check(self.provider, self.name)
        events = self._stream(list(messages), list(tools), self.settings.merged(settings))
        deadline = self._deadline()
        try:
            # the deadline is entered around each wait for the provider, never around a `yield`: a deadline
            # passing while the caller handles an event must not cancel the caller's own code
            while (event := await self._within(deadline, anext(events, None))) is not None:
                if isinstance(event, ResponseDone):
                    yield ResponseDone(response=self._finished(event.response))
                else:
                    yield clean(event)
        finally:  # a caller that stops early closes the provider's response now, not at garbage collection
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    async def aclose(self) -> None:
        """Release the provider's connections (a model built on a shared HTTP client leaves it open)."""
        return None

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.timeout

    async def _within(self, deadline: float, step: Awaitable[T]) -> T:
        """Await one step of a call: cut off at the call's deadline, its errors scrubbed (see `scrub`)."""
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                return await step
        except ModelError as error:
            scrub(error, self._secret)
            raise
        except TimeoutError as error:
            if not scope.expired():
                raise
            raise ModelTimeoutError(
                f"no whole answer within {self.timeout:g} s, the deadline of one call (connecting, every retry and "
                "the whole stream); to allow longer, raise `timeout` in the model's entry",
                provider=self.provider, model=self.name,
            ) from error

    def _finished(self, response: Response) -> Response:
        """The response as callers get it: valid text, the model's name, priced from the entry."""
        cleaned = clean(response)
        cost = cost_usd(cleaned.usage, self.pricing)
        return cleaned.model_copy(update={"cost_usd": cost, "model": cleaned.model or self.name})

    async def _complete(self, messages: list[ChatMessage], tools: list[ToolDefinition], settings: Settings) -> Response:
        final: Response | None = None
        async for event in self._stream(messages, tools, settings):
            if isinstance(event, ResponseDone):
                final = event.response
        if final is None:
            raise InvalidResponseError(f"{self!r} ended its stream without a response")
        return final

    @abstractmethod
    def _stream(
        self, messages: list[ChatMessage], tools: list[ToolDefinition], settings: Settings
    ) -> AsyncIterator[StreamEvent]:
        """Yield the provider's events; the last one is `ResponseDone`."""
