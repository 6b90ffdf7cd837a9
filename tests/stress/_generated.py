"""What the bad-input suites share: hostile values, and Hypothesis examples run against a node on the test's loop.

The async tests run on a loop of their own (tests/conftest.py), where a `@given` test
cannot await. So `drive` runs Hypothesis in a thread and sends each example to the
test's loop: one node (booted once by the test) takes every example. A failure
prints the `@reproduce_failure` blob to replay it (the profiles' `print_blob`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

T = TypeVar("T")

EXAMPLE_TIMEOUT = 30.0
"""Seconds one example may take before it counts as a hang."""

ODD_TEXT = ["", "\x00", "a\x00b", "\u202eevil", "\ud800", "x\udcffy", "\ud83d", "../x", "a/b:c", "\n", "é" * 3,
            "\ufeff", "\u200b", "💥", "\\u0000"]
"""Text that has tripped programs before: NUL, right-to-left marks, lone surrogates, path-like, invisible."""

odd_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(ODD_TEXT),
    st.lists(st.sampled_from(ODD_TEXT), min_size=2, max_size=6).map("".join),
)
"""Short text with odd characters and invalid Unicode."""

hostile_text = odd_text | st.builds(lambda char, size: char * size, st.sampled_from(["x", "é", "\ud800"]),
                                    st.integers(10_000, 300_000))
"""Text as a client or a model might send it: odd characters, invalid Unicode, or huge."""


def nested(depth: int) -> Any:
    """A list nested `depth` levels deep."""
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def json_like(text: st.SearchStrategy[str], deepest: int) -> st.SearchStrategy[Any]:
    """JSON-like values holding `text`, with floats JSON has not (NaN, infinities), some nested `deepest` levels."""
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | text,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
        max_leaves=12,
    ) | st.integers(1, deepest).map(nested)


json_values = json_like(hostile_text, 500)
"""Values as a client or a model might send them, nested up to as deep as `json.dumps` goes (deeper ones are
written as text)."""


def as_valid_text(text: str) -> str:
    """`text` as it is stored and shown: a lone surrogate becomes U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


async def drive(examples: st.SearchStrategy[T], check: Callable[[T], Awaitable[None]]) -> None:
    """Check every example Hypothesis draws from `examples` with `check`, run on this loop (a failure shrinks)."""
    loop = asyncio.get_running_loop()

    @settings(database=None)  # every suite's `run` would share the examples saved under its one name
    @given(examples)
    def run(example: T) -> None:
        asyncio.run_coroutine_threadsafe(check(example), loop).result(timeout=EXAMPLE_TIMEOUT)

    await asyncio.to_thread(run)
