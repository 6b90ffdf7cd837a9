"""One wippy node inside a Ray actor: the app booted on the actor's event loop, serving the driver's requests.

Ray re-runs the constructor when it restarts the actor (on a surviving machine
after its own died); the constructor asks the actor to boot, so a restarted node
takes its tasks back from the shared state at once, not at the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ray

from ..app import App
from ..control._ops import Target, dispatch, node_status
from ._peers import RayPeers

__all__ = ["WippyNode"]


class WippyNode:
    """The body of a node's Ray actor (the driver wraps it with `ray.remote`); its app folder is the working dir."""

    def __init__(self, name: str, state: str, names: list[str]) -> None:
        self.name = name
        self.incarnation = uuid.uuid4().hex[:12]
        """Which start of this node this is: a peer that sees it change knows the node's processes are gone."""
        self.started = time.time()
        self.peers = RayPeers(name, names, self.incarnation)
        self._app: App | None = App(Path.cwd(), node_name=name, state=state, peers=self.peers,
                                    first_pid=int(self.started * 1_000_000), owns_files=False)  # past every pid an earlier start handed out
        self._booted = False
        self._boot: asyncio.Task[None] | None = None
        ray.get_runtime_context().current_actor.ready.remote()

    async def ready(self) -> dict[str, Any]:
        """Boot the app once; this node's status."""
        await self._booted_app()
        return self.status()

    async def _booted_app(self) -> App:
        """The app, once booted (every request waits for it)."""
        if self._boot is None:
            self._boot = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._boot)
        return self.app

    async def _start(self) -> None:
        await self.peers.start()
        await self.app.__aenter__()
        self._booted = True

    @property
    def app(self) -> App:
        assert self._app is not None, "the node has stopped"
        return self._app

    async def ping(self, value: Any = None) -> tuple[str, Any]:
        """A peer's ping: which start of this node answers, and `value` back."""
        return self.incarnation, value

    async def deliver(self, packed: tuple[str, str, int, list[Any]]) -> None:
        """Signals from another node (its name, start and number, and the signals), carried out in the order sent."""
        self.peers.arrived(packed)

    async def answer(self, packed: tuple[str, str, int, Any]) -> Any:
        """A call from a process on another node (its name, start, number and signal): the reply, once given here."""
        return await self.peers.answered(packed)

    async def run(self, target: str, args: tuple[Any, ...]) -> Any:
        """Run the process entry (or picklable function) `target` on this node: its result, or what it raised."""
        return await (await self._booted_app()).run(target, *args)

    def status(self) -> dict[str, Any]:
        """A row of `wippy cluster status`: where this node runs and what it holds."""
        return node_status(self.app) | {"ray_node": ray.get_runtime_context().get_node_id(),
                                        "incarnation": self.incarnation,
                                        "up_seconds": round(time.time() - self.started, 1)}

    async def request(self, request: dict[str, Any]) -> AsyncIterator[tuple[str, Any]]:
        """Serve one control request: `("event", ...)` for each event it streams, then `("reply", final line)`."""
        await self._booted_app()
        events: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()

        async def emit(event: Any) -> None:
            await events.put(("event", event))

        job = asyncio.get_running_loop().create_task(dispatch(request, self._target, emit))
        job.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (item := await events.get()) is not None:
                yield item
            yield "reply", job.result()
        finally:
            job.cancel()

    @contextlib.asynccontextmanager
    async def _target(self, needs: Any) -> AsyncIterator[Target]:
        yield self.app

    async def stop(self) -> None:
        """Stop the app as `wippy run` stops its node: the processes, then the state (nothing queued is lost)."""
        if self._boot is not None:
            with contextlib.suppress(Exception):
                await self._boot
        await self.peers.close()
        if self._app is not None and self._booted:
            app, self._app = self._app, None
            await app.__aexit__(None, None, None)
