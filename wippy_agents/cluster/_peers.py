"""The nodes of a cluster reach each other over their Ray actor handles: signals batched per peer, and liveness.

Every signal posted during one turn of the event loop goes to its peer in one
actor call, so a burst of sends costs one Ray call per peer, not one per
message. Ray does not promise that an async actor runs calls in the order they
were made, so each call to a peer carries the next number of this node's
sequence to it, and the peer holds back what arrives early until the calls
before it are in (`_Inbox`): that keeps the order between one pair of
processes. A call's argument is one packed tuple (Ray's cost grows with the
number of arguments). Each node pings
every peer (`PING_SECONDS`): a peer that does not answer, or answers as a new
start of itself, is lost, and the node's monitors and links on it fire with
`"noconnection"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
from collections.abc import Callable
from typing import Any

import ray
from ray import cloudpickle

from .._runtime.remote import Remote, Signal

__all__ = ["PING_SECONDS", "RayPeers"]

log = logging.getLogger("wippy_agents.cluster")

PING_SECONDS = 0.5
PING_TIMEOUT = 2.0


class RayPeers:
    """The `Peers` of node `me` among `names` (the cluster's nodes); `start()` on the node's loop."""

    def __init__(self, me: str, names: list[str], incarnation: str) -> None:
        self.me = me
        self.incarnation = incarnation
        self.names = [name for name in names if name != me]
        self.handles: dict[str, Any] = {}
        self.seen: dict[str, str] = {}
        """Each peer's incarnation as last seen; a peer missing here is not up as far as this node knows."""
        self._out: dict[str, list[Signal]] = {}
        self._sent: dict[str, int] = {}  # peer -> how many calls this node has made to it
        self._inboxes: dict[str, _Inbox] = {}
        self._flushing = False
        self.remote: Remote | None = None
        """The node's side of its peers (bound when the node is made): what arrives goes there."""
        self._pinger: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Find the peers (one round of pings, so every node placed with this one is known), then keep pinging."""
        await asyncio.gather(*(self._ping(peer) for peer in self.names))
        self._pinger = asyncio.get_running_loop().create_task(self._ping_forever())

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger

    def bind(self, remote: Remote) -> None:
        self.remote = remote

    def nodes(self) -> list[str]:
        return [name for name in self.names if name in self.seen]

    def post(self, node: str, signal: Signal) -> None:
        if node not in self.seen and node not in self.names:
            log.warning("node %s: a %r signal for %s, which is not a node of this cluster, is dropped",
                        self.me, signal[0], node)
            return
        self._out.setdefault(node, []).append(signal)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def request(self, node: str, signal: Signal) -> asyncio.Future[Any]:
        """One actor call whose result is the answer, made after the signals already posted to `node`."""
        answer: asyncio.Future[Any]
        handle = self.handles.get(node)
        if handle is None:
            answer = asyncio.get_running_loop().create_future()
            answer.set_exception(ConnectionError(f"node {node} is not up"))
            return answer
        if batch := self._out.pop(node, None):
            self._send(node, batch)
        seq = self._sent.get(node, 0)
        try:
            ref = handle.answer.remote((self.me, self.incarnation, seq, signal))
        except (TypeError, pickle.PicklingError, AttributeError) as error:
            answer = asyncio.get_running_loop().create_future()
            answer.set_result((False, f"the call cannot be sent to node {node}: it cannot be pickled ({error})"))
            return answer
        self._sent[node] = seq + 1
        return asyncio.wrap_future(ref.future())

    def _flush(self) -> None:
        self._flushing = False
        out, self._out = self._out, {}
        for node, batch in out.items():
            self._send(node, batch)

    def _send(self, node: str, batch: list[Signal]) -> None:
        handle = self.handles.get(node)
        if handle is None:
            return  # not up yet: as if it were lost, and `lost` runs when it is seen
        try:
            self._deliver(node, handle, batch)
        except (TypeError, pickle.PicklingError, AttributeError):  # something in it cannot travel
            self._send_apart(node, handle, batch)

    def _deliver(self, node: str, handle: Any, batch: list[Signal]) -> None:
        seq = self._sent.get(node, 0)
        handle.deliver.remote((self.me, self.incarnation, seq, batch))
        self._sent[node] = seq + 1  # only once it went: a call that could not be made takes no number

    def _send_apart(self, node: str, handle: Any, batch: list[Signal]) -> None:
        """Send what of `batch` can be pickled; the rest is dropped with an error in the log (as a bad send)."""
        portable = []
        for signal in batch:
            try:
                cloudpickle.dumps(signal)  # type: ignore[no-untyped-call]  # as Ray pickles arguments
            except Exception as problem:
                log.error("node %s: a %r signal for node %s cannot be sent (it cannot be pickled: %s); dropped",
                          self.me, signal[0], node, problem)
                continue
            portable.append(signal)
        if portable:
            self._deliver(node, handle, portable)

    def arrived(self, packed: tuple[str, str, int, list[Signal]]) -> None:
        """Signals from a peer, carried out once every call it made before has been."""
        sender, incarnation, seq, signals = packed
        self._inbox(sender, incarnation).put(seq, lambda: self._receive(sender, signals))

    async def answered(self, packed: tuple[str, str, int, Signal]) -> Any:
        """A peer's request, answered (in its turn among the peer's calls) when this node has the answer."""
        sender, incarnation, seq, signal = packed
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._inbox(sender, incarnation).put(seq, lambda: self._answer(sender, signal, answer)):
            return False, "the call reached the node out of order as it started; call again"
        return await answer

    def _inbox(self, sender: str, incarnation: str) -> _Inbox:
        """The inbox of `sender`'s current start (one from a new start means the old start's processes are gone)."""
        self._saw(sender, incarnation)
        inbox = self._inboxes.get(sender)
        if inbox is None or inbox.incarnation != incarnation:
            inbox = self._inboxes[sender] = _Inbox(self.me, sender, incarnation)
        return inbox

    def _receive(self, sender: str, signals: list[Signal]) -> None:
        if self.remote is not None:
            self.remote.receive(sender, signals)

    def _answer(self, sender: str, signal: Signal, answer: asyncio.Future[Any]) -> None:
        if self.remote is None:
            answer.set_result((False, f"node {self.me} is not running yet"))
            return

        self.remote.answer(sender, signal, answer)

    def _saw(self, peer: str, incarnation: str) -> None:
        known = self.seen.get(peer)
        if known == incarnation:
            return
        if known is not None and self.remote is not None:
            log.warning("node %s: node %s started again; its old processes are gone", self.me, peer)
            self.remote.lost(peer)
        self.seen[peer] = incarnation

    def _lose(self, peer: str, why: str) -> None:
        if self.seen.pop(peer, None) is not None and self.remote is not None:
            log.warning("node %s lost node %s: %s", self.me, peer, why)
            self.remote.lost(peer)

    async def _ping_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._ping(peer) for peer in self.names))
            await asyncio.sleep(PING_SECONDS)

    async def _ping(self, peer: str) -> None:
        handle = self.handles.get(peer)
        if handle is None:
            try:
                handle = self.handles[peer] = await asyncio.to_thread(ray.get_actor, peer)
            except ValueError:
                return  # not placed yet
        try:
            incarnation, _ = await asyncio.wait_for(handle.ping.remote(), PING_TIMEOUT)
        except (ray.exceptions.RayActorError, TimeoutError) as error:
            self._lose(peer, str(error).splitlines()[0] if str(error) else type(error).__name__)
        else:
            if isinstance(incarnation, str):
                self._saw(peer, incarnation)


class _Inbox:
    """What one start of a peer sent, carried out in the order it was sent (`seq`), whatever order it arrives in.

    The first call that arrives sets where the count starts: a node that starts
    again picks up its peers' counts where they are.
    """

    def __init__(self, me: str, sender: str, incarnation: str) -> None:
        self.me = me
        self.sender = sender
        self.incarnation = incarnation
        self.expected: int | None = None
        self.early: dict[int, Callable[[], None]] = {}

    def put(self, seq: int, action: Callable[[], None]) -> bool:
        """Run `action` in call `seq`'s turn; False (and it never runs) if that turn has passed."""
        if self.expected is None:
            self.expected = seq
        if seq < self.expected:  # arrived after a later call that this start of the node took as its first
            log.warning("node %s: a call from node %s arrived out of order as the node started; dropped", self.me,
                        self.sender)
            return False
        self.early[seq] = action
        while self.expected in self.early:
            action = self.early.pop(self.expected)
            self.expected += 1
            action()
        return True
