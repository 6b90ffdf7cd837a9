"""Conversations and their history, derived from the journal: a conversation is its completed turns.

Each turn is a durable task of the `wippy:agent_turn` workflow whose result holds
the turn's messages, so the history is exactly what the journal says happened.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from ..durable import TaskInfo, TaskManager
from ..llm import ChatMessage

TURN_WORKFLOW = "wippy:agent_turn"


class ConversationStore:
    """The conversations table (for listing them); their turns are tasks in the journal."""

    def __init__(self, db: duckdb.DuckDBPyConnection) -> None:
        self.db = db

    def register(self, conversation: str, agent: str) -> None:
        self.db.execute(
            "INSERT INTO conversations VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [conversation, agent, datetime.now(UTC)]
        )


def turns(tasks: TaskManager, agent: str, conversation: str) -> list[TaskInfo]:
    """The conversation's turn tasks, in turn order."""
    return sorted(tasks.tasks_of(TURN_WORKFLOW, (agent, conversation)), key=lambda info: info.args[2])


def history(tasks: TaskManager, agent: str, conversation: str, before: int) -> list[ChatMessage]:
    """The messages of the completed turns numbered below `before`."""
    messages: list[ChatMessage] = []
    for info in turns(tasks, agent, conversation):
        if info.args[2] < before and info.status == "completed":
            messages += info.result["messages"]
    return messages
