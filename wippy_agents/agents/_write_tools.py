"""Built-in tools with which an agent changes the registry, under policy.

Each call becomes one registry changeset attributed to the agent and its task.
Before anything is committed the change is checked like any other (kinds,
references), a tool's examples are run in the sandbox, and the policies decide:
`deny` refuses with the reason, `ask` waits for a person, `allow` commits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..policy import ApprovalPending
from ..registry import Delete, Entry, EntryChange, RegistryError
from ..registry._kinds import ToolExample, ToolSpec, WorkflowExample, WorkflowSpec, parse_spec
from ..tools import ToolContext

if TYPE_CHECKING:
    from ._service import AgentService

CHECK_AUTHOR = "wippy:registry"
"""Who refused a change that fails the registry's own checks (kinds, references, files, built-ins)."""


async def _propose(service: AgentService, ctx: ToolContext, changes: list[Entry | Delete], summary: str) -> str:
    """Check, test and decide a change; commit it, queue it for approval, or refuse it."""
    agent = ctx.agent_id
    if agent is None:
        raise RuntimeError("registry write tools act for an agent; this call names none")
    registry, governance = service.registry, service.governance
    try:
        diff = registry.check(changes)  # kinds, references and files; policy comes next
    except RegistryError as error:
        for refused in changes:  # a refusal is a decision too: the audit trail shows every one
            action = "registry.delete" if isinstance(refused, Delete) else (
                "registry.update" if refused.id in registry else "registry.create")
            kind = refused.kind if isinstance(refused, Entry) else None
            governance.audit.record(agent, ctx.task_id, action, refused.id, kind, "denied", CHECK_AUTHOR, error.summary + (
                ": " + "; ".join(p.message for p in error.problems) if error.problems else ""))
        raise ValueError(f"{error}; nothing was changed") from None
    if not diff:
        return f"nothing to do: the registry already has this ({summary})"
    decisions = []
    for change in diff:
        action = f"registry.{change.op}"
        decision = governance.policies.judge(agent, change)
        if decision.effect == "deny":
            governance.audit.record(agent, ctx.task_id, action, change.id, change.entry.kind, "denied",
                             decision.policy or "default", decision.reason)
            raise PermissionError(f"refused: {action} {change.id}: {decision.reason}. Nothing was changed.")
        decisions.append((change, action, decision))
    await _check_examples(service, diff)
    asked = [(change, action, d) for change, action, d in decisions if d.effect == "ask"]
    if asked:
        change, action, decision = asked[0]
        approval = governance.approvals.request(
            agent=agent, task_id=ctx.task_id, call_id=ctx.call_id, action=action, resource=change.id,
            kind=change.entry.kind, summary=summary, changes=diff, policy=decision.policy)
        raise ApprovalPending(approval)
    version = registry.apply([c.after or Delete(c.id) for c in diff], author=agent, reason=summary,
                                 task=ctx.task_id)
    for change, action, decision in decisions:
        governance.audit.record(agent, ctx.task_id, action, change.id, change.entry.kind, "allowed",
                         decision.policy or "default", decision.reason, version=version)
    return f"done: {summary} (registry version {version})"


async def _check_examples(service: AgentService, diff: list[EntryChange]) -> None:
    for change in diff:
        if change.after is None or change.after.kind not in ("tool", "workflow"):
            continue
        spec = parse_spec(change.after)
        failures = []
        if isinstance(spec, ToolSpec) and spec.runtime == "restricted":
            failures = await service.restricted.failed_examples(spec)
        elif isinstance(spec, WorkflowSpec) and spec.runtime == "restricted":
            failures = await service.workflows.failed_examples(change.id, spec)
        if failures:
            raise ValueError(f"{change.id} does not pass its examples, so nothing was changed:\n" + "\n".join(failures))


def _existing(service: AgentService, entry_id: str, kind: str) -> Entry:
    registry = service.registry
    if entry_id not in registry or registry.get(entry_id).kind != kind:
        raise ValueError(f"there is no {kind} {entry_id!r} to update; create it first")
    return registry.get(entry_id)


async def _create_code(service: AgentService, ctx: ToolContext, kind: str, id: str, source: str, description: str,
                       function: str, examples: list[ToolExample] | list[WorkflowExample] | None) -> str:
    """A new restricted tool or workflow, proposed in the agent's name."""
    if id in service.registry:
        raise ValueError(f"{id} already exists; use wippy_update_{kind} to change it")
    data: dict[str, Any] = {"runtime": "restricted", "source": source, "function": function,
                            "description": description}
    if examples:
        data["examples"] = [example.model_dump() for example in examples]
    return await _propose(service, ctx, [Entry(id, kind, {"title": id.partition(":")[2]}, data)],
                          f"create {kind} {id}")


async def _update_code(service: AgentService, ctx: ToolContext, kind: str, id: str, source: str | None,
                       description: str | None, function: str | None,
                       examples: list[ToolExample] | list[WorkflowExample] | None) -> str:
    """A restricted tool's or workflow's fields changed (those given), proposed in the agent's name."""
    entry = _existing(service, id, kind)
    given = {"source": source, "description": description, "function": function,
             "examples": None if examples is None else [example.model_dump() for example in examples]}
    data = {**entry.data, **{k: v for k, v in given.items() if v is not None}}
    return await _propose(service, ctx, [Entry(id, kind, entry.meta, data)], f"update {kind} {id}")


async def create_tool(service: AgentService, id: str, source: str, description: str, ctx: ToolContext,
                      function: str = "main",
                      examples: list[ToolExample] | None = None) -> str:
    """Add a new tool to the registry; its Python code runs in a sandbox (no imports; json, math, regex given).

    Args:
        id: The new tool's id, `namespace:name`, such as `generated:slugify`.
        source: Python code defining the function, with type hints and a docstring.
        description: What the tool does, for the agents that will call it.
        function: The function in `source` to call.
        examples: Calls to try before the tool is added: each `{"args": {...}, "expect": result}`.
    """
    return await _create_code(service, ctx, "tool", id, source, description, function, examples)


async def update_tool(service: AgentService, id: str, ctx: ToolContext, source: str | None = None,
                      description: str | None = None,
                      function: str | None = None, examples: list[ToolExample] | None = None) -> str:
    """Change a restricted tool's code, description, function or examples (what is not given stays).

    Args:
        id: The tool's id.
        source: The new Python code.
        description: The new description.
        function: The function in the code to call.
        examples: Calls to try before the change commits: each `{"args": {...}, "expect": result}`.
    """
    return await _update_code(service, ctx, "tool", id, source, description, function, examples)


async def create_workflow(service: AgentService, id: str, source: str, description: str, ctx: ToolContext,
                          function: str = "main", examples: list[WorkflowExample] | None = None) -> str:
    """Add a durable workflow: Python `def main(ctx, ...)` run in a sandbox, step by step, surviving restarts.

    `ctx.tool(id, **args)` calls a tool, `ctx.ask(agent, message)` asks an agent, `ctx.sleep(seconds)` and
    `ctx.wait_signal(name, timeout=None)` wait, `ctx.now()`, `ctx.random()` and `ctx.log(...)` are the clock, chance
    and the log: use them, not your own, so a resumed workflow takes the same path. No imports; json, math, regex
    are given. It may call only the tools and agents a policy allows it.

    Args:
        id: The new workflow's id, `namespace:name`, such as `generated:research`.
        source: Python code defining `main(ctx, ...)` with type hints and a docstring.
        description: What the workflow does.
        function: The function in `source` to run.
        examples: Runs to try before it is added, the operations answered from a script: each `{"args": {...},
            "operations": [{"op": "tool:tools.calc:add", "result": 3}, ...], "expect": result}`.
    """
    return await _create_code(service, ctx, "workflow", id, source, description, function, examples)


async def update_workflow(service: AgentService, id: str, ctx: ToolContext, source: str | None = None,
                          description: str | None = None, function: str | None = None,
                          examples: list[WorkflowExample] | None = None) -> str:
    """Change a restricted workflow's code, description, function or examples (what is not given stays).

    Tasks already running finish on the version they started on; new tasks use the new one.

    Args:
        id: The workflow's id.
        source: The new Python code.
        description: The new description.
        function: The function in the code to run.
        examples: Runs to try before the change commits (see wippy_create_workflow).
    """
    return await _update_code(service, ctx, "workflow", id, source, description, function, examples)


async def update_prompt(service: AgentService, id: str, template: str, ctx: ToolContext) -> str:
    """Create a prompt, or replace a prompt's Jinja2 template.

    Args:
        id: The prompt's id, such as `generated:summarize`.
        template: The whole new template.
    """
    registry = service.registry
    entry = registry.get(id) if id in registry else Entry(id, "prompt", {}, {})
    if entry.kind != "prompt":
        raise ValueError(f"{id} is a {entry.kind}, not a prompt")
    return await _propose(service, ctx, [Entry(id, "prompt", entry.meta, {**entry.data, "template": template})],
                          f"{'update' if id in registry else 'create'} prompt {id}")


_META_FIELDS = ("title", "description")


async def update_agent(service: AgentService, id: str, changes: dict[str, Any], ctx: ToolContext) -> str:
    """Change how an agent works: its tools, delegates, model, prompt, vars or limits.

    Args:
        id: The agent's id (your own, or another agent's).
        changes: Fields to set, such as `{"tools": ["tools.calc:*", "generated:*"]}`; a field set to null is removed.
            `title` and `description` change the agent's description.
    """
    entry = _existing(service, id, "agent")
    meta, data = dict(entry.meta), dict(entry.data)
    for field, value in changes.items():
        target = meta if field in _META_FIELDS else data
        if value is None:
            target.pop(field, None)
        else:
            target[field] = value
    return await _propose(service, ctx, [Entry(id, "agent", meta, data)], f"update agent {id} ({', '.join(changes)})")


async def delete_entry(service: AgentService, id: str, ctx: ToolContext) -> str:
    """Remove an entry from the registry.

    Args:
        id: The entry's id.
    """
    service.registry.get(id)
    return await _propose(service, ctx, [Delete(id)], f"delete {id}")


WRITE_TOOLS = (create_tool, update_tool, create_workflow, update_workflow, update_prompt, update_agent,
               delete_entry)
