"""`wippy run` on a cluster app is the driver: the CLI reaches the nodes through it, and a killed driver's
successor reattaches to the nodes still running."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wippy_agents.control import socket_path

from .conftest import ClusterApp

pytestmark = pytest.mark.timeout(240)

WIPPY = str(Path(sys.executable).with_name("wippy"))


def wippy(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WIPPY, *args, "--root", str(root)], capture_output=True, text=True, timeout=120)


def drive(root: Path) -> subprocess.Popen[str]:
    """`wippy run`, returned once it serves the socket (it says so on stdout); its stderr (the nodes' logs too)
    goes to a file beside the app."""
    with open(root.parent / "driver.log", "a") as log:
        driver = subprocess.Popen([WIPPY, "run", "--root", str(root)], stdout=subprocess.PIPE, stderr=log, text=True)
    assert driver.stdout is not None
    for line in driver.stdout:  # each line arrives as the driver boots; it ends if the driver dies
        if line.startswith("press Ctrl+C"):
            return driver
    driver.stdout.close()
    raise AssertionError(f"the driver stopped before serving ({driver.wait()}): "
                         f"{(root.parent / 'driver.log').read_text()[-3000:]}")


def end(driver: subprocess.Popen[str], signum: int) -> int:
    driver.send_signal(signum)
    try:
        return driver.wait(timeout=60)
    finally:
        assert driver.stdout is not None
        driver.stdout.close()


def status(root: Path) -> dict[str, Any]:
    done = wippy(root, "cluster", "status", "--json")
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)}


def test_the_cli_reaches_the_nodes_through_the_driver_and_a_new_driver_reattaches_to_them(
    cluster_app: ClusterApp,
) -> None:
    root = cluster_app.root
    first = drive(root)
    try:
        before = status(root)
        assert sorted(before) == ["node-1", "node-2"]
        assert all(row["status"] == "up" and row["ray_node"] and row["pid"] != first.pid for row in before.values())
        asked = wippy(root, "ask", "app:agent", 'call tools_work_quick {"text": "a"}', "--conversation", "c1")
        assert (asked.returncode, asked.stdout.strip()) == (0, "done: quick a"), asked.stderr
        table = wippy(root, "cluster", "status")
        assert "RAY NODE" in table.stdout and "LEASE AGE" in table.stdout and "node-2" in table.stdout
    finally:
        end(first, signal.SIGKILL)  # the driver's machine dies; the nodes on Ray do not

    second = drive(root)
    try:
        after = status(root)
        assert {name: row["incarnation"] for name, row in after.items()} == {
            name: row["incarnation"] for name, row in before.items()}  # the same nodes, not started again
        asked = wippy(root, "ask", "app:agent", 'call tools_work_quick {"text": "b"}', "--conversation", "c1",
                      "--json")
        assert asked.returncode == 0, asked.stderr
        assert json.loads(asked.stdout)["turn"] == 2  # the conversation went on
        tasks = json.loads(wippy(root, "tasks", "list", "--json").stdout)
        assert len(tasks) == 2 and len({task["node"] for task in tasks}) == 1  # a conversation stays on its node
        assert tasks[0]["node"] in after
    finally:
        assert end(second, signal.SIGINT) == 0
    assert cluster_app.lines() == ["quick a", "quick b"]
    assert not socket_path(root).exists()  # stopped normally: the nodes and the socket are gone
