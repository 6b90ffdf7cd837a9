"""OpenAI and OpenAI-compatible servers (Ollama, vLLM, LM Studio, llama.cpp, OpenRouter) through the official SDK.

One client per model: the SDK owns HTTP, retries (408/409/429/5xx and connection
failures, jittered backoff honouring `retry-after`/`retry-after-ms`, `max_retries` from
the entry) and timeouts; this module only maps the wire format (`_openai_format`) and
turns the SDK's exceptions into our `ModelError` kinds, each with the provider's message.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletion

from ..registry._kinds import Pricing
from ._errors import (
    BadRequestError,
    ContextTooLongError,
    MissingAPIKeyError,
    ModelConnectionError,
    ModelError,
    ModelTimeoutError,
    ServerError,
    error_for_status,
)
from ._messages import ChatMessage, Response, ResponseDone, StreamEvent, ToolDefinition
from ._model import Model, Settings
from ._openai_format import StreamAssembler, request_params, response_from_completion

OPENAI_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "not-needed"  # the SDK insists on a key; local servers ignore it
_NO_SETTINGS = Settings()

# How servers say the conversation is too long: OpenAI's code, llama.cpp's type, and the wording of
# OpenAI, vLLM, llama.cpp, LM Studio and OpenRouter.
_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error"}
_CONTEXT_WORDS = re.compile(r"context[ _](length|window|size)|maximum context", re.IGNORECASE)


class OpenAIModel(Model):
    """A Chat Completions model; `provider` is "openai" or "openai-compatible" (key optional, any base_url)."""

    networked = True

    def __init__(
        self, name: str, *, base_url: str | None, provider: str = "openai", pricing: Pricing | None = None,
        settings: Settings = _NO_SETTINGS, api_key: str | None, timeout: float | None, max_retries: int,
        http_client: httpx2.AsyncClient | None,
    ) -> None:
        super().__init__(name, pricing=pricing, settings=settings)
        self.provider = provider
        if not api_key and provider == "openai":
            raise MissingAPIKeyError("no API key: set the environment variable OPENAI_API_KEY",
                                     provider=provider, model=name)
        self.base_url = base_url or OPENAI_BASE_URL  # never None: the loader, not the SDK, reads the environment
        self._owns_http_client = http_client is None
        self._client = openai.AsyncOpenAI(
            api_key=api_key or NO_KEY, base_url=self.base_url, max_retries=max_retries, http_client=http_client,
            timeout=openai.not_given if timeout is None else timeout,  # None would mean "wait forever" to the SDK
        )

    async def aclose(self) -> None:
        """Close the connection pool (not an `http_client` the caller passed in: that one is theirs)."""
        if self._owns_http_client:
            await self._client.close()

    async def _complete(self, messages: list[ChatMessage], tools: list[ToolDefinition], settings: Settings) -> Response:
        params = request_params(self.name, messages, tools, settings, provider=self.provider, stream=False)
        with self._model_errors():
            completion: object = await self._client.chat.completions.create(**params)
        if not isinstance(completion, ChatCompletion):  # the SDK hands back the text of a non-JSON body
            raise ModelError(f"{self.base_url} did not answer with a chat completion (is it the API's base URL, "
                             f"ending in /v1?); it sent: {str(completion)[:200]!r}", provider=self.provider,
                             model=self.name)
        return response_from_completion(completion)

    async def _stream(
        self, messages: list[ChatMessage], tools: list[ToolDefinition], settings: Settings
    ) -> AsyncIterator[StreamEvent]:
        params = request_params(self.name, messages, tools, settings, provider=self.provider, stream=True)
        assembler = StreamAssembler()
        with self._model_errors():
            chunks: openai.AsyncStream[Any] = await self._client.chat.completions.create(**params)
            async with chunks:  # closes the response if the caller stops early
                async for chunk in chunks:
                    for event in assembler.feed(chunk):
                        yield event
        yield ResponseDone(response=assembler.response())

    @contextmanager
    def _model_errors(self) -> Iterator[None]:
        try:
            yield
        except openai.OpenAIError as error:
            raise model_error(error, provider=self.provider, model=self.name, base_url=self.base_url) from error


def model_error(error: openai.OpenAIError, *, provider: str, model: str, base_url: str) -> ModelError:
    """Our exception for an SDK exception, keeping the provider's message."""
    where: dict[str, Any] = {"provider": provider, "model": model}
    message = getattr(error, "message", None) or str(error)
    if isinstance(error, openai.APITimeoutError):
        return ModelTimeoutError(f"no answer from {base_url} in time: {message}{_cause(error)}", **where)
    if isinstance(error, openai.APIConnectionError):
        return ModelConnectionError(f"could not reach {base_url}: {message}{_cause(error)}", **where)
    if isinstance(error, openai.APIStatusError):
        where["status"] = error.status_code
        kind = error_for_status(error.status_code)
        if kind is BadRequestError and _context_too_long(error):
            kind = ContextTooLongError
        return kind(message + (_retried(error) if kind.retryable else ""), **where)
    if isinstance(error, openai.APIError):  # an error event in the middle of a stream
        if _context_too_long(error):
            return ContextTooLongError(message, **where)
        return ServerError(message, **where)
    return ModelError(message, **where)


def _context_too_long(error: openai.APIError) -> bool:
    body = error.body if isinstance(error.body, dict) else {}
    return bool({error.code, body.get("type")} & _CONTEXT_CODES) or bool(_CONTEXT_WORDS.search(error.message))


def _retried(error: openai.APIStatusError) -> str:
    """How often the SDK retried, from the header it stamps on each attempt (it may stop early on `retry-after`)."""
    retries = error.response.request.headers.get("x-stainless-retry-count", "0")
    return f" (still failing after {retries} retries)" if retries != "0" else ""


def _cause(error: BaseException) -> str:
    """The low-level reason (refused, DNS, read timeout), which the SDK's message leaves out."""
    cause = error.__cause__
    return f" ({type(cause).__name__}: {cause})" if cause is not None and str(cause) else ""
