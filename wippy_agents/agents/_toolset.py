"""An agent's tools for one turn: registry tools and delegate agents, offered under provider-safe names.

Providers accept tool names of letters, digits, `_` and `-` (at most 64), so a
registry id such as `tools.calc:add` is offered as `tools_calc_add` (or as the
entry's `meta.llm_alias`) and mapped back when the model calls it. Whatever goes
wrong in a call (unknown tool, bad arguments, an exception, a timeout) becomes an
error result the model can read and correct, never an exception for the agent.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import pydantic_core

from .._runtime.telemetry import OFF, Telemetry
from .._runtime.text import clean_text
from ..llm import ToolCall, ToolDefinition, ToolResultMessage
from ..llm._messages import MAX_ARGUMENTS_DEPTH, RAW_ARGUMENTS_KEY
from ..policy import ApprovalPending
from ..registry import AgentSpec, Entry, EntryChange, KindSpec, Problem, Registry, RegistryView, ToolSpec
from ..sandbox import ResourceLimit, SandboxError
from ..tools import FunctionTool, ToolArgumentsError, ToolBusy, ToolContext
from ._errors import AgentError
from ._governance import Governance
from ._mcp import McpServers, McpToolError
from ._restricted import RestrictedTools

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_NAME = 64

Delegate = Callable[[str, str, ToolCall], Awaitable[str]]
"""`delegate(agent_id, message, call)` asks another agent and returns its answer."""


def offered_name(entry: Entry, prefix: str = "") -> str:
    """The stable, provider-safe name a tool entry is offered under."""
    alias = entry.meta.get("llm_alias")
    if isinstance(alias, str) and alias:
        return alias
    name = prefix + _UNSAFE.sub("_", entry.id)
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME - 9] + "_" + hashlib.sha1(entry.id.encode()).hexdigest()[:8]
    return name


def expand(patterns: list[str], entries: Mapping[str, Entry], kind: str) -> list[Entry]:
    """Entries of `kind` named by ids or glob patterns (`tools.*:*`), in order, without repeats."""
    found: dict[str, Entry] = {}
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            for entry_id in sorted(fnmatch.filter(entries, pattern)):
                if entries[entry_id].kind == kind:
                    found.setdefault(entry_id, entries[entry_id])
        elif pattern in entries and entries[pattern].kind == kind:
            found.setdefault(pattern, entries[pattern])
    return list(found.values())


@dataclass(frozen=True)
class Offered:
    """One tool or delegate as a model sees it."""

    entry: Entry
    definition: ToolDefinition
    timeout: float
    delegate: bool
    spec: ToolSpec | None = None  # None for a delegate


def offers(spec: AgentSpec, entries: Mapping[str, Entry], spec_of: Callable[[str], KindSpec | None]
           ) -> tuple[dict[str, Offered], list[str]]:
    """What an agent is offered, by provider-safe name, and the names two of them would share."""
    by_name: dict[str, Offered] = {}
    clashes: list[str] = []

    def offer(offered: Offered) -> None:
        name = offered.definition.name
        if name in by_name:
            clashes.append(f"{by_name[name].entry.id} and {offered.entry.id} would both be offered to the model as "
                           f"{name!r}; give one of them a meta.llm_alias")
        by_name[name] = offered

    for entry in expand(spec.tools, entries, "tool"):
        if entry.meta.get("unavailable"):  # an MCP server's tool while its server is down
            continue
        tool_spec = spec_of(entry.id)
        assert isinstance(tool_spec, ToolSpec)
        description, parameters = (tool_spec.restricted_schema() if tool_spec.runtime == "restricted"
                                   else (tool_spec.description, tool_spec.parameters))
        offer(Offered(entry, ToolDefinition(
            name=offered_name(entry), id=entry.id, description=description or entry.meta.get("title", ""),
            parameters=parameters or {"type": "object", "properties": {}},
        ), tool_spec.timeout, delegate=False, spec=tool_spec))
    for entry in expand(spec.delegates, entries, "agent"):
        about = entry.meta.get("description") or entry.meta.get("title") or f"the {entry.id} agent"
        offer(Offered(entry, ToolDefinition(
            name=offered_name(entry, "delegate_"), id=entry.id,
            description=f"Ask another agent ({entry.id}): {about}",
            parameters={"type": "object", "properties": {"message": {
                "type": "string", "description": "What to ask the agent, with everything it needs to know."}},
                "required": ["message"], "additionalProperties": False},
        ), timeout=float("inf"), delegate=True))
    return by_name, clashes


def check_tool_names(state: Mapping[str, Entry], spec_of: Callable[[str], KindSpec | None],
                     changes: list[EntryChange]) -> list[Problem]:
    """A registry validator: no agent may be offered two tools under one name."""
    if not any(change.entry.kind in ("agent", "tool") for change in changes):
        return []
    problems = []
    for entry_id, entry in state.items():
        spec = spec_of(entry_id) if entry.kind == "agent" else None
        if isinstance(spec, AgentSpec):
            problems += [Problem(clash, entry=entry_id, field="tools") for clash in offers(spec, state, spec_of)[1]]
    return problems


class ToolSet:
    """The tools and delegates one turn of an agent may call."""

    def __init__(self, registry: Registry | RegistryView, offered: dict[str, Offered], context: ToolContext,
                 delegate: Delegate, *, governance: Governance, restricted: RestrictedTools,
                 mcp: McpServers | None = None, redact: Callable[[str], str] = str, telemetry: Telemetry = OFF) -> None:
        self.by_name = offered
        self.context = context
        self.delegate = delegate
        self.governance = governance
        self.restricted = restricted
        self.mcp = mcp
        self.redact = redact
        """Applied to every result: secret values never reach the model."""
        self.telemetry = telemetry
        # the functions as they are when the turn starts: a tool file saved mid-turn applies to the next turn
        self.functions = {name: registry.tools.get(o.entry.id) for name, o in offered.items() if not o.delegate}

    @property
    def definitions(self) -> list[ToolDefinition]:
        return [offered.definition for offered in self.by_name.values()]

    def runs_in_node(self, call: ToolCall) -> bool:
        """Whether the call runs trusted code from the app in the node, which could take the node down with it."""
        offered = self.by_name.get(call.name)
        return (offered is not None and offered.spec is not None and offered.spec.runtime == "python"
                and offered.entry.namespace != "wippy")

    def tool_id(self, name: str) -> str:
        offered = self.by_name.get(name)
        return offered.entry.id if offered else name

    def span(self, call: ToolCall) -> dict[str, Any]:
        """The call's step as an `execute_tool <tool>` span (`ctx.step`'s keywords; none when tracing is off)."""
        if not self.telemetry.on:
            return {}
        tool = self.tool_id(call.name)
        return {"span": f"execute_tool {tool}", "attributes": {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool, "gen_ai.tool.call.id": call.id}}

    async def call(self, call: ToolCall, approved: bool = False) -> ToolOutcome:
        """Run one tool call: the result (or the error, explained), how long it took, and any approval it awaits.

        `approved`: a person approved this very call, so the policies are not asked again.
        """
        started = time.monotonic()
        pending = None
        try:
            content = await self._run(call, approved)
            is_error = False
        except ApprovalPending as waiting:
            content, is_error = str(waiting), False
            pending = {"id": waiting.approval.id, "action": waiting.approval.action,
                       "summary": waiting.approval.summary}
        except Exception as error:  # reported to the model, which can correct itself
            content, is_error = _explain(error, call, self.by_name.get(call.name)), True
        result = ToolResultMessage(tool_call_id=call.id, name=call.name, content=clean_text(self.redact(content)),
                                   is_error=is_error)
        if (span := self.telemetry.current()) is not None:  # the step's `execute_tool` span
            if is_error:
                self.telemetry.failed(span, "tool_error", result.content)
            self.telemetry.record(span, "gen_ai.tool.call.arguments", lambda: json.dumps(call.arguments, ensure_ascii=False))
            self.telemetry.record(span, "gen_ai.tool.call.result", lambda: result.content)
        return ToolOutcome(result, time.monotonic() - started, pending)

    async def _run(self, call: ToolCall, approved: bool) -> str:
        offered = self.by_name.get(call.name)
        if offered is None:
            known = ", ".join(sorted(self.by_name)) or "none"
            raise LookupError(f"there is no tool named {call.name!r}; the tools are: {known}")
        if RAW_ARGUMENTS_KEY in call.arguments:
            raise ValueError(f"the arguments are not a JSON object nested at most {MAX_ARGUMENTS_DEPTH} levels "
                             f"deep: {call.arguments[RAW_ARGUMENTS_KEY]}")
        if not approved:
            self._ask_policy(offered, call)
        if offered.delegate:
            message = call.arguments.get("message")
            if not isinstance(message, str) or not message.strip():
                raise ValueError("a delegate takes one argument, `message`, a non-empty string")
            return await self.delegate(offered.entry.id, message, call)
        context = ToolContext(agent_id=self.context.agent_id, task_id=self.context.task_id, call_id=call.id,
                              logger=self.context.logger)
        assert offered.spec is not None
        value = await run_tool(offered.entry, offered.spec, self.functions.get(call.name), call.arguments, context,
                               restricted=self.restricted, mcp=self.mcp)
        return value if isinstance(value, str) else json.dumps(pydantic_core.to_jsonable_python(value))

    def _ask_policy(self, offered: Offered, call: ToolCall) -> None:
        """`tool.call` / `agent.delegate` policies: deny raises, ask queues an approval, allow lets the call run."""
        governance = self.governance
        agent = self.context.agent_id
        if agent is None:
            return
        action = "agent.delegate" if offered.delegate else "tool.call"
        resource, kind = offered.entry.id, offered.entry.kind
        decision = governance.policies.decide(agent, action, resource, kind)
        if decision.policy is None:
            return  # allowed by default: listing the tool in the agent's entry granted it
        if decision.effect == "deny":
            governance.audit.record(agent, self.context.task_id, action, resource, kind, "denied", decision.policy,
                                    decision.reason)
            raise PermissionError(f"refused: {decision.reason}")
        if decision.effect == "ask":
            raise ApprovalPending(governance.approvals.request(
                agent=agent, task_id=self.context.task_id, call_id=call.id, action=action, resource=resource,
                kind=kind, summary=f"{agent} wants to call {resource}", arguments=call.arguments,
                policy=decision.policy))
        governance.audit.record(agent, self.context.task_id, action, resource, kind, "allowed", decision.policy,
                                decision.reason)


async def run_tool(entry: Entry, spec: ToolSpec, function: FunctionTool | None, arguments: dict[str, Any],
                   context: ToolContext, *, restricted: RestrictedTools, mcp: McpServers | None) -> Any:
    """Call a registry tool however it runs (the app's code, the sandbox, an MCP server), within its timeout."""
    if spec.runtime == "restricted":
        return await restricted.call(entry, spec, arguments, spec.timeout)
    if spec.runtime == "mcp":
        if mcp is None:
            raise McpToolError(f"tool {entry.id} is served by MCP, and this app runs no MCP servers")
        return await mcp.call(entry, spec, arguments, spec.timeout, context)
    if function is None:
        raise RuntimeError(f"tool {entry.id} cannot be loaded; check its entry with `wippy registry lint`")
    return await function.call(arguments, context, timeout=spec.timeout)


class ToolOutcome(NamedTuple):
    """What a tool-call step records: the result, its duration, and the approval it waits for, if any."""

    result: ToolResultMessage
    seconds: float
    pending: dict[str, str] | None


def _explain(error: Exception, call: ToolCall, offered: Offered | None) -> str:
    if isinstance(error, TimeoutError) and offered is not None:
        return f"error: the tool did not finish within {offered.timeout:g}s and was stopped"
    if isinstance(error, ToolBusy):
        return f"error: {error}"
    if isinstance(error, ResourceLimit):
        return f"error: the tool hit the sandbox's {error.limit} limit: {error}{_printed(error)}"
    if isinstance(error, SandboxError):
        return f"error: the tool failed: {error}{_printed(error)}"
    if isinstance(error, ToolArgumentsError | LookupError | ValueError | AgentError | PermissionError | McpToolError):
        return f"error: {error}"
    return f"error: the tool raised {type(error).__name__}: {error}"


def _printed(error: SandboxError, limit: int = 2000) -> str:
    return f"\nit printed:\n{error.output[-limit:]}" if error.output else ""
