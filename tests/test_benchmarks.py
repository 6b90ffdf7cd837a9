"""The benchmarks run and print the JSON the README quotes (quick mode: a smoke test, not a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(name: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), "--quick"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("name", "sections"),
    [
        ("actors.py", {"send", "call", "spawn", "memory", "targets"}),
        ("registry.py", {"load", "get", "save_to_visible", "apply", "targets"}),
        ("llm.py", {"scripted", "loopback", "targets"}),
        ("agents.py", {"turn", "start", "memory", "targets"}),
        ("durable.py", {"sequential", "concurrent", "recovery", "targets"}),
        ("sandbox.py", {"warm", "fresh", "targets"}),
        ("tui.py", {"stream", "startup", "targets"}),
        ("mcp.py", {"call", "targets"}),
        pytest.param("cluster.py", {"postgres_journal", "nodes", "targets"},
                     marks=pytest.mark.xdist_group("ray")),  # one Ray cluster at a time on this machine
    ],
)
def test_benchmark_prints_its_figures_and_targets(name: str, sections: set[str]) -> None:
    result = run(name)
    assert sections <= set(result)
    targets = result["targets"]
    assert isinstance(targets, dict) and targets
    assert all({"target", "actual", "met"} <= set(t) for t in targets.values())
