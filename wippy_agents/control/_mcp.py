"""Agents served over MCP (`wippy mcp serve`): each agent a tool of an MCP server, over stdio or streamable HTTP.

Every call is a normal durable turn, asked through the control ops as `wippy
ask` asks one: of the node that runs the app when one does (over its socket),
else of the app this command hosts for as long as it serves. A turn that fails
is the call's error result; nothing a client sends takes the server down.

Tool names: MCP allows `[A-Za-z0-9_.-]`, at most 128 characters. An agent's
id becomes its tool's name with `:` written `__` and any other character
outside that set written `_` (`app.agents:assistant` -> `app.agents__assistant`);
where two agents would get one name, or a name would be too long, each of them
gets `-` and the first 8 hex digits of the SHA-256 of its id appended (the
name cut to fit). A tool's description is its agent's `meta.description` (else
its title).

Over HTTP every request needs `Authorization: Bearer <token>` of a token that
`wippy mcp token create` made: a missing, unknown or revoked one gets 401, and
each request is checked again, so a revoked token stops at once. A token
reaches only the agents its pattern names; the others are neither listed nor
callable. Only the token's SHA-256 travels to the node, compared there in
constant time. There is no TLS here: serve remote clients behind a TLS proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import os
import re
import secrets
import signal
import socket
import stat
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._runtime.text import clean_text
from ._backends import Attached, Hosted
from ._client import ping
from ._embedded import Backend
from ._paths import socket_path
from ._wire import LINE_LIMIT

if TYPE_CHECKING:
    import mcp_types
    from mcp.server.auth.provider import AccessToken
    from mcp.server.context import ServerRequestContext

__all__ = ["HTTP_PATH", "AgentTools", "TokenCheck", "hosting", "new_token", "serve_http", "serve_stdio",
           "token_digest", "tool_names"]

log = logging.getLogger("wippy_agents.control.mcp")

HTTP_PATH = "/mcp"
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_OUTSIDE = re.compile(r"[^A-Za-z0-9_.-]")
_INPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "description": "What to say to the agent."},
        "conversation": {"type": "string",
                         "description": "Continue this conversation (its id is in each answer); omit to start one."},
    },
    "required": ["message"],
    "additionalProperties": False,
}


def new_token() -> str:
    """A fresh bearer token: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the state keeps of a token: its hex SHA-256."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def tool_names(agent_ids: Iterable[str]) -> dict[str, str]:
    """Each agent's tool name, by tool name (see the module's docstring for the mapping)."""
    plain: dict[str, list[str]] = {}
    for agent in sorted(set(agent_ids)):
        plain.setdefault(_OUTSIDE.sub("_", agent.replace(":", "__")), []).append(agent)
    names: dict[str, str] = {}
    for name, agents in plain.items():
        for agent in agents:
            if len(agents) > 1 or not _TOOL_NAME.fullmatch(name):
                names[f"{name[:119]}-{hashlib.sha256(agent.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"] = agent
            else:
                names[name] = agent
    return names


class AgentTools:
    """The MCP server's handlers: the agents that `agents` (an id pattern) names, as tools, asked through `backend`.

    Over HTTP a request's token narrows them further to those its own pattern names.
    """

    def __init__(self, backend: Backend, agents: str = "*") -> None:
        self.backend = backend
        self.agents = agents

    def server(self) -> Any:
        """The SDK's low-level server with these handlers."""
        from mcp.server.lowlevel import Server

        from .. import __version__

        return Server("wippy", version=__version__, on_list_tools=self.list_tools, on_call_tool=self.call_tool,
                      instructions="Each tool is an agent of a wippy app: send it a message, and continue a "
                                   "conversation by passing back the conversation id of its answer.")

    async def list_tools(self, ctx: ServerRequestContext[Any], params: Any) -> mcp_types.ListToolsResult:
        import mcp_types

        return mcp_types.ListToolsResult(tools=[
            mcp_types.Tool(name=name, title=entry["meta"].get("title"), description=_description(entry),
                           input_schema=_INPUT_SCHEMA)
            for name, entry in (await self._reachable(ctx)).items()])

    async def call_tool(self, ctx: ServerRequestContext[Any],
                        params: mcp_types.CallToolRequestParams) -> mcp_types.CallToolResult:
        import mcp_types

        from ..errors import WippyError

        arguments = params.arguments or {}
        message, conversation = arguments.get("message"), arguments.get("conversation")
        try:
            entry = (await self._reachable(ctx)).get(params.name)
        except (WippyError, OSError) as error:
            return _error(f"the app cannot be reached: {error}")
        if entry is None:
            return _error(f"there is no agent tool {clean_text(params.name)!r} for this client; tools/list names "
                          "the agents it may ask")
        unknown = sorted(set(arguments) - {"message", "conversation"})
        if not isinstance(message, str) or not (conversation is None or isinstance(conversation, str)) or unknown:
            return _error(f"{params.name} takes `message` (a string, required) and `conversation` (a string id, "
                          "optional)" + (f", not {', '.join(map(clean_text, unknown))}" if unknown else ""))
        try:
            answer = await self.backend.request("ask", agent=entry["id"], message=message, conversation=conversation)
        except (WippyError, OSError) as error:  # a failed turn, a bad request, a node that went away
            text = str(error)
            return _error(text if text.startswith(entry["id"]) else f"{entry['id']}: {text}")
        return mcp_types.CallToolResult(
            content=[mcp_types.TextContent(type="text", text=answer["text"])],
            structured_content={"answer": answer["text"], "conversation": answer["conversation"],
                                "turn": answer["turn"], "agent": entry["id"]})

    async def _reachable(self, ctx: ServerRequestContext[Any]) -> dict[str, dict[str, Any]]:
        """The agent entries this request may ask, by tool name: those that `agents` and the request's token (over
        HTTP) both name."""
        token = _token_of(ctx)
        patterns = [self.agents] + ([] if token is None else [str((token.claims or {}).get("agents", ""))])
        entries = await self.backend.request("registry.list", kind="agent")
        by_id = {entry["id"]: entry for entry in entries
                 if all(fnmatch.fnmatchcase(entry["id"], pattern) for pattern in patterns)}
        return {name: by_id[agent] for name, agent in tool_names(by_id).items()}


def _token_of(ctx: ServerRequestContext[Any]) -> AccessToken | None:
    """The bearer token an HTTP request was let in with (None over stdio)."""
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

    user = getattr(ctx.request, "scope", {}).get("user")
    return user.access_token if isinstance(user, AuthenticatedUser) else None


def _description(entry: dict[str, Any]) -> str:
    meta = entry["meta"]
    return str(meta.get("description") or meta.get("title") or f"Ask the agent {entry['id']}.")


def _error(text: str) -> mcp_types.CallToolResult:
    import mcp_types

    return mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text=text)], is_error=True)


class TokenCheck:
    """The SDK's `TokenVerifier`: a token is let in while the app keeps its digest (asked on every request)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def verify_token(self, token: str) -> AccessToken | None:
        from mcp.server.auth.provider import AccessToken

        from ..errors import WippyError

        digest = token_digest(token)
        try:
            found = await self.backend.request("mcp.token.check", digest=digest)
        except (WippyError, OSError) as error:
            log.warning("a bearer token could not be checked (%s); the request is refused", error)
            return None
        if found is None:
            return None
        return AccessToken(token=digest, client_id=found["name"], scopes=[], claims={"agents": found["agents"]})


@contextlib.asynccontextmanager
async def hosting(root: Path) -> AsyncIterator[Backend]:
    """The node that runs the app at `root` when one answers on its socket, else the app hosted here (and
    reachable from the CLI through its socket meanwhile, as under `wippy run`)."""
    info = await ping(socket_path(root))
    if info is not None:
        yield Attached(socket_path(root), info)
        return
    from ..app import App
    from ._server import ControlServer

    async with App(root, control=ControlServer(root)) as app:
        yield Hosted(app)


async def serve_stdio(root: Path, agents: str = "*") -> None:
    """Serve the agents of the app at `root` over stdin and stdout until the client closes stdin, or SIGINT or
    SIGTERM.

    Stdout is claimed before the app boots: from then on it carries the protocol
    alone, and anything else written there (a tool's print) goes to stderr.
    """
    from mcp.server.stdio import stdio_server

    serving = asyncio.current_task()
    assert serving is not None
    try:
        with _on_signals(lambda: serving.cancel()):
            async with _stdin_lines() as stdin, stdio_server(stdin=stdin) as (read_stream, write_stream), \
                    hosting(root) as backend:
                server = AgentTools(backend, agents).server()
                await server.run(read_stream, write_stream, server.create_initialization_options())
    except asyncio.CancelledError:
        if serving.cancelling() > 1:  # cancelled from outside as well: pass it on
            raise


async def serve_http(root: Path, host: str, port: int, agents: str = "*",
                     on_listening: Callable[[str], None] | None = None) -> None:
    """Serve the agents of the app at `root` as streamable HTTP at `http://host:port/mcp`, bearer tokens required,
    until SIGINT or SIGTERM; `on_listening(url)` once it takes requests (port 0: the port the system picked).

    The address is bound first, so one in use fails before the app boots (`UsageError`).
    """
    import uvicorn
    from mcp.server.auth.settings import AuthSettings

    from ..errors import UsageError

    try:
        listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as error:
        raise UsageError(f"cannot listen on {host}:{port} ({error.strerror or error}); pick another HOST:PORT") from None
    with listener:
        bound = listener.getsockname()[1]
        url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
        async with hosting(root) as backend:
            app = AgentTools(backend, agents).server().streamable_http_app(
                streamable_http_path=HTTP_PATH, host=host, token_verifier=TokenCheck(backend),
                auth=AuthSettings(issuer_url=url, resource_server_url=None))  # no OAuth: only the tokens checked here
            server = _uvicorn_server()(uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                             lifespan="on"))
            with _on_signals(lambda: setattr(server, "should_exit", True)):
                serving = asyncio.create_task(server.serve(sockets=[listener]))
                while not (server.started or serving.done()):  # it starts, or fails to
                    await asyncio.sleep(0.01)
                if server.started and on_listening is not None:
                    on_listening(f"{url}{HTTP_PATH}")
                await serving


@contextlib.asynccontextmanager
async def _stdin_lines() -> AsyncIterator[Any]:
    """The client's lines on stdin, read on the event loop: the SDK's own reader blocks a thread, which would keep
    a stopped server waiting for the client's next line. Meanwhile fd 0 is the null device, so nothing the app
    starts reads the client's messages. Stdin that is a regular file: None (the SDK's reader reads it)."""
    mode = os.fstat(0).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        yield None
        return
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    private = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(private, "rb", buffering=0, closefd=False))
        try:
            yield _lines(reader)
        finally:
            transport.close()
    finally:
        os.set_blocking(private, True)
        os.dup2(private, 0)
        os.close(private)


async def _lines(reader: asyncio.StreamReader) -> AsyncIterator[str]:
    """Each line as text; one over `LINE_LIMIT` is given as an empty line, which the SDK answers as malformed."""
    while True:
        try:
            line = await reader.readline()
        except ValueError:
            yield ""
            continue
        if not line:
            return
        yield line.decode("utf-8", "replace")


def _uvicorn_server() -> type[Any]:
    """uvicorn's `Server` without its own signal handling, which re-raises a SIGTERM once it stops and so would end
    the process before the app closes: `serve_http` stops it itself."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server


@contextlib.contextmanager
def _on_signals(stop: Callable[[], object]) -> Iterator[None]:
    """Call `stop()` on SIGINT or SIGTERM, meanwhile."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
