"""Model errors: one class per kind of failure, each carrying the provider's own message.

A provider's message may echo the API key, and its text may not be valid UTF-8; the
`Model` base class `scrub`s every error leaving a call, so neither reaches the
journal, a log or a screen.
"""

from __future__ import annotations

from .._runtime.secrets import REDACTED
from .._runtime.text import clean_text
from ..errors import RunError, UsageError


class ModelError(RunError):
    """A model call failed. `provider`, `model` and `status` (HTTP status, when there was one) say where."""

    retryable = False

    def __init__(self, message: str, *, provider: str = "", model: str = "", status: int | None = None) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        where = f"{provider} model {model!r}" if provider else "model"
        super().__init__(f"{where}: {message}" if provider or model else message)


class MissingAPIKeyError(ModelError, UsageError):
    """No key in the environment variable the model entry names; the message says which to set."""


class AuthenticationError(ModelError):
    """The provider refused the key (401/403)."""


class RateLimitError(ModelError):
    """Too many requests or tokens (429), still failing after the entry's `max_retries`."""

    retryable = True


class ContextTooLongError(ModelError):
    """The conversation does not fit the model's context window."""


class BadRequestError(ModelError):
    """The provider rejected the request as malformed (400/404/422); never retried."""


class ServerError(ModelError):
    """The provider failed (5xx), still failing after the entry's `max_retries`."""

    retryable = True


class ModelTimeoutError(ModelError, TimeoutError):
    """No answer within the entry's `timeout`: the SDK's wait for one read, or the call's total deadline."""


class ModelConnectionError(ModelError, ConnectionError):
    """The provider could not be reached (DNS, refused, reset)."""


class InvalidResponseError(ModelError):
    """The server answered, but not as the provider's API does (not JSON, not an event stream, malformed fields,
    no answer in it); the message quotes what it sent and says to check the entry's `base_url`."""


class RealModelRequestError(ModelError):
    """A test tried to reach a real model while `testing.forbid_model_requests()` was in force."""


def error_for_status(status: int) -> type[ModelError]:
    """The error class for an HTTP status from any provider (4xx other than these is a bad request)."""
    if status in (401, 403):
        return AuthenticationError
    if status == 429:
        return RateLimitError
    if status == 408:
        return ModelTimeoutError
    if status == 413:
        return ContextTooLongError
    return ServerError if status >= 500 else BadRequestError


def scrub(error: BaseException, secret: str | None) -> None:
    """Make `error` and the exceptions chained to it safe to store and show: valid text, `secret` as [redacted].

    The chain too, because a crash log prints it, and the SDK's exception behind a
    `ModelError` carries the provider's message as it came.
    """
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.args = tuple(_safe(arg, secret) if isinstance(arg, str) else arg for arg in current.args)
        pending += [chained for chained in (current.__cause__, current.__context__) if chained is not None]


def _safe(text: str, secret: str | None) -> str:
    return clean_text(text.replace(secret, REDACTED) if secret else text)
