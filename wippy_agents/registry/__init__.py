"""The registry: every agent, prompt, tool, model, policy and process is an entry `namespace:name`.

Entries load from the app's files (`registry/**/_index.yaml`, `prompts/`,
`tools/`), hot-reload when a file changes, commit as numbered versions kept in
the app's state (`wippy_agents.state`), and reach subscribed processes as messages.

```python
node.registry.get("app.db:postgres")
node.registry.find(kind="agent")
node.registry.apply([Entry("generated:hello", "prompt", {}, {"template": "Hi"})], author="app:toolsmith")
node.registry.history("tools.weather:forecast"); node.registry.rollback(version)
```
"""

from ..state import Version
from ._diff import change_diff, entry_yaml
from ._entry import Change, Delete, Entry, EntryNotFound, Problem, RegistryError, check_id
from ._kinds import (
    KINDS,
    AgentSpec,
    Budget,
    ConfigSpec,
    HistorySettings,
    KindSpec,
    McpServerSpec,
    ModelSpec,
    PolicySpec,
    Pricing,
    ProcessSpec,
    PromptSpec,
    RollbackRule,
    ScriptedOperation,
    SupervisorSpec,
    ToolExample,
    ToolSpec,
    WorkflowExample,
    WorkflowSpec,
)
from ._registry import PolicyHook, Registry, RegistryEvent, RegistryView
from ._sources import Folders, Origin
from ._store import EntryChange

__all__ = [
    "KINDS",
    "AgentSpec",
    "Budget",
    "ConfigSpec",
    "HistorySettings",
    "ModelSpec",
    "PolicySpec",
    "Pricing",
    "ProcessSpec",
    "PromptSpec",
    "RollbackRule",
    "SupervisorSpec",
    "ScriptedOperation",
    "ToolExample",
    "ToolSpec",
    "McpServerSpec",
    "WorkflowExample",
    "WorkflowSpec",
    "Change",
    "Delete",
    "Entry",
    "EntryChange",
    "EntryNotFound",
    "Folders",
    "KindSpec",
    "Origin",
    "PolicyHook",
    "Problem",
    "Registry",
    "RegistryError",
    "RegistryEvent",
    "RegistryView",
    "Version",
    "change_diff",
    "check_id",
    "entry_yaml",
]
