"""The node's control socket: how the CLI reaches the node that runs an app.

One app at a time owns an app folder's state, so the node that runs it listens
on a Unix socket, and every `wippy` command sends its request there when a node
runs, serving it in its own process only when none does: the TUI can stay open
while the CLI is used in another terminal.

```python
async with App(root, control=ControlServer(root)) as app:   # reachable from the CLI
    ...
async with connect(root) as backend:                         # the node, or this process when none runs
    await backend.request("tasks.show", id="t1")
```

The modules, one concern each: `_paths` (the socket and pid files), `_wire` (JSON
lines, limits, error replies), `_ops` (the table of requests a node serves),
`_server`, `_client`, `_embedded` (serving a request without a node),
`_backends` (a UI's way to the ops: in the app's process, or through the socket)
and `_mcp` (the app's agents served to MCP clients: `wippy mcp serve`).
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._backends import Attached, Hosted
from ._client import ControlClient, ping
from ._embedded import Backend, connect
from ._mcp import AgentTools, new_token, serve_http, serve_stdio, token_digest, tool_names
from ._paths import pid_path, socket_path
from ._wire import PROTOCOL, ControlError, file_problem

if _TYPE_CHECKING:
    from ._server import ControlServer

__all__ = [
    "PROTOCOL",
    "AgentTools",
    "Attached",
    "Backend",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "Hosted",
    "connect",
    "file_problem",
    "new_token",
    "pid_path",
    "ping",
    "serve_http",
    "serve_stdio",
    "socket_path",
    "token_digest",
    "tool_names",
]


def __getattr__(name: str) -> _Any:
    """`ControlServer` is loaded on first use: it serves an app, so it pulls in every subsystem, which a command
    that only talks to a running node should not pay for at start-up."""
    if name == "ControlServer":
        from ._server import ControlServer

        globals()["ControlServer"] = ControlServer
        return ControlServer
    raise AttributeError(f"module 'wippy_agents.control' has no attribute {name!r}")
