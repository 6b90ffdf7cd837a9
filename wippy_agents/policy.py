"""Policies, approvals and the audit trail: what agents may change, who approves it, and the record.

A `policy` entry says which subjects (agent ids, `*` patterns, or `trait:NAME`
for agents whose `meta.traits` list NAME) may do which actions on which resources
(entry id patterns, optionally only of some kinds), with effect `allow`, `deny` or
`ask`. Deny wins over ask, ask over allow. With no matching policy, registry
writes are denied; `tool.call` and `agent.delegate` are allowed, because listing a
tool or delegate in an agent's entry (a person's edit) already grants it.

Some changes no policy can allow an agent, because they would grant permissions
or run code outside the sandbox: policies, any kind other than restricted tools,
prompts and agents, an agent's `meta.traits`, and trusted (`runtime: python`) tools.
Files edited by people are not subject to agent policy at all.

An `ask` becomes an `Approval` kept in the app's state: the agent's task waits on
the signal `approval:ID` (across restarts) until a person approves (the change is
applied then, attributed to the agent and its task) or denies it. Every decision
is an `AuditRecord`.
"""

from __future__ import annotations

import builtins
import collections
import fnmatch
import getpass
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ._runtime.pubsub import Subscribers
from ._runtime.types import Ref
from .errors import RunError, UsageError
from .registry import Delete, Entry, EntryChange, Registry, RegistryError, change_diff
from .registry._kinds import PolicySpec, RollbackRule
from .state import Approval, ApprovalStore, AuditRecord, AuditStore

Signal = Callable[[str, str, Any], Awaitable[None]]
"""`signal(task_id, name, payload)`: deliver a durable signal to a task."""

__all__ = [
    "Approval",
    "ApprovalError",
    "ApprovalPending",
    "Approvals",
    "Audit",
    "AuditRecord",
    "Decision",
    "Policies",
    "ToolHealth",
]

log = logging.getLogger("wippy_agents.policy")

Effect = Literal["allow", "deny", "ask"]
WRITES = ("registry.create", "registry.update", "registry.delete")
AGENT_WRITABLE_KINDS = ("tool", "prompt", "agent")
SYSTEM_AUTHOR = "wippy:policy"


@dataclass(frozen=True)
class Decision:
    """What the policies say about one action: the effect, the deciding policy (None: the default), and why."""

    effect: Effect
    policy: str | None
    reason: str


class ApprovalPending(RunError):
    """Raised by a tool whose action needs a person's approval: the agent's turn waits for the decision."""

    def __init__(self, approval: Approval) -> None:
        super().__init__(f"waiting for approval {approval.id}: {approval.summary}")
        self.approval = approval


class ApprovalError(UsageError):
    """An approval that does not exist, is already decided, or can no longer be applied."""


def person() -> str:
    return f"user:{getpass.getuser()}"


class Policies:
    """The decisions policy entries make, read from the live registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cache: tuple[int, list[tuple[str, PolicySpec]]] | None = None

    def _policies(self) -> list[tuple[str, PolicySpec]]:
        if self._cache is None or self._cache[0] != self.registry.version:
            specs = [(entry.id, self.registry.spec(entry.id)) for entry in self.registry.find(kind="policy")]
            self._cache = (self.registry.version, [(i, s) for i, s in specs if isinstance(s, PolicySpec)])
        return self._cache[1]

    def is_agent(self, subject: str) -> bool:
        return subject in self.registry and self.registry.get(subject).kind == "agent"

    def _subject_matches(self, pattern: str, subject: str) -> bool:
        if pattern.startswith("trait:"):
            traits = self.registry.get(subject).meta.get("traits", []) if self.is_agent(subject) else []
            return isinstance(traits, list) and pattern.removeprefix("trait:") in traits
        return fnmatch.fnmatchcase(subject, pattern)

    def matching(self, subject: str, action: str, resource: str, kind: str | None) -> list[tuple[str, PolicySpec]]:
        return [
            (policy_id, spec) for policy_id, spec in self._policies()
            if action in spec.actions
            and any(self._subject_matches(pattern, subject) for pattern in spec.subjects)
            and any(fnmatch.fnmatchcase(resource, pattern) for pattern in spec.resources)
            and (spec.kinds is None or kind in spec.kinds)
        ]

    def decide(self, subject: str, action: str, resource: str, kind: str | None = None) -> Decision:
        """Deny wins, then ask, then allow; with no matching policy, writes are denied and calls allowed."""
        found = self.matching(subject, action, resource, kind)
        for effect in ("deny", "ask", "allow"):
            for policy_id, spec in found:
                if spec.effect == effect:
                    return Decision(effect, policy_id, f"policy {policy_id} says {effect}")
        if action in WRITES:
            return Decision("deny", None, f"no policy allows {subject} to {action} {resource} (writes are denied "
                                          "unless a policy entry allows them)")
        return Decision("allow", None, "allowed by default")

    def forbidden(self, change: EntryChange) -> str | None:
        """Why no policy can let an agent make this change, or None."""
        for entry in (change.before, change.after):
            if entry is None:
                continue
            if entry.kind == "policy":
                return "agents cannot create or change policies"
            if entry.kind not in AGENT_WRITABLE_KINDS:
                return (f"agents can only write {', '.join(AGENT_WRITABLE_KINDS)} entries, not a {entry.kind} "
                        "(other kinds name trusted code or hold settings such as API endpoints)")
            if entry.kind == "tool" and entry.data.get("runtime") != "restricted":
                return "agents can only write restricted tools (runtime: restricted), which run in the sandbox"
        before_traits = change.before.meta.get("traits") if change.before else None
        after_traits = change.after.meta.get("traits") if change.after else None
        if change.entry.kind == "agent" and before_traits != after_traits and (before_traits or after_traits):
            return "agents cannot change an agent's meta.traits, which policies grant permissions by"
        return None

    def judge(self, subject: str, change: EntryChange) -> Decision:
        """The decision on a registry change made in `subject`'s name: a forbidden change is denied by the system."""
        refusal = self.forbidden(change)
        if refusal:
            return Decision("deny", SYSTEM_AUTHOR, refusal)
        return self.decide(subject, f"registry.{change.op}", change.id, change.entry.kind)

    def check_change(self, author: str, action: str, before: Entry | None, after: Entry | None) -> str | None:
        """The registry's policy hook: a change made in an agent's name is never forbidden or denied."""
        if not self.is_agent(author):
            return None  # people, file changes and the system are not subject to agent policy
        entry = after or before
        assert entry is not None
        decision = self.judge(author, EntryChange(entry.id, before, after))
        return decision.reason if decision.effect == "deny" else None

    def rollback_rule(self, tool_id: str) -> tuple[str, RollbackRule] | None:
        """The automatic rollback a policy sets for a tool (the first policy naming it that has one)."""
        for policy_id, spec in self._policies():
            if spec.rollback is not None and any(fnmatch.fnmatchcase(tool_id, p) for p in spec.resources):
                return policy_id, spec.rollback
        return None


class Audit:
    """The audit trail of decisions, in the state's audit store."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store

    def record(self, subject: str, task: str | None, action: str, resource: str, kind: str | None, decision: str,
               by: str, reason: str, approval: str | None = None, version: int | None = None) -> AuditRecord:
        record = AuditRecord(datetime.now(UTC), subject, task, action, resource, kind, decision, by, reason,
                             approval, version)
        self.store.add(record)
        log.info("%s %s %s: %s by %s (%s)", subject, action, resource, decision, by, reason)
        return record

    def list(self, subject: str | None = None, resource: str | None = None, limit: int = 100) -> list[AuditRecord]:
        """The latest decisions, oldest first."""
        return self.store.list(subject=subject, resource=resource, limit=limit)


class Approvals:
    """Pending `ask` changes and their decisions (`node.approvals`)."""

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
        key = json.dumps([agent, task_id, call_id, action, resource], sort_keys=True)
        approval_id = hashlib.sha256(key.encode()).hexdigest()[:10]
        try:
            return self.get(approval_id)
        except ApprovalError:
            pass
        if changes:
            diff = "\n".join(change_diff(change) for change in changes)
        else:
            diff = json.dumps(arguments, indent=2, sort_keys=True, default=str)
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
            raise RuntimeError("these approvals run on no node: nothing can subscribe to them")
        return self._subscribers.add(None)

    def _publish(self, topic: str, approval: Approval) -> None:
        for pid, _ in self._subscribers or ():
            self._subscribers.send(pid, topic, approval)  # type: ignore[union-attr]


class ToolHealth:
    """Automatic rollback: a restricted tool whose recent calls fail too often goes back to its previous version."""

    def __init__(self, registry: Registry, policies: Policies, audit: Audit) -> None:
        self.registry = registry
        self.policies = policies
        self.audit = audit
        self._outcomes: dict[str, tuple[Entry, collections.deque[bool]]] = {}

    def record(self, entry: Entry, ok: bool) -> int | None:
        """Count one call of `entry`; return the rollback's version if this call triggered one."""
        rule = self.policies.rollback_rule(entry.id)
        if rule is None:
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
        reason = (f"automatic rollback: {failed} of the last {len(outcomes)} calls of {entry.id} failed (policy "
                  f"{policy_id} allows at most {limits.max_error_rate:.0%})")
        return self.roll_back(entry, reason, policy_id)

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
            self.audit.record(SYSTEM_AUTHOR, None, "registry.rollback", entry.id, "tool", "rollback failed",
                              policy_id, f"{reason}; it could not be applied: {error}")
            log.error("%s; it could not be applied: %s", reason, error)
            return None
        self.audit.record(SYSTEM_AUTHOR, None, "registry.rollback", entry.id, "tool", "rolled back", policy_id,
                          reason, version=version)
        return version
