"""Built-in tools an agent may be given: read the registry (`wippy:registry_get`, `wippy:registry_find`) and
change it under policy (`wippy:create_tool`, `update_tool`, `create_workflow`, `update_workflow`,
`update_prompt`, `update_agent`, `delete_entry`), start workflows and follow them (`wippy:start_workflow`,
`wippy:workflow_status`), keep and find notes across conversations (`wippy:remember`, `wippy:recall`).

Each is a function whose first parameter is the agent service it works for;
`register_builtins` binds it. The registry lists the entries even where no
service runs (the CLI reading an app's files), so their schemas come from the
functions alone.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ..registry import Entry, Registry
from ..tools import function_tool
from ._memory import MEMORY_TOOLS
from ._workflows import TASK_TOOLS
from ._write_tools import WRITE_TOOLS

if TYPE_CHECKING:
    from ._service import AgentService


def registry_get(service: AgentService, id: str) -> dict[str, Any]:
    """Read one registry entry: its kind, meta and fields.

    Args:
        id: The entry id, such as `app:assistant` or `tools.calc:add`.
    """
    return service.registry.get(id).to_json()


def registry_find(
    service: AgentService, kind: str | None = None, namespace: str | None = None, pattern: str | None = None
) -> list[dict[str, Any]]:
    """List registry entries by kind, namespace or id pattern, with their titles and descriptions.

    Args:
        kind: Only entries of this kind: agent, model, prompt, tool, policy, process, supervisor, workflow, config.
        namespace: Only entries in this exact namespace, such as `app`.
        pattern: Only ids matching this glob pattern, such as `tools.*:*`.
    """
    return [
        {"id": e.id, "kind": e.kind, "title": e.meta.get("title", ""), "description": e.meta.get("description", "")}
        for e in service.registry.find(kind=kind, namespace=namespace, pattern=pattern)
    ]


BUILTINS = (registry_get, registry_find, *WRITE_TOOLS, *TASK_TOOLS, *MEMORY_TOOLS)


def register_builtins(registry: Registry, service: AgentService | None = None) -> None:
    """Add the built-in tools' entries to `registry`, their functions bound to `service` (None: entries only)."""
    for fn in BUILTINS:
        tool = function_tool(functools.partial(fn, service))  # type: ignore[arg-type]  # unbound: entries only
        entry = Entry(
            f"wippy:{fn.__name__}", "tool", {"title": fn.__name__.replace("_", " ")},
            {"description": tool.description, "parameters": tool.parameters, "module": fn.__module__,
             "function": fn.__name__},
        )
        registry.add_builtin(entry, tool if service is not None else None)
