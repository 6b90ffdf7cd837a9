"""Conversations and their history, derived from the journal: a conversation is its completed turns.

Each turn is a durable task of the `wippy:agent_turn` workflow whose result holds
the turn's messages, so the history is exactly what the journal says happened.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb

from ..durable._codec import loads
from ..llm import ChatMessage

TURN_WORKFLOW = "wippy:agent_turn"

_TURNS = """
SELECT t.id, CAST(json_extract(t.args, '$[2]') AS INTEGER) AS turn, e.status, e.detail
FROM tasks t JOIN (
    SELECT task, status, detail, row_number() OVER (PARTITION BY task ORDER BY time DESC, rowid DESC) AS n
    FROM task_events) e ON e.task = t.id AND e.n = 1
WHERE t.workflow = ? AND json_extract_string(t.args, '$[1]') = ?
ORDER BY turn
"""


class ConversationStore:
    def __init__(self, db: duckdb.DuckDBPyConnection) -> None:
        self.db = db

    def register(self, conversation: str, agent: str) -> None:
        self.db.execute(
            "INSERT INTO conversations VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [conversation, agent, datetime.now(UTC)]
        )

    def turns(self, conversation: str) -> list[tuple[str, int, str, Any]]:
        """Every turn task of the conversation: (task id, turn, status, detail), in turn order."""
        rows = self.db.execute(_TURNS, [TURN_WORKFLOW, conversation]).fetchall()
        return [(task, turn, status, loads(detail)) for task, turn, status, detail in rows]

    def history(self, conversation: str, before: int) -> list[ChatMessage]:
        """The messages of the completed turns numbered below `before`."""
        messages: list[ChatMessage] = []
        for _, turn, status, detail in self.turns(conversation):
            if turn < before and status == "completed":
                messages += detail["result"]["messages"]
        return messages

    def list(self, agent: str | None = None) -> list[tuple[str, str, datetime]]:
        """Conversations (id, agent, created), newest first."""
        where, params = ("WHERE agent = ?", [agent]) if agent else ("", [])
        rows = self.db.execute(f"SELECT id, agent, created FROM conversations {where} ORDER BY created DESC",
                               params).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]
