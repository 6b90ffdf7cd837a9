"""The one interface agents call: `await model.complete(...)` and `async for event in model.stream(...)`.

A provider implements `_stream` (and `_complete` when its API has a cheaper
non-streaming call); this base merges the entry's default settings with the
caller's and prices every response from the entry's pricing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from ..registry._kinds import Pricing
from . import _guard
from ._messages import ChatMessage, Response, ResponseDone, StreamEvent, ToolDefinition
from ._usage import cost_usd


@dataclass(frozen=True)
class Settings:
    """Per-call knobs; None leaves the provider's default."""

    max_tokens: int | None = None
    temperature: float | None = None

    def merged(self, overrides: dict[str, Any]) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown model setting(s) {', '.join(unknown)}; the settings are {', '.join(sorted(known))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


class Model(ABC):
    """A model ready to call, configured by a `model` entry (or a test double)."""

    provider = ""
    networked = False  # True for providers that send requests over the network

    def __init__(self, name: str, *, pricing: Pricing | None = None, settings: Settings = Settings()) -> None:
        self.name = name
        self.pricing = pricing
        self.settings = settings

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    async def complete(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition] = (), **settings: Any
    ) -> Response:
        """One answer: text, tool calls, finish reason, usage and cost."""
        if self.networked:
            _guard.check(self.provider, self.name)
        response = await self._complete(list(messages), list(tools), self.settings.merged(settings))
        return self._priced(response)

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition] = (), **settings: Any
    ) -> AsyncIterator[StreamEvent]:
        """Text and tool-call deltas as they arrive, then `ResponseDone` with the whole priced response."""
        if self.networked:
            _guard.check(self.provider, self.name)
        events = self._stream(list(messages), list(tools), self.settings.merged(settings))
        try:
            async for event in events:
                yield ResponseDone(response=self._priced(event.response)) if isinstance(event, ResponseDone) else event
        finally:  # a caller that stops early closes the provider's response now, not at garbage collection
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    async def aclose(self) -> None:
        """Release the provider's connections (a model built on a shared HTTP client leaves it open)."""
        return None

    def _priced(self, response: Response) -> Response:
        cost = cost_usd(response.usage, self.pricing)
        return response.model_copy(update={"cost_usd": cost, "model": response.model or self.name})

    async def _complete(self, messages: list[ChatMessage], tools: list[ToolDefinition], settings: Settings) -> Response:
        final: Response | None = None
        async for event in self._stream(messages, tools, settings):
            if isinstance(event, ResponseDone):
                final = event.response
        if final is None:
            raise RuntimeError(f"{self!r} ended its stream without a response")
        return final

    @abstractmethod
    def _stream(
        self, messages: list[ChatMessage], tools: list[ToolDefinition], settings: Settings
    ) -> AsyncIterator[StreamEvent]:
        """Yield the provider's events; the last one is `ResponseDone`."""
