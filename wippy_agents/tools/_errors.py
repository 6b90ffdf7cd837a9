"""The errors of tools: a function that cannot be a tool, a call with bad arguments, a tool out of threads."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import RunError, UsageError


class ToolDefinitionError(UsageError, ValueError):
    """A function cannot be made a tool; the message names the function and, where known, the parameter."""

    def __init__(self, function: str, message: str, parameter: str | None = None) -> None:
        self.function = function
        self.parameter = parameter
        self.reason = message
        where = f"parameter {parameter!r}: " if parameter is not None else ""
        super().__init__(f"cannot make a tool of {function}: {where}{message}")


class ToolArgumentsError(RunError, ValueError):
    """The arguments of a tool call do not match the tool's schema.

    The message is meant for the LLM that made the call:
    ``invalid arguments for tool 'add': a: Input should be a valid integer (got 'x'); b: Field required``.
    `errors` holds one ``"field: problem"`` string per bad field.
    """

    def __init__(self, tool: str, errors: Sequence[str]) -> None:
        self.tool = tool
        self.errors = tuple(errors)
        super().__init__(f"invalid arguments for tool {tool!r}: " + "; ".join(self.errors))


class ToolBusy(RunError):
    """Every thread of a synchronous tool is held by calls that ran past their timeout and have not returned."""
