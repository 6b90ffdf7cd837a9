"""The wire: JSON lines, the size and depth limits, and how a failure becomes a reply a person can read.

A request is one object `{"op": "tasks.show", "id": ...}`; the answer is zero or
more event lines `{"event": ...}` (streaming ops such as `ask`), then one final
line, `{"ok": true, "result": ...}` or `{"ok": false, "error": "...", "kind":
"ExceptionClassName"}`. Every line is valid UTF-8, whatever text it carries.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from typing import Any

from .._runtime.text import clean_text, deeper_than
from ..errors import RunError, WippyError

__all__ = [
    "LINE_LIMIT",
    "MAX_DEPTH",
    "MIB",
    "PROTOCOL",
    "REQUEST_LIMIT",
    "ControlError",
    "Disconnected",
    "deeper_than",
    "failure",
    "file_problem",
    "encode_line",
    "message",
    "to_json",
    "unwrap",
]

PROTOCOL = 1
MIB = 1024 * 1024
LINE_LIMIT = 64 * MIB
"""The longest answer line the client reads (a large registry diff or task result is one line)."""
REQUEST_LIMIT = 1 * MIB
"""The longest request line the node reads; a longer one is skipped and answered with an error."""
MAX_DEPTH = 64
"""How deeply a request's JSON may nest (a signal's payload is the only field that nests at all)."""


class ControlError(RunError):
    """A request failed, on the node or on the way; `kind` names the exception the node raised."""

    status = 1

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class Disconnected(WippyError):
    """The client went away while a streaming op was sending it events."""


def encode_line(message: dict[str, Any]) -> bytes:
    """One line of the wire, valid UTF-8 whatever text it carries (a lone surrogate becomes U+FFFD)."""
    return clean_text(json.dumps(message, separators=(",", ":"), ensure_ascii=False)).encode() + b"\n"


def to_json(value: Any) -> Any:
    """JSON data for a result or event: models, dataclasses and datetimes as the wire carries them."""
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value, fallback=str)


def unwrap(reply: dict[str, Any]) -> Any:
    if reply.get("ok"):
        return reply.get("result")
    raise ControlError(str(reply.get("error", "the node gave no reason")), reply.get("kind"))


def failure(error: Exception) -> dict[str, Any]:
    """The final line of a request that failed: a message for a person and the exception's class name."""
    kind = getattr(error, "kind", None) if isinstance(error, ControlError) else None
    return {"ok": False, "error": file_problem(error) or message(error), "kind": kind or type(error).__name__}


_FOLDER_IN_THE_WAY = "wippy needs a folder there, and a file is in the way; move it away"
FILE_ADVICE = {
    errno.EACCES: "make it writable by the user who runs wippy",
    errno.EPERM: "make it writable by the user who runs wippy",
    errno.EROFS: "it is on a read-only file system; move the app somewhere writable",
    errno.ENOSPC: "the disk is full; free some space and try again",
    errno.EDQUOT: "the disk quota is used up; free some space and try again",
    errno.EEXIST: _FOLDER_IN_THE_WAY,  # what `mkdir(exist_ok=True)` says about a file in its place
    errno.ENOTDIR: _FOLDER_IN_THE_WAY,
}
"""What to do about a file the app cannot use, by the error number the OS gave."""


def file_problem(error: BaseException) -> str | None:
    """A clear message for a file the app cannot use (no permission, read-only, disk full), naming it; else None.

    DuckDB reports its own I/O errors (`duckdb.IOException`, not an `OSError`) in
    the OS's words, which pick the advice.
    """
    duckdb = sys.modules.get("duckdb")  # loaded if it raised
    if isinstance(error, OSError) and (error.filename is not None or error.errno in FILE_ADVICE):
        code = error.errno
        what = f"cannot use {error.filename}: {error.strerror}" if error.filename is not None else str(error)
    elif duckdb is not None and isinstance(error, duckdb.IOException):
        what = str(error)
        code = next((number for number in FILE_ADVICE if os.strerror(number) in what), None)
    else:
        return None
    advice = FILE_ADVICE[code] if code in FILE_ADVICE else "check that the app's folder and .wippy/ are writable"
    return f"{what}; {advice}"


def message(error: Exception) -> str:
    if type(error) is KeyError and error.args:  # str() of a KeyError quotes its message
        return str(error.args[0])
    return str(error) or type(error).__name__
