"""Conversation history in the app's state file, so a restarted (or reopened) conversation goes on."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import duckdb
from pydantic import TypeAdapter

from ..llm import ChatMessage

_MESSAGE: TypeAdapter[ChatMessage] = TypeAdapter(ChatMessage)


class ConversationStore:
    def __init__(self, db: duckdb.DuckDBPyConnection) -> None:
        self.db = db

    def open(self, conversation: str, agent: str) -> tuple[list[ChatMessage], int]:
        """The conversation's messages and the number of its last turn (creating it if new)."""
        self.db.execute(
            "INSERT INTO conversations VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [conversation, agent, datetime.now(UTC)]
        )
        rows = self.db.execute(
            "SELECT message, turn FROM conversation_messages WHERE conversation = ? ORDER BY seq", [conversation]
        ).fetchall()
        return [_MESSAGE.validate_json(text) for text, _ in rows], max((turn for _, turn in rows), default=0)

    def append(self, conversation: str, turn: int, start: int, messages: list[ChatMessage]) -> None:
        """Add a finished turn's messages (one statement: the turn is saved whole or not at all)."""
        self.db.execute(
            "INSERT INTO conversation_messages SELECT ?, unnest(?), ?, unnest(?)::JSON",
            [conversation, list(range(start, start + len(messages))), turn,
             [json.dumps(_MESSAGE.dump_python(m, mode="json")) for m in messages]],
        )

    def list(self, agent: str | None = None) -> list[tuple[str, str, datetime]]:
        """Conversations (id, agent, created), newest first."""
        where, params = ("WHERE agent = ?", [agent]) if agent else ("", [])
        rows = self.db.execute(f"SELECT id, agent, created FROM conversations {where} ORDER BY created DESC",
                               params).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]
