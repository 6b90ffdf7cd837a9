"""Options a tool function in `tools/` declares with `@tool`, read by the registry when it loads the file."""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

from ..errors import ArgumentError

F = typing.TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__wippy_tool__"


def tool(*, timeout: float | None = None, llm_alias: str | None = None) -> Callable[[F], F]:
    """Options for a tool function in `tools/`: its call timeout in seconds, the name models see it by.

    ```python
    @tool(timeout=120, llm_alias="search")
    def search_the_web(query: str) -> list[str]: ...
    ```
    """
    if timeout is not None and timeout <= 0:
        raise ArgumentError("a tool's timeout is a positive number of seconds")

    def mark(fn: F) -> F:
        setattr(fn, _ATTRIBUTE, {"timeout": timeout, "llm_alias": llm_alias})
        return fn

    return mark


def tool_options(fn: Callable[..., Any]) -> dict[str, Any]:
    """What `@tool` set on `fn`: `timeout` and `llm_alias` (empty for a function without it)."""
    options: dict[str, Any] = getattr(fn, _ATTRIBUTE, {})
    return options
