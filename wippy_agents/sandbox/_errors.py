"""Exceptions raised by `Sandbox.run` (the only exception types that escape it)."""

from __future__ import annotations

from ..errors import RunError


class SandboxError(RunError):
    """A failure inside the sandbox; base class of `CompileError` and `ResourceLimit`.

    `output` holds whatever the code printed before it failed ("" if nothing).
    """

    def __init__(self, message: str, *, output: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.output = output


class CompileError(SandboxError):
    """The policy refused the code at compile time; the message names the line and the rule."""


class ResourceLimit(SandboxError):
    """A limit was hit; `limit` names which one.

    One of "cpu", "memory", "wall clock", "result size", "output size", "integer size",
    "recursion depth", "input size", and for a workflow "operations" (more than its `max_operations`).
    """

    def __init__(self, limit: str, message: str, *, output: str = "") -> None:
        super().__init__(message, output=output)
        self.limit = limit


class ReplayMismatch(SandboxError):
    """A restricted workflow's code asked for another operation than the one recorded at `position`."""

    def __init__(self, position: int, recorded: str, asked: str, *, output: str = "") -> None:
        super().__init__(f"operation {position} was recorded as {recorded!r} but the code now asks for {asked!r}",
                         output=output)
        self.position = position
        self.recorded = recorded
        self.asked = asked
