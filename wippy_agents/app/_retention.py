"""Retention while the node runs: what `retention:` in wippy.yaml lets go is deleted as it ages, not only at boot.

A node that runs for months would otherwise keep every finished task, every
conversation, every policy decision and every model call it ever made. The
`wippy:retention` process (under `wippy:system`) applies the settings every
`interval_minutes` of the node's clock, and at once when it is sent `prune`
(answered with what it deleted). The journal's log is bounded by itself (it starts
afresh once DuckDB holds it all), DuckDB reuses the space of deleted rows after the
`CHECKPOINT` each deletion of tasks ends with, registry history and agents' memory
are records people and agents keep on purpose, and conversations' histories in
memory are bounded (`Histories`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from .. import process
from .._runtime.types import Message
from ..agents import PIN_ACTION, TURN_WORKFLOW, AgentService
from ..durable import TaskManager
from ..state import AuditStore, UsageStore
from ._config import AppConfig

__all__ = ["Retention"]

log = logging.getLogger("wippy_agents.app")

DAY = 86400.0


class Retention:
    """Deletes what the app's retention settings let go: finished tasks, idle conversations, audit and usage rows."""

    def __init__(self, config: AppConfig, tasks: TaskManager, agents: AgentService, audit: AuditStore,
                 usage: UsageStore, *, clock: Callable[[], float]) -> None:
        self.config = config
        self.tasks = tasks
        self.agents = agents
        self.audit = audit
        self.usage = usage
        self.clock = clock

    async def prune(self) -> dict[str, int]:
        """Apply every setting once; how many tasks, conversations, audit records and model calls went."""
        settings = self.config.retention
        pruned = {"tasks": 0, "conversations": 0, "audit": 0, "usage": 0}
        if (days := self.config.tasks_days) is not None:
            pruned["tasks"] = self.tasks.prune(days * DAY, keep_workflows=(TURN_WORKFLOW,))
        if settings.conversations_days is not None:
            conversations = [conversation for _, conversation in
                             self.tasks.prune_groups(TURN_WORKFLOW, settings.conversations_days * DAY)]
            await self.agents.forget(conversations)
            pruned["conversations"] = len(conversations)
        if settings.audit_days is not None:
            # MCP tools' pins are audit records that stay: a definition changed after its pin went would be trusted
            pruned["audit"] = self.audit.prune(self._before(settings.audit_days), keep_actions=(PIN_ACTION,))
        if settings.usage_days is not None:
            pruned["usage"] = self.usage.prune(self._before(settings.usage_days))
        if any(pruned.values()):
            log.info("retention deleted %s", ", ".join(f"{count} {what}" for what, count in pruned.items() if count))
        return pruned

    async def run(self) -> None:
        """The `wippy:retention` process: prune every `interval_minutes`, and when sent `prune` (answered)."""
        while True:
            try:
                asked: Message | None = await process.receive("prune", timeout=self.config.retention.interval_minutes * 60)
            except TimeoutError:
                asked = None
            try:
                pruned = await self.prune()
            except Exception as error:  # the state refused (a full disk, a lost database): the next round tries again
                log.warning("retention could not delete old records this time: %s", error)
                pruned = None
            if asked is not None:
                process.reply(asked, pruned)

    def _before(self, days: float) -> datetime:
        return datetime.fromtimestamp(self.clock() - days * DAY, UTC)
