"""OpenAI and OpenAI-compatible servers (Ollama, vLLM, LM Studio, llama.cpp, OpenRouter) through the official SDK.

One client per model: the SDK owns HTTP, retries (408/409/429/5xx and connection
failures, jittered backoff honouring `retry-after`/`retry-after-ms`, `max_retries` from
the entry) and timeouts; this module only maps the wire format (`_openai_format`) and
turns the SDK's exceptions into our `ModelError` kinds, each with the provider's message.
An answer that is not a chat completion (or a stream of chunks ending with a finish
reason) is refused as `APIModel` describes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletion

from ..registry import Pricing
from ._api import APIModel
from ._errors import (
    BadRequestError,
    ContextTooLongError,
    InvalidResponseError,
    MissingAPIKeyError,
    ModelError,
    ServerError,
    error_for_status,
)
from ._messages import ChatMessage, Response, ResponseDone, StreamEvent, ToolDefinition
from ._model import Settings
from ._openai_format import StreamAssembler, request_params, response_from_completion

OPENAI_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "not-needed"  # the SDK insists on a key; local servers ignore it
_NO_SETTINGS = Settings()

# How servers say the conversation is too long: OpenAI's code, llama.cpp's type, and the wording of
# OpenAI, vLLM, llama.cpp, LM Studio and OpenRouter.
_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error"}
_CONTEXT_WORDS = re.compile(r"context[ _](length|window|size)|maximum context", re.IGNORECASE)


class OpenAIModel(APIModel):
    """A Chat Completions model; `provider` is "openai" or "openai-compatible" (key optional, any base_url)."""

    api = "the Chat Completions API"
    base_url_hint = f"the API's base URL, ending in /v1 ({OPENAI_BASE_URL} for OpenAI)"

    def __init__(
        self, name: str, *, base_url: str | None, provider: str = "openai", pricing: Pricing | None = None,
        settings: Settings = _NO_SETTINGS, api_key: str | None, timeout: float | None, max_retries: int,
        http_client: httpx2.AsyncClient | None,
    ) -> None:
        # never None: the loader, not the SDK, reads the environment
        super().__init__(name, base_url=base_url or OPENAI_BASE_URL, pricing=pricing, settings=settings,
                         timeout=timeout, api_key=api_key)
        self.provider = provider
        if not api_key and provider == "openai":
            raise MissingAPIKeyError("no API key: set the environment variable OPENAI_API_KEY",
                                     provider=provider, model=name)
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
            raw = await self._client.chat.completions.with_raw_response.create(**params)
        with self._reading(raw.http_response):
            completion: ChatCompletion | str = raw.parse()  # the text of a body that is not JSON, or what the JSON made
            if not isinstance(completion, ChatCompletion) or not completion.choices:
                raise self._not_the_api("its answer is not a chat completion with a choice", raw.http_response.text)
            return response_from_completion(completion)

    async def _stream(
        self, messages: list[ChatMessage], tools: list[ToolDefinition], settings: Settings
    ) -> AsyncIterator[StreamEvent]:
        params = request_params(self.name, messages, tools, settings, provider=self.provider, stream=True)
        assembler = StreamAssembler()
        with self._model_errors():
            chunks: openai.AsyncStream[Any] = await self._client.chat.completions.create(**params)
            async with chunks:  # closes the response if the caller stops early
                await self._check_event_stream(chunks.response)
                with self._reading():
                    async for chunk in chunks:
                        for event in assembler.feed(chunk):
                            yield event
                    response = self._whole(assembler, first="chunk", last="chunk with a finish_reason")
        yield ResponseDone(response=response)

    @contextmanager
    def _model_errors(self) -> Iterator[None]:
        try:
            yield
        except openai.OpenAIError as error:
            raise self._error(error) from error

    def _error(self, error: openai.OpenAIError) -> ModelError:
        """Our exception for an SDK exception, keeping the provider's message."""
        if isinstance(error, openai.APIConnectionError):  # timeouts included
            return self._transport_error(error, timed_out=isinstance(error, openai.APITimeoutError))
        where: dict[str, Any] = {"provider": self.provider, "model": self.name}
        message = getattr(error, "message", None) or str(error)
        if isinstance(error, openai.APIStatusError):
            where["status"] = error.status_code
            kind = error_for_status(error.status_code)
            if kind is BadRequestError and _context_too_long(error):
                kind = ContextTooLongError
            return kind(message + (_retried(error) if kind.retryable else ""), **where)
        if isinstance(error, openai.APIResponseValidationError):
            return InvalidResponseError(f"{self.base_url} sent an answer the SDK could not read: {message}", **where)
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
