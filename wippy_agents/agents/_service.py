"""Agents on a node: conversation processes under the `wippy:agents` supervisor, and the client API.

A conversation is one supervised process, registered as `conversation:<id>`. It
takes `agent.ask` messages one at a time and streams `agent.event` messages back
to the asker. An unexpected exception crashes only that process; its supervisor
starts it again and it reloads its history from the state file.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import json
import random
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import process
from .._runtime.node import current_process
from .._runtime.secrets import Redactor
from .._runtime.telemetry import OFF, AttributeValue, Telemetry
from .._runtime.types import DOWN, Pid, describe
from ..durable import StateUnavailable, TaskContext, TaskFailed, TaskInfo, TaskManager
from ..durable._engine import step_error_type
from ..llm import Model, ToolCall, UsageLedger, default_model_spec, load_model
from ..registry import AgentSpec, ModelSpec, Registry, RegistryView
from ..state import (
    TERMINAL,
    ConversationInfo,
    ConversationMessage,
    ConversationRow,
    ConversationStart,
    ConversationStore,
    UsageStore,
)
from ..supervisor import ChildSpec, Supervisor, SupervisorError
from ._builtin import register_builtins
from ._errors import AgentError
from ._events import AgentEvent, Answer, TurnDone, TurnFailed, TurnStarted
from ._governance import Governance
from ._history import (
    TURN_WORKFLOW,
    Histories,
    TurnArgs,
    TurnSteps,
    delegate_conversation,
    delegate_task_id,
    turn_events,
    turn_steps,
    turns,
)
from ._mcp import McpServers
from ._memory import Memory
from ._prompt import PromptRenderer
from ._restricted import RestrictedTools
from ._toolset import Offered, check_tool_names, offers
from ._turn import AskRequest, run_turn
from ._workflows import Workflows

if TYPE_CHECKING:
    from .._runtime.node import Node

SUPERVISOR = "wippy:agents"


def conversation_name(conversation: str) -> str:
    return f"conversation:{conversation}"


class AgentService:
    """An app's agents: models, usage totals, conversations, and the turn workflow they run on.

    Everything it needs is handed in: the node that hosts the conversation
    processes, the registry, the task manager its turns run on (it registers the
    turn workflow there), the conversations' store, the governance that
    decides and records what agents do, and the store of what their model calls spent.
    """

    def __init__(self, node: Node, registry: Registry, tasks: TaskManager, store: ConversationStore,
                 governance: Governance, spend: UsageStore, *, restricted: RestrictedTools | None = None,
                 redactor: Redactor | None = None, mcp: McpServers | None = None, telemetry: Telemetry = OFF,
                 memory: Memory | None = None) -> None:
        self.node = node
        self.registry = registry
        self.tasks = tasks
        self.store = store
        self.governance = governance
        self.spend = spend
        """What agents' model calls used and cost, kept per call (spend limits per day, `wippy usage`)."""
        self.redactor = redactor if redactor is not None else Redactor()  # an empty one is falsy, yet the app adds to it
        """Secret values that tool results must not carry to the model (or into the journal)."""
        self.restricted = restricted or RestrictedTools()
        """Runs agent-written (restricted) tools in the node's sandbox."""
        self.memory = memory
        """The agents' notes (`wippy:remember`, `wippy:recall`; None: the app keeps none)."""
        self.mcp = mcp
        """The app's MCP servers, whose tools agents call like any other (None: the app runs none)."""
        self.prompts = PromptRenderer(self.restricted.sandbox)
        """Renders system prompts, in the sandbox when a template could run long."""
        self.usage = UsageLedger()
        self.histories = Histories()
        """What each conversation's next turn is sent of the turns before it, kept as its last turn left it."""
        self.model_overrides: dict[str, Model] = {}
        """Models to use instead of what entries say, by model id or `*` (tests: a `ScriptedModel`)."""
        self._models: dict[str | None, tuple[ModelSpec, Model]] = {}
        self._offers: dict[str, tuple[tuple[int, int], AgentSpec, dict[str, Offered]]] = {}
        self.listeners: dict[str, Callable[[AgentEvent], None]] = {}
        """Who hears the events of a running turn task, by task id (nobody, for a turn resumed at boot)."""
        self.telemetry = telemetry
        """Where turns, model calls and tool calls are traced (off unless the app traces)."""
        self.trace_parents: dict[str, dict[str, str]] = {}
        """The asker's trace context of a running turn task, by task id: its `invoke_agent` span's parent."""
        registry.validators.append(check_tool_names)
        register_builtins(registry, self)
        tasks.register(TURN_WORKFLOW, functools.partial(agent_turn, self))
        self.workflows = Workflows(self)
        """The registry's workflow entries, which the task manager runs as tasks (agents write restricted ones)."""
        tasks.resolve = self.workflows.resolve

    def supervisor(self) -> Supervisor:
        """The supervisor conversations run under (a child of `wippy:system`): a conversation that crashes more than
        5 times in 10 s is given up on (logged; its next ask starts it afresh), and no other is touched."""
        return Supervisor(max_restarts=5, max_seconds=10, give_up_on_children=True)

    def offers(self, agent_id: str, spec: AgentSpec, registry: Registry | RegistryView) -> dict[str, Offered]:
        """The agent's tools and delegates as offered to its model, worked out once per registry version."""
        cached = self._offers.get(agent_id)
        revision = (registry.version, self.registry.builtins_revision)
        if cached is None or cached[0] != revision or cached[1] is not spec:
            by_name, _ = offers(spec, registry.view(), registry.spec)
            cached = self._offers[agent_id] = (revision, spec, by_name)
        return cached[2]

    def model(self, model_id: str | None, registry: Registry | RegistryView) -> Model:
        """The model for a turn: an override, else the entry's (rebuilt when the entry changes)."""
        override = self.model_overrides.get(model_id or "") or self.model_overrides.get("*")
        if override is not None:
            return override
        spec = self.model_spec(model_id, registry)
        cached = self._models.get(model_id)
        if cached is None or cached[0] is not spec:
            cached = (spec, load_model(spec, entry_id=model_id))
            self._models[model_id] = cached
        return cached[1]

    def model_spec(self, model_id: str | None, registry: Registry | RegistryView) -> ModelSpec:
        """The model entry a turn's model comes from (the default offline model's when the agent names none)."""
        spec = registry.spec(model_id) if model_id else default_model_spec()
        assert isinstance(spec, ModelSpec)
        return spec

    # -- conversation processes --------------------------------------------------------

    async def run_conversation(self, agent_id: str, conversation: str) -> None:
        """The body of a conversation process: one turn task at a time, events to the asker and watchers."""
        tasks = self.tasks
        now = tasks.now()
        self._index(ConversationStart(conversation, agent_id, now))
        for info in turns(tasks, agent_id, conversation):
            if info.status not in TERMINAL:  # a turn interrupted by a crash: recovery is finishing it
                with contextlib.suppress(TaskFailed, LookupError):
                    await tasks.result(info.id)
        turn = max((TurnArgs(*info.args).turn for info in turns(tasks, agent_id, conversation)), default=0)
        watchers: frozenset[Pid] = frozenset()  # the empty one is shared: most conversations have no watcher
        while True:
            msg = await process.receive()
            if msg.topic == "agent.subscribe":
                watchers |= {msg.payload}
                process.monitor(msg.payload)
                continue
            if msg.topic in ("agent.unsubscribe", DOWN):
                watchers -= {msg.payload if msg.topic != DOWN else msg.payload.pid}
                continue
            if msg.topic != "agent.ask":
                continue
            request: AskRequest = msg.payload
            text = self.redactor.redact(request.text)  # as the journal keeps it: a replay sends the model the same
            try:
                known = ({info.id: TurnArgs(*info.args).turn for info in turns(tasks, agent_id, conversation)}
                         if request.task_id else {})
            except StateUnavailable as error:  # which turn the id names cannot be read now: nothing starts
                process.send(request.reply_to, "agent.event", TurnFailed(error=str(error), kind=type(error).__name__))
                continue
            if request.task_id in known:
                number = known[request.task_id]
            else:
                turn += 1
                number = turn
            task_id = request.task_id or f"turn:{conversation}:{number}"

            def emit(event: AgentEvent, to: frozenset[Pid] = frozenset({request.reply_to, *watchers})) -> None:
                for pid in to:
                    process.send(pid, "agent.event", event)

            emit(TurnStarted(conversation=conversation, turn=number, agent=agent_id, task=task_id))
            self.listeners[task_id] = emit
            if request.trace:
                self.trace_parents[task_id] = request.trace
            try:
                try:
                    await tasks.start(TURN_WORKFLOW, *TurnArgs(agent_id, conversation, number, text,
                                                               request.context, list(request.chain)), task_id=task_id)
                    if not request.chain and request.task_id not in known:  # a person's new turn (not a delegate's)
                        now = tasks.now()
                        self._index(ConversationInfo(conversation, agent_id, now, now, number, text),
                                    ConversationMessage(conversation, number, now, "user", text))
                except StateUnavailable:  # no new durable work until the state can be written
                    if number == turn and request.task_id not in known:
                        turn -= 1  # nothing was recorded under the number: the next turn takes it
                    raise
                result = await tasks.result(task_id)
            except StateUnavailable as error:  # refused, or paused mid-turn (it goes on when the state is back)
                emit(TurnFailed(error=str(error), kind=type(error).__name__))
                continue
            except TaskFailed as error:
                info = tasks.get(task_id)
                failure = info.error or (str(error) if info.status not in TERMINAL else f"the turn {info.status}")
                emit(TurnFailed(error=failure, kind=info.error_kind or info.status))
                continue
            finally:
                self.listeners.pop(task_id, None)
                self.trace_parents.pop(task_id, None)
            if not request.chain:
                now = tasks.now()
                self._index(ConversationInfo(conversation, agent_id, now, now, number),
                            ConversationMessage(conversation, number, now, "assistant", result["answer"].text))
            emit(TurnDone(answer=result["answer"]))

    def _index(self, *rows: ConversationRow) -> None:
        """Journal rows of the conversations' index, not awaited (as a task's start is not): what a conversation
        journals later lands in the same group or a later one, so nothing of it is durable before them. A write
        the state refuses is the journal's to report."""
        self.store.note(rows).add_done_callback(lambda done: done.cancelled() or done.exception())

    def process_function(self, agent_id: str, conversation: str | None = None) -> Callable[[], Any]:
        """A process body for a new conversation with `agent_id` (`process.spawn("app:assistant")`)."""
        # A partial, not a closure: an idle conversation then holds one object here, not a function, its cells
        # and a coroutine of its own (a hundred thousand of them are what the garbage collector walks).
        return functools.partial(self.run_conversation, agent_id, conversation or new_conversation_id())

    async def ensure_process(self, agent_id: str, conversation: str) -> Pid:
        """The conversation's process, started under `wippy:agents` if it is not running."""
        name = conversation_name(conversation)
        for _ in range(100):
            pid = self.node.whereis(name)
            if pid is not None:
                return pid
            spec = ChildSpec(conversation, self.process_function(agent_id, conversation), restart="transient",
                             name=name)
            answer = await self.node.call(SUPERVISOR, "start_child", spec, timeout=None)
            if isinstance(answer, Pid):
                return answer
            if "already exists" not in str(getattr(answer, "error", "")):
                raise SupervisorError(str(getattr(answer, "error", answer)))
            await asyncio.sleep(0)  # it is being restarted: its name comes back in a moment
        raise AgentError(f"the conversation {conversation} did not come back up")

    async def forget(self, conversations: list[str]) -> None:
        """Let `conversations` go (their turns are deleted): their processes stop, the index forgets them."""
        for conversation in conversations:
            if self.node.whereis(conversation_name(conversation)) is not None:
                await self.node.call(SUPERVISOR, "terminate_child", conversation, timeout=None)
        self.store.forget(conversations)

    async def conversation(self, agent_id: str, id: str | None = None) -> Conversation:
        """Start a conversation with `agent_id`, or reattach to conversation `id`."""
        if agent_id not in self.registry:
            agents = [entry.id for entry in self.registry.find(kind="agent")]
            close = difflib.get_close_matches(agent_id, agents, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"the agents are {', '.join(agents)}"
            raise AgentError(f"no agent {agent_id!r} in the registry; {hint}")
        if self.registry.get(agent_id).kind != "agent":
            raise AgentError(f"{agent_id} is a {self.registry.get(agent_id).kind}, not an agent")
        conversation = Conversation(self, agent_id, id or new_conversation_id())
        await self.ensure_process(agent_id, conversation.id)
        return conversation

    def conversations(self, *, agent: str | None = None, since: datetime | None = None, until: datetime | None = None,
                      text: str | None = None, limit: int = 50) -> list[ConversationInfo]:
        """The conversations people had (delegates' left out), latest activity first, from the index (one query
        however many there are): see `ConversationStore.list` for the filters."""
        return self.store.list(agent=agent, since=since, until=until, text=text, limit=limit)

    def turn_events(self, info: TaskInfo) -> list[AgentEvent]:
        """The events a past turn streamed, rebuilt from the journal (a UI shows it as it showed it live)."""
        return turn_events(self.tasks, info, self._tool_ids)

    def turn_steps(self, info: TaskInfo) -> TurnSteps:
        """A turn's steps on its time line, from the journal (a UI draws them as a waterfall)."""
        return turn_steps(self.tasks, info, self._tool_ids)

    def _tool_ids(self, agent: str) -> dict[str, str]:
        """The registry ids behind the names an agent's tools are offered under now."""
        spec = self.registry.spec(agent) if agent in self.registry else None
        if not isinstance(spec, AgentSpec):
            return {}
        return {name: offered.entry.id for name, offered in self.offers(agent, spec, self.registry).items()}

    async def delegate(self, agent_id: str, message: str, parent: str, call: ToolCall, chain: tuple[str, ...],
                       context: dict[str, Any], forward: Callable[[AgentEvent], None]) -> Answer:
        """Ask `agent_id` on behalf of an agent's tool call; refuse cycles; fail if the delegate does."""
        if agent_id in chain:
            raise AgentError(f"refused: asking {agent_id} would be a cycle ({' -> '.join((*chain, agent_id))})")
        conversation = Conversation(self, agent_id, delegate_conversation(parent, call.id))
        task_id = delegate_task_id(parent, call.id)
        async for event in conversation.stream(message, context=context, chain=chain, task_id=task_id):
            forward(event)
            if isinstance(event, TurnDone):
                return event.answer
            if isinstance(event, TurnFailed):
                raise AgentError(f"the delegate {agent_id} failed: {event.error}")
        raise AgentError(f"the delegate {agent_id} stopped without an answer")


_ids = random.Random()  # seeded from the system's randomness once: a system call per id would cost a start 10 us


def new_conversation_id() -> str:
    """Twelve hex digits (48 random bits, as many as a uuid4's first twelve), unique across nodes in practice."""
    return f"{_ids.getrandbits(48):012x}"


async def answer_of(agent: str, events: AsyncIterator[AgentEvent]) -> Answer:
    """The answer a turn's `events` end with; `AgentError` if the turn failed or ended without one."""
    async for event in events:
        if isinstance(event, TurnDone):
            return event.answer
        if isinstance(event, TurnFailed):
            raise AgentError(f"{agent}: {event.error}")
    raise AgentError(f"{agent}: the turn ended without an answer")


class Conversation:
    """A handle on one conversation: `await conv.ask(text)`, `async for event in conv.stream(text)`."""

    def __init__(self, service: AgentService, agent: str, id: str) -> None:
        self.service = service
        self.agent = agent
        self.id = id

    def __repr__(self) -> str:
        return f"Conversation({self.agent!r}, id={self.id!r})"

    async def subscribe(self) -> None:
        """Have the calling process receive every turn's `agent.event` messages (a UI watching the chat)."""
        pid = await self.service.ensure_process(self.agent, self.id)
        process.send(pid, "agent.subscribe", process.self())

    async def ask(self, text: str, *, context: dict[str, Any] | None = None, task_id: str | None = None) -> Answer:
        """Run one turn and return its answer; `AgentError` if the turn fails.

        With `task_id`, the turn runs as that durable task: asking again with the
        same id after a crash resumes the turn instead of starting it over.
        """
        return await answer_of(self.agent, self.stream(text, context=context, task_id=task_id))

    async def stream(self, text: str, *, context: dict[str, Any] | None = None, chain: tuple[str, ...] = (),
                     task_id: str | None = None) -> AsyncIterator[AgentEvent]:
        """The turn's events as they happen, ending with `TurnDone` or `TurnFailed`."""
        target = await self.service.ensure_process(self.agent, self.id)
        events: asyncio.Queue[AgentEvent] = asyncio.Queue()
        node = self.service.node
        request = (text, context or {}, chain, task_id, self.service.telemetry.carrier())  # the asker's span
        relay = node.start(_relay, (target, request, events), parent=current_process.get(None))
        try:
            while True:
                event = await events.get()
                yield event
                if isinstance(event, TurnDone | TurnFailed):
                    return
        finally:
            if relay.alive:
                await node.kill([relay])


async def _relay(target: Pid, request: tuple[str, dict[str, Any], tuple[str, ...], str | None, dict[str, str]],
                 events: asyncio.Queue[AgentEvent]) -> None:
    """A process that asks the conversation and passes its events to a caller outside the process world."""
    text, context, chain, task_id, trace = request
    process.monitor(target)
    process.send(target, "agent.ask", AskRequest(text, process.self(), context, chain, task_id, trace))
    while True:
        msg = await process.receive()
        if msg.topic == "agent.event":
            events.put_nowait(msg.payload)
            if isinstance(msg.payload, TurnDone | TurnFailed):
                return
        elif msg.topic == DOWN:
            events.put_nowait(TurnFailed(error=f"the agent crashed ({describe(msg.payload.reason)}); its "
                                         "supervisor restarts it with its history", kind="crash"))
            return


async def agent_turn(service: AgentService, ctx: TaskContext, agent_id: str, conversation: str, turn: int, text: str,
                     context: dict[str, Any], chain: list[str]) -> dict[str, Any]:
    """One agent turn as a durable task (`TurnArgs` are its arguments): its result holds the answer and the messages
    it adds. Registered on the service's task manager, bound to the service."""

    def emit(event: AgentEvent) -> None:
        listener = service.listeners.get(ctx.task_id)
        if listener is not None:
            listener(event)

    telemetry = service.telemetry
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent_id, "gen_ai.conversation.id": conversation,
        "wippy.task.id": ctx.task_id, "wippy.registry.version": ctx.registry_version}
    with telemetry.span(f"invoke_agent {agent_id}", attributes, parent=telemetry.parent_of(
            service.trace_parents.get(ctx.task_id)), error_type=step_error_type) as span:
        telemetry.record(span, "gen_ai.input.messages", lambda: json.dumps([{"role": "user", "content": text}]))
        before = service.histories.before(service.tasks, agent_id, conversation, turn)
        answer, messages, compaction = await run_turn(service, ctx, agent_id, conversation, turn, before, text,
                                                      context, tuple(chain), emit)
        telemetry.record(span, "gen_ai.output.messages",
                         lambda: json.dumps([{"role": "assistant", "content": answer.text}]))
    after = (before.folded(compaction) if compaction else before).then(turn, messages)
    service.histories.completed(agent_id, conversation, turn, after)
    return {"answer": answer, "messages": messages, "compaction": compaction}
