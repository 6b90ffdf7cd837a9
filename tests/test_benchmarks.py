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
        ("durable.py", {"sequential", "concurrent", "recovery", "restricted", "targets"}),
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


def test_the_report_has_a_table_per_benchmark_and_a_plot_per_series(tmp_path: Path) -> None:
    results = {"measured": "2026-12-07 20:00 UTC", "quick": False, "results": {
        "actors": {"machine": {"cores": 2, "platform": "Linux"},
                   "send": {"wippy_per_s": 2191749, "asyncio_queue_per_s": 2990433, "ratio_vs_asyncio": 0.733},
                   "targets": {"send_vs_asyncio": {"target": 0.5, "op": ">=", "actual": 0.733, "met": True},
                               "send_vs_pykka": {"target": 5.0, "op": ">=", "actual": 4.038, "met": False}},
                   "series": {"send": {"title": "messages per second", "x": "processes", "y": "messages/s",
                                       "log": True, "lines": {"wippy": [[10, 2.1e6], [1000, 1.9e6]],
                                                              "asyncio": [[10, 3e6], [1000, 2.9e6]]}}}},
        "tui": {"failed": "exit code 1: boom"},
        "soak": {"crash_storm": {"calm_p99_ms": 180.0, "storm_p99_ms": 190.0}, "targets": {},
                 "series": {"crash_storm": {"title": "p99", "x": "", "y": "ms",
                                            "bars": {"calm": 180.0, "crash storm": 190.0}}}}}}
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results))
    done = subprocess.run([sys.executable, str(BENCHMARKS / "report.py"), "--from", str(source), "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "bench-report.md").read_text()
    assert "| [actors](#actors) | 1 of 2 | send_vs_pykka |" in report
    assert "| send_vs_pykka | 4.038 | >= 5 | **no** |" in report
    assert "| send | ratio_vs_asyncio | 0.733 |" in report and "| send | wippy_per_s | 2,191,749 |" in report
    assert "| [tui](#tui) | the benchmark failed | |" in report and "exit code 1: boom" in report
    assert "![actors-send](docs/bench/actors-send.png)" in report
    assert (tmp_path / "docs/bench/actors-send.png").read_bytes().startswith(b"\x89PNG")
    assert "| crash_storm | storm_p99_ms | 190 |" in report
    assert (tmp_path / "docs/bench/soak-crash_storm.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((tmp_path / "docs/bench/results.json").read_text()) == results
