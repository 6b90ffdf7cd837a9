"""Automatic rollback: a restricted tool (or workflow) whose recent calls (tasks) fail too often goes back to its
previous version."""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping

from ..registry import Delete, Entry, Registry, RegistryError
from ._audit import Audit
from ._rules import SYSTEM_AUTHOR, Policies

log = logging.getLogger("wippy_agents.policy")


class ToolHealth:
    """Counts each restricted tool's recent calls (each restricted workflow's tasks) against the rollback rule a
    policy sets for it. Only the live version is counted: a task still running on an older one does not count."""

    def __init__(self, registry: Registry, policies: Policies, audit: Audit) -> None:
        self.registry = registry
        self.policies = policies
        self.audit = audit
        self._outcomes: dict[str, tuple[Entry, collections.deque[bool]]] = {}

    def record(self, entry: Entry, ok: bool) -> int | None:
        """Count one call of `entry`; return the rollback's version if this call triggered one."""
        rule = self.policies.rollback_rule(entry.id)
        if rule is None or entry.id not in self.registry or self.registry.get(entry.id) != entry:
            return None
        policy_id, limits = rule
        counted = self._outcomes.get(entry.id)
        if counted is None or counted[0] != entry or counted[1].maxlen != limits.window:
            counted = self._outcomes[entry.id] = (entry, collections.deque(maxlen=limits.window))
        outcomes = counted[1]
        outcomes.append(ok)
        failed = outcomes.count(False)
        if len(outcomes) < limits.window or failed / len(outcomes) <= limits.max_error_rate:
            return None
        del self._outcomes[entry.id]
        calls = "tasks" if entry.kind == "workflow" else "calls"
        failing = f"{failed} of the last {len(outcomes)} {calls} of {entry.id} failed"
        if not self._by_an_agent(entry.id):
            log.warning("%s; its version is not an agent's change (a person's edit or a rollback), which automatic "
                        "rollback leaves alone", failing)
            return None
        reason = f"automatic rollback: {failing} (policy {policy_id} allows at most {limits.max_error_rate:.0%})"
        return self.roll_back(entry, reason, policy_id)

    def _by_an_agent(self, entry_id: str) -> bool:
        """Whether an agent's change made the entry what it is: automatic rollback undoes only those, never what the
        app's files, a person or a rollback made (rolling back a workflow a person wrote would delete it)."""
        changes = self.registry.history(entry_id)
        author = changes[-1].author if changes else ""
        return author in self.registry and self.registry.get(author).kind == "agent"

    def roll_back(self, entry: Entry, reason: str, policy_id: str) -> int | None:
        if self.registry.view().get(entry.id) != entry:
            return None  # it changed meanwhile: that version gets its own count
        changed = [v.version for v in self.registry.history(entry.id)]
        previous: Entry | None = None
        if changed:
            view: Mapping[str, Entry] = self.registry.at(changed[-1] - 1).view()
            previous = view.get(entry.id)
        try:
            version = self.registry.apply([previous or Delete(entry.id)], author=SYSTEM_AUTHOR, reason=reason)
        except RegistryError as error:
            self.audit.record(SYSTEM_AUTHOR, None, "registry.rollback", entry.id, entry.kind, "rollback failed",
                              policy_id, f"{reason}; it could not be applied: {error}")
            log.error("%s; it could not be applied: %s", reason, error)
            return None
        self.audit.record(SYSTEM_AUTHOR, None, "registry.rollback", entry.id, entry.kind, "rolled back", policy_id,
                          reason, version=version)
        return version
