"""Shared by the sandbox tests: the worker processes a test's pool is running, as the OS shows them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


def _live_workers() -> set[int]:
    """Pids of this process's sandbox workers that are alive (a dead, unreaped one is a zombie: left out)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if int(parent) != os.getpid() or state == "Z":
                continue
            if b"wippy_agents.sandbox._worker" in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
        except OSError:
            continue  # it ended while we looked
    return found


@pytest.fixture
def sandbox_workers() -> Callable[[], set[int]]:
    """Call it for the pids of the sandbox workers running now (the pool keeps them to itself)."""
    return _live_workers
