"""What the openai and anthropic providers share: making sure what a server sent is the API's answer.

Both SDKs build their objects from whatever JSON arrives without checking its types,
hand back the text of a body that is not JSON, and read a body that is not an event
stream as a stream of no events; taken as they come, such answers were empty answers
or raw `JSONDecodeError`s. Here they become `InvalidResponseError`, quoting what the
server sent and saying what `base_url` should be, and a stream that stops before the
API's last event is a `ModelConnectionError`, never a shortened answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import aclosing, contextmanager, suppress
from json import JSONDecodeError
from typing import Protocol

import httpx2

from .._runtime.text import clean_text
from ..registry import Pricing
from ._errors import InvalidResponseError, ModelConnectionError, ModelError, ModelTimeoutError
from ._messages import Response
from ._model import Model, Settings

MALFORMED = (ValueError, TypeError, AttributeError, LookupError)
"""What reading a malformed answer raises: bad JSON or UTF-8 and failed validation (ValueError), and fields of the
wrong type or shape (the SDKs build their objects from the JSON without checking its types)."""
PAGE_BYTES = 2000
"""How much of a body that is not an event stream is read, to quote it in the error."""


class Assembler(Protocol):
    """A provider's stream assembler, as far as telling a whole stream from a cut or foreign one goes."""

    @property
    def started(self) -> bool:
        """Whether the event the API opens a stream with came."""

    @property
    def finished(self) -> bool:
        """Whether the event the API ends an answer with came."""

    def response(self) -> Response: ...


class APIModel(Model):
    """A model behind a provider's HTTP API, reached through the provider's SDK."""

    networked = True
    api = ""
    """The API's name, for "did not answer as {api} does"."""
    base_url_hint = ""
    """What `base_url` should look like, for when a server does not answer as the API does."""

    def __init__(
        self, name: str, *, base_url: str, pricing: Pricing | None, settings: Settings, timeout: float | None,
        api_key: str | None,
    ) -> None:
        super().__init__(name, pricing=pricing, settings=settings, timeout=timeout, secret=api_key)
        self.base_url = base_url

    def _transport_error(self, error: BaseException, *, timed_out: bool) -> ModelError:
        """Our error for a timeout or a failed connection (before or during an answer): the server, and why.

        The SDKs report a body that does not decode as a connection error; it is the answer that is wrong.
        """
        if any(isinstance(cause, httpx2.DecodingError) for cause in causes(error)):
            return self._not_the_api(f"its body does not decode as its content-encoding says ({reason(error)})")
        if timed_out:
            return ModelTimeoutError(f"no answer from {self.base_url} in time ({reason(error)}); if the server is "
                                     "just slow, raise `timeout` in the model's entry",
                                     provider=self.provider, model=self.name)
        return ModelConnectionError(f"the connection to {self.base_url} failed ({reason(error)}): check that the "
                                    "server is up and `base_url` is right, then try again",
                                    provider=self.provider, model=self.name)

    def _not_the_api(self, what: str, sent: str | bytes | None = None) -> InvalidResponseError:
        quoted = f"; it sent {excerpt(sent)}" if sent is not None else ""
        return InvalidResponseError(
            f"{self.base_url} did not answer as {self.api} does: {what}{quoted}. Check `base_url` in the model's "
            f"entry: {self.base_url_hint}", provider=self.provider, model=self.name)

    @contextmanager
    def _reading(self, whole: httpx2.Response | None = None) -> Iterator[None]:
        """Around reading an answer (`whole` when its body was read whole): a malformed one is InvalidResponseError."""
        try:
            yield
        except MALFORMED as error:
            what = f"its answer could not be read ({type(error).__name__}: {one_line(str(error))})"
            raise self._not_the_api(what, _failed_text(error) or (whole.text if whole else None)) from error

    async def _check_event_stream(self, response: httpx2.Response) -> None:
        """The answer to a streamed request must be an event stream; anything else is quoted and refused."""
        content_type = response.headers.get("content-type", "")
        if content_type and content_type.split(";")[0].strip().lower() != "text/event-stream":
            what = f"it answered with {one_line(content_type, 60)} instead of an event stream"
            raise self._not_the_api(what, await _page(response))

    def _whole(self, stream: Assembler, *, first: str, last: str) -> Response:
        """The streamed answer, once sure the stream was the API's (its `first` event came) and whole (`last`)."""
        if not stream.started:
            raise self._not_the_api(f"its event stream had no {first}")
        if not stream.finished:
            raise ModelConnectionError(
                f"the stream from {self.base_url} ended before the answer did (no {last}): the connection was "
                "probably cut; try again", provider=self.provider, model=self.name)
        return stream.response()


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what caused it, and so on."""
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def reason(error: BaseException) -> str:
    """What failed under an SDK's error: the first of its causes that says something ("ConnectionResetError:
    [Errno 104] Connection reset by peer" under "Connection error."), else the error itself."""
    for cause in [*causes(error)][1:] + [error]:
        if text := one_line(str(cause)):
            return f"{type(cause).__name__}: {text}"
    return type(error).__name__


def one_line(text: str, limit: int = 200) -> str:
    """`text` as valid, printable text on one line, cut to `limit` characters (with an ellipsis)."""
    printable = "".join(c if c.isprintable() else " " for c in clean_text(text[: limit * 4]))
    line = " ".join(printable.split())
    return line if len(line) <= limit else line[:limit] + "…"


def excerpt(sent: str | bytes) -> str:
    """What a server sent, quoted for an error message (short, printable, one line), or "nothing"."""
    line = one_line(sent.decode("utf-8", "replace") if isinstance(sent, bytes) else sent)
    return repr(line) if line else "nothing"


def _failed_text(error: Exception) -> str | bytes | None:
    """The text that would not parse, when the error holds it (one event's data, not the whole body)."""
    if isinstance(error, JSONDecodeError):
        return error.doc
    if isinstance(error, UnicodeDecodeError):
        return error.object
    return None


async def _page(response: httpx2.Response) -> bytes:
    """The start of a body, to quote; what had arrived if reading fails, since the answer is refused either way."""
    page = b""
    with suppress(httpx2.HTTPError):
        async with aclosing(response.aiter_bytes()) as parts:
            async for part in parts:
                page += part
                if len(page) >= PAGE_BYTES:
                    break
    return page
