"""Claude through the official SDK's Messages API (`anthropic.AsyncAnthropic`).

The SDK does the retrying: 408, 409, 429 and 5xx (529 "overloaded" included) and
dropped connections are retried up to the entry's `max_retries` with jittered
backoff that honours `retry-after-ms` / `retry-after`; other 4xx never are. What
still fails becomes one of our `ModelError`s, with the provider's own message. An
answer that is not a message (or a stream from `message_start` to `message_stop`) is
refused as `APIModel` describes; events of kinds we do not know are passed over.

`max_tokens` is required by the API: the entry's (or the call's), else
`DEFAULT_MAX_TOKENS` (4096). `temperature` is not sent, since API version
2026-10-21 (the one SDK 2.x speaks) refuses sampling parameters outright.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import anthropic
import httpx2
from anthropic.types import Message

from ..registry import Pricing
from ._anthropic_format import StreamAssembler, request_params, response
from ._api import APIModel
from ._errors import (
    AuthenticationError,
    BadRequestError,
    ContextTooLongError,
    InvalidResponseError,
    MissingAPIKeyError,
    ModelError,
    ModelTimeoutError,
    RateLimitError,
    ServerError,
    error_for_status,
)
from ._messages import ChatMessage, Response, ResponseDone, StreamEvent, ToolDefinition
from ._model import Settings

log = logging.getLogger(__name__)

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
NONSTREAMING_MAX_TOKENS = 21_333
"""Above this `complete` streams: the SDK refuses a non-streamed call it expects to outlast ten minutes."""

# For errors that arrive inside a 200 stream (an `error` event), where only the body's type tells.
_BY_TYPE: dict[str, type[ModelError]] = {
    "authentication_error": AuthenticationError, "permission_error": AuthenticationError,
    "rate_limit_error": RateLimitError, "request_too_large": ContextTooLongError, "timeout_error": ModelTimeoutError,
    "api_error": ServerError, "overloaded_error": ServerError,
    "invalid_request_error": BadRequestError, "not_found_error": BadRequestError,
}
_TOO_LONG = re.compile(r"prompt is too long|context (limit|window)", re.IGNORECASE)


class AnthropicModel(APIModel):
    """A Claude model, configured by an `anthropic` model entry (see `load_model`)."""

    provider = "anthropic"
    api = "the Messages API"
    base_url_hint = f"the API's root, without /v1 ({ANTHROPIC_BASE_URL} for Anthropic)"

    def __init__(
        self, name: str, *, base_url: str | None, pricing: Pricing | None, settings: Settings, api_key: str | None,
        timeout: float | None, max_retries: int, http_client: httpx2.AsyncClient | None,
    ) -> None:
        # never None: the loader, not the SDK, reads the environment
        super().__init__(name, base_url=base_url or ANTHROPIC_BASE_URL, pricing=pricing, settings=settings,
                         timeout=timeout, api_key=api_key)
        if not api_key:  # never let the SDK go looking for credentials files on its own
            raise MissingAPIKeyError("no API key: set the environment variable ANTHROPIC_API_KEY",
                                     provider=self.provider, model=name)
        self._owns_http_client = http_client is None
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=self.base_url, max_retries=max_retries, http_client=http_client,
            timeout=anthropic.NOT_GIVEN if timeout is None else timeout,  # None would mean "wait forever"
        )
        self._told_temperature = False

    async def aclose(self) -> None:
        """Close the connection pool (not an `http_client` the caller passed in: that one is theirs)."""
        if self._owns_http_client:
            await self._client.close()

    async def _complete(self, messages: list[ChatMessage], tools: list[ToolDefinition], settings: Settings) -> Response:
        params = self._params(messages, tools, settings)
        if params["max_tokens"] > NONSTREAMING_MAX_TOKENS:
            return await super()._complete(messages, tools, settings)
        with self._model_errors():
            raw = await self._client.messages.with_raw_response.create(**params)
        with self._reading(raw.http_response):
            message: Message | str = await raw.parse()  # the text of a body that is not JSON, or what the JSON made
            if not isinstance(message, Message) or message.type != "message":
                raise self._not_the_api("its answer is not a message", raw.http_response.text)
            return response(message)

    async def _stream(
        self, messages: list[ChatMessage], tools: list[ToolDefinition], settings: Settings
    ) -> AsyncIterator[StreamEvent]:
        assembler = StreamAssembler()
        with self._model_errors():
            async with await self._client.messages.create(**self._params(messages, tools, settings),
                                                          stream=True) as stream:
                await self._check_event_stream(stream.response)
                with self._reading():
                    async for raw in stream:
                        for event in assembler.feed(raw):
                            yield event
                    answer = self._whole(assembler, first="message_start event", last="message_stop event")
        yield ResponseDone(response=answer)

    @contextmanager
    def _model_errors(self) -> Iterator[None]:
        try:
            yield
        except (anthropic.AnthropicError, httpx2.RequestError) as error:  # mid-stream I/O errors come unwrapped
            raise self._error(error) from error

    def _params(
        self, messages: list[ChatMessage], tools: list[ToolDefinition], settings: Settings
    ) -> anthropic.types.message_create_params.MessageCreateParamsBase:
        if settings.temperature is not None and not self._told_temperature:
            self._told_temperature = True
            log.warning("%r: temperature %s not sent; the Anthropic API no longer accepts sampling parameters",
                        self, settings.temperature)
        return request_params(self.name, messages, tools, settings)

    def _error(self, error: anthropic.AnthropicError | httpx2.RequestError) -> ModelError:
        """Our exception for the SDK's (or, mid-stream, httpx2's), keeping the provider's message."""
        if isinstance(error, anthropic.APIConnectionError | httpx2.RequestError):  # timeouts included
            timed_out = isinstance(error, anthropic.APITimeoutError | httpx2.TimeoutException)
            return self._transport_error(error, timed_out=timed_out)
        kind, message, status = _classify(error)
        return kind(message, provider=self.provider, model=self.name, status=status)


def _classify(error: anthropic.AnthropicError) -> tuple[type[ModelError], str, int | None]:
    """Which of our errors the SDK's is, with the provider's message and HTTP status."""
    if isinstance(error, anthropic.APIResponseValidationError):
        return InvalidResponseError, f"the SDK could not read the answer: {error}", None
    if not isinstance(error, anthropic.APIStatusError):
        return ModelError, str(error), None
    status = error.status_code if error.status_code >= 400 else None  # an `error` event comes inside a 200
    kind = error_for_status(status) if status else _BY_TYPE.get(error.type or "", ModelError)
    message = error.api_message or error.message
    if kind is BadRequestError and _TOO_LONG.search(message):
        kind = ContextTooLongError
    if error.request_id:
        message += f" (request id {error.request_id})"
    return kind, message, status
