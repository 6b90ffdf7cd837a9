"""Step results as JSON: plain data as it is, the project's own types with a type tag.

Never pickle and never import by name: a tag names a type from a fixed table of
this project's models, so a journal written by anyone cannot make the node
construct anything else. The layers above put their models in the table
(`register_journal_types`): the engine knows none of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from .._runtime.text import clean_text, is_clean
from ..errors import ArgumentError, UsageError

TAG = "__wippy__"

_TYPES: dict[str, type[BaseModel]] = {}
_NAMES: dict[type[BaseModel], str] = {}


def register_journal_types(layer: str, models: Iterable[type[BaseModel]]) -> None:
    """Let step results hold `models`, tagged `<layer>.<class name>` (the tags are stored: never rename them)."""
    for model in models:
        tag = f"{layer}.{model.__name__}"
        if _TYPES.get(tag, model) is not model:
            raise ArgumentError(f"two journal types would share the tag {tag!r}")
        _TYPES[tag], _NAMES[model] = model, tag


class JournalTypeError(UsageError, TypeError):
    """A value the journal cannot store (it is neither JSON data nor one of the project's types)."""


def encode(value: Any) -> Any:
    """JSON-ready data for `value`; raises `JournalTypeError` naming what cannot be stored."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, BaseModel):
        name = _NAMES.get(type(value))
        if name is None:
            raise JournalTypeError(f"the journal stores JSON data and wippy types, not {type(value).__qualname__}; "
                                   "return its .model_dump() instead")
        return {TAG: name, "value": value.model_dump(mode="json")}
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise JournalTypeError("the journal stores dicts with string keys only")
        encoded = {key: encode(item) for key, item in value.items()}
        return {TAG: "dict", "value": encoded} if TAG in value else encoded
    if isinstance(value, list | tuple):
        return [encode(item) for item in value]
    raise JournalTypeError(f"the journal cannot store a {type(value).__qualname__}; return JSON data "
                           "(dict, list, str, number, bool, None) or a wippy type")


def decode(data: Any) -> Any:
    """The value `encode` was given (tuples come back as lists)."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if isinstance(data, dict):
        tag = data.get(TAG)
        if tag is None:
            return {key: decode(item) for key, item in data.items()}
        if tag == "dict":
            return {key: decode(item) for key, item in data["value"].items()}
        cls = _TYPES.get(tag)
        if cls is None:
            raise JournalTypeError(f"the journal holds the type tag {tag!r}, which no loaded module registered "
                                   "(the agents layer registers the llm and agents types: import wippy_agents.agents)")
        return cls.model_validate(data["value"])
    return data


def dumps(value: Any) -> str:
    """JSON text of `value`, always valid UTF-8: lone surrogates in its strings become U+FFFD.

    Surrogates can only occur inside JSON strings, so repairing the text repairs the strings.
    """
    text = json.dumps(encode(value), ensure_ascii=False, separators=(",", ":"))
    return text if is_clean(text) else clean_text(text)


def loads(text: str | None) -> Any:
    """The value `dumps` stored (None for None); tagged values come back as the registered types."""
    return None if text is None else decode(json.loads(text))
