"""Conversations and their history, derived from the journal: a conversation is its completed turns.

Each turn is a durable task of the `wippy:agent_turn` workflow whose result holds
the turn's messages, so the history is exactly what the journal says happened.
The state's `ConversationStore` only lists the conversations started. A turn's
steps, each with when it started and how long it took, are its time line
(`turn_steps`): a UI draws it as a waterfall, for any past turn, with no tracing
exporter needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Literal, NamedTuple

from ..durable import JournalTypeError, StepRecord, TaskInfo, TaskManager, TaskStatus, loads
from ..llm import AssistantMessage, ChatMessage, Response, TextDelta, ToolResultMessage, Usage
from ..llm._messages import _Frozen
from ..state import TERMINAL, ConversationInfo, ConversationStore
from ._events import AgentEvent, Delegated, ToolFinished, ToolStarted, TurnDone, TurnFailed, TurnStarted

__all__ = [
    "DELEGATE_TASK_PREFIX",
    "TURN_WORKFLOW",
    "ConversationInfo",
    "StepSpan",
    "TurnArgs",
    "TurnSteps",
    "conversations",
    "delegate_conversation",
    "delegate_task_id",
    "history",
    "turn_events",
    "turn_steps",
    "turns",
]

TURN_WORKFLOW = "wippy:agent_turn"


class TurnArgs(NamedTuple):
    """The arguments of a turn task, in the order the journal keeps them (`TurnArgs(*info.args)`)."""

    agent: str
    conversation: str
    turn: int
    text: str
    context: dict[str, Any]
    chain: list[str]  # the agents that delegated down to this one, outermost first


def delegate_conversation(parent: str, call_id: str) -> str:
    """The conversation a delegate agent holds for one tool call of conversation `parent`."""
    return f"{parent}.{call_id}"


DELEGATE_TASK_PREFIX = "delegate:"


def delegate_task_id(parent: str, call_id: str) -> str:
    """The delegate's turn task for that tool call: fixed, so a replayed parent finds it instead of asking again."""
    return f"{DELEGATE_TASK_PREFIX}{parent}:{call_id}"


def conversations(store: ConversationStore, tasks: TaskManager) -> list[ConversationInfo]:
    """The conversations people had, newest first: those with a turn, delegates' left out (a UI lists them)."""
    return [info for info, _ in conversations_with_turns(store, tasks)]


def conversations_with_turns(store: ConversationStore, tasks: TaskManager
                             ) -> list[tuple[ConversationInfo, list[TaskInfo]]]:
    """`conversations`, each with its turn tasks in order (read once, for a UI that shows both)."""
    listed = []
    for info in store.list():
        past = turns(tasks, info.agent, info.id)
        if past and not past[0].id.startswith(DELEGATE_TASK_PREFIX):
            listed.append((info, past))
    return listed


def turns(tasks: TaskManager, agent: str, conversation: str) -> list[TaskInfo]:
    """The conversation's turn tasks, in turn order."""
    return sorted(tasks.tasks_of(TURN_WORKFLOW, (agent, conversation)), key=lambda info: TurnArgs(*info.args).turn)


def history(tasks: TaskManager, agent: str, conversation: str, before: int) -> list[ChatMessage]:
    """The messages of the completed turns numbered below `before`."""
    messages: list[ChatMessage] = []
    for info in turns(tasks, agent, conversation):
        if TurnArgs(*info.args).turn < before and info.status == TaskStatus.COMPLETED:
            messages += info.result["messages"]
    return messages


def turn_events(tasks: TaskManager, info: TaskInfo, tool_ids: Callable[[str], dict[str, str]]) -> list[AgentEvent]:
    """The events a turn streamed, rebuilt from its journaled result: a UI shows past turns as it showed live ones.

    Delegates' turns come back nested as `Delegated` events; tool durations come
    from the journal's steps. A turn still running ends without `TurnDone`.
    """
    args = TurnArgs(*info.args)
    events: list[AgentEvent] = [TurnStarted(conversation=args.conversation, turn=args.turn, agent=args.agent,
                                            task=info.id)]
    if info.status != TaskStatus.COMPLETED:
        if info.status in TERMINAL:
            events.append(TurnFailed(error=info.error or f"the turn {info.status}", kind=info.error_kind or info.status))
        return events
    seconds = {step.name: step.seconds for step in (info.steps or tasks.get(info.id).steps)}
    ids = tool_ids(args.agent)  # the journal keeps the names tools were offered under
    for message in info.result["messages"]:
        if isinstance(message, AssistantMessage):
            if message.content:
                events.append(TextDelta(text=message.content))
            events += [ToolStarted(call_id=call.id, tool=ids.get(call.name, call.name), arguments=call.arguments)
                       for call in message.tool_calls]
        elif isinstance(message, ToolResultMessage):
            events += _delegated_events(tasks, args.conversation, message.tool_call_id, tool_ids)
            events.append(ToolFinished(call_id=message.tool_call_id, tool=ids.get(message.name, message.name),
                                       result=message.content, is_error=message.is_error,
                                       seconds=seconds.get(f"tool:{message.tool_call_id}", 0.0)))
    events.append(TurnDone(answer=info.result["answer"]))
    return events


def _delegated_events(tasks: TaskManager, conversation: str, call_id: str,
                      tool_ids: Callable[[str], dict[str, str]]) -> list[AgentEvent]:
    """The nested events of the delegate that answered tool call `call_id`, if that call was a delegation."""
    delegate = _delegate(tasks, conversation, call_id)
    if delegate is None:
        return []
    return [Delegated(call_id=call_id, agent=TurnArgs(*delegate.args).agent, event=event)
            for event in turn_events(tasks, delegate, tool_ids)]


StepKind = Literal["model", "tool", "delegate", "other"]


class StepSpan(_Frozen):
    """One step of a turn on the turn's time line: what ran, when and for how long, and what a model call used."""

    name: str  # as the journal names it: model:N, tool:<call id>, wait:<signal>, ...
    kind: StepKind
    label: str  # the model's name, the tool's registry id, the delegate agent's id; else the step's name
    offset: float  # seconds from the start of the outermost turn
    seconds: float
    ok: bool  # False: the step failed, or its tool reported an error
    error: str | None = None
    usage: Usage | None = None  # a model call's
    cost_usd: float | None = None  # a model call's
    steps: tuple[StepSpan, ...] = ()  # a delegate's own steps, on the same time line


class TurnSteps(_Frozen):
    """A turn's steps in the order they were taken (a delegate's nested under the tool call that asked it)."""

    task: str
    agent: str
    turn: int
    status: str
    started: datetime
    steps: tuple[StepSpan, ...]

    def spans(self) -> Iterator[tuple[int, StepSpan]]:
        """Every step with its depth (0 for the turn's own, 1 for a delegate's, ...), in the order shown."""
        pending = [(0, span) for span in reversed(self.steps)]
        while pending:
            depth, span = pending.pop()
            yield depth, span
            pending += [(depth + 1, child) for child in reversed(span.steps)]

    @property
    def seconds(self) -> float:
        """From the turn's start to the end of its last step."""
        return max((span.offset + span.seconds for _, span in self.spans()), default=0.0)

    @property
    def usage(self) -> Usage:
        """The tokens of every model call, delegates' included (as the turn's answer counts them)."""
        return sum((span.usage for _, span in self.spans() if span.usage is not None), Usage())

    @property
    def cost_usd(self) -> float:
        return sum(span.cost_usd or 0.0 for _, span in self.spans())


def turn_steps(tasks: TaskManager, info: TaskInfo, tool_ids: Callable[[str], dict[str, str]]) -> TurnSteps:
    """Turn `info`'s steps from the journal, timed from its start; a turn still running gives the steps it finished."""
    args = TurnArgs(*info.args)
    return TurnSteps(task=info.id, agent=args.agent, turn=args.turn, status=info.status, started=info.created,
                     steps=_spans(tasks, info, info.created, tool_ids))


def _spans(tasks: TaskManager, info: TaskInfo, origin: datetime,
           tool_ids: Callable[[str], dict[str, str]]) -> tuple[StepSpan, ...]:
    args = TurnArgs(*info.args)
    ids = tool_ids(args.agent)
    tools: dict[str, str] = {}  # call id -> the tool's registry id, from the model calls that asked for them
    spans = []
    for step in info.steps or tasks.get(info.id).steps:
        result = _result(step)
        kind: StepKind = "other"
        label, error, usage, cost = step.name, step.error, None, None
        nested: tuple[StepSpan, ...] = ()
        if step.name.startswith("model:"):
            kind = "model"
            if isinstance(result, Response):
                tools |= {call.id: ids.get(call.name, call.name) for call in result.tool_calls}
                label, usage, cost = result.model or step.name, result.usage, result.cost_usd
        elif step.name.startswith("tool:"):
            call_id = step.name.removeprefix("tool:").removesuffix(":approved")
            kind, label = "tool", tools.get(call_id, step.name)
            outcome = result[0] if isinstance(result, list) and result else None  # a `ToolOutcome`, as stored
            if isinstance(outcome, ToolResultMessage) and outcome.is_error:
                error = outcome.content
            delegate = _delegate(tasks, args.conversation, call_id)
            if delegate is not None:
                kind, label = "delegate", TurnArgs(*delegate.args).agent
                nested = _spans(tasks, delegate, origin, tool_ids)
        spans.append(StepSpan(name=step.name, kind=kind, label=label, offset=(step.started - origin).total_seconds(),
                              seconds=step.seconds, ok=step.ok and error is None, error=error, usage=usage,
                              cost_usd=cost, steps=nested))
    return tuple(spans)


def _delegate(tasks: TaskManager, conversation: str, call_id: str) -> TaskInfo | None:
    """The turn of the delegate that answered tool call `call_id`, if that call was a delegation."""
    try:
        return tasks.get(delegate_task_id(conversation, call_id))
    except LookupError:
        return None


def _result(step: StepRecord) -> Any:
    """A step's recorded result, or None when there is none this code can read."""
    if not step.ok or step.result is None:
        return None
    try:
        return loads(step.result)
    except (JournalTypeError, ValueError):
        return None
