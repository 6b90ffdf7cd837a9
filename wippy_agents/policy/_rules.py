"""The rules: what policy entries decide about an agent's action, and the changes no policy can allow."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

from ..registry import Budget, Entry, EntryChange, PolicySpec, Registry, RollbackRule

Effect = Literal["allow", "deny", "ask"]
WRITES = ("registry.create", "registry.update", "registry.delete")
MEMORY_WRITE = "memory.write"
"""Writing an agent's memory; its resource is the id of the agent whose memory it is."""
AGENT_WRITABLE_KINDS = ("tool", "prompt", "agent", "workflow")
SYSTEM_AUTHOR = "wippy:policy"


@dataclass(frozen=True)
class Decision:
    """What the policies say about one action: the effect, the deciding policy (None: the default), and why."""

    effect: Effect
    policy: str | None
    reason: str


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
        """Deny wins, then ask, then allow; with no matching policy, writes are denied and calls allowed (and an
        agent may write its own memory, not another's)."""
        found = self.matching(subject, action, resource, kind)
        for effect in ("deny", "ask", "allow"):
            for policy_id, spec in found:
                if spec.effect == effect:
                    return Decision(effect, policy_id, f"policy {policy_id} says {effect}")
        if action in WRITES:
            return Decision("deny", None, f"no policy allows {subject} to {action} {resource} (writes are denied "
                                          "unless a policy entry allows them)")
        if action == MEMORY_WRITE and resource != subject:
            return Decision("deny", None, f"no policy allows {subject} to write the memory of {resource} (an agent "
                                          "writes only its own memory unless a policy entry allows more)")
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
            if entry.kind in ("tool", "workflow") and entry.data.get("runtime") != "restricted":
                return (f"agents can only write restricted {entry.kind}s (runtime: restricted), which run in the "
                        "sandbox")
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

    def budgets(self, agent: str) -> list[tuple[str, Budget]]:
        """The spend limits policies set for `agent`, each with the policy that sets it."""
        return [(policy_id, spec.budget) for policy_id, spec in self._policies()
                if spec.budget is not None and any(self._subject_matches(p, agent) for p in spec.subjects)]

    def rollback_rule(self, tool_id: str) -> tuple[str, RollbackRule] | None:
        """The automatic rollback a policy sets for a tool (the first policy naming it that has one)."""
        for policy_id, spec in self._policies():
            if spec.rollback is not None and any(fnmatch.fnmatchcase(tool_id, p) for p in spec.resources):
                return policy_id, spec.rollback
        return None
