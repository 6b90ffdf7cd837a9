"""The inner layer: the RestrictedPython compile policy and the guarded globals sandboxed code runs with.

Runs inside the worker process only. Sandboxed code gets no `__import__`, no modules
and no host objects: only restricted builtins, the RestrictedPython guard hooks, and a
few injected namespaces of plain functions (`json`, `math`, `regex`) that take and
return plain data.
"""

from __future__ import annotations

import ast
import json as _json
import math as _math
import operator
import re as _re
import types
from collections.abc import Callable, Iterable
from typing import Any

from RestrictedPython.compile import compile_restricted_exec
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
)
from RestrictedPython.Guards import safer_getattr_raise as _safer_getattr_raise
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, IOPERATOR_TO_STR, RestrictingNodeTransformer

_rp_getattr: Callable[..., Any] = _safer_getattr_raise


def safer_getattr_raise(ob: Any, name: str, default: Any = None) -> Any:
    """RestrictedPython's raising getattr, also refusing frame/code/traceback attributes at run time."""
    if isinstance(name, str) and name in INSPECT_ATTRIBUTES:
        raise AttributeError(f'"{name}" is a restricted name that is forbidden in the sandbox')
    return _rp_getattr(ob, name)

FILENAME = "<tool>"
MAX_INT_BITS = 1 << 20  # ~315,000 decimal digits
MAX_REGEX_PATTERN = 1_000
MAX_REGEX_TEXT = 1_000_000
MAX_FACTORIAL = 10_000


class LimitExceeded(BaseException):
    """Raised inside sandboxed code when a limit is hit; recorded in `CallState` too."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message


class CallState:
    """Per-call state: printed output (capped) and the first limit hit, even if caught."""

    def __init__(self, output_cap: int) -> None:
        self.output_cap = output_cap
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False
        self.limit: LimitExceeded | None = None

    def hit(self, limit: str, message: str) -> LimitExceeded:
        exc = LimitExceeded(limit, message)
        if self.limit is None:
            self.limit = exc
        return exc

    def write(self, text: str) -> None:
        if self.truncated:
            return
        room = self.output_cap - self.size
        data = text[: room + 1].encode("utf-8", "replace")  # a char is at least one byte
        size = len(data)
        if size > room:
            self.parts.append(data[: max(room, 0)].decode("utf-8", "ignore"))
            self.parts.append(f"\n[output truncated at {self.output_cap} bytes]\n")
            self.truncated = True
            return
        self.size += size
        self.parts.append(text)

    def output(self) -> str:
        return "".join(self.parts)


# --- compile policy ----------------------------------------------------------------


class _CompilePolicy(RestrictingNodeTransformer):
    """RestrictedPython's policy plus: no imports at all, guarded `**` and `<<`, and
    `d[k] += v` / `obj.attr += v` through guarded helpers (RestrictedPython refuses them)."""

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        target = node.target
        op = ast.Constant(IOPERATOR_TO_STR[type(node.op)])
        if isinstance(target, ast.Subscript) and not isinstance(target.slice, ast.Slice):
            args = [self.visit(target.value), self.visit(target.slice), op, self.visit(node.value)]
            name = "_inplace_item_"
        elif isinstance(target, ast.Attribute):
            attr = target.attr
            if attr.startswith("_") or attr.endswith("__roles__") or attr in INSPECT_ATTRIBUTES:
                self.error(node, f'"{attr}" is an invalid attribute name.')
                return node
            args = [self.visit(target.value), ast.Constant(attr), op, self.visit(node.value)]
            name = "_inplace_attr_"
        else:
            return super().visit_AugAssign(node)
        call = ast.Call(func=ast.Name(name, ast.Load()), args=args, keywords=[])
        return ast.fix_missing_locations(ast.copy_location(ast.Expr(value=call), node))

    def visit_Import(self, node: ast.Import) -> Any:
        self.error(node, "import statements are not allowed; use the injected json, math and regex helpers.")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        self.error(node, "import statements are not allowed; use the injected json, math and regex helpers.")

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        node = self.node_contents_visit(node)
        if isinstance(node.op, ast.Pow | ast.LShift):
            name = "_pow_" if isinstance(node.op, ast.Pow) else "_lshift_"
            call = ast.Call(func=ast.Name(name, ast.Load()), args=[node.left, node.right], keywords=[])
            return ast.fix_missing_locations(ast.copy_location(call, node))
        return node


def compile_source(source: str) -> tuple[types.CodeType | None, list[str]]:
    """Compile under the compile policy; returns (code, []) or (None, errors with line numbers)."""
    result = compile_restricted_exec(source, filename=FILENAME, policy=_CompilePolicy)
    if result.errors or result.code is None:
        return None, list(result.errors) or ["compilation failed"]
    return result.code, []


# --- guards ------------------------------------------------------------------------


def _make_guards(state: CallState) -> dict[str, Any]:
    def check_pow(base: Any, exp: Any) -> None:
        if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
            if exp * max(abs(base).bit_length(), 1) > MAX_INT_BITS:
                raise state.hit("integer size", f"integer result of ** would exceed {MAX_INT_BITS} bits")

    def guarded_pow(base: Any, exp: Any, mod: Any = None) -> Any:
        if mod is None:
            check_pow(base, exp)
            return base**exp
        return pow(base, exp, mod)

    def guarded_lshift(a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int) and a and b > 0 and b + a.bit_length() > MAX_INT_BITS:
            raise state.hit("integer size", f"integer result of << would exceed {MAX_INT_BITS} bits")
        return a << b

    inplace_ops: dict[str, Callable[[Any, Any], Any]] = {
        "+=": operator.iadd,
        "-=": operator.isub,
        "*=": operator.imul,
        "/=": operator.itruediv,
        "//=": operator.ifloordiv,
        "%=": operator.imod,
        "**=": guarded_pow,
        "<<=": guarded_lshift,
        ">>=": operator.irshift,
        "&=": operator.iand,
        "|=": operator.ior,
        "^=": operator.ixor,
        "@=": operator.imatmul,
    }

    def inplacevar(op: str, x: Any, y: Any) -> Any:
        fn = inplace_ops.get(op)
        if fn is None:
            raise TypeError(f"operator {op} is not supported")
        return fn(x, y)

    def inplace_item(ob: Any, index: Any, op: str, value: Any) -> None:
        new = inplacevar(op, ob[index], value)
        full_write_guard(ob)[index] = new

    def inplace_attr(ob: Any, name: str, op: str, value: Any) -> None:
        new = inplacevar(op, safer_getattr_raise(ob, name), value)
        _guarded_setattr(ob, name, new)

    class _Printer:
        def __init__(self, _getattr_: Any = None) -> None:
            pass

        def _call_print(self, *objects: Any, sep: str | None = " ", end: str | None = "\n", **kw: Any) -> None:
            if kw.get("file") is not None:
                raise TypeError("print(file=...) is not supported in the sandbox")
            sep = " " if sep is None else sep
            end = "\n" if end is None else end
            if not isinstance(sep, str) or not isinstance(end, str):
                raise TypeError("sep and end must be strings")
            state.write(sep.join(str(o) for o in objects) + end)

        def __call__(self) -> str:
            return state.output()

    def metaclass(name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> type:
        # Classes written in the sandbox may set attributes on their own instances.
        namespace["_guarded_writes"] = True
        return type(name, bases, namespace)

    def getitem(ob: Any, index: Any) -> Any:
        return ob[index]

    def apply(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return {
        "_getattr_": safer_getattr_raise,
        "_getitem_": getitem,
        "_getiter_": iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": full_write_guard,
        "_inplacevar_": inplacevar,
        "_inplace_item_": inplace_item,
        "_inplace_attr_": inplace_attr,
        "_print_": _Printer,
        "_apply_": apply,
        "_pow_": guarded_pow,
        "_lshift_": guarded_lshift,
        "__metaclass__": metaclass,
        "__name__": "tool",
        "pow": guarded_pow,
    }


# --- injected helpers (plain functions over plain data) -----------------------------


def _json_dumps(obj: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    return _json.dumps(obj, indent=indent, sort_keys=bool(sort_keys), allow_nan=False)


def _json_loads(text: str) -> Any:
    if not isinstance(text, str):
        raise TypeError("json.loads takes a str")
    try:
        return _json.loads(text)
    except _json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None


def _factorial(n: int) -> int:
    if not isinstance(n, int) or n > MAX_FACTORIAL:
        raise ValueError(f"factorial takes an int up to {MAX_FACTORIAL}")
    return _math.factorial(n)


def _match_data(m: _re.Match[str] | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "match": m.group(0),
        "groups": list(m.groups()),
        "named": m.groupdict(),
        "start": m.start(),
        "end": m.end(),
    }


def _compile_regex(pattern: str, text: str, flags: int) -> _re.Pattern[str]:
    if not isinstance(pattern, str) or not isinstance(text, str):
        raise TypeError("regex helpers take str pattern and text")
    if len(pattern) > MAX_REGEX_PATTERN:
        raise ValueError(f"regex pattern longer than {MAX_REGEX_PATTERN} characters")
    if len(text) > MAX_REGEX_TEXT:
        raise ValueError(f"regex text longer than {MAX_REGEX_TEXT} characters")
    if not isinstance(flags, int):
        raise TypeError("flags must be an int")
    try:
        return _re.compile(pattern, flags & (_re.I | _re.M | _re.S | _re.X))
    except _re.error as exc:
        raise ValueError(f"bad regex: {exc}") from None


def _re_match(pattern: str, text: str, flags: int = 0) -> dict[str, Any] | None:
    return _match_data(_compile_regex(pattern, text, flags).match(text))


def _re_search(pattern: str, text: str, flags: int = 0) -> dict[str, Any] | None:
    return _match_data(_compile_regex(pattern, text, flags).search(text))


def _re_fullmatch(pattern: str, text: str, flags: int = 0) -> dict[str, Any] | None:
    return _match_data(_compile_regex(pattern, text, flags).fullmatch(text))


def _re_findall(pattern: str, text: str, flags: int = 0) -> list[Any]:
    return [list(x) if isinstance(x, tuple) else x for x in _compile_regex(pattern, text, flags).findall(text)]


def _re_sub(pattern: str, repl: str, text: str, count: int = 0, flags: int = 0) -> str:
    if not isinstance(repl, str):
        raise TypeError("regex.sub takes a str replacement")
    return _compile_regex(pattern, text, flags).sub(repl, text, count=count)


def _re_split(pattern: str, text: str, maxsplit: int = 0, flags: int = 0) -> list[str | None]:
    return _compile_regex(pattern, text, flags).split(text, maxsplit=maxsplit)


def _re_escape(text: str) -> str:
    return _re.escape(text)


def _namespace(name: str, members: dict[str, Any]) -> types.SimpleNamespace:
    ns = types.SimpleNamespace(**members)
    return ns


_MATH_NAMES = (
    "sqrt floor ceil trunc log log2 log10 exp sin cos tan asin acos atan atan2 sinh cosh tanh "
    "degrees radians hypot fabs fmod copysign isfinite isinf isnan isclose gcd lcm isqrt fsum "
    "pi e tau inf nan"
).split()

JSON = _namespace("json", {"dumps": _json_dumps, "loads": _json_loads})
MATH = _namespace("math", {**{n: getattr(_math, n) for n in _MATH_NAMES}, "factorial": _factorial})
REGEX = _namespace(
    "regex",
    {
        "match": _re_match,
        "search": _re_search,
        "fullmatch": _re_fullmatch,
        "findall": _re_findall,
        "sub": _re_sub,
        "split": _re_split,
        "escape": _re_escape,
        "IGNORECASE": int(_re.I),
        "MULTILINE": int(_re.M),
        "DOTALL": int(_re.S),
        "VERBOSE": int(_re.X),
    },
)


# --- builtins ------------------------------------------------------------------------


def _guarded_setattr(ob: Any, name: str, value: Any) -> None:
    if not isinstance(name, str) or name.startswith("_"):
        raise AttributeError(f'"{name}" is an invalid attribute name')
    setattr(full_write_guard(ob), name, value)


def _guarded_delattr(ob: Any, name: str) -> None:
    if not isinstance(name, str) or name.startswith("_"):
        raise AttributeError(f'"{name}" is an invalid attribute name')
    delattr(full_write_guard(ob), name)


_MISSING = object()


def _guarded_getattr(ob: Any, name: str, default: Any = _MISSING) -> Any:
    if default is _MISSING:
        return safer_getattr_raise(ob, name)
    try:
        return safer_getattr_raise(ob, name)
    except AttributeError:
        return default


def _guarded_hasattr(ob: Any, name: str) -> bool:
    try:
        safer_getattr_raise(ob, name)
    except AttributeError:
        return False
    return True


def _base_builtins() -> dict[str, Any]:
    allowed = dict(safe_builtins)
    for name in ("_getattr_", "id", "setattr", "delattr", "pow"):
        allowed.pop(name, None)
    extra: Iterable[tuple[str, Any]] = (
        ("list", list),
        ("dict", dict),
        ("tuple", tuple),
        ("set", set),
        ("frozenset", frozenset),
        ("sorted", sorted),
        ("reversed", reversed),
        ("enumerate", enumerate),
        ("zip", zip),
        ("map", map),
        ("filter", filter),
        ("sum", sum),
        ("min", min),
        ("max", max),
        ("any", any),
        ("all", all),
        ("iter", iter),
        ("next", next),
        ("object", object),
        ("super", super),
        ("TimeoutError", TimeoutError),
        ("getattr", _guarded_getattr),
        ("hasattr", _guarded_hasattr),
        ("setattr", _guarded_setattr),
        ("delattr", _guarded_delattr),
    )
    allowed.update(extra)
    return allowed


BUILTINS = _base_builtins()


def make_globals(state: CallState) -> dict[str, Any]:
    """Fresh restricted globals for one call."""
    g: dict[str, Any] = {"__builtins__": dict(BUILTINS)}
    g.update(_make_guards(state))
    g["__builtins__"]["pow"] = g["pow"]
    del g["pow"]
    g.update({"json": JSON, "math": MATH, "regex": REGEX})
    return g
