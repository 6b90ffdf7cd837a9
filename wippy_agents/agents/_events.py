"""What a conversation streams to its subscribers while a turn runs, and what a turn returns."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .. import llm
from ..durable import register_journal_types
from ..llm import TextDelta, ToolCall, Usage
from ..llm._messages import _Frozen


class Answer(_Frozen):
    """The end of a turn: the final text, with what the whole turn (delegates included) used and cost."""

    text: str
    conversation: str
    turn: int
    agent: str
    usage: Usage = Usage()
    cost_usd: float = 0.0
    steps: int = 0
    tool_calls: tuple[ToolCall, ...] = ()
    stopped: str | None = None  # why the turn ended early: "max_steps" (a spend limit raises BudgetExceeded)
    context_tokens: int = 0  # of the model's window, the turn's last call took (reported, else estimated)
    context_window: int = 0  # the model's window in tokens (0: unknown)


class TurnStarted(_Frozen):
    type: Literal["turn_started"] = "turn_started"
    conversation: str
    turn: int
    agent: str
    task: str  # the turn's durable task: `wippy tasks show` it, or cancel it


class ToolStarted(_Frozen):
    type: Literal["tool_started"] = "tool_started"
    call_id: str
    tool: str  # the registry id (or the delegate agent's id)
    arguments: dict[str, Any]


class ToolFinished(_Frozen):
    type: Literal["tool_finished"] = "tool_finished"
    call_id: str
    tool: str
    result: str
    is_error: bool = False
    seconds: float = 0.0


class ApprovalRequested(_Frozen):
    """Tool call `call_id` waits for a person (`wippy approvals`, the TUI); its `ToolFinished` follows the decision."""

    type: Literal["approval_requested"] = "approval_requested"
    call_id: str
    tool: str
    approval: str  # the approval's id
    summary: str


class UsageReport(_Frozen):
    """One model call's usage and cost (streamed as each call finishes)."""

    type: Literal["usage"] = "usage"
    model: str
    usage: Usage
    cost_usd: float


class Delegated(_Frozen):
    """An event from a delegate agent working on tool call `call_id`, nested for display."""

    type: Literal["delegated"] = "delegated"
    call_id: str
    agent: str
    event: AgentEvent


class TurnDone(_Frozen):
    type: Literal["turn_done"] = "turn_done"
    answer: Answer


class TurnFailed(_Frozen):
    """The turn could not finish (a model error, a broken prompt, the agent crashed)."""

    type: Literal["turn_failed"] = "turn_failed"
    error: str
    kind: str  # the exception class name, e.g. "MissingAPIKeyError"


AgentEvent = Annotated[
    TextDelta | TurnStarted | ToolStarted | ToolFinished | ApprovalRequested | UsageReport | Delegated | TurnDone
    | TurnFailed,
    Field(discriminator="type"),
]
Delegated.model_rebuild()

# What a turn's steps and result hold, so the journal can store them (tags as `llm.Response`, `agents.Answer`).
register_journal_types("llm", (
    llm.SystemMessage, llm.UserMessage, llm.ToolCall, llm.AssistantMessage, llm.ToolResultMessage,
    llm.ToolDefinition, llm.Usage, llm.Response, llm.TextDelta, llm.ToolCallStart, llm.ToolCallDelta,
    llm.ResponseDone))
register_journal_types("agents", (
    Answer, TurnStarted, ToolStarted, ToolFinished, ApprovalRequested, UsageReport, Delegated, TurnDone, TurnFailed))
