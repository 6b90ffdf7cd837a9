"""Rendering an agent's system prompt without letting a template hang or swamp the node.

Prompts can be written by agents (and by careless people), and a Jinja2 template is
code: `{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}`
runs for hours, and `{% set a = a ~ a %}` repeated doubles its output each time. So:

- A template made only of constructs that take time and space linear in its size and
  its variables (text, variables, attribute and item access, `if`, comparisons, `~`
  and `+`, and a short list of filters) renders on the spot: that is nearly every
  prompt, and it costs microseconds.
- Any other template (a loop, a macro, a call, `set`, `*`, `%`, other filters)
  renders in a sandbox worker, under its CPU, memory and wall-clock limits, and a
  render that runs over them fails the turn with a clear error instead of blocking
  the event loop (and, after a crash, blocking every recovery).
- Either way the text is capped at `MAX_PROMPT_CHARS`, and compiling a template
  happens in a thread, off the loop. Both paths use Jinja's immutable sandbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import UsageError
from ..sandbox import ResourceLimit, Sandbox, SandboxError

MAX_PROMPT_CHARS = 1_000_000
"""The longest system prompt a template may render to (about 250,000 tokens, past every model's window)."""

COMPILED_KEPT = 256
"""Compiled templates kept (prompts rarely number more; past it the cache starts afresh)."""

RENDER_SECONDS = 2.0
"""The CPU and wall-clock budget of a template rendered in the sandbox."""

_LINEAR_NODES = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Const, nodes.Name, nodes.Getattr, nodes.Getitem,
    nodes.Slice, nodes.If, nodes.CondExpr, nodes.Compare, nodes.Operand, nodes.And, nodes.Or, nodes.Not,
    nodes.Neg, nodes.Pos, nodes.Concat, nodes.Add, nodes.Sub, nodes.Div, nodes.FloorDiv, nodes.List, nodes.Tuple,
    nodes.Dict, nodes.Pair, nodes.Filter, nodes.Test, nodes.Keyword, nodes.Block,
    nodes.ScopedEvalContextModifier, nodes.EvalContextModifier, nodes.MarkSafe, nodes.MarkSafeIfAutoescape,
)
_LINEAR_FILTERS = frozenset({
    "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "forceescape", "int",
    "items", "join", "last", "length", "list", "lower", "reverse", "round", "safe", "sort", "string", "striptags",
    "title", "tojson", "trim", "unique", "upper", "wordcount",
})
_SMALL_CONSTANT = 100  # the longest constant argument a linear filter may take (a `join` separator, a default)

_environment = ImmutableSandboxedEnvironment(undefined=jinja2.ChainableUndefined, keep_trailing_newline=True)


class PromptTooLong(UsageError, ValueError):
    """A template rendered to more than `MAX_PROMPT_CHARS`."""


def is_linear(template: nodes.Template) -> bool:
    """Whether the template can only take time and space linear in its size and its variables' size."""
    for node in template.find_all(nodes.Node):
        if not isinstance(node, _LINEAR_NODES):
            return False
        if isinstance(node, nodes.Filter | nodes.Test):
            if isinstance(node, nodes.Filter) and node.name not in _LINEAR_FILTERS:
                return False
            constants = [*node.args, *(keyword.value for keyword in node.kwargs)]
            if node.dyn_args is not None or node.dyn_kwargs is not None or not all(
                    isinstance(arg, nodes.Const) and len(str(arg.value)) <= _SMALL_CONSTANT for arg in constants):
                return False
    return True


def _compile(source: str) -> tuple[jinja2.Template, bool]:
    """The compiled template and whether it renders in place (slow for a long template: run in a thread)."""
    return _environment.from_string(source), is_linear(_environment.parse(source))


class PromptRenderer:
    """Renders system prompts in place or in the node's sandbox, whichever the template allows."""

    def __init__(self, sandbox: Callable[[], Awaitable[Sandbox]]) -> None:
        self._sandbox = sandbox
        self._compiled: dict[str, tuple[jinja2.Template, bool]] = {}

    async def render(self, source: str, variables: dict[str, Any]) -> str:
        """The rendered text; `jinja2.TemplateError`, `SandboxError` or `PromptTooLong` when it cannot be."""
        compiled = self._compiled.get(source)
        if compiled is None:  # compiled once per source, off the loop; a turn with a known prompt needs no thread
            compiled = await asyncio.to_thread(_compile, source)
            if len(self._compiled) >= COMPILED_KEPT:
                self._compiled.clear()
            self._compiled[source] = compiled
        template, linear = compiled
        if linear:
            text = template.render(variables)
        else:
            sandbox = await self._sandbox()
            limits = replace(sandbox.limits, cpu_seconds=RENDER_SECONDS, wall_seconds=RENDER_SECONDS * 1.5,
                             result_bytes=MAX_PROMPT_CHARS)
            try:
                text = await sandbox.render(source, variables, limits=limits)
            except ResourceLimit as error:
                if error.limit == "result size":
                    raise PromptTooLong(f"it renders to more than {MAX_PROMPT_CHARS:,} characters") from None
                raise SandboxError(f"rendering it went over its {error.limit} limit ({RENDER_SECONDS:g}s of CPU, "
                                   f"{limits.wall_seconds:g}s in all): does it loop without end?") from None
        if len(text) > MAX_PROMPT_CHARS:
            raise PromptTooLong(f"it renders to {len(text):,} characters, over the {MAX_PROMPT_CHARS:,} limit")
        return text
