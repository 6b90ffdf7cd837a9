"""Without a node: the CLI serves a request in its own process, through the same ops a node serves.

The app is opened only as far as an op needs (its files, its state, or a whole
node), and only when no node answers on the socket: a command that talks to a
running node never loads the app, which is why the modules that would are
imported inside the functions that need them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._client import ControlClient
from ._paths import socket_path
from ._wire import ControlError, unwrap

if TYPE_CHECKING:
    from ..agents import Conversation
    from ..app import AppFolder
    from ..durable import TaskManager
    from ..policy import Approvals
    from ..registry import Registry
    from ._ops import Needs, Target

__all__ = ["BOOT_WAIT", "Backend", "Embedded", "LightTarget", "connect", "open_embedded"]

BOOT_WAIT = 15.0
"""How long the CLI waits for a node that holds the state file but does not answer yet (it is booting)."""


class LightTarget:
    """An app opened without a node, for ops that only read or record: no supervisors, no task recovery.

    Recovery would resume every unfinished task inside a short-lived command (and
    park those whose workflow this process never imported), so listing or
    signalling tasks must not boot a node.
    """

    def __init__(self, root: Path, folder: AppFolder | None, tasks: TaskManager | None) -> None:
        self.root = root
        self.folder = folder
        self._tasks = tasks

    @property
    def registry(self) -> Registry:
        if self.folder is None:
            raise ControlError("this op needs the app")
        return self.folder.registry

    @property
    def tasks(self) -> TaskManager:
        if self._tasks is None:
            raise ControlError("this op needs the app's state file")
        return self._tasks

    @property
    def approvals(self) -> Approvals:
        """Reading approvals and the audit trail needs only the state file (deciding needs a node)."""
        from ..policy import Approvals, Audit

        if self.folder is None:
            raise ControlError("this op needs the app's state file")
        return Approvals(self.folder.registry, self.folder.state.approvals, Audit(self.folder.state.audit))

    async def conversation(self, agent: str, id: str | None = None) -> Conversation:
        raise ControlError("this op needs a running node")


@contextlib.asynccontextmanager
async def open_embedded(root: Path, needs: Needs) -> AsyncIterator[Target]:
    """What an op needs when no node runs, opened for one request and closed after it."""
    from .._runtime.node import Node
    from ..app import LOCAL_NODE, App, AppFolder
    from ..durable import TaskManager

    if needs == "node":
        async with App(root) as app:
            yield app
    elif needs == "none":
        yield LightTarget(root, None, None)
    else:
        node = Node(LOCAL_NODE)  # the app's own node name: in a shared state, its leases are the app's
        with AppFolder(root, files_only=needs == "files", node=node) as folder:
            tasks = None if needs == "files" else TaskManager(node, folder.state.journal, registry=folder.registry)
            yield LightTarget(root, folder, tasks)


class Embedded:
    """Serves requests in this process, through the same ops a node serves, when no node runs the app."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def request(self, op: str, on_event: Callable[[Any], None] | None = None, **params: Any) -> Any:
        from ._ops import dispatch, emitting_to

        emit = emitting_to(on_event)

        def open_target(needs: Needs) -> contextlib.AbstractAsyncContextManager[Target]:
            return open_embedded(self.root, needs)

        request = {"op": op, **params}
        reply = await dispatch(request, open_target, emit)
        deadline = time.monotonic() + BOOT_WAIT
        if reply.get("kind") == "StateFileBusy":  # a node still booting, or another command: wait for either
            print(f"wippy: the app's state file is busy; waiting up to {BOOT_WAIT:g}s for it", file=sys.stderr,
                  flush=True)
        while reply.get("kind") == "StateFileBusy" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            client = await self._node()
            if client is not None:
                try:
                    return await client.request(op, on_event, **params)
                finally:
                    await client.close()
            reply = await dispatch(request, open_target, emit)  # it failed opening the file: nothing was done
        return unwrap(reply)

    async def _node(self) -> ControlClient | None:
        """The node that now answers on the app's socket, if one does."""
        path = socket_path(self.root.resolve())
        if os.path.lexists(path):
            with contextlib.suppress(OSError, TimeoutError, ValueError):
                return await ControlClient.open(path)
        return None


class Backend(Protocol):
    async def request(self, op: str, on_event: Callable[[Any], None] | None = None, **params: Any) -> Any: ...


@contextlib.asynccontextmanager
async def connect(root: Path) -> AsyncIterator[Backend]:
    """The node that runs the app at `root` if one answers on its socket, else an embedded one."""
    root = root.resolve()
    path = socket_path(root)
    client = None
    if os.path.lexists(path):
        with contextlib.suppress(OSError, TimeoutError):  # a stale socket; the state file's lock will tell
            client = await ControlClient.open(path)
    if client is None:
        yield Embedded(root)
        return
    try:
        yield client
    finally:
        await client.close()
