"""Policies, approvals and the audit trail: what agents may change, who approves it, and the record.

A `policy` entry says which subjects (agent ids, `*` patterns, or `trait:NAME`
for agents whose `meta.traits` list NAME) may do which actions on which resources
(entry id patterns, optionally only of some kinds), with effect `allow`, `deny` or
`ask`. Deny wins over ask, ask over allow. With no matching policy, registry
writes are denied; `tool.call` and `agent.delegate` are allowed, because listing a
tool or delegate in an agent's entry (a person's edit) already grants it.
`memory.write` (its resource: the agent whose memory it is) is allowed for an
agent's own memory and denied for another's.

Some changes no policy can allow an agent, because they would grant permissions
or run code outside the sandbox: policies, any kind other than restricted tools,
prompts and agents, an agent's `meta.traits`, and trusted (`runtime: python`) tools.
Files edited by people are not subject to agent policy at all.

An `ask` becomes an `Approval` kept in the app's state: the agent's task waits on
the signal `approval:ID` (across restarts) until a person approves (the change is
applied then, attributed to the agent and its task) or denies it. Every decision
is an `AuditRecord`. A restricted tool that fails too often is rolled back
(`ToolHealth`), where a policy says so.
"""

from ..state import Approval, AuditRecord
from ._approvals import ApprovalError, ApprovalPending, Approvals, person
from ._audit import Audit
from ._health import ToolHealth
from ._rules import Decision, Policies

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
    "person",
]
