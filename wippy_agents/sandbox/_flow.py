"""The inner layer of a restricted workflow: the `ctx` its code gets, inside the worker process.

Every method of `ctx` is a durable operation. The ones the journal already holds
(`records`, sent with the request) are answered here at once, after checking that
the code asks for the same operation at the same position; a new one goes to the
host as an `op` frame and the worker waits for the host's answer. When the host
answers `suspend` (the workflow must wait: a sleep, a signal not yet sent) the code
is unwound and the worker is given back; it runs again from the top later.

Nothing here trusts the code: an unwinding that the code catches is raised again
at its next operation, and the outcome is decided from what was recorded here,
not from what the code returned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from ._restrictions import CallState

ANY_OPERATION = "*"
"""A record that matches whatever operation is asked at its position (an example's unnamed scripted result)."""


class Unwind(BaseException):
    """Stops the workflow's code: the host took the worker back, or the code left the recorded path."""


class Suspended(Unwind):
    pass


class Diverged(Unwind):
    def __init__(self, position: int, recorded: str, asked: str) -> None:
        super().__init__(f"operation {position} was recorded as {recorded!r} but the code now asks for {asked!r}")
        self.position = position
        self.recorded = recorded
        self.asked = asked


Channel = Callable[[dict[str, Any]], dict[str, Any]]
"""Sends an `op` frame to the host and returns its answer."""


class WorkflowContext:
    """What `main(ctx, **args)` gets: durable operations, journaled by the host."""

    def __init__(self, channel: Channel, records: list[dict[str, Any]], max_operations: int, max_value: int,
                 state: CallState) -> None:
        self._channel = channel
        self._records = records
        self._max_operations = max_operations
        self._max_value = max_value
        self._state = state
        self._position = 0
        self._stopped: Unwind | None = None

    # -- the operations ---------------------------------------------------------------------

    def tool(self, id: str, /, **args: Any) -> Any:
        """Call the registry tool `id` with keyword arguments (one may be named `id` too); its result."""
        return self._operation("tool:" + _text("ctx.tool", "id", id), {"id": id, "args": args})

    def ask(self, agent: str, message: str) -> str:
        """Ask the agent `agent` (a delegate turn); its answer's text."""
        _text("ctx.ask", "message", message)
        return str(self._operation("ask:" + _text("ctx.ask", "agent", agent), {"agent": agent, "message": message}))

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` (a durable timer: the worker is given back meanwhile)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise ValueError("ctx.sleep takes a number of seconds, 0 or more")
        self._operation("sleep", {"seconds": seconds})

    def wait_signal(self, name: str, timeout: float | None = None) -> Any:
        """Wait for the signal `name` and return its payload; `TimeoutError` after `timeout` seconds."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                    or not timeout > 0):
            raise ValueError("ctx.wait_signal's timeout is a number of seconds over 0, or None")
        return self._operation("signal:" + _text("ctx.wait_signal", "name", name), {"name": name, "timeout": timeout})

    def now(self) -> float:
        """The time (seconds since 1970), the same on every replay."""
        return float(self._operation("now", {}))

    def random(self) -> float:
        """A random number in [0, 1), the same on every replay."""
        return float(self._operation("random", {}))

    def log(self, *parts: Any) -> None:
        """Write a line to the app's log, once (not again on replay)."""
        self._operation("log", {"text": " ".join(str(part) for part in parts)[:2000]})

    # -- the protocol -----------------------------------------------------------------------

    def _operation(self, name: str, args: dict[str, Any]) -> Any:
        if self._stopped is not None:
            raise self._stopped
        if self._state.limit is not None:
            raise self._state.limit  # hit and caught: the run ends at the limit, and nothing more reaches the host
        position = self._position
        if position >= self._max_operations:
            raise self._state.hit("operations", f"the workflow asked for more than {self._max_operations} "
                                                "operations in one task")
        if position < len(self._records):
            self._position += 1
            record = self._records[position]
            if record["name"] not in (name, ANY_OPERATION):
                raise self._stop(Diverged(position, record["name"], name))
            return _outcome(name, record)
        try:
            size = len(json.dumps(args, allow_nan=False))
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name}: the arguments must be JSON values (str, int, float, bool, None, list, "
                            f"dict): {error}") from None
        if size > self._max_value:
            raise ValueError(f"{name}: the arguments are {size:,} bytes as JSON, over the {self._max_value:,}-byte "
                             "limit")
        self._position += 1
        try:
            reply = self._channel({"status": "op", "position": position, "name": name, "args": args})
        except (MemoryError, RecursionError) as error:
            # The host's answer may be half read: whatever the code does with the error, the run must end at a
            # limit, so that the worker is replaced rather than left out of step with the host.
            limit = "memory" if isinstance(error, MemoryError) else "recursion depth"
            raise self._state.hit(limit, f"{limit} limit exceeded while {name} waited for its answer") from None
        if reply.get("suspend"):
            raise self._stop(Suspended())
        return _outcome(name, reply)

    def _stop(self, unwind: Unwind) -> Unwind:
        self._stopped = unwind
        return unwind


def finish(context: WorkflowContext, reply: dict[str, Any]) -> dict[str, Any]:
    """The reply for the host once the code ended: unwound whatever the code did, or returned with records unread
    (it took another path). An exception is reported as it is, unread records or not: what failed says more than
    where the code stopped. (Not a method of the context: the code has it, and sees only its operations.)"""
    if isinstance(context._stopped, Suspended):
        return {"status": "suspended"}
    if isinstance(context._stopped, Diverged):
        stop = context._stopped
        return {"status": "diverged", "position": stop.position, "recorded": stop.recorded, "asked": stop.asked}
    if reply.get("status") == "ok" and context._position < len(context._records):
        return {"status": "diverged", "position": context._position,
                "recorded": context._records[context._position]["name"], "asked": "the end of the workflow"}
    return reply


MAX_NAME = 200
"""The longest id or signal name an operation takes (it names a step of the journal)."""
_UNNAMEABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""What a name may not hold: the host cleans a lone surrogate to U+FFFD before it journals the name, so a replay
would not find the code's name again; a control character has no place in a step's name."""


def _text(where: str, field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{where}: {field} must be a non-empty str")
    if field == "message":
        return value
    if len(value) > MAX_NAME:
        raise ValueError(f"{where}: {field} is {len(value):,} characters, over the {MAX_NAME} limit")
    if _UNNAMEABLE.search(value):
        raise ValueError(f"{where}: {field} {value!r} holds a control character or a lone surrogate")
    return value


def _outcome(name: str, record: dict[str, Any]) -> Any:
    if record.get("ok"):
        return record.get("value")
    error = str(record.get("error") or "failed")
    if record.get("timeout"):
        raise TimeoutError(error)
    raise RuntimeError(f"{name} failed: {error}")
