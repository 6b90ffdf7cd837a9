"""The curated public API is exactly what we mean to support."""

import wippy_agents
from wippy_agents import process, supervisor, testing

PUBLIC_API = {
    "App",
    "Backoff",
    "ChildSpec",
    "Down",
    "Exit",
    "Message",
    "Node",
    "Pid",
    "ProcessError",
    "ProcessInfo",
    "RunError",
    "Supervisor",
    "SupervisorError",
    "UsageError",
    "WippyError",
    "__version__",
    "process",
    "supervisor",
}

PROCESS_API = {
    "DOWN", "EXIT", "Down", "Exit", "ExitReason", "Message", "Pid", "ProcessError", "ProcessInfo", "Ref",
    "call", "demonitor", "exit", "link", "monitor", "node", "receive", "register", "reply", "self", "send",
    "spawn", "spawn_link", "spawn_monitor", "trap_exits", "unlink", "whereis",
}  # fmt: skip


def test_package_exports_exactly_the_public_api() -> None:
    assert set(wippy_agents.__all__) == PUBLIC_API
    for name in PUBLIC_API:
        assert hasattr(wippy_agents, name), name


def test_process_module_exports_exactly_the_process_api() -> None:
    assert set(process.__all__) == PROCESS_API
    for name in PROCESS_API:
        assert hasattr(process, name), name


def test_supervisor_and_testing_modules_export_their_api() -> None:
    assert set(supervisor.__all__) == {
        "Backoff", "ChildInfo", "ChildSpec", "Supervisor", "SupervisorError",
        "start_child", "terminate_child", "which_children",
    }  # fmt: skip
    assert set(testing.__all__) == {
        "FunctionModel", "ModelRequest", "ScriptedModel", "ScriptExhausted", "VirtualClock", "forbid_model_requests",
        "wait_until", "write_file",
    }  # fmt: skip


def test_public_modules_hide_their_imports() -> None:
    """Nothing private leaks through `from wippy_agents import *`."""
    namespace: dict[str, object] = {}
    exec("from wippy_agents import *", namespace)
    assert set(namespace) - {"__builtins__"} == PUBLIC_API


SUBPACKAGE_APIS = {
    "app": {"App", "AppConfig", "AppFolder", "ControlPort", "load_config"},
    "registry": {
        "Change", "Delete", "Entry", "EntryChange", "EntryNotFound", "Folders", "KINDS", "KindSpec", "Origin",
        "PolicyHook", "Problem", "Registry", "RegistryError", "RegistryEvent", "RegistryView", "Version", "check_id",
        "AgentSpec", "ConfigSpec", "ModelSpec", "PolicySpec", "Pricing", "ProcessSpec", "PromptSpec",
        "SupervisorSpec", "ToolSpec", "WorkflowSpec", "RollbackRule", "ToolExample", "change_diff", "entry_yaml",
    },
    "llm": {
        "AssistantMessage", "AuthenticationError", "BadRequestError", "ChatMessage", "ContextTooLongError",
        "FinishReason", "InvalidResponseError", "MissingAPIKeyError", "Model", "ModelConnectionError", "ModelError",
        "ModelTimeoutError",
        "RateLimitError", "RealModelRequestError", "Response", "ResponseDone", "ServerError",
        "Settings", "StreamEvent", "SystemMessage", "TextDelta", "ToolCall", "ToolCallDelta", "ToolCallStart",
        "ToolDefinition", "ToolResultMessage", "Totals", "Usage", "UsageLedger", "UserMessage", "cost_usd",
        "default_model_spec", "load_model",
    },
    "agents": {
        "AgentError", "AgentEvent", "AgentService", "Answer", "ApprovalRequested", "Conversation", "Delegated", "TextDelta",
        "ToolFinished", "ToolStarted", "TurnDone", "TurnFailed", "TurnStarted", "UsageReport", "offered_name",
    },
    "durable": {
        "JournalDamaged", "JournalTypeError", "NondeterminismError", "StateUnavailable", "StepError", "StepRecord",
        "TaskCancelled", "TaskContext", "TaskFailed", "TaskInfo", "TaskManager", "TaskStatus", "idempotency_key",
        "workflow",
    },
    "tools": {"FunctionTool", "ToolArgumentsError", "ToolBusy", "ToolContext", "ToolDefinitionError", "ToolThreads",
              "function_tool", "tool"},
    "sandbox": {"CompileError", "Limits", "ResourceLimit", "RunResult", "Sandbox", "SandboxError"},
    "tui": {"WippyApp", "run_chat"},
    "policy": {
        "Approval", "ApprovalError", "ApprovalPending", "Approvals", "Audit", "AuditRecord", "Decision", "Policies",
        "ToolHealth",
    },
}  # fmt: skip


def test_subpackages_export_exactly_their_api() -> None:
    import importlib

    for name, api in SUBPACKAGE_APIS.items():
        module = importlib.import_module(f"wippy_agents.{name}")
        assert set(module.__all__) == api, name
        for symbol in api:
            assert hasattr(module, symbol), (name, symbol)
