"""What the stress suites measure, printed and (in a soak run) kept for the benchmark report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SOAK_FIGURES = Path(__file__).resolve().parents[2] / "docs" / "bench" / "soak.json"
"""Where `make soak` leaves its figures; `benchmarks/report.py` puts them in the report as the `soak` area."""


class Figures:
    """Figures by suite; `keep` writes them (merged into what other suites of the run wrote) at the end."""

    def __init__(self) -> None:
        self.found: dict[str, Any] = {}

    def record(self, suite: str, figures: dict[str, Any]) -> None:
        print(f"{suite}: {json.dumps(figures)}")
        self.found[suite] = figures

    def keep(self, path: Path = SOAK_FIGURES) -> None:
        if not self.found:
            return
        kept = json.loads(path.read_text()) if path.exists() else {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**kept, **self.found}, indent=2) + "\n")


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """p50, p99 and the slowest of some durations, in milliseconds."""
    ordered = sorted(seconds)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 2)}
