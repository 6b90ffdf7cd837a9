"""The timing helpers every benchmark shares: samples, percentiles, summaries, the machine."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any


def percentile(ordered: list[float], q: float) -> float:
    """The `q` quantile (0..1) of sorted samples, linearly interpolated."""
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Timings:
    """Durations in seconds, taken with `time()` or `add()`, summarised in milliseconds."""

    samples: list[float] = field(default_factory=list)

    @contextmanager
    def time(self) -> Iterator[None]:
        """Time the block (which may contain awaits) as one sample."""
        start = perf_counter()
        yield
        self.samples.append(perf_counter() - start)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def ms(self, q: float = 0.5) -> float:
        return percentile(sorted(self.samples), q) * 1000

    def summary(self, digits: int = 3) -> dict[str, float]:
        """`{"n", "p50_ms", "p95_ms", "min_ms", "max_ms", "mean_ms"}` (just `n` when there are no samples)."""
        ordered = sorted(self.samples)
        if not ordered:
            return {"n": 0}
        return {
            "n": len(ordered),
            "p50_ms": round(percentile(ordered, 0.5) * 1000, digits),
            "p95_ms": round(percentile(ordered, 0.95) * 1000, digits),
            "min_ms": round(ordered[0] * 1000, digits),
            "max_ms": round(ordered[-1] * 1000, digits),
            "mean_ms": round(sum(ordered) / len(ordered) * 1000, digits),
        }


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "platform": platform.platform(), "arch": platform.machine()}
