"""What calls cost: tokens priced per million from the model entry, and running totals per agent and task."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ..registry import Pricing
from ._messages import Response, Usage


def cost_usd(usage: Usage, pricing: Pricing | None) -> float:
    """US dollars for `usage`: cached input at the cached price, the rest of the input and output at theirs."""
    if pricing is None:
        return 0.0
    fresh = usage.input_tokens - usage.cached_tokens
    cached_price = pricing.cached if pricing.cached else pricing.input
    return (fresh * pricing.input + usage.cached_tokens * cached_price + usage.output_tokens * pricing.output) / 1e6


@dataclass(frozen=True)
class Totals:
    usage: Usage = Usage()
    cost_usd: float = 0.0
    calls: int = 0


class UsageLedger:
    """Running totals of model calls by agent and by task (what the TUI and `wippy tasks show` print)."""

    def __init__(self) -> None:
        self._by_key: defaultdict[tuple[str | None, str | None], Totals] = defaultdict(Totals)

    def record(self, response: Response, *, agent: str | None = None, task: str | None = None) -> None:
        old = self._by_key[(agent, task)]
        self._by_key[(agent, task)] = Totals(old.usage + response.usage, old.cost_usd + response.cost_usd,
                                             old.calls + 1)

    def totals(self, *, agent: str | None = None, task: str | None = None) -> Totals:
        """Totals over every call made by `agent` and/or for `task` (everything when both are None)."""
        result = Totals()
        for (key_agent, key_task), totals in self._by_key.items():
            if (agent is None or agent == key_agent) and (task is None or task == key_task):
                result = Totals(result.usage + totals.usage, result.cost_usd + totals.cost_usd,
                                result.calls + totals.calls)
        return result
