"""The records the stores exchange with the code above them: plain data, no database types.

Journal rows are named tuples whose first field is their task's id (a conversation's, for
the conversations' index): the engine and the agents append them, every store keeps them
as they are (JSON columns as JSON text).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, NamedTuple

JSONText = str
"""Text of a JSON document (the durable codec's output), stored and returned as it is."""


class TaskStatus(enum.StrEnum):
    """Where a task is; journaled as its events, so it survives restarts."""

    RUNNING = "running"
    RECOVERING = "recovering"  # being resumed from its journal after a restart
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NEEDS_ATTENTION = "needs_attention"  # parked by recovery: `wippy tasks resume` tries it again


FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
TERMINAL = FINISHED | {TaskStatus.NEEDS_ATTENTION}
"""A task in one of these is not resumed by a node: it is done, or waits for a person."""


class Note(enum.StrEnum):
    """Events that note something about a task without changing its status (the stores read some details)."""

    CANCEL_REQUESTED = "cancel_requested"
    UPGRADED = "upgraded"  # detail {"registry_version": n}: the task reads entries as of version n from now on
    STEP_STARTED = "step_started"  # detail {"seq": n, "name": s}: a step that could take the node down began
    RESUMED = "resumed"  # a person asked for a parked task again: its stall and crash counts start afresh


# -- journal rows ---------------------------------------------------------------------------


class TaskRow(NamedTuple):
    """A task as it was started."""

    id: str
    workflow: str
    args: JSONText
    registry_version: int
    created: datetime


class TaskEvent(NamedTuple):
    """A change of a task's status, or a note about it."""

    task: str
    time: datetime
    status: TaskStatus | Note
    detail: JSONText


class StepRecord(NamedTuple):
    """A finished step of a task: its result (JSON text) or its error."""

    task: str
    seq: int
    name: str
    ok: bool
    result: JSONText | None
    error: str | None
    started: datetime
    seconds: float


class SignalRecord(NamedTuple):
    """A signal delivered to a task."""

    task: str
    id: str
    name: str
    payload: JSONText
    time: datetime


class ConversationStart(NamedTuple):
    """A conversation's process started (again, after a restart): a row of its own in the journal's next group."""

    conversation: str
    agent: str
    time: datetime


class ConversationInfo(NamedTuple):
    """A conversation in the index that lists and searches them, as of its latest row.

    Journaled when a person's turn starts and when it ends: a row for a conversation
    already indexed moves it on (its turn count and last activity only grow, its first
    message is the first one given, its agent and start stay).
    """

    id: str
    agent: str
    started: datetime  # when its first turn began
    last_active: datetime
    turns: int = 0  # a person's turns (a delegate's are not counted)
    first: str | None = None  # the message its first turn was asked


class ConversationMessage(NamedTuple):
    """A message of a person's turn (`role` user: theirs; assistant: the answer), kept to search conversations by."""

    conversation: str
    turn: int
    time: datetime
    role: str
    text: str


class ModelCall(NamedTuple):
    """What one model call of an agent used and cost: journaled after its step, kept once per (task, step)."""

    task: str
    step: str  # the model step's name in the task (`model:3`): a replayed step's row is kept once
    agent: str
    model: str  # the model entry's id, or the model's own name when no entry names it
    time: datetime
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float


ConversationRow = ConversationStart | ConversationInfo | ConversationMessage
"""The rows of the conversations' index."""
JournalRow = TaskRow | TaskEvent | StepRecord | SignalRecord | ConversationRow | ModelCall


# -- what reading the journal gives ----------------------------------------------------------


@dataclass(frozen=True)
class TaskSummary:
    """A task as its events leave it: the status of its latest event that is not a note (running if none)."""

    id: str
    workflow: str
    args: JSONText
    registry_version: int  # of its latest upgrade, else the one it started on
    created: datetime
    status: TaskStatus
    detail: JSONText | None  # of that latest event
    cancel_requested: bool
    node: str | None = None  # the node that holds (or last held) its lease; None: the state has one node


class StartedStep(NamedTuple):
    """A step marked as started that never finished, and how many times it was started so."""

    seq: int
    name: str
    times: int


@dataclass(frozen=True)
class Recovery:
    """What resuming a task needs from its journal."""

    steps: list[StepRecord]  # by number (a number recorded twice: the later row last)
    signals: list[SignalRecord]  # in the order they came
    stalls: int  # recoveries since its last progress (the start of its latest finished step, or a person resuming)
    unfinished_starts: list[StartedStep]  # since a person last resumed it


@dataclass(frozen=True)
class Lease:
    """A task claimed by a node: `epoch` grows with every claim of the task, so a stale holder can be fenced off."""

    task: str
    node: str
    epoch: int


# -- registry versions, approvals, audit, conversations ------------------------------------------


class ChangeRecord(NamedTuple):
    """One entry's change in a registry version: the entry as JSON data before and after (None: absent)."""

    entry_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    origin: str | None  # the file the entry lives in after the change


@dataclass(frozen=True)
class Version:
    """One committed registry version."""

    version: int
    time: datetime
    author: str
    reason: str
    task: str | None
    entries: tuple[str, ...]


@dataclass(frozen=True)
class Approval:
    """A change (or tool call) an agent asked for that waits for a person."""

    id: str
    agent: str
    task_id: str | None
    action: str
    resource: str
    summary: str
    diff: str
    status: Literal["pending", "approved", "denied"]
    created: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    version: int | None = None
    call_id: str | None = None
    policy: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One decision: who (subject, task) did what (action, resource) and what was decided, by whom and why."""

    time: datetime
    subject: str
    task: str | None
    action: str
    resource: str
    kind: str | None
    decision: str  # allowed, denied, asked, approved, denied by person, rolled back
    decided_by: str  # the deciding policy id, a person, or wippy:policy
    reason: str
    approval: str | None = None
    version: int | None = None



@dataclass(frozen=True)
class McpToken:
    """A bearer token of `wippy mcp serve --http`: only its SHA-256 digest is kept, never the token itself."""

    name: str
    digest: str
    """The hex SHA-256 of the token."""
    agents: str
    """The agents it reaches: an id pattern (`*`, `app:*`, `app:assistant`)."""
    created: datetime


@dataclass(frozen=True)
class MemoryVersion:
    """One write to an agent's memory: a note remembered (its text and tags) or forgotten (text None).

    Versions are numbered per agent (1, 2, ...); a note is named by the version that first wrote it.
    """

    agent: str
    version: int
    note: int
    text: str | None
    tags: tuple[str, ...]
    author: str  # the agent that wrote it, or the person who forgot it
    task: str | None  # the turn it was written in
    time: datetime


@dataclass(frozen=True)
class DailyUsage:
    """The model calls of one agent on one model in one UTC day, added up."""

    day: date
    agent: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float
