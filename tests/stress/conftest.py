"""The stress suites (issue 19): load, crash storms, chaos, bad input, disk, growth, access.

`make test` runs each in its short version (seconds); `make soak` (`WIPPY_SOAK=1`) runs the
long one, bounded in count and time. A test reads which one it is from the `soak` fixture
(tests/conftest.py); property tests (Hypothesis) take the `short` or `soak` settings profile
from the same switch. Figures a long run measures go to the benchmark report (`make bench`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._figures import Figures


@pytest.fixture(scope="session")
def figures(soak: bool) -> Iterator[Figures]:
    """Where a suite records its figures: printed always, kept in docs/bench/soak.json by a soak run."""
    found = Figures()
    yield found
    if soak:
        found.keep()
