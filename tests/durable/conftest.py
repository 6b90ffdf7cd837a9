"""Durable tests run nodes with a journal thread: virtual time waits briefly for its commits before jumping."""

import pytest

from wippy_agents.testing import VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(autojump_threshold=0.05)
