"""The process API: what code running inside a process uses to talk to other processes.

Every function acts on the calling process, found through a context variable,
so there is no handle to pass around (Erlang's `self()`).

```python
async def echo():
    while True:
        msg = await process.receive()
        if msg.topic == "stop":
            return "done"
        process.reply(msg, msg.payload)
```
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from ..errors import UsageError
from .node import Dest, Node, ProcessInfo, current_process
from .proc import Process, ProcessFn
from .types import DOWN, EXIT, KILL, KILLED, Down, Exit, ExitReason, Message, Pid, ProcessError, Ref

_new_tuple = tuple.__new__  # a Message without NamedTuple's slower Python-level __new__

__all__ = [
    "DOWN",
    "EXIT",
    "Down",
    "Exit",
    "ExitReason",
    "Message",
    "Pid",
    "ProcessError",
    "ProcessInfo",
    "Ref",
    "call",
    "demonitor",
    "exit",
    "link",
    "monitor",
    "node",
    "receive",
    "register",
    "reply",
    "self",
    "send",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "trap_exits",
    "unlink",
    "whereis",
]


def _me(operation: str) -> Process:
    proc = current_process.get(None)
    if proc is None:
        raise UsageError(
            f"process.{operation}() must run inside a process; start one with Node.run(fn) or "
            "process.spawn(fn) (from outside a process: node.spawn, node.send, node.call)"
        )
    return proc


def self() -> Pid:
    """The calling process's pid."""
    return _me("self").pid


def node() -> Node:
    """The node hosting the calling process (its `processes()`, its name)."""
    return _me("node").node


def spawn(target: ProcessFn | str, *args: Any, name: str | None = None, host: str | None = None) -> Pid:
    """Start `target(*args)` as a new process.

    `target` is an async function or a registry id such as `"app.workers:handler"`
    (a `process` entry names the function); every positional argument goes to the
    function. `host` says which node runs it: this node (the default), another
    node of the cluster by name, or `"any"`.
    """
    me = _me("spawn")
    return me.node.spawn_from(me, target, args, name=name, host=host)


def spawn_link(target: ProcessFn | str, *args: Any, name: str | None = None, host: str | None = None) -> Pid:
    """Start a process linked to the caller, atomically."""
    me = _me("spawn_link")
    return me.node.spawn_from(me, target, args, name=name, host=host, link=True)


def spawn_monitor(target: ProcessFn | str, *args: Any, name: str | None = None,
                  host: str | None = None) -> tuple[Pid, Ref]:
    """Start a process and monitor it, atomically; returns `(pid, ref)`."""
    me = _me("spawn_monitor")
    pid = me.node.spawn_from(me, target, args, name=name, host=host)
    return pid, me.node.monitor(me, pid)


def send(dest: Dest, topic: str, payload: Any = None) -> None:
    """Put a message in `dest`'s mailbox. A dead pid is a no-op; an unknown name raises `ProcessError`."""
    me = current_process.get(None) or _me("send")
    node = me.node
    target = node.table.get(dest) if dest.__class__ is Pid else None
    if target is not None:
        target.deliver(_new_tuple(Message, (topic, payload, me.pid, None)))
    elif dest.__class__ is not Pid or node.remote is not None:  # a name, or perhaps a pid on another node
        node.send(dest, topic, payload, sender=me.pid)


def receive(topic: str | None = None, timeout: float | None = None) -> Awaitable[Message]:
    """Wait for the oldest message (with `topic`, if given); `TimeoutError` after `timeout` seconds."""
    return (current_process.get(None) or _me("receive")).receive(topic, timeout)


def call(dest: Dest, topic: str, payload: Any = None, timeout: float | None = 5.0) -> Awaitable[Any]:
    """Send a request and wait for the `reply`; `ProcessError` if `dest` is dead or dies first."""
    me = current_process.get(None) or _me("call")
    return me.node.call(dest, topic, payload, timeout, caller=me)


def reply(msg: Message, value: Any) -> None:
    """Answer a message that came from `call`; a caller that already gave up is ignored."""
    _me("reply").node.reply(msg, value)


def monitor(dest: Dest) -> Ref:
    """Watch `dest`: a `DOWN` message arrives when it exits (at once, reason `"noproc"`, if it is dead)."""
    me = _me("monitor")
    return me.node.monitor(me, dest)


def demonitor(ref: Ref, *, flush: bool = False) -> None:
    """Stop a monitor; with `flush`, also drop its `DOWN` message if one already arrived."""
    me = _me("demonitor")
    me.node.demonitor(me, ref, flush)


def link(pid: Pid) -> None:
    """Link the caller and `pid` both ways; linking a dead pid is an exit signal with reason `"noproc"`."""
    me = _me("link")
    me.node.link(me, pid)
    _exit_now_if_doomed(me)


def unlink(pid: Pid) -> None:
    me = _me("unlink")
    me.node.unlink(me, pid)


def trap_exits(flag: bool = True) -> None:
    """Turn exit signals from links into `EXIT` messages instead of dying (all but `"kill"`)."""
    _me("trap_exits").trap_exits = flag


def exit(dest: Dest, reason: ExitReason) -> None:
    """Send an exit signal. `"kill"` cannot be trapped; `exit(self(), reason)` ends the caller at once."""
    me = _me("exit")
    if dest == me.pid or (isinstance(dest, str) and dest == me.name):
        me.node.doom(me, KILLED if reason == KILL else reason)
    else:
        me.node.exit(me.pid, dest, reason)
    _exit_now_if_doomed(me)


def register(name: str) -> None:
    """Give the caller a node-wide name for `send`, `call` and `whereis`; freed when it exits."""
    me = _me("register")
    me.node.register(me, name)


def whereis(name: str) -> Pid | None:
    """The pid registered as `name`, or None."""
    return _me("whereis").node.whereis(name)


def _exit_now_if_doomed(me: Process) -> None:
    if me.exit_reason is not None:
        raise asyncio.CancelledError()
