"""Spend limits: an agent's budget (its entry's and its policies'), checked before each model call.

Before a call, the call's estimate (the request's tokens estimated offline, plus
the output's `max_tokens` when set, priced from the model's pricing) is added to
what the turn, the task and the day have spent; a call that would cross a limit is
not sent. After a call its reported usage counts, so a call that crossed a limit
finishes its step and the next call is refused.

A replay decides as the first run did: the turn's and task's spend come from
recorded responses, and the day's spend is read from the state once per turn, as
the journaled step `budget:day` (what the day had spent when the turn began, plus
what the turn spends). A reached limit ends the turn with `BudgetExceeded`
(`on_exceed: fail`) or asks a person (`ask`): the approval waits durably, like a
tool call's, and approving grants one more limit's worth for the rest of the turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from ..errors import RunError, UsageError
from ..llm import ChatMessage, Model, Response, ToolDefinition, Usage, cost_usd, estimate_tokens
from ..policy import Approvals
from ..registry import AgentSpec, Budget
from ..state import ModelCall, UsageStore
from ._events import AgentEvent, ApprovalRequested
from ._governance import Governance

if TYPE_CHECKING:
    from ..durable import TaskContext

log = logging.getLogger("wippy_agents.agents")

__all__ = ["BudgetExceeded", "Limit", "PricingMissing", "TurnBudget", "limits", "record_call"]

LIMITS = ("max_usd_per_turn", "max_usd_per_task", "max_usd_per_day",
          "max_tokens_per_turn", "max_tokens_per_task", "max_tokens_per_day")
ALIASES = {"max_cost_usd": "max_usd_per_task", "max_total_tokens": "max_tokens_per_task"}
"""The agent fields older than `budget:`, and the limit each one is."""


class BudgetExceeded(RunError):
    """A turn reached a spend limit (`on_exceed: fail`, or a person denied going on): what was spent, which limit."""

    def __init__(self, message: str, *, limit: Limit, spent: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.spent = spent


class PricingMissing(UsageError):
    """A cost limit applies to a model whose entry has no pricing: nothing is sent until it has."""


@dataclass(frozen=True)
class Limit:
    """One spend limit of an agent: `max_usd_per_turn` and the like, its value, and the entry that sets it."""

    name: str
    value: float
    source: str  # "agent app:assistant" or "policy app:spend"
    on_exceed: str

    @property
    def in_usd(self) -> bool:
        return self.name.startswith("max_usd")

    @property
    def scope(self) -> str:
        """`turn`, `task` or `day`."""
        return self.name.rpartition("_per_")[2]

    def amount(self, value: float) -> str:
        return f"${value:.4f}" if self.in_usd else f"{int(value):,} tokens"


def limits(agent_id: str, spec: AgentSpec, policy_budgets: list[tuple[str, Budget]]) -> list[Limit]:
    """Every limit on `agent_id`: its entry's `budget` (and the older fields), then each policy's."""
    found = [Limit(ALIASES[alias], value, f"agent {agent_id} ({alias})", _on_exceed(spec.budget))
             for alias in ALIASES if (value := getattr(spec, alias)) is not None]
    sources = ([(f"agent {agent_id}", spec.budget)] if spec.budget else []) + [
        (f"policy {policy_id}", budget) for policy_id, budget in policy_budgets]
    for source, budget in sources:
        found += [Limit(name, value, source, budget.on_exceed) for name in LIMITS
                  if (value := getattr(budget, name)) is not None]
    return found


def _on_exceed(budget: Budget | None) -> str:
    return budget.on_exceed if budget else "fail"


@dataclass(frozen=True)
class Spent:
    """Tokens and US dollars spent so far."""

    tokens: float = 0
    usd: float = 0.0

    @classmethod
    def of(cls, usage: Usage, cost: float) -> Spent:
        return cls(usage.total_tokens, cost)

    def __add__(self, other: Spent) -> Spent:
        return Spent(self.tokens + other.tokens, self.usd + other.usd)

    def get(self, limit: Limit) -> float:
        return self.usd if limit.in_usd else self.tokens


@dataclass
class TurnBudget:
    """The limits of one turn and what it has spent against them (`check` before each model call)."""

    agent: str
    model_id: str
    limits: list[Limit]
    model: Model
    max_output_tokens: int
    governance: Governance
    emit: Callable[[AgentEvent], None]
    day: Spent = Spent()  # what the agent had spent today when the turn began
    granted: dict[Limit, float] = field(default_factory=dict)  # approvals' extra allowance, by limit

    @classmethod
    async def start(cls, ctx: TaskContext, agent: str, model_id: str, found: list[Limit], model: Model,
                    max_output_tokens: int | None, governance: Governance, store: UsageStore, today: date,
                    emit: Callable[[AgentEvent], None]) -> TurnBudget | None:
        """The turn's budget (None: no limits); `PricingMissing` when a cost limit meets a model without pricing."""
        if not found:
            return None
        priced = next((limit for limit in found if limit.in_usd), None)
        if priced is not None:
            missing = _missing_pricing(model)
            if missing:
                raise PricingMissing(
                    f"the model {model_id} has no {missing}, and {priced.source} sets {priced.name} = "
                    f"{priced.value}: a cost limit cannot be kept without prices. Add {missing} (US dollars per "
                    f"million tokens) to the model entry {model_id}, or remove the cost limit")
        budget = cls(agent, model_id, found, model, max_output_tokens or 0, governance, emit)
        if any(limit.scope == "day" for limit in found):
            before = await ctx.step("budget:day", _day_spent, store, agent, today)
            budget.day = Spent(before["tokens"], before["usd"])
        return budget

    async def check(self, ctx: TaskContext, number: int, messages: list[ChatMessage], tools: list[ToolDefinition],
                    turn: Spent, task: Spent) -> None:
        """Before model call `number`: raise `BudgetExceeded`, or wait for a person, while it would cross a limit."""
        await self.check_tokens(ctx, number, estimate_tokens(messages, tools), self.max_output_tokens, turn, task)

    async def check_tokens(self, ctx: TaskContext, number: int | str, tokens: int, output_tokens: int, turn: Spent,
                           task: Spent) -> None:
        """`check` for a call of `tokens` in and at most `output_tokens` out (a compaction's summary call: it knows
        its bounds, not its messages, until it runs)."""
        usage = Usage(input_tokens=tokens, output_tokens=output_tokens)
        estimate = Spent(usage.total_tokens, cost_usd(usage, self.model.pricing))
        spent = {"turn": turn, "task": task, "day": self.day + turn}
        asked = 0
        while True:
            over = next((limit for limit in self.limits if (spent[limit.scope] + estimate).get(limit)
                         > limit.value + self.granted.get(limit, 0.0)), None)
            if over is None:
                return
            now = spent[over.scope].get(over)
            allowed = over.value + self.granted.get(over, 0.0)
            what = (f"{self.agent} has spent {over.amount(now)} this {over.scope} against {over.name} = "
                    f"{over.amount(over.value)} ({over.source}); its next call to {self.model_id}, estimated at "
                    f"{over.amount(estimate.get(over))}, would cross {over.amount(allowed)}")
            if over.on_exceed == "fail":
                raise BudgetExceeded(f"budget exceeded: {what}", limit=over, spent=now)
            asked += 1
            await self._ask(ctx, f"budget:{number}:{asked}", over, what, now)

    async def _ask(self, ctx: TaskContext, name: str, limit: Limit, what: str, spent: float) -> None:
        """Wait (durably) for a person; approved, the limit grows by its own size for the rest of the turn."""
        summary = f"{what}. Approve to let this turn go on with {limit.amount(limit.value)} more."
        pending: dict[str, str] = await ctx.step(name, _request, self.governance.approvals, self.agent, ctx.task_id,
                                                 name, limit, summary)
        self.emit(ApprovalRequested(call_id=name, tool=limit.name, approval=pending["id"], summary=summary))
        decision = await ctx.wait_signal(f"approval:{pending['id']}")
        if decision.get("status") != "approved":
            reason = decision.get("reason") or ""
            raise BudgetExceeded(f"budget exceeded: {what}; going on was denied by {decision.get('by', 'a person')}"
                                 f"{': ' + reason if reason else ''}", limit=limit, spent=spent)
        self.granted[limit] = self.granted.get(limit, 0.0) + limit.value


def _request(approvals: Approvals, agent: str, task_id: str, name: str, limit: Limit, summary: str) -> dict[str, str]:
    approval = approvals.request(agent=agent, task_id=task_id, call_id=name, action="budget.exceed",
                                 resource=limit.name, kind=None, summary=summary,
                                 arguments={"limit": limit.name, "value": limit.value, "set_by": limit.source},
                                 policy=limit.source.removeprefix("policy ") if limit.source.startswith("policy ")
                                 else None)
    return {"id": approval.id}


def _missing_pricing(model: Model) -> str | None:
    """The pricing field a cost limit needs that the model's entry leaves out, or None."""
    if model.pricing is None:
        return "pricing"
    unset = [name for name in ("input", "output") if name not in model.pricing.model_fields_set]
    return f"pricing.{unset[0]}" if unset else None


def _day_spent(store: UsageStore, agent: str, day: date) -> dict[str, Any]:
    tokens, usd = store.spent(agent, day)
    return {"tokens": tokens, "usd": usd}


def record_call(store: UsageStore, task: str, agent: str, model_id: str, step: str, response: Response,
                time: datetime) -> None:
    """Journal what a model call used, without waiting: the writer commits groups in order, so the turn's end is
    never durable without it, and a turn cut short records it again on replay (kept once)."""
    usage = response.usage
    written = store.record(ModelCall(task, step, agent, model_id, time, usage.input_tokens, usage.output_tokens,
                                     usage.cached_tokens, response.cost_usd))
    written.add_done_callback(_logged)


def _logged(written: asyncio.Future[None]) -> None:
    if not written.cancelled() and (error := written.exception()) is not None:
        log.warning("a model call's usage was not journaled: %s", error)
