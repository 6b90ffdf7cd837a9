"""What the SQL stores share: the columns of approvals and audit records, JSON text, filters and literal lists,
and the memory and usage stores, whose statements both drivers run as they are.

Only the parameter placeholder differs between the drivers (DuckDB `?`, psycopg `%s`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .._runtime.secrets import Redactor
from ..errors import UsageError
from ._records import Approval, ConversationInfo, DailyUsage, MemoryVersion

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


def approval_row(approval: Approval, changes: list[dict[str, Any]], redactor: Redactor | None) -> list[Any]:
    """The values of `APPROVAL_COLUMNS`, then the changes as JSON text; the `redactor`'s secrets replaced in each (a
    model can put one in a call's arguments or a change; a change approved is applied as it was kept)."""
    return redacted_row([approval.id, approval.agent, approval.task_id, approval.action, approval.resource,
                         approval.summary, approval.diff, approval.status, approval.created, approval.decided_by,
                         approval.decided_at, approval.decision_reason, approval.version, approval.call_id,
                         approval.policy, json.dumps(changes if redactor is None else redactor.redact_data(changes))],
                        redactor)


def redacted_row(values: list[Any], redactor: Redactor | None) -> list[Any]:
    """`values` with the `redactor`'s secrets replaced in each text (secrets never enter the state)."""
    return values if redactor is None else [redactor.redact(v) if isinstance(v, str) else v for v in values]


MEMORY_COLUMNS = "agent, version, note, text, tags, author, task, time"
_LATEST = "version = (SELECT max(version) FROM memory_notes AS later WHERE later.agent = m.agent AND later.note = m.note)"


class SQLStore:
    """A store whose statements both drivers run as they are, written with `?` placeholders."""

    placeholder = "?"

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)


class SQLMemory(SQLStore):
    """Agents' memory in the `memory_notes` table, one row per version (SQL both DuckDB and Postgres run).

    A version's number is worked out in the statement that inserts it, and (agent,
    version) is the table's key, so two writers can never both take one number.
    """

    def write(self, agent: str, note: int | None, text: str | None, tags: Sequence[str], *, author: str,
              task: str | None) -> MemoryVersion:
        now = datetime.now(UTC)
        [(version, note_id)] = self._query(self._sql(
            f"""INSERT INTO memory_notes ({MEMORY_COLUMNS})
                SELECT ?, n.v, coalesce(?, n.v), ?, ?, ?, ?, ?
                FROM (SELECT coalesce(max(version), 0) + 1 AS v FROM memory_notes WHERE agent = ?) AS n
                RETURNING version, note"""), [agent, note, text, json.dumps(list(tags)), author, task, now, agent])
        return MemoryVersion(agent, int(version), int(note_id), text, tuple(tags), author, task, now)

    def notes(self, agent: str) -> list[MemoryVersion]:
        return self._versions(f"WHERE agent = ? AND text IS NOT NULL AND {_LATEST} ORDER BY note", [agent])

    def history(self, agent: str, note: int | None = None) -> list[MemoryVersion]:
        if note is None:
            return self._versions("WHERE agent = ? ORDER BY version", [agent])
        return self._versions("WHERE agent = ? AND note = ? ORDER BY version", [agent, note])

    def agents(self) -> dict[str, int]:
        rows = self._query(f"SELECT agent, count(*) FROM memory_notes AS m WHERE text IS NOT NULL AND {_LATEST} "
                           "GROUP BY agent ORDER BY agent", [])
        return {agent: int(count) for agent, count in rows}

    def _versions(self, where: str, params: Sequence[Any]) -> list[MemoryVersion]:
        rows = self._query(self._sql(f"SELECT {MEMORY_COLUMNS} FROM memory_notes AS m {where}"), params)
        return [MemoryVersion(agent, int(version), int(note), text, tuple(json.loads(tags)), author, task, time)
                for agent, version, note, text, tags, author, task, time in rows]


class SQLUsage(SQLStore):
    """Agents' model calls in the `model_calls` table, one row per (task, step), journaled (see `UsageStore`).

    A day is a UTC day: the day's spend of an agent is a sum over that day's rows,
    found by their time (an index on (agent, time) in Postgres).
    """

    def spent(self, agent: str, day: date) -> tuple[int, float]:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        [(tokens, cost)] = self._query(self._sql(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0), coalesce(sum(cost_usd), 0) FROM model_calls "
            "WHERE agent = ? AND time >= ? AND time < ?"), [agent, start, start + timedelta(days=1)])
        return int(tokens), float(cost)

    def daily(self, *, agent: str | None = None, since: date | None = None) -> list[DailyUsage]:
        given = [(clause, value) for clause, value in (
            ("agent = ?", agent), ("time >= ?", since and datetime(since.year, since.month, since.day, tzinfo=UTC)))
            if value is not None]
        where = " AND ".join(clause for clause, _ in given)
        rows = self._query(self._sql(
            "SELECT CAST(timezone('UTC', time) AS DATE) AS day, agent, model, count(*), sum(input_tokens), "
            f"sum(output_tokens), sum(cached_tokens), sum(cost_usd) FROM model_calls {'WHERE ' + where if where else ''}"
            " GROUP BY day, agent, model ORDER BY day, agent, model"), [value for _, value in given])
        return [DailyUsage(day, agent, model, int(calls), int(inputs), int(outputs), int(cached), float(cost))
                for day, agent, model, calls, inputs, outputs, cached, cost in rows]

    def prune(self, before: datetime) -> int:
        return len(self._query(self._sql("DELETE FROM model_calls WHERE time < ? RETURNING task"), [before]))


class SQLConversations(SQLStore):
    """The conversations' index: `conversations` (one row each, moved on as turns happen) and
    `conversation_messages` (searched by text), both filled by the journal's writer."""

    def list(self, *, agent: str | None = None, since: datetime | None = None, until: datetime | None = None,
             text: str | None = None, limit: int = 50) -> list[ConversationInfo]:
        where: list[str] = ["turns > 0"]
        params: list[Any] = []
        for clause, value in (("agent = ?", agent), ("last_active >= ?", since), ("last_active < ?", until)):
            if value is not None:
                where.append(clause)
                params.append(value)
        words = (text or "").split()
        if len(words) > MAX_SEARCH_WORDS:
            raise UsageError(f"a search of conversations takes at most {MAX_SEARCH_WORDS} words, not {len(words)}: "
                             "leave out the common ones")
        for word in words:
            where.append("id IN (SELECT conversation FROM conversation_messages WHERE text ILIKE ? ESCAPE '\\')")
            params.append(f"%{_like_escaped(word)}%")
        rows = self._query(self._sql(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {' AND '.join(where)} "
            "ORDER BY last_active DESC, id LIMIT ?"), [*params, limit])
        return [ConversationInfo(*row) for row in rows]

    def forget(self, conversations: Sequence[str]) -> None:
        for table, column in (("conversation_messages", "conversation"), ("conversation_starts", "conversation"),
                              ("conversations", "id")):
            self._query(self._sql(f"DELETE FROM {table} WHERE {column} IN (SELECT unnest(?::VARCHAR[])) RETURNING {column}"),
                        [list(conversations)])


CONVERSATION_COLUMNS = "id, agent, created, last_active, turns, first"
MAX_SEARCH_WORDS = 20
"""Each word of a search is one more pass over the messages."""


def _like_escaped(text: str) -> str:
    """`text` matched as it is by LIKE (its `%`, `_` and backslashes escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
