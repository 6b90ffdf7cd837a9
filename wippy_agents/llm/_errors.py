"""Model errors: one class per kind of failure, each carrying the provider's own message."""

from __future__ import annotations


class ModelError(Exception):
    """A model call failed. `provider`, `model` and `status` (HTTP status, when there was one) say where."""

    retryable = False

    def __init__(self, message: str, *, provider: str = "", model: str = "", status: int | None = None) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        where = f"{provider} model {model!r}" if provider else "model"
        super().__init__(f"{where}: {message}" if provider or model else message)


class MissingAPIKeyError(ModelError):
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
    """No answer within the entry's `timeout`."""


class ModelConnectionError(ModelError, ConnectionError):
    """The provider could not be reached (DNS, refused, reset)."""


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
