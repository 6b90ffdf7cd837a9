"""Run `async def` tests on a fresh event loop; `@pytest.mark.virtual_clock` makes it a virtual-time loop."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from wippy_agents.testing import TemporaryPostgres, VirtualClock


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in names}
    if pyfuncitem.get_closest_marker("virtual_clock") is not None:
        clock = kwargs.get("clock") or VirtualClock()
        clock.run(pyfuncitem.obj(**kwargs))
    else:
        asyncio.run(pyfuncitem.obj(**kwargs))
    return True


SOAK = os.environ.get("WIPPY_SOAK") == "1"
"""`make soak`: the stress suites (tests/stress) run their long versions, and property tests try many more cases."""

settings.register_profile("short", max_examples=30, deadline=None, print_blob=True)
settings.register_profile("soak", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile("soak" if SOAK else "short")


@pytest.fixture(scope="session")
def soak() -> bool:
    """Whether this is `make soak` (a suite's long version) rather than `make test` (its version of seconds)."""
    return SOAK


@pytest.fixture
def clock() -> VirtualClock:
    """The virtual clock a `virtual_clock` test runs on (read `clock.now`)."""
    return VirtualClock()


REPO = Path(__file__).resolve().parent.parent
EXAMPLE_APP = ("wippy.yaml", "registry", "prompts", "tools", "processes")


EXAMPLE_MCP = Path("registry/app/mcp")
"""The example app's MCP server: left out of `example_app` (a server process per boot would slow every test that
boots it); `whole_example_app` has it."""


def copy_example_app(into: Path) -> Path:
    into.mkdir()
    for name in EXAMPLE_APP:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, into / name)
    return into


@pytest.fixture
def example_app(tmp_path: Path) -> Path:
    """A fresh copy of the example app at the repo root, in a temp folder, without its MCP server."""
    app = copy_example_app(tmp_path / "app")
    shutil.rmtree(app / EXAMPLE_MCP)
    return app


@pytest.fixture
def whole_example_app(tmp_path: Path) -> Path:
    """A fresh copy of the whole example app, its MCP server (`mcp.time`) included."""
    return copy_example_app(tmp_path / "app")


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


WIPPY = str(Path(sys.executable).with_name("wippy"))
"""The `wippy` command of the environment the tests run in."""


@contextmanager
def _running_node(app: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([WIPPY, "run", "--root", str(app)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "press Ctrl+C" in line:
                break
        else:
            raise AssertionError(f"wippy run did not come up: {proc.communicate()[1]}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


@pytest.fixture
def running_node() -> Callable[[Path], AbstractContextManager[subprocess.Popen[str]]]:
    """`with running_node(app) as proc:`: `wippy run` on `app` in a subprocess, once it says it is up."""
    return _running_node


@pytest.fixture(scope="session")
def postgres() -> Iterator[TemporaryPostgres]:
    """A real PostgreSQL server for the whole run, started on first use (about a second)."""
    with TemporaryPostgres() as server:
        yield server
