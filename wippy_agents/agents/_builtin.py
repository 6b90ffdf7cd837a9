"""Built-in tools an agent may be given: read the registry (`wippy:registry_get`, `wippy:registry_find`) and
change it under policy (`wippy:create_tool`, `update_tool`, `update_prompt`, `update_agent`, `delete_entry`)."""

from __future__ import annotations

from typing import Any

from ..registry import Entry, Registry
from ..tools import ToolContext, function_tool
from ._write_tools import WRITE_TOOLS


def registry_get(id: str, ctx: ToolContext) -> dict[str, Any]:
    """Read one registry entry: its kind, meta and fields.

    Args:
        id: The entry id, such as `app:assistant` or `tools.calc:add`.
    """
    assert ctx.node is not None
    return ctx.node.registry.get(id).to_json()


def registry_find(
    ctx: ToolContext, kind: str | None = None, namespace: str | None = None, pattern: str | None = None
) -> list[dict[str, Any]]:
    """List registry entries by kind, namespace or id pattern, with their titles and descriptions.

    Args:
        kind: Only entries of this kind: agent, model, prompt, tool, policy, process, supervisor, workflow, config.
        namespace: Only entries in this exact namespace, such as `app`.
        pattern: Only ids matching this glob pattern, such as `tools.*:*`.
    """
    assert ctx.node is not None
    return [
        {"id": e.id, "kind": e.kind, "title": e.meta.get("title", ""), "description": e.meta.get("description", "")}
        for e in ctx.node.registry.find(kind=kind, namespace=namespace, pattern=pattern)
    ]


def register_builtins(registry: Registry) -> None:
    for fn in (registry_get, registry_find, *WRITE_TOOLS):
        tool = function_tool(fn)
        entry = Entry(
            f"wippy:{fn.__name__}", "tool", {"title": fn.__name__.replace("_", " ")},
            {"description": tool.description, "parameters": tool.parameters, "module": fn.__module__,
             "function": fn.__name__},
        )
        registry.add_builtin(entry, tool)
