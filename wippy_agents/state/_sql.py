"""What the SQL stores share: the columns of approvals and audit records, JSON text, filters and literal lists.

Only the parameter placeholder differs between the drivers (DuckDB `?`, psycopg `%s`).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from ._records import Approval

APPROVAL_COLUMNS = ("id, agent, task, action, resource, summary, diff, status, created, decided_by, decided_at, "
                    "decision_reason, version, call, policy")
AUDIT_COLUMNS = "time, subject, task, action, resource, kind, decision, decided_by, reason, approval, version"


def sql_list(values: Collection[str]) -> str:
    """Our own constants (statuses, notes) as an SQL list of literals, for queries written once at import."""
    return ", ".join(f"'{value}'" for value in values)


def json_text(data: Any) -> str | None:
    return None if data is None else json.dumps(data, sort_keys=True)


def json_data(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def filters(placeholder: str, **values: str | None) -> tuple[str, list[str]]:
    """A WHERE clause matching each given value (None: not filtered), and its parameters."""
    given = {k: v for k, v in values.items() if v is not None}
    where = " AND ".join(f"{k} = {placeholder}" for k in given)
    return (f"WHERE {where}" if given else ""), list(given.values())


def approval_row(approval: Approval, changes: list[dict[str, Any]]) -> list[Any]:
    """The values of `APPROVAL_COLUMNS`, then the changes as JSON text."""
    return [approval.id, approval.agent, approval.task_id, approval.action, approval.resource, approval.summary,
            approval.diff, approval.status, approval.created, approval.decided_by, approval.decided_at,
            approval.decision_reason, approval.version, approval.call_id, approval.policy, json.dumps(changes)]
