"""The two ways a UI reaches a node's ops: in the process that runs the app, or through its socket.

Both answer in the wire's JSON, so what the UI shows is the same either way:
`wippy chat` hosting its own node talks to it through `Hosted`, and attached to
a node that `wippy run` serves (one machine or a cluster's driver) through
`Attached`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._client import ControlClient
from ._wire import unwrap

if TYPE_CHECKING:
    from ._ops import Needs, Target

__all__ = ["Attached", "Hosted"]


class Hosted:
    """The ops of an app running in this process, served as the socket serves them, without a socket."""

    def __init__(self, app: Target) -> None:
        self.app = app

    async def request(self, op: str, on_event: Callable[[Any], None] | None = None, **params: Any) -> Any:
        """As `ControlClient.request`: a failure raises `ControlError`; cancelling it is the client going away."""
        from ._ops import dispatch, emitting_to

        @contextlib.asynccontextmanager
        async def open_target(needs: Needs) -> AsyncIterator[Target]:
            yield self.app

        return unwrap(await dispatch({"op": op, **params}, open_target, emitting_to(on_event)))


class Attached:
    """The ops of the node that serves the socket at `path`, one connection per request.

    A request of its own connection can be abandoned at any time (a UI cancels
    the worker that streams a turn): closing the connection tells the node, and
    no later request reads what was left unread.
    """

    def __init__(self, path: Path, info: dict[str, Any] | None = None) -> None:
        self.path = path
        self.info = info or {}
        """The node's answer to `ping` when it was attached: pid, root, node, version."""

    async def request(self, op: str, on_event: Callable[[Any], None] | None = None, **params: Any) -> Any:
        """As `ControlClient.request`; `OSError` when the node no longer answers on the socket."""
        client = await ControlClient.open(self.path)
        try:
            return await client.request(op, on_event, **params)
        finally:
            await client.close()
