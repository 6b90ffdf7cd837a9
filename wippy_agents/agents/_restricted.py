"""Agent-written tools: checked against their schema in the node, run in the node's sandbox.

The sandbox's worker processes start on the first restricted call (most apps
never have one) and stop with the node. Each call's outcome is reported to the
policy layer, which rolls a tool back when too many of its calls fail. Restricted
workflows run in a pool of their own, so a workflow holding a worker while its
operation runs (a tool call, a delegate's turn) never waits for one it holds itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jsonschema

from ..registry import Entry, ToolExample, ToolSpec
from ..sandbox import Sandbox, SandboxError
from ..tools import ToolArgumentsError


class _LazySandbox:
    """A sandbox pool started on first use."""

    def __init__(self) -> None:
        self.running: Sandbox | None = None
        self._starting = asyncio.Lock()

    async def get(self) -> Sandbox:
        async with self._starting:
            if self.running is None:
                sandbox = Sandbox()
                await sandbox.start()
                self.running = sandbox
        return self.running

    async def close(self) -> None:
        if self.running is not None:
            await self.running.close()
            self.running = None


class RestrictedTools:
    """The node's sandboxes, started on first use: restricted tools' calls (and prompts) run in one, restricted
    workflows in the other. `on_outcome(entry, ok)` hears how each tool call and workflow task ended."""

    def __init__(self, on_outcome: Callable[[Entry, bool], object] | None = None) -> None:
        self.on_outcome = on_outcome
        self._tools = _LazySandbox()
        self._workflows = _LazySandbox()

    async def sandbox(self) -> Sandbox:
        return await self._tools.get()

    async def workflow_sandbox(self) -> Sandbox:
        return await self._workflows.get()

    @property
    def tool_pool(self) -> Sandbox | None:
        """The tools' pool if it has started."""
        return self._tools.running

    @property
    def workflow_pool(self) -> Sandbox | None:
        """The workflows' pool if it has started."""
        return self._workflows.running

    async def close(self) -> None:
        try:
            await self._tools.close()
        finally:
            await self._workflows.close()

    async def run(self, spec: ToolSpec, arguments: dict[str, Any], timeout: float | None = None) -> Any:
        """`spec`'s function called with `arguments` (checked against its schema first) in the sandbox."""
        assert spec.source is not None
        _, schema = spec.restricted_schema()
        if errors := schema_errors(schema, arguments):
            raise ToolArgumentsError(spec.function or "main", errors)
        sandbox = await self.sandbox()
        limits = sandbox.limits if timeout is None else replace(sandbox.limits,
                                                                wall_seconds=min(timeout, sandbox.limits.wall_seconds))
        return await sandbox.run(spec.source, spec.function or "main", arguments, limits=limits)

    async def call(self, entry: Entry, spec: ToolSpec, arguments: dict[str, Any], timeout: float) -> Any:
        """Run a tool call for an agent, counting whether the code failed (bad arguments are the caller's fault)."""
        try:
            value = await self.run(spec, arguments, timeout)
        except SandboxError:
            self.outcome(entry, False)
            raise
        self.outcome(entry, True)
        return value

    def outcome(self, entry: Entry, ok: bool) -> None:
        if self.on_outcome is not None:
            self.on_outcome(entry, ok)

    async def failed_examples(self, spec: ToolSpec) -> list[str]:
        """What went wrong with each of the tool's examples (empty when they all give what they expect)."""
        failures = []
        for number, example in enumerate(spec.examples, 1):
            call = _call_text(spec.function or "main", example)
            try:
                value = await self.run(spec, example.args)
            except (SandboxError, ToolArgumentsError) as error:
                failures.append(f"example {number}: {call} failed: {error}")
                continue
            if json_view(value) != json_view(example.expect):
                failures.append(f"example {number}: {call} returned {json.dumps(value)[:200]}, expected "
                                f"{json.dumps(example.expect)[:200]}")
        return failures


def schema_errors(schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """What is wrong with `arguments` by `schema`, one `"name: problem"` each, worded as a python tool's are."""
    properties = schema.get("properties", {})
    expected = ", ".join(properties) or "none; this tool takes no arguments"
    errors = [f"{name}: unknown argument (expected one of: {expected})" for name in arguments
              if name not in properties and schema.get("additionalProperties") is False]
    errors += [f"{name}: Field required" for name in schema.get("required", []) if name not in arguments]
    errors += [f"{'.'.join(map(str, error.absolute_path)) or 'arguments'}: {error.message}"
               for error in jsonschema.Draft202012Validator(schema).iter_errors(arguments)
               if error.absolute_path or error.validator not in ("required", "additionalProperties")]
    return errors


def _call_text(function: str, example: ToolExample) -> str:
    return f"{function}({', '.join(f'{k}={json.dumps(v)}' for k, v in example.args.items())})"


def json_view(value: Any) -> Any:
    """JSON's view of a value: tuples are lists, 1 and 1.0 are equal."""
    return json.loads(json.dumps(value))
