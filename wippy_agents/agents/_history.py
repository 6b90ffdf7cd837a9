"""Conversations and their history, derived from the journal: a conversation is its completed turns.

Each turn is a durable task of the `wippy:agent_turn` workflow whose result holds
the turn's messages, so the history is exactly what the journal says happened.
The state's `ConversationStore` only lists the conversations started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..durable import TaskInfo, TaskManager, TaskStatus
from ..llm import AssistantMessage, ChatMessage, TextDelta, ToolResultMessage
from ..state import TERMINAL, ConversationInfo, ConversationStore
from ._events import AgentEvent, Delegated, ToolFinished, ToolStarted, TurnDone, TurnFailed, TurnStarted

__all__ = [
    "DELEGATE_TASK_PREFIX",
    "TURN_WORKFLOW",
    "ConversationInfo",
    "TurnArgs",
    "conversations",
    "delegate_conversation",
    "delegate_task_id",
    "history",
    "turn_events",
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
    try:
        delegate = tasks.get(delegate_task_id(conversation, call_id))
    except LookupError:
        return []
    return [Delegated(call_id=call_id, agent=TurnArgs(*delegate.args).agent, event=event)
            for event in turn_events(tasks, delegate, tool_ids)]
