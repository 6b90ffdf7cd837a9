"""The one hierarchy of every exception wippy-agents raises.

Catch `WippyError` for anything from the package. Under it, two kinds, because
they call for different answers:

- `UsageError`: the user must change something (a file, an entry, an argument, a
  setting, the state folder) before trying again. The CLI prints it as
  `wippy: <message>`; it is never a bug.
- `RunError`: something failed while it ran (a model, a tool, the sandbox, a task,
  a process, the disk). Trying again may work; the message says what failed.

Each subsystem defines its own classes on these bases (and, where a caller would
catch a builtin, on that builtin too):

    WippyError
    ├── UsageError
    │   ├── ArgumentError (also ValueError and TypeError): a bad argument to the API
    │   ├── registry.RegistryError ─ registry.EntryNotFound (also KeyError)
    │   ├── tools.ToolDefinitionError (also ValueError)
    │   ├── llm.MissingAPIKeyError (also llm.ModelError)
    │   ├── durable.NondeterminismError, durable.JournalTypeError (also TypeError),
    │   │   durable.TaskNotFound (also LookupError)
    │   ├── state.StateFileBusy, state.JournalDamaged
    │   ├── policy.ApprovalError
    │   ├── agents.PricingMissing (a cost limit on a model whose entry has no pricing)
    │   └── the CLI's errors of use
    └── RunError
        ├── process.ProcessError, supervisor.SupervisorError
        ├── llm.ModelError ─ AuthenticationError, RateLimitError, ContextTooLongError, BadRequestError,
        │                    ServerError, ModelTimeoutError (also TimeoutError),
        │                    ModelConnectionError (also ConnectionError), InvalidResponseError,
        │                    RealModelRequestError
        ├── tools.ToolArgumentsError (also ValueError), tools.ToolBusy
        ├── sandbox.SandboxError ─ CompileError, ResourceLimit
        ├── agents.AgentError, agents.BudgetExceeded (a spend limit reached: what was spent, which limit)
        ├── durable.TaskFailed, durable.TaskCancelled, durable.StepError
        ├── state.StateUnavailable (also OSError)
        ├── policy.ApprovalPending (a turn waits for a person: control flow, caught by the turn)
        └── control.ControlError (a request failed on the node or on its way)
"""

from __future__ import annotations

__all__ = ["ArgumentError", "RunError", "UsageError", "WippyError"]


class WippyError(Exception):
    """The base of every exception the package raises."""


class UsageError(WippyError):
    """A mistake of use: a bad file, entry, argument or setting; the user must change something."""


class RunError(WippyError):
    """A failure of a run: a model, tool, sandbox, process or task failed while it ran."""


class ArgumentError(UsageError, ValueError, TypeError):
    """A call got an argument it cannot use (a wrong type or value); the message says which and why."""
