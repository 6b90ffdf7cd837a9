"""One turn of an agent: render the prompt, call the model, run its tool calls, until it answers.

Everything the turn needs is read from the registry when the turn starts (entry,
prompt, model, tools), so an edited prompt or a dropped tool file applies to the
next turn, while a turn in progress finishes on the configuration it began with.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import jinja2

from .._runtime.secrets import Redactor
from .._runtime.telemetry import Telemetry
from .._runtime.types import Pid
from ..durable import StepError
from ..llm import (
    AssistantMessage,
    ChatMessage,
    Response,
    ResponseDone,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
    context_window,
)
from ..registry import AgentSpec, PromptSpec, Registry, RegistryView
from ..sandbox import SandboxError
from ..tools import ToolContext
from ._budget import Spent, TurnBudget, limits, record_call
from ._compaction import Compactor, context_too_long, output_reserve
from ._errors import AgentError
from ._events import AgentEvent, Answer, ApprovalRequested, Delegated, ToolFinished, ToolStarted, UsageReport
from ._history import Compaction, ConversationHistory
from ._prompt import PromptRenderer, PromptTooLong
from ._toolset import ToolSet

if TYPE_CHECKING:
    from ..durable import TaskContext
    from ._service import AgentService

log = logging.getLogger("wippy_agents.agents")


class AskRequest(NamedTuple):
    """The `agent.ask` message a conversation process receives."""

    text: str
    reply_to: Pid
    context: dict[str, Any]
    chain: tuple[str, ...]  # the agents that delegated down to this one, outermost first
    task_id: str | None = None  # resume (or start) the turn under this durable task id
    trace: dict[str, str] | None = None  # the asker's trace context (W3C headers): the turn's span nests under it


async def render_prompt(renderer: PromptRenderer, spec: AgentSpec, prompt: PromptSpec | None, agent_id: str,
                        meta: Any, context: dict[str, Any]) -> str:
    """The system prompt: the template with its vars, the agent's vars, the time and the caller's context.

    Prompts can be written by agents, so they render under a budget (see `_prompt`).
    """
    if prompt is None:
        return ""
    variables = {**prompt.vars, **spec.vars, "now": datetime.now(UTC).isoformat(timespec="seconds"),
                 "agent": {"id": agent_id, "title": meta.get("title", ""), "description": meta.get("description", "")},
                 "context": context}
    try:
        return await renderer.render(prompt.template, variables)
    except (jinja2.TemplateError, SandboxError, PromptTooLong) as error:
        raise AgentError(f"the prompt {spec.prompt} of {agent_id} does not render: {error}") from error


async def run_turn(
    service: AgentService, ctx: TaskContext, agent_id: str, conversation: str, turn: int,
    history: ConversationHistory, text: str, context: dict[str, Any], chain: tuple[str, ...],
    emit: Callable[[AgentEvent], None],
) -> tuple[Answer, list[ChatMessage], Compaction | None]:
    """Run one turn as durable steps; return its answer, the messages to add to the conversation, and its latest
    compaction of the history (None if it made none).

    Each model call and each tool call is a step of `ctx`: after a crash the turn
    replays them from the journal (no request is sent twice, no tool runs twice)
    and runs again only the step that was interrupted. Each request is kept inside
    the model's window by compaction steps (see `_compaction`).
    """
    registry = service.registry.at(ctx.registry_version)  # a resumed turn keeps the version it began on
    try:
        entry = registry.get(agent_id)
    except KeyError as error:
        raise AgentError(str(error)) from None
    spec = registry.spec(agent_id)
    if not isinstance(spec, AgentSpec):
        raise AgentError(f"{agent_id} is a {entry.kind}, not an agent")
    prompt = registry.spec(spec.prompt) if spec.prompt else None
    assert prompt is None or isinstance(prompt, PromptSpec)
    model = service.model(spec.model, registry)
    telemetry = service.telemetry
    if (span := telemetry.current()) is not None:
        span.set_attributes({"gen_ai.provider.name": model.provider, "gen_ai.request.model": model.name})
    delegated: list[Answer] = []

    async def delegate(target: str, message: str, call: ToolCall) -> str:
        answer = await service.delegate(target, message, conversation, call, (*chain, agent_id), context,
                                        lambda event: emit(Delegated(call_id=call.id, agent=target, event=event)))
        delegated.append(answer)
        return answer.text

    tool_context = ToolContext(agent_id=agent_id, task_id=ctx.task_id, logger=log)
    if service.mcp is not None:
        await service.mcp.listed(spec.tools)  # a server of its tools still starting: its tools first
    tools = ToolSet(registry, service.offers(agent_id, spec, registry), tool_context, delegate,
                    governance=service.governance, restricted=service.restricted, mcp=service.mcp,
                    redact=service.redactor.redact, telemetry=telemetry)
    system = await render_prompt(service.prompts, spec, prompt, agent_id, entry.meta, context)
    new: list[ChatMessage] = [UserMessage(content=text)]
    head: list[ChatMessage] = [SystemMessage(content=system)] if system else []
    settings = {k: v for k, v in (("max_tokens", spec.max_tokens), ("temperature", spec.temperature)) if v is not None}
    usage, cost, steps = Usage(), 0.0, 0
    budget = await _turn_budget(service, ctx, agent_id, spec, model, settings, emit)

    async def guard(label: str, tokens: int, output_tokens: int) -> None:
        """A summary call is a model call too: the turn's spend limits are asked before it is sent."""
        if budget is not None:
            spent = Spent.of(usage, cost)
            await budget.check_tokens(ctx, label, tokens, output_tokens, spent, spent + _delegates_spent(delegated))

    compactor = _compactor(service, ctx, spec, registry, history, guard)
    calls: list[ToolCall] = []
    stopped: str | None = None
    final = ""
    while True:
        if steps >= spec.max_steps:
            stopped = "max_steps"
            final = (f"I stopped after {steps} steps without finishing (this agent's max_steps is {spec.max_steps}). "
                     "Ask me to continue, or raise max_steps.")
            break
        steps += 1
        compacted = len(compactor.compactions)
        messages = await compactor.fitted(head, new, tools.definitions)
        if budget is not None:
            await budget.check(ctx, steps, messages, tools.definitions, Spent.of(usage, cost),
                               Spent.of(usage, cost) + _delegates_spent(delegated))
        response = await _recovered_model_step(ctx, steps, model, compactor, messages, head, new, tools, settings,
                                               emit, telemetry, service.redactor)
        for name, summarized in compactor.summaries(since=compacted):
            service.usage.record(summarized, agent=agent_id, task=ctx.task_id)
            record_call(service.spend, ctx.task_id, agent_id, spec.history.compaction_model or spec.model or model.name,
                        name, summarized, service.tasks.now())
            usage, cost = usage + summarized.usage, cost + summarized.cost_usd
            emit(UsageReport(model=summarized.model, usage=summarized.usage, cost_usd=summarized.cost_usd))
        service.usage.record(response, agent=agent_id, task=ctx.task_id)
        record_call(service.spend, ctx.task_id, agent_id, spec.model or model.name, f"model:{steps}", response,
                    service.tasks.now())
        usage, cost = usage + response.usage, cost + response.cost_usd
        emit(UsageReport(model=response.model, usage=response.usage, cost_usd=response.cost_usd))
        reply = response.message()
        new.append(reply)
        if not response.tool_calls:
            final = response.text
            break
        calls += response.tool_calls
        for call in response.tool_calls:
            emit(ToolStarted(call_id=call.id, tool=tools.tool_id(call.name), arguments=call.arguments))
        outcomes = await asyncio.gather(*[ctx.step(f"tool:{call.id}", tools.call, call,
                                                   mark_start=tools.runs_in_node(call), **tools.span(call))
                                          for call in response.tool_calls])
        for call, (result, seconds, pending) in zip(response.tool_calls, outcomes, strict=True):
            if pending:  # waits in call order, so a replay waits (and finds the decisions) in the same order
                emit(ApprovalRequested(call_id=call.id, tool=tools.tool_id(call.name), approval=pending["id"],
                                       summary=pending.get("summary", result.content)))
                result, seconds = await _decided(ctx, tools, call, pending)
            emit(ToolFinished(call_id=result.tool_call_id, tool=tools.tool_id(result.name), result=result.content,
                              is_error=result.is_error, seconds=seconds))
            new.append(result)
    if stopped:
        new.append(AssistantMessage(content=final))  # the history says why the turn ended where it did
    usage = usage + sum((a.usage for a in delegated), Usage())
    cost = cost + sum(a.cost_usd for a in delegated)
    answer = Answer(text=final, conversation=conversation, turn=turn, agent=agent_id, usage=usage, cost_usd=cost,
                    steps=steps, tool_calls=tuple(calls), stopped=stopped, context_tokens=compactor.used,
                    context_window=compactor.window)
    return answer, new, compactor.compaction


def _compactor(service: AgentService, ctx: TaskContext, spec: AgentSpec, registry: Registry | RegistryView,
               history: ConversationHistory, guard: Callable[[str, int, int], Awaitable[None]]) -> Compactor:
    """The turn's history, kept inside its model's window as the agent's `history:` settings say."""
    model_spec = service.model_spec(spec.model, registry)
    window = context_window(model_spec)
    summarizer = spec.history.compaction_model or spec.model
    return Compactor(ctx, spec.history, history, window=window,
                     reserve=output_reserve(window, spec.max_tokens, model_spec.max_output_tokens),
                     summarizer=service.model(summarizer, registry),
                     summarizer_window=context_window(service.model_spec(summarizer, registry)), guard=guard)


async def _recovered_model_step(ctx: TaskContext, number: int, model: Any, compactor: Compactor,
                                messages: list[ChatMessage], head: list[ChatMessage], new: list[ChatMessage],
                                tools: ToolSet, settings: dict[str, Any], emit: Callable[[AgentEvent], None],
                                telemetry: Telemetry, redactor: Redactor) -> Response:
    """A model step; when the provider finds its request too long, the history is compacted once and the step
    sent again."""
    try:
        response = await _model_step(ctx, number, model, messages, tools, settings, emit, telemetry, redactor)
    except StepError as error:
        if not context_too_long(error) or not await compactor.recover(head, new, tools.definitions):
            raise
        messages = compactor.request(head, new)
        response = await _model_step(ctx, number, model, messages, tools, settings, emit, telemetry, redactor)
    compactor.observe(messages, tools.definitions, response)
    return response


async def _turn_budget(service: AgentService, ctx: TaskContext, agent_id: str, spec: AgentSpec, model: Any,
                       settings: dict[str, Any], emit: Callable[[AgentEvent], None]) -> TurnBudget | None:
    """The spend limits this turn runs under (the agent's and its policies'), or None when it has none."""
    found = limits(agent_id, spec, service.governance.policies.budgets(agent_id))
    return await TurnBudget.start(ctx, agent_id, spec.model or model.name, found, model,
                                  settings.get("max_tokens") or model.settings.max_tokens, service.governance,
                                  service.spend, service.tasks.now().date(), emit)


def _delegates_spent(delegated: list[Answer]) -> Spent:
    return sum((Spent.of(answer.usage, answer.cost_usd) for answer in delegated), Spent())


async def _decided(ctx: TaskContext, tools: ToolSet, call: ToolCall, pending: dict[str, str]
                   ) -> tuple[ToolResultMessage, float]:
    """Wait (durably) for a person's decision on a tool call's approval; the call's result once decided."""
    decision = await ctx.wait_signal(f"approval:{pending['id']}")
    by, reason = decision.get("by", "a person"), decision.get("reason") or ""
    if decision.get("status") != "approved":
        content = f"error: denied by {by}{': ' + reason if reason else ''}. Nothing was changed."
        return ToolResultMessage(tool_call_id=call.id, name=call.name, content=content, is_error=True), 0.0
    if pending["action"] in ("tool.call", "agent.delegate"):  # approved to run: run it now, as its own step
        outcome = await ctx.step(f"tool:{call.id}:approved", tools.call, call, True, **tools.span(call))
        return outcome[0], outcome[1]
    content = f"approved by {by}{': ' + reason if reason else ''}; committed as registry version {decision['version']}"
    return ToolResultMessage(tool_call_id=call.id, name=call.name, content=content), 0.0


async def _model_step(ctx: TaskContext, number: int, model: Any, messages: list[ChatMessage], tools: ToolSet,
                      settings: dict[str, Any], emit: Callable[[AgentEvent], None], telemetry: Telemetry,
                      redactor: Redactor) -> Response:
    """One model call as a durable step (traced as `chat <model>`); a replayed call shows its recorded text as one
    delta, and its span says it was replayed and carries no usage: it was not called again.

    What the model says is redacted as it arrives (its text, streamed too, and its tool calls' arguments): a
    model that echoes a secret of the environment shows it to nobody, keeps it out of the history it is sent
    next, and runs no tool with it; the journal then holds what the turn used, so a replay uses the same."""
    ran = False

    async def call() -> Response:
        nonlocal ran
        ran = True
        response = await _call_model(model, messages, tools, settings, emit, redactor)
        _traced_response(telemetry, messages, response)
        return response

    response: Response = await ctx.step(f"model:{number}", call, span=f"chat {model.name}", attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": model.provider, "gen_ai.request.model": model.name,
    } if telemetry.on else None)
    if not ran and response.text:
        emit(TextDelta(text=response.text))
    return response


def _traced_response(telemetry: Telemetry, messages: list[ChatMessage], response: Response) -> None:
    """What a model call's span learns from the answer: the model that answered, usage, cost (and contents)."""
    span = telemetry.current()
    if span is None:
        return
    span.set_attributes({"gen_ai.response.model": response.model or "", "gen_ai.usage.input_tokens":
                         response.usage.input_tokens, "gen_ai.usage.output_tokens": response.usage.output_tokens,
                         "wippy.cost_usd": response.cost_usd})
    telemetry.record(span, "gen_ai.input.messages", lambda: _json_messages(messages))
    telemetry.record(span, "gen_ai.output.messages", lambda: _json_messages([response.message()]))


def _json_messages(messages: list[ChatMessage]) -> str:
    return json.dumps([message.model_dump(mode="json") for message in messages], ensure_ascii=False)


async def _call_model(model: Any, messages: list[ChatMessage], tools: ToolSet, settings: dict[str, Any],
                      emit: Callable[[AgentEvent], None], redactor: Redactor) -> Response:
    final: Response | None = None
    text = redactor.stream()
    async for event in model.stream(messages, tools.definitions, **settings):
        if isinstance(event, TextDelta):
            if shown := text.feed(event.text):
                emit(TextDelta(text=shown))
        elif isinstance(event, ResponseDone):
            final = event.response
    if shown := text.end():
        emit(TextDelta(text=shown))
    if final is None:
        raise AgentError(f"the model {model!r} ended its stream without a response")
    if not redactor:
        return final
    return final.model_copy(update={"text": redactor.redact(final.text), "tool_calls": tuple(
        call.model_copy(update={"arguments": redactor.redact_data(call.arguments)}) for call in final.tool_calls)})
