"""Shared by the registry tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _forget_imported_tool_files() -> Iterator[None]:
    """Tool files are imported as `wippy_app.<path>`; don't let one test's module leak into the next."""
    yield
    for name in [n for n in sys.modules if n.startswith("wippy_app.")]:
        del sys.modules[name]
