"""Durable tests run nodes with a journal thread: virtual time waits briefly for its commits before jumping."""

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from wippy_agents.testing import VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(autojump_threshold=0.05)


@pytest.fixture
def in_a_mount_namespace() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a Python script where it may mount a small disk of its own (a mount namespace; a user one too if not root).

    Nothing it mounts is seen outside it, and it all goes away with the process.
    """
    unshare = shutil.which("unshare")
    assert unshare is not None, "these tests need util-linux's unshare"
    how = ["-m"] if os.geteuid() == 0 else ["-r", "-m"]

    def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([unshare, *how, sys.executable, "-c", textwrap.dedent(script), *args],
                              capture_output=True, text=True, timeout=60)

    return run
