"""The client side of a node's control socket: connect, ping, send a request, read its events and answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._wire import LINE_LIMIT, MIB, PROTOCOL, ControlError, encode_line, unwrap

__all__ = ["PING_TIMEOUT", "ControlClient", "ping"]

PING_TIMEOUT = 5.0


class ControlClient:
    """A connection to the node that runs an app."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.info: dict[str, Any] = {}
        """The node's answer to `ping`: pid, root, started, version, protocol."""

    @classmethod
    async def open(cls, path: Path, timeout: float = PING_TIMEOUT) -> ControlClient:
        """Connect and ping; `OSError` when nothing listens, `TimeoutError` when the node does not answer."""
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=LINE_LIMIT), timeout)
        client = cls(reader, writer)
        try:
            info = await asyncio.wait_for(client.request("ping"), timeout)
        except BaseException:
            await client.close()
            raise
        client.info = info if isinstance(info, dict) else {}
        if client.info.get("protocol") != PROTOCOL:
            await client.close()
            raise ControlError(f"the node (pid {client.info.get('pid')}) runs wippy {client.info.get('version')}, "
                               f"which speaks another control protocol; stop it or use its own `wippy` command")
        return client

    async def request(self, op: str, on_event: Callable[[Any], None] | None = None, **params: Any) -> Any:
        """Send one request; pass each event to `on_event`; return the result or raise `ControlError`.

        `ConnectionError` when the connection breaks (the node stopped or was killed).
        """
        self._writer.write(encode_line({"op": op, **params}))
        await self._writer.drain()
        while True:
            message = await self.message()
            if "event" not in message:
                return unwrap(message)
            if on_event is not None:
                on_event(message["event"])

    async def message(self) -> dict[str, Any]:
        """The node's next line, which the protocol says is a JSON object."""
        try:
            line = await self._reader.readline()
        except ValueError:  # longer than LINE_LIMIT
            raise ControlError(f"the node's answer is over {LINE_LIMIT // MIB} MiB, more than this client reads") \
                from None
        if not line:
            raise ControlError("the node closed the connection before it answered (did it stop?)")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            raise ControlError("the node sent a line that is not a JSON object; is it a wippy node?")
        return message

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


async def ping(path: Path) -> dict[str, Any] | None:
    """The node's ping answer, or None if nothing answers there."""
    try:
        client = await ControlClient.open(path)
    except (OSError, TimeoutError, ValueError):
        return None
    await client.close()
    return client.info
