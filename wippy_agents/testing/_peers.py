"""Several nodes in one process, connected as a cluster's nodes are: to test code that works across nodes.

```python
cluster = LoopbackCluster()
async with Node("a", peers=cluster.peers("a")) as a, Node("b", peers=cluster.peers("b")) as b:
    pid = b.spawn(echo)           # a process on b, reached from a by its pid
    cluster.lose("b")             # a's monitors and links on b fire with "noconnection"
```

Signals between nodes are carried on the next turn of the loop, in order, as
over a network; a lost node's signals are dropped until it is `restore`d.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._runtime.remote import Remote, Signal

__all__ = ["LoopbackCluster"]


class LoopbackCluster:
    """The nodes made with `peers(name)`, each reaching the others; `lose(name)` cuts one off."""

    def __init__(self) -> None:
        self._peers: dict[str, _LoopbackPeers] = {}
        self.lost: set[str] = set()

    def peers(self, name: str) -> _LoopbackPeers:
        peers = self._peers[name] = _LoopbackPeers(self, name)
        return peers

    def lose(self, name: str) -> None:
        """Node `name` is gone, as if its machine died: every other node loses it."""
        self.lost.add(name)
        for other, peers in self._peers.items():
            if other != name and peers.remote is not None:
                peers.remote.lost(name)

    def restore(self, name: str) -> None:
        self.lost.discard(name)

    def _answer(self, sender: str, node: str, signal: Signal, answer: asyncio.Future[Any]) -> None:
        peers = self._peers.get(node)
        if peers is None or node in self.lost or sender in self.lost or peers.remote is None:
            return  # never answered: the caller's node sees the loss (or its timeout)
        def settle(inner: asyncio.Future[Any]) -> None:
            if answer.done():
                return
            if inner.cancelled():
                answer.cancel()
            else:
                answer.set_result(inner.result())

        peers.remote.answer(sender, signal).add_done_callback(settle)

    def _carry(self, sender: str, node: str, signals: list[Signal]) -> None:
        peers = self._peers.get(node)
        if peers is None or node in self.lost or sender in self.lost or peers.remote is None:
            return
        peers.remote.receive(sender, signals)


class _LoopbackPeers:
    def __init__(self, cluster: LoopbackCluster, name: str) -> None:
        self._cluster = cluster
        self._name = name
        self._out: dict[str, list[Signal]] = {}
        self.remote: Remote | None = None

    def bind(self, remote: Remote) -> None:
        self.remote = remote

    def nodes(self) -> list[str]:
        cluster = self._cluster
        return [name for name in cluster._peers if name != self._name and name not in cluster.lost]

    def post(self, node: str, signal: Signal) -> None:
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.setdefault(node, []).append(signal)

    def request(self, node: str, signal: Signal) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self.post(node, ("__request", signal, answer))  # after what was posted before it
        return answer

    def _flush(self) -> None:
        out, self._out = self._out, {}
        for node, batch in out.items():
            signals: list[Signal] = []
            for signal in batch:
                if signal[0] == "__request":
                    self._cluster._carry(self._name, node, signals)
                    signals = []
                    self._cluster._answer(self._name, node, signal[1], signal[2])
                else:
                    signals.append(signal)
            self._cluster._carry(self._name, node, signals)
