"""wippy-agents: AI agents as supervised actors.

The layers, each importing only those below it (import-linter checks this in `make test`):

    cli, tui, testing       the `wippy` command, the terminal UI, test doubles for users
    control                 the node's control socket: wire format, ops, server, client
    app                     `App`: an app folder booted on its own node, with its services
    agents                  agents as conversation processes; the turn loop
    llm, durable, policy    models; durable tasks and their journal; policies, approvals, audit
    registry                entries from files, versions, events
    state                   the app's state behind interfaces (journal, versions, approvals, audit, conversations)
    tools, sandbox          leaf libraries: functions as tools; RestrictedPython in limited workers
    process, supervisor     the process API and OTP supervisors: the runtime's public face
    _runtime                the actor runtime: node, processes, mailboxes, links, monitors, names
    errors                  one hierarchy of exceptions, under `WippyError`

The curated public API is below; process operations live in `wippy_agents.process`
(used as `process.spawn`, `process.receive`, ...), supervision in
`wippy_agents.supervisor`.
"""

from importlib.metadata import version as _version
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from . import process, supervisor
from ._runtime.node import Node, ProcessInfo
from ._runtime.types import Down, Exit, Message, Pid, ProcessError
from .errors import RunError, UsageError, WippyError
from .supervisor import Backoff, ChildSpec, Supervisor, SupervisorError

if _TYPE_CHECKING:
    from .app import App

__version__ = _version("wippy-agents")


def __getattr__(name: str) -> _Any:
    """`App` is loaded on first use: it pulls in every subsystem, and a `wippy` command that only talks to a running
    node, or a program that only uses the actor runtime, should not pay for that at start-up."""
    if name == "App":
        from .app import App

        globals()["App"] = App
        return App
    raise AttributeError(f"module 'wippy_agents' has no attribute {name!r}")

__all__ = [
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
]
