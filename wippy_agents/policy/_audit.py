"""The audit trail: every decision on what an agent does, kept in the app's state."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ..state import AuditRecord, AuditStore

log = logging.getLogger("wippy_agents.policy")


class Audit:
    """Records decisions (and logs each) in the state's audit store, timed by `clock` (the app's wall clock, which
    retention ages them by)."""

    def __init__(self, store: AuditStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def record(self, subject: str, task: str | None, action: str, resource: str, kind: str | None, decision: str,
               by: str, reason: str, approval: str | None = None, version: int | None = None) -> AuditRecord:
        record = AuditRecord(datetime.fromtimestamp(self.clock(), UTC), subject, task, action, resource, kind, decision, by, reason,
                             approval, version)
        self.store.add(record)
        log.info("%s %s %s: %s by %s (%s)", subject, action, resource, decision, by, reason)
        return record

    def list(self, subject: str | None = None, resource: str | None = None, limit: int = 100) -> list[AuditRecord]:
        """The latest decisions, oldest first."""
        return self.store.list(subject=subject, resource=resource, limit=limit)
