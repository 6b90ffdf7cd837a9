"""Plain values that cross process boundaries: pids, messages, exit signals."""

from __future__ import annotations

from typing import Any, NamedTuple, TypeAlias

from ..errors import RunError

Ref: TypeAlias = int
"""A unique reference (monitors, calls); unique within one node."""

ExitReason: TypeAlias = "str | BaseException"
"""`"normal"`, `"killed"`, `"noproc"`, `"noconnection"`, `"shutdown"`, another string, or the exception a process
raised."""
RemoteRef: TypeAlias = "tuple[str, Ref]"
"""A ref another node made (its name and the ref), as a process's watchers and calls hold it."""

NORMAL = "normal"
KILLED = "killed"
NOPROC = "noproc"
SHUTDOWN = "shutdown"
NOCONNECTION = "noconnection"
"""The reason of a monitor or link on a process of a node that was lost (as in Erlang)."""
KILL = "kill"

DOWN = "process.down"
"""Topic of the message a monitor delivers when the watched process exits."""
EXIT = "process.exit"
"""Topic of the message a link delivers to a process that traps exits."""


class Pid(NamedTuple):
    """A process identifier: the node that hosts the process and a number unique on it.

    Pids are plain values (hashable, comparable, picklable-free), so they can be
    stored in a journal or sent to another node later.
    """

    node: str
    id: int

    def __repr__(self) -> str:
        return f"<{self.node}.{self.id}>"

    def __str__(self) -> str:
        return self.__repr__()


class Message(NamedTuple):
    """A message in a mailbox. `ref` is set when the sender waits in `call` for a `reply`."""

    topic: str
    payload: Any = None
    sender: Pid | None = None
    ref: Ref | None = None


class Down(NamedTuple):
    """Payload of a `DOWN` message: the monitored `pid` exited with `reason`."""

    ref: Ref
    pid: Pid
    reason: ExitReason


class Exit(NamedTuple):
    """Payload of an `EXIT` message: the linked `pid` exited (or sent an exit signal) with `reason`."""

    pid: Pid | None
    reason: ExitReason


class ProcessError(RunError):
    """A process operation failed: calling a dead pid, an unknown name, a duplicate name."""


def describe(reason: ExitReason) -> str:
    """A reason as a person reads it: the string, or `Type: message` for an exception."""
    if isinstance(reason, BaseException):
        text = str(reason)
        return f"{type(reason).__name__}: {text}" if text else type(reason).__name__
    return reason
