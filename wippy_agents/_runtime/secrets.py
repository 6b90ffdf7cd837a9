"""Secret values kept out of everything stored or logged: the state, the log, what an agent reads.

A provider's error can echo the API key, a tool's exception can quote a password
from its environment. Rather than trusting every such path, the app collects the
values of its secret environment variables (names such as `*_API_KEY`, `*TOKEN*`,
`*SECRET*`, `*PASSWORD*`, and every variable a model entry names as its key) and
replaces them with `[redacted]` where text leaves the process's memory: journal
lines, log records and tool results.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["REDACTED", "RedactedStream", "Redactor", "secret_names"]

REDACTED = "[redacted]"
MIN_SECRET = 8
"""Shorter values are not redacted: they would match ordinary text (and are no secret worth the name)."""
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|AUTH", re.IGNORECASE)


def secret_names(environ: Mapping[str, str]) -> list[str]:
    """The environment variables whose names say they hold a secret."""
    return sorted(name for name in environ if _SECRET_NAME.search(name))


class Redactor:
    """Replaces known secret values in text; `redact` is cheap when none occurs."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: tuple[str, ...] = ()
        self.add(values)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], also: Iterable[str] = ()) -> Redactor:
        """The values of the secret-looking variables, plus those of the variables named in `also`."""
        names = {*secret_names(environ), *also}
        return cls(environ[name] for name in names if name in environ)

    def add(self, values: Iterable[str]) -> None:
        found = {value for value in values if len(value) >= MIN_SECRET}
        self._values = tuple(sorted(found | set(self._values), key=len, reverse=True))  # longest first

    def __bool__(self) -> bool:
        return bool(self._values)

    def redact(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def redact_data(self, data: Any) -> Any:
        """JSON-like `data` with the secrets replaced in every string in it (keys too)."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {self.redact_data(key): self.redact_data(value) for key, value in data.items()}
        if isinstance(data, list | tuple):
            return type(data)(map(self.redact_data, data))
        return data

    def stream(self) -> RedactedStream:
        """For text that arrives in pieces (a model's streamed answer): see `RedactedStream`."""
        return RedactedStream(self)

    @property
    def longest(self) -> int:
        """The length of the longest secret (0: none)."""
        return len(self._values[0]) if self._values else 0

    def log_filter(self) -> logging.Filter:
        """A filter that redacts a record's message (formatted with its arguments) and its exception text."""
        return _RedactingFilter(self)


class RedactedStream:
    """Pieces of text given out redacted, a secret split between pieces too: the last characters of what has
    arrived (one fewer than the longest secret) are held back until the next piece, or `end`."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._held = ""

    def feed(self, text: str) -> str:
        """What can be given out of the text so far (any secret that starts in it ends in what has arrived)."""
        held = self._redactor.redact(self._held + text)
        cut = max(0, len(held) - max(0, self._redactor.longest - 1))
        self._held = held[cut:]
        return held[:cut]

    def end(self) -> str:
        """The text held back, once nothing more arrives."""
        held, self._held = self._held, ""
        return self._redactor.redact(held)


class _RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redactor.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            cleaned = self.redactor.redact(text)
            if cleaned != text:
                record.exc_text, record.exc_info = cleaned, None
        return True
