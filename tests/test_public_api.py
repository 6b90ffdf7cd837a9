"""The curated public API: each public module's namespace holds exactly what its `__all__` exports.

As in httpx, the implementation lives in private modules, so a public module's `vars()`
is its API and nothing else: no stray imports, no helpers. Two things in a namespace are
the import system's doing, not the module's, and are left out: a package's submodules,
bound as attributes once anything imports them (each public one is checked on its own),
and the feature object `from __future__ import annotations` leaves behind.
"""

import __future__

import importlib
import pkgutil
from types import ModuleType

import pytest

import wippy_agents

PUBLIC_MODULES: dict[str, set[str]] = {
    "wippy_agents": {
        "App", "Backoff", "ChildSpec", "Down", "Exit", "Message", "Node", "Pid", "ProcessError", "ProcessInfo",
        "RunError", "Supervisor", "SupervisorError", "UsageError", "WippyError", "__version__", "process",
        "supervisor",
    },
    "wippy_agents.process": {
        "DOWN", "EXIT", "Down", "Exit", "ExitReason", "Message", "Pid", "ProcessError", "ProcessInfo", "Ref",
        "call", "demonitor", "exit", "link", "monitor", "node", "receive", "register", "reply", "self", "send",
        "spawn", "spawn_link", "spawn_monitor", "trap_exits", "unlink", "whereis",
    },
    "wippy_agents.supervisor": {
        "Backoff", "ChildInfo", "ChildSpec", "Supervisor", "SupervisorError", "start_child", "terminate_child",
        "which_children",
    },
    "wippy_agents.errors": {"ArgumentError", "RunError", "UsageError", "WippyError"},
    "wippy_agents.testing": {
        "FunctionModel", "LoopbackCluster", "ModelRequest", "ScriptedModel", "ScriptExhausted", "TemporaryPostgres",
        "VirtualClock", "forbid_model_requests", "wait_until", "write_file",
    },
    "wippy_agents.tools": {
        "FunctionTool", "ToolArgumentsError", "ToolBusy", "ToolContext", "ToolDefinitionError", "ToolThreads",
        "function_tool", "tool",
    },
    "wippy_agents.app": {"App", "AppConfig", "AppFolder", "ClusterSettings", "ControlPort", "LOCAL_NODE",
                         "STATE_VARIABLE", "Watcher", "load_config", "state_location"},
    "wippy_agents.agents": {
        "AgentError", "AgentEvent", "AgentService", "Answer", "ApprovalRequested", "Conversation", "Delegated",
        "TextDelta", "ToolFinished", "ToolStarted", "TurnDone", "TurnFailed", "TurnStarted", "UsageReport",
        "offered_name", "TURN_WORKFLOW", "Governance", "RestrictedTools", "TurnArgs", "register_builtins", "turns",
        "answer_of", "new_conversation_id", "McpServers", "McpToolError", "StepSpan", "TurnSteps", "Memory", "Recalled", "note_json",
        "BudgetExceeded", "PricingMissing", "Embeddings", "PIN_ACTION",
    },
    "wippy_agents.durable": {
        "JournalDamaged", "JournalTypeError", "NondeterminismError", "StateUnavailable", "StepError", "StepRecord",
        "TaskCancelled", "TaskContext", "TaskFailed", "TaskInfo", "TaskManager", "TaskNotFound", "TaskStatus",
        "dumps", "idempotency_key", "loads", "register_journal_types", "workflow", "UpgradeRefused",
    },
    "wippy_agents.llm": {
        "AssistantMessage", "AuthenticationError", "BadRequestError", "ChatMessage", "ContextTooLongError",
        "FinishReason", "InvalidResponseError", "MissingAPIKeyError", "Model", "ModelConnectionError", "ModelError",
        "ModelTimeoutError", "RateLimitError", "RealModelRequestError", "Response", "ResponseDone", "ServerError",
        "Settings", "StreamEvent", "SystemMessage", "TextDelta", "ToolCall", "ToolCallDelta", "ToolCallStart",
        "ToolDefinition", "ToolResultMessage", "Totals", "Usage", "UsageLedger", "UserMessage", "cost_usd",
        "default_model_spec", "load_model", "DEFAULT_CONTEXT_WINDOW", "KNOWN_CONTEXT_WINDOWS", "context_window",
        "estimate_tokens",
    },
    "wippy_agents.llm.openai": {"OpenAIModel"},
    "wippy_agents.llm.anthropic": {"AnthropicModel"},
    "wippy_agents.llm.offline": {"OfflineModel"},
    "wippy_agents.registry": {
        "Change", "Delete", "Entry", "EntryChange", "EntryNotFound", "Folders", "KINDS", "KindSpec", "Origin",
        "PolicyHook", "Problem", "Registry", "RegistryError", "RegistryEvent", "RegistryView", "Version", "check_id",
        "AgentSpec", "ConfigSpec", "ModelSpec", "PolicySpec", "Pricing", "ProcessSpec", "PromptSpec",
        "SupervisorSpec", "ToolSpec", "WorkflowSpec", "RollbackRule", "ToolExample", "change_diff", "entry_yaml",
        "McpServerSpec", "Budget", "HistorySettings", "WorkflowExample", "ScriptedOperation",
    },
    "wippy_agents.sandbox": {
        "CompileError", "Limits", "ResourceLimit", "RunResult", "Sandbox", "SandboxError", "compile_source",
        "ANY_OPERATION", "SUSPEND", "Operation", "Outcome", "ReplayMismatch", "WorkflowRun",
    },
    "wippy_agents.tui": {"WippyApp", "run_chat"},
    "wippy_agents.policy": {
        "Approval", "ApprovalError", "ApprovalPending", "Approvals", "Audit", "AuditRecord", "Decision", "Policies",
        "ToolHealth", "person",
    },
    "wippy_agents.state": {
        "ApprovalStore", "AuditStore", "ConversationStore", "JournalStore", "VersionStore", "State", "open_state",
        "check_journal", "StateLock", "StateFileBusy", "StateUnavailable", "JournalDamaged", "JournalReport", "Damage",
        "FINISHED", "TERMINAL", "TaskStatus", "Note", "JournalRow", "TaskRow", "TaskEvent", "StepRecord",
        "SignalRecord", "TaskSummary", "Recovery", "StartedStep", "Lease", "LeaseLost", "StaleVersion", "ChangeRecord",
        "Version",
        "Approval", "AuditRecord", "ConversationInfo", "ConversationMessage", "ConversationRow", "ConversationStart", "is_database_url", "shown_url", "McpToken", "TokenStore",
        "MemoryStore", "MemoryVersion",
        "UsageStore", "ModelCall", "DailyUsage", "private_folder",
    },
    "wippy_agents.cluster": {"ClusterConversation", "ClusterDriver", "FAILOVER_TIMEOUT"},
    "wippy_agents.control": {
        "PROTOCOL", "Attached", "Backend", "ControlClient", "ControlError", "ControlServer", "Hosted", "connect",
        "file_problem", "pid_path", "ping", "socket_path", "AgentTools", "new_token", "serve_http", "serve_stdio",
        "token_digest", "tool_names",
    },
}  # fmt: skip

NOT_CHECKED = {
    "wippy_agents.cli": "the `wippy` command: its API is its command line",
}
"""Modules without a leading underscore whose namespace is not (yet) held to an `__all__`, and why."""


def public_names(module: ModuleType) -> set[str]:
    """The names a module's namespace offers: no leading underscore, import-system artefacts left out."""
    exported = set(getattr(module, "__all__", ()))
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or value is __future__.annotations:
            continue
        if isinstance(value, ModuleType) and value.__name__ == f"{module.__name__}.{name}" and name not in exported:
            continue  # a submodule, bound by whoever imported it
        names.add(name)
    return names


@pytest.mark.parametrize("name", sorted(PUBLIC_MODULES))
def test_a_public_module_exports_exactly_its_api(name: str) -> None:
    module = importlib.import_module(name)
    assert set(module.__all__) == PUBLIC_MODULES[name]
    for symbol in module.__all__:
        assert hasattr(module, symbol), symbol


@pytest.mark.parametrize("name", sorted(PUBLIC_MODULES))
def test_a_public_module_holds_nothing_but_its_api(name: str) -> None:
    module = importlib.import_module(name)
    for symbol in module.__all__:
        getattr(module, symbol)  # a name loaded on first use (`wippy_agents.App`) joins the namespace now
    dunders = {symbol for symbol in module.__all__ if symbol.startswith("_")}
    assert public_names(module) == set(module.__all__) - dunders


def test_every_module_without_a_leading_underscore_is_a_checked_public_module() -> None:
    """A new module is private (`_name.py`) or joins PUBLIC_MODULES: nothing is public by accident."""
    found = {info.name for info in pkgutil.walk_packages(wippy_agents.__path__, "wippy_agents.")
             if not any(part.startswith("_") for part in info.name.split("."))}
    assert found | {"wippy_agents"} == set(PUBLIC_MODULES) | set(NOT_CHECKED)
