"""Approvals: an `ask` decision becomes a change that waits for a person, then is applied or refused.

The agent's task waits on the signal `approval:ID` (across restarts); approving
applies the change in the agent's name (attributed to its task) and wakes it.
"""

from __future__ import annotations

import builtins
import getpass
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from .._runtime.pubsub import Subscribers
from .._runtime.types import Ref
from ..errors import RunError, UsageError
from ..registry import Delete, Entry, EntryChange, Registry, RegistryError, change_diff
from ..state import Approval, ApprovalStore
from ._audit import Audit

log = logging.getLogger("wippy_agents.policy")

Signal = Callable[[str, str, Any], Awaitable[None]]
"""`signal(task_id, name, payload)`: deliver a durable signal to a task."""


class ApprovalPending(RunError):
    """Raised by a tool whose action needs a person's approval: the agent's turn waits for the decision."""

    def __init__(self, approval: Approval) -> None:
        super().__init__(f"waiting for approval {approval.id}: {approval.summary}")
        self.approval = approval


class ApprovalError(UsageError):
    """An approval that does not exist, is already decided, or can no longer be applied."""


def person() -> str:
    """Who decides from this terminal: `user:<login name>`."""
    return f"user:{getpass.getuser()}"


def bound_id(agent: str, task_id: str | None, call_id: str | None, action: str, resource: str, diff: str) -> str:
    """An approval's id: a hash of who asked, where, for what, and of exactly what approving applies (the change's
    diff, or the call's arguments), so an approval is never applied to anything but what it was asked for."""
    key = json.dumps([agent, task_id, call_id, action, resource, hashlib.sha256(diff.encode()).hexdigest()])
    return hashlib.sha256(key.encode()).hexdigest()[:10]


class Approvals:
    """Pending `ask` changes and their decisions (`app.approvals`)."""

    def __init__(self, registry: Registry, store: ApprovalStore, audit: Audit, *,
                 signal: Signal | None = None, subscribers: Subscribers[None] | None = None) -> None:
        """`signal(task_id, name, payload)` wakes the task that asked; `subscribers` hear of every approval."""
        self.registry = registry
        self.store = store
        self.audit = audit
        self._signal = signal
        self._subscribers = subscribers

    # -- asking ---------------------------------------------------------------------

    def request(self, *, agent: str, task_id: str | None, call_id: str | None, action: str, resource: str,
                kind: str | None, summary: str, changes: Iterable[EntryChange] = (), arguments: Any = None,
                policy: str | None = None) -> Approval:
        """Record a pending approval (once: asking again from a replayed step returns the same one)."""
        changes = list(changes)
        if changes:
            diff = "\n".join(change_diff(change) for change in changes)
        else:
            diff = json.dumps(arguments, indent=2, sort_keys=True, default=str)
        approval_id = bound_id(agent, task_id, call_id, action, resource, diff)
        try:
            return self.get(approval_id)
        except ApprovalError:
            pass
        self.store.add(Approval(approval_id, agent, task_id, action, resource, summary, diff, "pending",
                                datetime.now(UTC), call_id=call_id, policy=policy),
                       [{"id": c.id, "before": c.before and c.before.to_json(), "after": c.after and c.after.to_json()}
                        for c in changes])
        self.audit.record(agent, task_id, action, resource, kind, "asked", policy or "default", summary,
                          approval=approval_id)
        approval = self.get(approval_id)
        self._publish("approval.pending", approval)
        return approval

    # -- reading --------------------------------------------------------------------

    def get(self, approval_id: str) -> Approval:
        approval = self.store.get(approval_id)
        if approval is None:
            raise ApprovalError(f"there is no approval {approval_id!r}; `wippy approvals list` shows the pending ones")
        return approval

    def list(self, status: str | None = None) -> list[Approval]:
        """Approvals, oldest first; only those with `status` (pending, approved, denied) when given."""
        return self.store.list(status)

    def pending(self) -> builtins.list[Approval]:
        return self.list("pending")

    def changes(self, approval_id: str) -> builtins.list[EntryChange]:
        return [EntryChange(c["id"], c["before"] and Entry.from_json(c["before"]),
                            c["after"] and Entry.from_json(c["after"])) for c in self.store.changes(approval_id)]

    # -- deciding -------------------------------------------------------------------

    async def approve(self, approval_id: str, by: str | None = None, reason: str = "") -> Approval:
        """Apply the change in the agent's name (or let its tool call run) and wake the agent's task."""
        approval = self._pending(approval_id)
        by = by or person()
        version = None
        changes = self.changes(approval_id)
        diff = "\n".join(change_diff(change) for change in changes) if changes else approval.diff
        if bound_id(approval.agent, approval.task_id, approval.call_id, approval.action, approval.resource,
                    diff) != approval.id:
            raise ApprovalError(f"approval {approval.id} no longer matches what {approval.agent} asked for (the stored "
                                "change or call arguments differ from the ones its id was made from); nothing was "
                                "applied. Deny it and ask the agent again")
        if changes:
            stale = [c.id for c in changes if self.registry.view().get(c.id) != c.before]
            if stale:
                raise ApprovalError(
                    f"{', '.join(stale)} changed since {approval.agent} asked; approving would overwrite that change. "
                    f"Deny this approval and ask the agent again")
            note = f"{approval.summary} (approved by {by}{': ' + reason if reason else ''})"
            try:
                version = self.registry.apply([c.after or Delete(c.id) for c in changes], author=approval.agent,
                                              reason=note, task=approval.task_id)
            except RegistryError as error:
                raise ApprovalError(f"the change can no longer be applied: {error}") from None
        return await self._decide(approval, "approved", by, reason, version)

    async def deny(self, approval_id: str, by: str | None = None, reason: str = "") -> Approval:
        """Refuse: nothing changes, and the agent's task is told why."""
        return await self._decide(self._pending(approval_id), "denied", by or person(), reason, None)

    def _pending(self, approval_id: str) -> Approval:
        approval = self.get(approval_id)
        if approval.status != "pending":
            raise ApprovalError(f"approval {approval_id} was already {approval.status} by {approval.decided_by}")
        return approval

    async def _decide(self, approval: Approval, status: Literal["approved", "denied"], by: str, reason: str,
                      version: int | None) -> Approval:
        if not self.store.decide(approval.id, status=status, by=by, at=datetime.now(UTC), reason=reason,
                                 version=version):
            raise ApprovalError(f"approval {approval.id} was decided meanwhile by {self.get(approval.id).decided_by}")
        self.audit.record(approval.agent, approval.task_id, approval.action, approval.resource, None,
                          "approved" if status == "approved" else "denied by person", by, reason or status,
                          approval=approval.id, version=version)
        decided = self.get(approval.id)
        if approval.task_id is not None and self._signal is not None:
            payload = {"status": status, "by": by, "reason": reason, "version": version}
            try:
                await self._signal(approval.task_id, f"approval:{approval.id}", payload)
            except LookupError:
                log.warning("approval %s: the task %s that asked is gone", approval.id, approval.task_id)
        self._publish("approval.decided", decided)
        return decided

    # -- events ---------------------------------------------------------------------

    def subscribe(self) -> Ref:
        """Have the calling process receive `approval.pending` and `approval.decided` messages (payload `Approval`)."""
        if self._subscribers is None:
            raise UsageError("these approvals run on no node: nothing can subscribe to them")
        return self._subscribers.add(None)

    def _publish(self, topic: str, approval: Approval) -> None:
        for pid, _ in self._subscribers or ():
            self._subscribers.send(pid, topic, approval)  # type: ignore[union-attr]
