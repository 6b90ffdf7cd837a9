"""Processes on other nodes: the signals that carry send, call, monitor, link, exit and spawn between nodes.

A `Peers` transport (a cluster's, over Ray) carries signals to a node, keeping
their order between one pair of nodes, and calls `Remote.receive` with what
arrives and `Remote.lost` when a node goes away or comes back as a new start.
A call is one request and its answer (`Peers.request`, `Remote.answer`): one
round trip, sent after every signal posted to that node before it.
Each signal does on the node that receives it what the local operation does,
so Erlang's rules hold across nodes: a monitor of a process that does not exist
fires at once with `"noproc"`, and when a node is lost every monitor of its
processes fires, and every link to them breaks, with `"noconnection"`.

Refs are unique per node, so a monitor or call from another node is keyed by
`(node, ref)` on the node that holds it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from .types import (
    DOWN,
    KILL,
    KILLED,
    NOCONNECTION,
    NOPROC,
    Down,
    ExitReason,
    Message,
    Pid,
    ProcessError,
    Ref,
    RemoteRef,
    describe,
)

if TYPE_CHECKING:
    from .node import Node
    from .proc import Process, ProcessFn

__all__ = ["Peers", "Remote", "Signal"]

log = logging.getLogger("wippy_agents.process")

Signal: TypeAlias = tuple[Any, ...]
"""One operation for another node: its kind first (`"msg"`, `"call"`, `"monitor"`, ...), then its values."""


class Peers(Protocol):
    """Carries signals to the other nodes of a cluster (in order between one pair of nodes)."""

    def post(self, node: str, signal: Signal) -> None:
        """Queue `signal` for `node`; a signal for a node that is gone is dropped (its loss is reported)."""
        ...

    def nodes(self) -> list[str]:
        """The other nodes, by name, that are up as far as this node knows."""
        ...

    def request(self, node: str, signal: Signal) -> asyncio.Future[Any]:
        """Send `signal` to `node` after everything posted to it before; the future gets what `answer` gave there."""
        ...

    def bind(self, remote: Remote) -> None:
        """The node's `Remote`, handed in when the node is made: what arrives from the peers goes there."""
        ...


class Remote:
    """The node's side of its peers: what it sends them, and what it does with what they send."""

    def __init__(self, node: Node, peers: Peers) -> None:
        self.node = node
        self.peers = peers
        self.names: dict[str, dict[str, Pid]] = {}
        """Each other node's registered names, as it last announced them."""
        self.calls: dict[Ref, str] = {}
        """Calls this node waits on, to the node that should reply (they fail if it is lost)."""
        self.answers: dict[RemoteRef, asyncio.Future[tuple[bool, Any]]] = {}
        """Calls from other nodes that a process here is to reply to, by (caller's node, ref)."""
        self._announcing = False

    # -- what this node sends -----------------------------------------------------------

    def whereis(self, name: str) -> Pid | None:
        for names in self.names.values():
            if (pid := names.get(name)) is not None:
                return pid
        return None

    def send(self, dest: Pid | str, message: Message) -> bool:
        """Send to a pid on another node, or a name another node registered; False if `dest` is neither."""
        pid = dest if isinstance(dest, Pid) else self.whereis(dest)
        if pid is None or pid.node == self.node.name:
            return False
        self.peers.post(pid.node, ("msg", pid, message))
        return True

    def call(self, pid: Pid, message: Message) -> None:
        """Send a call (its `ref` a future of this node's) and resolve that future with the answer."""
        assert message.ref is not None
        ref = message.ref
        self.calls[ref] = pid.node
        self.peers.request(pid.node, ("call", pid, message)).add_done_callback(
            lambda answer: self._answered(ref, pid, answer))

    def _answered(self, ref: Ref, pid: Pid, answer: asyncio.Future[Any]) -> None:
        self.calls.pop(ref, None)
        future = self.node.call_future(ref)
        if future is None or future.done():
            return  # timed out, or failed when the node was lost
        if answer.cancelled() or answer.exception() is not None:
            future.set_exception(ProcessError(f"the call to {pid} got no answer: node {pid.node} was lost "
                                              f"({NOCONNECTION})"))
            return
        ok, value = answer.result()
        future.set_result(value) if ok else future.set_exception(ProcessError(value))

    def reply(self, message: Message, value: Any) -> None:
        assert message.sender is not None and message.ref is not None
        key = (message.sender.node, message.ref)
        me = self.node.current()
        if me is not None and me.calls is not None:
            me.calls.discard(key)
        answer = self.answers.pop(key, None)
        if answer is not None and not answer.done():
            answer.set_result((True, value))

    def monitor(self, proc: Process, pid: Pid, ref: Ref) -> None:
        proc.add_monitor(ref, pid)
        self.peers.post(pid.node, ("monitor", ref, proc.pid, pid))

    def demonitor(self, ref: Ref, pid: Pid) -> None:
        self.peers.post(pid.node, ("demonitor", ref, pid))

    def link(self, proc: Process, pid: Pid) -> None:
        proc.add_link(pid)
        self.peers.post(pid.node, ("link", proc.pid, pid))

    def unlink(self, proc: Process, pid: Pid) -> None:
        self.peers.post(pid.node, ("unlink", proc.pid, pid))

    def exit(self, sender: Pid | None, dest: Pid, reason: ExitReason, *, linked: bool = False) -> None:
        self.peers.post(dest.node, ("exit", sender, dest, _portable(reason), linked))

    def down(self, key: tuple[str, Ref], pid: Pid, watcher: Pid, reason: ExitReason) -> None:
        self.peers.post(watcher.node, ("down", key[1], pid, watcher, _portable(reason)))

    def failed_call(self, key: RemoteRef, pid: Pid, reason: ExitReason) -> None:
        answer = self.answers.pop(key, None)
        if answer is not None and not answer.done():
            answer.set_result((False, f"{pid} exited with reason {describe(reason)!r} before it replied"))

    def spawn(self, host: str, target: ProcessFn | str, args: tuple[Any, ...], *, name: str | None,
              link_to: Pid | None) -> Pid:
        """Start `target(*args)` on node `host`; its pid at once (a start that fails there is its exit)."""
        pid = Pid(host, random.getrandbits(62) | 1 << 62)  # ids a node hands out itself stay far below
        self.peers.post(host, ("spawn", pid, target, args, name, link_to))
        return pid

    def pick(self) -> str:
        """A node for `host="any"`: this one or an up peer, at random."""
        return random.choice([self.node.name, *self.peers.nodes()])

    def names_changed(self) -> None:
        """Tell the peers this node's registered names (once per turn of the loop, however many changed)."""
        if not self._announcing:
            self._announcing = True
            self.node.loop.call_soon(self._announce)

    def _announce(self) -> None:
        self._announcing = False
        names = {name: proc.pid for name, proc in self.node.names.items()}
        for peer in self.peers.nodes():
            self.peers.post(peer, ("names", self.node.name, names))

    # -- what arrives -------------------------------------------------------------------------

    def receive(self, sender: str, signals: list[Signal]) -> None:
        """Carry out what node `sender` sent, in order; one bad signal is logged and skipped."""
        for signal in signals:
            try:
                getattr(self, f"_on_{signal[0]}")(sender, *signal[1:])
            except Exception as error:
                log.error("node %s: a %r signal from node %s failed: %s", self.node.name, signal[0], sender,
                          describe(error))

    def _on_msg(self, sender: str, dest: Pid | str, message: Message) -> None:
        target = self.node.table.get(dest) if isinstance(dest, Pid) else self.node.names.get(dest)
        if target is not None:
            target.deliver(message)

    def answer(self, sender: str, signal: Signal,
               answer: asyncio.Future[tuple[bool, Any]] | None = None) -> asyncio.Future[tuple[bool, Any]]:
        """A call from node `sender`: `answer` (a new future if None) gets `(True, reply)` once the process replies,
        `(False, why)` if it cannot."""
        _, dest, message = signal
        if answer is None:
            answer = self.node.loop.create_future()
        target = self.node.table.get(dest) if isinstance(dest, Pid) else self.node.names.get(dest)
        if target is None or target.exit_reason is not None:
            answer.set_result((False, f"call {message.topic!r} to {dest} failed: the process is not alive"))
            return answer
        key = (sender, message.ref)
        self.answers[key] = answer
        if target.calls is None:
            target.calls = set()
        target.calls.add(key)
        target.deliver(message)
        return answer

    def _on_monitor(self, sender: str, ref: Ref, watcher: Pid, pid: Pid) -> None:
        target = self.node.table.get(pid)
        if target is None:
            self.peers.post(sender, ("down", ref, pid, watcher, NOPROC))
        else:
            target.add_watcher((sender, ref), watcher)

    def _on_demonitor(self, sender: str, ref: Ref, pid: Pid) -> None:
        target = self.node.table.get(pid)
        if target is not None and target.watchers is not None:
            target.watchers.pop((sender, ref), None)

    def _on_down(self, sender: str, ref: Ref, pid: Pid, watcher: Pid, reason: ExitReason) -> None:
        target = self.node.table.get(watcher)
        if target is not None and target.monitors is not None and target.monitors.pop(ref, None) is not None:
            target.deliver(Message(DOWN, Down(ref, pid, reason), pid))

    def _on_link(self, sender: str, pid: Pid, to: Pid) -> None:
        target = self.node.table.get(to)
        if target is None:
            self.peers.post(sender, ("exit", to, pid, NOPROC, True))
        else:
            target.add_link(pid)

    def _on_unlink(self, sender: str, pid: Pid, to: Pid) -> None:
        target = self.node.table.get(to)
        if target is not None and target.links is not None:
            target.links.discard(pid)

    def _on_exit(self, sender: str, pid: Pid | None, dest: Pid, reason: ExitReason, linked: bool) -> None:
        target = self.node.table.get(dest)
        if target is None:
            return
        if linked:
            if target.links is None or pid not in target.links:
                return  # unlinked meanwhile
            target.links.discard(pid)
        if reason == KILL and not linked:
            self.node.doom(target, KILLED)
        else:
            self.node.signal(target, pid, reason)

    def _on_spawn(self, sender: str, pid: Pid, target: ProcessFn | str, args: tuple[Any, ...], name: str | None,
                  link_to: Pid | None) -> None:
        try:
            proc = self.node.start(self.node.resolve(target), args, name=name, pid=pid)
        except Exception as error:
            log.error("node %s could not start %s for node %s: %s", self.node.name, target, sender, describe(error))
            if link_to is not None:
                self.peers.post(sender, ("exit", pid, link_to, _portable(error), True))
            return
        if link_to is not None:
            proc.add_link(link_to)

    def _on_names(self, sender: str, node: str, names: dict[str, Pid]) -> None:
        self.names[node] = names

    # -- a node lost ------------------------------------------------------------------------------

    def lost(self, node: str) -> None:
        """Node `node` is gone (or came back as a new start): its monitors fire, links break, calls fail."""
        self.names.pop(node, None)
        for caller in [caller for caller in self.answers if caller[0] == node]:
            self.answers.pop(caller).cancel()  # nobody is left to read it
        for proc in list(self.node.table.values()):
            if proc.monitors:
                for ref, pid in [(ref, pid) for ref, pid in proc.monitors.items() if pid.node == node]:
                    del proc.monitors[ref]
                    proc.deliver(Message(DOWN, Down(ref, pid, NOCONNECTION), pid))
            if proc.watchers:
                for held in [held for held, watcher in proc.watchers.items() if watcher.node == node]:
                    del proc.watchers[held]
            if proc.calls:
                proc.calls -= {key for key in proc.calls if isinstance(key, tuple) and key[0] == node}
            if proc.links:
                for pid in [pid for pid in proc.links if pid.node == node]:
                    proc.links.discard(pid)
                    self.node.signal(proc, pid, NOCONNECTION)
        for ref in [ref for ref, peer in self.calls.items() if peer == node]:
            del self.calls[ref]
            future = self.node.call_future(ref)
            if future is not None and not future.done():
                future.set_exception(ProcessError(f"the call's node {node} was lost ({NOCONNECTION})"))


def _portable(reason: ExitReason) -> ExitReason:
    """An exit reason another node can rebuild: exceptions travel as themselves, their traceback left behind."""
    if isinstance(reason, BaseException):
        return reason.with_traceback(None)
    return reason

