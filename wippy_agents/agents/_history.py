"""Conversations and their history, derived from the journal: a conversation is its completed turns.

Each turn is a durable task of the `wippy:agent_turn` workflow whose result holds
the turn's messages, so the history is exactly what the journal says happened.
The state's `ConversationStore` indexes conversations to list and search them.

What a turn's model sees of the turns before it is a `ConversationHistory`: the
running summary of the oldest turns (journaled by a `compact:N` step, kept in
the turn's result as its `Compaction`), then the later turns verbatim. The
agent service keeps each conversation's in memory (`Histories`), so a turn reads
none of the journal; after a restart it is read back from the newest turn to the
latest compaction only, however long the conversation. A turn's
steps, each with when it started and how long it took, are its time line
(`turn_steps`): a UI draws it as a waterfall, for any past turn, with no tracing
exporter needed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

from ..durable import JournalTypeError, StepRecord, TaskInfo, TaskManager, TaskStatus, loads, register_journal_types
from ..llm import AssistantMessage, ChatMessage, Response, SystemMessage, TextDelta, ToolResultMessage, Usage
from ..llm._messages import _Frozen
from ..state import TERMINAL, ConversationInfo
from ._events import AgentEvent, Delegated, ToolFinished, ToolStarted, TurnDone, TurnFailed, TurnStarted

__all__ = [
    "DELEGATE_TASK_PREFIX",
    "SUMMARY_HEADER",
    "TURN_WORKFLOW",
    "Compaction",
    "ConversationHistory",
    "ConversationInfo",
    "Histories",
    "StepSpan",
    "TurnArgs",
    "TurnSteps",
    "delegate_conversation",
    "delegate_task_id",
    "load_history",
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


def turns(tasks: TaskManager, agent: str, conversation: str) -> list[TaskInfo]:
    """The conversation's turn tasks, in turn order."""
    return sorted(tasks.tasks_of(TURN_WORKFLOW, (agent, conversation)), key=lambda info: TurnArgs(*info.args).turn)


class Compaction(_Frozen):
    """A compaction step's journaled result: what the oldest turns became, and the last turn they reach."""

    strategy: Literal["summary", "truncate"]
    summary: str | None  # every turn up to `through`, summarized (None: truncated, nothing kept of them)
    through: int  # the last turn folded in: the history goes on, verbatim, from the turn after it
    turns: int  # how many turns this step folded
    tokens_before: int  # the history's estimated tokens before the step and after it
    tokens_after: int
    response: Response | None = None  # the call that wrote the summary (its usage and cost)


register_journal_types("agents", (Compaction,))

SUMMARY_HEADER = "Summary of the earlier part of this conversation (older turns were folded into it):\n"


@dataclass(frozen=True)
class ConversationHistory:
    """What a turn's model is sent of the turns before it: the running summary, then the later turns verbatim."""

    summary: str | None = None
    through: int = 0  # the last turn the summary covers (0: none)
    turns: tuple[tuple[int, tuple[ChatMessage, ...]], ...] = ()  # (turn, its messages), oldest first

    def messages(self) -> list[ChatMessage]:
        head: list[ChatMessage] = [SystemMessage(content=SUMMARY_HEADER + self.summary)] if self.summary else []
        return head + [message for _, messages in self.turns for message in messages]

    def folded(self, compaction: Compaction) -> ConversationHistory:
        """The history once `compaction` folded (or dropped) its turns."""
        return ConversationHistory(compaction.summary, compaction.through,
                                   tuple(turn for turn in self.turns if turn[0] > compaction.through))

    def then(self, turn: int, messages: list[ChatMessage]) -> ConversationHistory:
        """The history the next turn sees, once `turn` added `messages`."""
        return ConversationHistory(self.summary, self.through, (*self.turns, (turn, tuple(messages))))


def load_history(tasks: TaskManager, agent: str, conversation: str, before: int) -> ConversationHistory:
    """The history of the completed turns numbered below `before`, read from the journal's turn results.

    Read from the newest turn back to the latest compaction only: what that
    compaction folded is its summary.
    """
    kept: list[tuple[int, tuple[ChatMessage, ...]]] = []
    latest: Compaction | None = None
    for info in reversed(turns(tasks, agent, conversation)):
        number = TurnArgs(*info.args).turn
        if latest is not None and number <= latest.through:
            break
        if number >= before or info.status != TaskStatus.COMPLETED:
            continue
        kept.append((number, tuple(info.result["messages"])))
        if latest is None:
            latest = info.result.get("compaction")
    if latest is None:
        return ConversationHistory(turns=tuple(reversed(kept)))
    return ConversationHistory(latest.summary, latest.through, tuple(reversed(kept)))


class Histories:
    """Each conversation's history as its last turn left it, in memory: a turn's history costs the same at turn 5
    and at turn 5,000. A turn that finds no entry for the turn before it (after a restart, a failed turn, or
    its conversation idle long enough to be dropped) reads it back from the journal (`load_history`).

    Only the `capacity` most recently used conversations are kept, so a node that lives for days with many
    conversations does not keep every one's history.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._latest: OrderedDict[tuple[str, str], tuple[int, ConversationHistory]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._latest)

    def before(self, tasks: TaskManager, agent: str, conversation: str, turn: int) -> ConversationHistory:
        """The history turn `turn` of the conversation is sent."""
        latest = self._latest.get((agent, conversation))
        if latest is not None and latest[0] == turn - 1:
            self._latest.move_to_end((agent, conversation))
            return latest[1]
        return load_history(tasks, agent, conversation, before=turn)

    def completed(self, agent: str, conversation: str, turn: int, history: ConversationHistory) -> None:
        """Turn `turn` finished, leaving `history` for the next."""
        self._latest[(agent, conversation)] = (turn, history)
        self._latest.move_to_end((agent, conversation))
        while len(self._latest) > self.capacity:
            self._latest.popitem(last=False)


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
        elif step.name.startswith("compact:"):
            if isinstance(result, Compaction) and result.response is not None:  # a summary written by a model call
                kind, label = "model", f"{result.response.model or step.name} (compaction)"
                usage, cost = result.response.usage, result.response.cost_usd
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
