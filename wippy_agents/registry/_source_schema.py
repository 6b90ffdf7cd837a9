"""The tool schema of sandboxed code, read from its source without running it on the host.

Agent-written code never executes in the node, so its function signature is
read from the syntax tree: annotations are evaluated against a short list of
plain types (no names from the code are ever looked up), and the result goes
through the same schema builder as trusted tools (`tools.function_tool`).
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import typing
from typing import Any

from ..errors import UsageError
from ..sandbox import compile_source
from ..tools import ToolDefinitionError, function_tool

_TYPES: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict, "tuple": tuple,
    "Any": typing.Any, "None": None, "object": typing.Any,
}


_LINE_PREFIX = re.compile(r"^Line \d+: ")


class SignatureError(UsageError, ValueError):
    """The code cannot be a tool; `line` is where the problem is (1-based) when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def _annotation(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
        return _annotation(ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.Name) and node.id in _TYPES:
        return _TYPES[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _annotation(node.left) | _annotation(node.right)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in ("list", "dict",
                                                                                                  "tuple"):
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        return _TYPES[node.value.id][tuple(_annotation(item) for item in items)]
    raise SignatureError(f"the type hint {ast.unparse(node)!r} is not supported; use str, int, float, bool, "
                         "list[...], dict[str, ...], Any or None (combined with |)", node.lineno)


@functools.lru_cache(maxsize=256)
def describe_function(source: str, function: str, context: str | None = None) -> tuple[str, dict[str, Any]]:
    """The description and JSON schema of `function` in `source`; `SignatureError` if it cannot be a tool.

    The code must also compile under the sandbox's restrictions, so a tool that could
    never run is refused before anything uses it. `context`: the name of a first
    parameter that is not an argument (a workflow's `ctx`), which the function must have.
    """
    _, errors = compile_source(source)
    if errors:
        raise SignatureError("; ".join(_LINE_PREFIX.sub("", error) for error in errors), _first_line(errors[0]))
    tree = ast.parse(source)
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function]
    if not found:
        names = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
        raise SignatureError(f"the code defines no top-level function {function!r}"
                             + (f" (it defines {', '.join(names)})" if names else ""))
    node = found[-1]
    args = node.args
    if args.vararg or args.kwarg:
        raise SignatureError("*args and **kwargs are not supported; a tool takes named parameters", node.lineno)
    positional = [*args.posonlyargs, *args.args]
    if context is not None:
        if not positional or positional[0].arg != context or len(args.defaults) == len(positional):
            raise SignatureError(f"{function} takes {context} first: def {function}({context}, ...)", node.lineno)
        positional = positional[1:]
    defaults: list[Any] = [inspect.Parameter.empty] * (len(positional) - len(args.defaults)) + [
        _literal(d) for d in args.defaults]
    kw_defaults = [inspect.Parameter.empty if d is None else _literal(d) for d in args.kw_defaults]
    params, hints = [], {}
    for arg, default, kind in [*((a, d, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a, d in zip(positional, defaults,
                                                                                                strict=True)),
                               *((a, d, inspect.Parameter.KEYWORD_ONLY) for a, d in zip(args.kwonlyargs, kw_defaults,
                                                                                         strict=True))]:
        if arg.annotation is not None:
            hints[arg.arg] = _annotation(arg.annotation)
        params.append(inspect.Parameter(arg.arg, kind, default=default))

    def stub() -> None:
        """Stands in for the sandboxed function; only its signature and docstring are used."""

    stub.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    stub.__annotations__ = hints
    docstring = ast.get_docstring(node)
    stub.__doc__ = docstring or "-"  # the entry's description may say what the tool does instead
    stub.__name__ = stub.__qualname__ = function
    try:
        tool = function_tool(stub)
    except ToolDefinitionError as error:
        where = f"parameter {error.parameter!r}: " if error.parameter else ""
        raise SignatureError(where + error.reason, node.lineno) from None
    return (tool.description if docstring else ""), tool.parameters


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise SignatureError(f"the default value {ast.unparse(node)!r} must be a literal", node.lineno) from None


def _first_line(error: str) -> int | None:
    words = error.replace(",", " ").replace(":", " ").split()
    for before, word in zip(words, words[1:], strict=False):
        if before.lower() == "line" and word.isdigit():
            return int(word)
    return None
