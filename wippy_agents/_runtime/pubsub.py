"""Processes that subscribe to news (registry changes, approvals), and the messages they are sent.

One helper for every publisher, so none of them touches the runtime's internals:
a subscription belongs to the process that made it and ends with it, and
publishing never blocks (each message goes to a mailbox).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from ..errors import UsageError
from .node import Node, current_process
from .types import Message, Pid, Ref

__all__ = ["Subscribers"]

T = TypeVar("T")


class Subscribers(Generic[T]):
    """The processes subscribed to one publisher, each with what it asked to hear (`T`)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._wants: dict[Ref, tuple[Pid, T]] = {}

    def add(self, wants: T) -> Ref:
        """Subscribe the calling process (it must run on this publisher's node)."""
        proc = current_process.get(None)
        if proc is None or proc.node is not self.node:
            raise UsageError("subscribe from inside a process on the node this comes from")
        ref = self.node.new_ref()
        self._wants[ref] = (proc.pid, wants)
        return ref

    def __iter__(self) -> Iterator[tuple[Pid, T]]:
        """The live subscribers and what each wants; those that exited are forgotten."""
        for ref, (pid, wants) in list(self._wants.items()):
            if pid in self.node.table:
                yield pid, wants
            else:
                del self._wants[ref]

    def send(self, pid: Pid, topic: str, payload: Any) -> None:
        """Put a message from no one in a subscriber's mailbox (gone: nothing happens)."""
        proc = self.node.table.get(pid)
        if proc is not None:
            proc.deliver(Message(topic, payload, None, None))
