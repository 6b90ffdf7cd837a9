"""The server side of a node's control socket: ownership of the app, and serving requests.

Ownership: before opening the state file a node pings the socket; an answer
means a node runs the app (`StateFileBusy` naming its pid). A socket nobody
answers on, with a pid file naming a dead process, was left by a killed node and
is removed. Once the node holds the state, whatever socket is left is stale by
definition and is replaced.

A node serves at most `MAX_CONNECTIONS` connections at once (the next one gets
one error line), and closes a connection that sends no complete request line
within `IDLE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ..app import App
from ..state import StateFileBusy, private_folder
from ._client import ping
from ._ops import Emit, Needs, Target, dispatch
from ._paths import alive, pid_path, read_pid, remove, socket_folder, socket_path
from ._wire import MAX_DEPTH, MIB, PROTOCOL, REQUEST_LIMIT, ControlError, Disconnected, encode_line, failure

__all__ = ["BACKLOG", "IDLE_TIMEOUT", "MAX_CONNECTIONS", "ControlServer", "Handle"]

log = logging.getLogger("wippy_agents.control")

Handle = Callable[[Any, Emit], Awaitable[dict[str, Any]]]
"""Answers one request (a JSON value, checked by whoever handles it) with its final line, streaming via `emit`."""

MAX_CONNECTIONS = 128
"""Connections a node serves at once; each holds a file descriptor and a read buffer."""
BACKLOG = 1024
"""Connections the OS queues for the node to accept (capped by net.core.somaxconn); a burst beyond it is refused."""
IDLE_TIMEOUT = 300.0
"""Seconds a connection may take to send a whole request line (or sit idle) before the node closes it."""
PING_TIMEOUT = 5.0
wippy_version = version("wippy-agents")


class ControlServer:
    """The socket of the app a node runs: `claim` before the state file opens, `start` after boot.

    Hand it to the app (`App(root, control=ControlServer(root))`): the app calls it in its boot order.
    """

    def __init__(self, root: Path, *, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.app: App | None = None
        self.node = ""
        """The name of the node behind the socket (a cluster's driver: its nodes' cluster)."""
        self._handle: Handle | None = None
        self.root = root.resolve()
        self.idle_timeout = idle_timeout
        self.path = socket_path(self.root)
        self.pid_file = pid_path(self.root)
        self.started = datetime.now(UTC)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def claim(self) -> None:
        """Refuse to run a second node on the app; clear the socket and pid file a killed node left."""
        if not await self._refuse_if_served():
            return
        pid = read_pid(self.pid_file)
        if pid is None or not alive(pid):
            log.info("removing %s left by a node that is gone (pid %s)", self.path, pid)
            remove(self.path, self.pid_file)
        # else a live process that does not answer (yet): the state file's lock decides

    async def _refuse_if_served(self) -> bool:
        """`StateFileBusy` if a node answers on the socket; whether a socket file is there at all."""
        if not os.path.lexists(self.path):
            return False
        info = await ping(self.path)
        if info is not None:
            started = datetime.fromisoformat(info["started"]).astimezone()
            raise StateFileBusy(f"the app in {self.root} is already run by wippy node pid {info['pid']} (started "
                                f"{started:%Y-%m-%d %H:%M:%S}); stop it or use the CLI, which talks to it")
        return True

    async def start(self, app: App) -> None:
        """Serve `app`'s ops; listen, replacing a socket nobody answers on (the node holds the state, so it is stale)."""
        self.app = app
        await self.listen(self._dispatch, node=app.node.name)

    async def listen(self, handle: Handle, *, node: str) -> None:
        """Listen, answering each request with `await handle(request, emit)` (a cluster's driver forwards them)."""
        self._handle, self.node = handle, node
        if self.path.parent != self.pid_file.parent:
            socket_folder(self.path.parent)
        private_folder(self.pid_file.parent)  # `.wippy/`, made here when the state is not in it
        if await self._refuse_if_served():  # asked again: another node may have booted meanwhile (`:memory:` state)
            remove(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=REQUEST_LIMIT,
                                                       backlog=BACKLOG)
        os.chmod(self.path, 0o600)
        fd = os.open(self.pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the state folder is private
        with os.fdopen(fd, "w") as pid_file:
            pid_file.write(f"{os.getpid()}\n")

    async def close(self) -> None:
        """Stop listening, end the connections (a streaming client sees the node stop), remove the files."""
        if self._server is None:
            return
        self._server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        if read_pid(self.pid_file) == os.getpid():
            remove(self.path, self.pid_file)

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "root": str(self.root), "node": self.node, "version": wippy_version,
                "protocol": PROTOCOL, "started": self.started.isoformat()}

    async def _dispatch(self, request: Any, emit: Emit) -> dict[str, Any]:
        return await dispatch(request, self._target, emit)

    @contextlib.asynccontextmanager
    async def _target(self, needs: Needs) -> AsyncIterator[Target]:
        assert self.app is not None
        yield self.app

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                await refuse(reader, writer, ControlError(
                    f"the node (pid {os.getpid()}) already serves {MAX_CONNECTIONS} connections; try again when "
                    f"some have closed", "NodeBusy"))
            else:
                await self._answer_requests(reader, writer)
        except (Disconnected, ConnectionError, TimeoutError):  # gone, or silent for IDLE_TIMEOUT
            pass
        except asyncio.CancelledError:  # the node stops; Python 3.11's stream callback would log the cancel
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def emit(event: Any) -> None:
            try:
                writer.write(encode_line({"event": event}))
                await writer.drain()
            except ConnectionError as error:
                raise Disconnected() from error

        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    line = await read_line(reader)
            except LineTooLong:
                reply = failure(ControlError(f"a request is one line of at most {REQUEST_LIMIT // MIB} MiB; "
                                              f"this one is longer"))
            else:
                if not line:
                    return
                reply = await self._answer(line, emit)
            writer.write(encode_line(reply))
            await writer.drain()

    async def _answer(self, line: bytes, emit: Emit) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return failure(ControlError("a request is one line of JSON"))
        except RecursionError:
            return failure(ControlError(f"a request is one line of JSON nested at most {MAX_DEPTH} levels deep"))
        if isinstance(request, dict) and request.get("op") == "ping":
            return {"ok": True, "result": self.info()}
        assert self._handle is not None
        return await self._handle(request, emit)


class LineTooLong(Exception):
    """A request line longer than `REQUEST_LIMIT`; it has been read to its end and dropped."""


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """The next line (b"" at the end), holding at most about `REQUEST_LIMIT` of it in memory.

    An over-long line is read to its newline and dropped, then `LineTooLong`
    raised, so the client's next line is read as its next request.
    """
    too_long = False
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as error:  # the end: what came after the last newline, if anything
            line = error.partial
        except asyncio.LimitOverrunError as error:  # `consumed` bytes hold no newline: drop them, read on
            await reader.readexactly(error.consumed)
            too_long = True
            continue
        if too_long:
            raise LineTooLong()
        return line


async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, error: ControlError) -> None:
    """Answer a connection with one error line and end it.

    The node stops writing, then reads (and drops) what the client sends until
    it closes: closing a socket with unread data resets the connection, and the
    client would lose the line.
    """
    writer.write(encode_line(failure(error)))
    writer.write_eof()
    async with asyncio.timeout(PING_TIMEOUT):  # a client reads the line at once; one that does not is not waited for
        while await reader.read(64 * 1024):
            pass
