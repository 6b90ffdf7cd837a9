"""wippy-agents: AI agents as supervised actors.

The curated public API. Process operations live in `wippy_agents.process`
(used as `process.spawn`, `process.receive`, ...), supervision in
`wippy_agents.supervisor`.
"""

from . import process, supervisor
from ._runtime.node import Node, ProcessInfo
from ._runtime.types import Down, Exit, Message, Pid, ProcessError
from .supervisor import Backoff, ChildSpec, Supervisor, SupervisorError

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "ChildSpec",
    "Down",
    "Exit",
    "Message",
    "Node",
    "Pid",
    "ProcessError",
    "ProcessInfo",
    "Supervisor",
    "SupervisorError",
    "__version__",
    "process",
    "supervisor",
]
