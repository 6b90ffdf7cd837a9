"""What decides and records what agents do, handed to the agents layer as one piece."""

from __future__ import annotations

from dataclasses import dataclass

from ..policy import Approvals, Audit, Policies


@dataclass(frozen=True)
class Governance:
    """The policies that decide an agent's actions, the audit trail that records them, the approvals that wait."""

    policies: Policies
    audit: Audit
    approvals: Approvals
