"""Valid text at every boundary: what arrives from outside becomes text the rest of the system can store.

A Python `str` may hold lone UTF-16 surrogates (`"\\ud800"` is valid JSON, and
argv or file names that are not UTF-8 decode to `"\\udcff"` and friends). Such a
string cannot be encoded as UTF-8, so DuckDB, files and terminals refuse it, and
one of them stored in the journal used to make the app unbootable. Every boundary
that takes text in (argv, the control socket, model output, tool results, files)
passes it through `clean_text` or `clean_data`: a surrogate pair becomes the
character it stands for, and a lone surrogate becomes U+FFFD (the replacement
character), so nothing is dropped silently and nothing invalid goes further.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["clean_data", "clean_text", "deeper_than", "is_clean", "os_text"]

def is_clean(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (holds no surrogate code points)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_text(text: str) -> str:
    """`text` with surrogate pairs joined and lone surrogates replaced by U+FFFD (fast when already clean)."""
    if is_clean(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_data(value: Any) -> Any:
    """JSON-like data (dicts, lists, tuples, strings) with every string, keys included, made clean.

    Returns `value` itself when nothing needed cleaning, so the common case costs
    one walk and no copies.
    """
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        cleaned = {clean_text(k) if isinstance(k, str) else k: clean_data(v) for k, v in value.items()}
        same = all(a is b for a, b in zip(cleaned, value, strict=True)) and all(
            cleaned[k] is v for k, v in zip(cleaned, value.values(), strict=True))
        return value if same else cleaned
    if isinstance(value, list | tuple):
        items = [clean_data(item) for item in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items) if isinstance(value, list) else tuple(items)
    return value


def deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON data nests more than `limit` lists or objects deep (level by level: no recursion to overflow)."""
    level = [value]
    for _ in range(limit):
        level = [child for item in level if isinstance(item, dict | list)
                 for child in (item.values() if isinstance(item, dict) else item)]
    return any(isinstance(item, dict | list) for item in level)


def os_text(raw: str) -> str:
    """Text the OS handed over (argv, a file name), decoded as UTF-8 with undecodable bytes as U+FFFD.

    Python decodes such text with `surrogateescape` (`b"\\xff"` -> `"\\udcff"`);
    this takes the original bytes back and decodes them for display and storage.
    """
    if is_clean(raw):
        return raw
    return os.fsencode(raw).decode("utf-8", "replace")
