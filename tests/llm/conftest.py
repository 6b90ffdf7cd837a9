"""A fake provider on 127.0.0.1, for what only a real connection shows: a trickling stream, a cut or reset one.

Every request gets the same scripted reply, its body sent in HTTP chunks (as
servers stream), `every` seconds apart, then ended as `ending` says.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import pytest


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP answer; `parts` may be endless (the server stops when the client hangs up)."""

    parts: Iterable[bytes]
    headers: Mapping[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    every: float = 0.0  # seconds between parts
    ending: Literal["done", "cut", "reset"] = "done"  # the last chunk, a close without it, or a TCP reset
    hold: threading.Event | None = None  # set once the client has read the parts: only then is the reply ended


class FakeProvider:
    """The server; `base_url` is its root, `serve` says what it answers."""

    def __init__(self) -> None:
        self.reply = Reply(parts=[])
        self._stopping = threading.Event()
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = False  # so closing waits for every handler to end
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def serve(self, parts: Iterable[bytes], *, every: float = 0.0, ending: Literal["done", "cut", "reset"] = "done",
              hold: threading.Event | None = None, **headers: str) -> None:
        """Answer every request from now on with `parts` (see `Reply`); `content_encoding="gzip"` is a header."""
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        self.reply = Reply(parts, headers={"content-type": "text/event-stream", **named}, every=every, ending=ending,
                           hold=hold)

    def close(self) -> None:
        self._stopping.set()  # handlers waiting between parts stop now
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _answer(self, connection: socket.socket, reading: socketserver.StreamRequestHandler) -> None:
        length = 0
        while (line := reading.rfile.readline()) not in (b"\r\n", b"\n", b""):  # the request line and headers
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        reading.rfile.read(length)  # read to the end: unread bytes would make closing a reset
        reply = self.reply
        headers = "".join(f"{name}: {value}\r\n" for name, value in reply.headers.items())
        connection.sendall(f"HTTP/1.1 200 OK\r\n{headers}transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                           .encode())
        for part in reply.parts:
            connection.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            if self._stopping.wait(reply.every):
                return
        if reply.hold is not None:  # a reset discards what the client has not read yet: wait until it has
            while not reply.hold.wait(0.01):
                if self._stopping.is_set():
                    return
        if reply.ending == "done":
            connection.sendall(b"0\r\n\r\n")
        elif reply.ending == "reset":  # close now, with RST instead of FIN
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

    def _handler(self) -> type[socketserver.StreamRequestHandler]:
        provider = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    provider._answer(self.connection, self)
                except OSError:  # the client hung up (the deadline, a test that is done): nothing to tell
                    pass

        return Handler


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    server = FakeProvider()
    try:
        yield server
    finally:
        server.close()
