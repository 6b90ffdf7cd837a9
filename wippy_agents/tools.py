"""Python functions as tools: a JSON schema from the signature and docstring, validated calls.

An LLM calls a tool by naming it and sending a JSON object of arguments. This module
turns an ordinary, documented, type-hinted Python function into that contract:

```python
def forecast(city: str, days: int = 3) -> list[Forecast]:
    \"\"\"Weather forecast for a city.

    Args:
        city: The city's name, e.g. "Lisbon".
        days: How many days ahead, 1 to 10.
    \"\"\"

tool = function_tool(forecast)
tool.parameters      # {"type": "object", "properties": {"city": {...}, "days": {...}},
                     #  "required": ["city"], "additionalProperties": False}
await tool.call({"city": "Lisbon"})   # -> JSON-compatible data
```

Why it works this way:

- **One source of truth.** The signature and docstring a developer already writes
  are the schema: types, defaults, ``Literal``/enums, nested pydantic models and
  dataclasses, ``Annotated[int, Field(ge=0)]`` constraints, and per-parameter
  descriptions from the docstring's Args section (Google, NumPy or reST style).
  Pydantic builds both the schema and the validator from the same model, so what
  the model is told and what is enforced never drift apart.
- **Fail at load time, not at call time.** A parameter without a type hint,
  ``*args``/``**kwargs``, a missing docstring or a type pydantic cannot describe is a
  `ToolDefinitionError` naming the function and the parameter, so a broken file in
  ``tools/`` is reported when the registry loads it.
- **Errors the model can fix.** Arguments are validated before the function runs;
  a `ToolArgumentsError` lists every bad field and why, in plain text meant to be
  sent back to the LLM so it can correct its call. Unknown arguments are errors
  (the schema says ``additionalProperties: false``), because a misspelt optional
  argument silently ignored is worse than a retry.
- **Never block the actors.** Every agent shares one event loop, so a plain
  (``def``) tool runs in a thread and an ``async def`` tool is awaited on the loop.
  Each tool has threads of its own (`ToolThreads`), so a tool that hangs can only
  exhaust its own, and a call's timeout starts when its thread starts.
- **JSON out.** Return values are converted with pydantic (dataclasses, models,
  datetimes, enums, ...) so results can be journaled and sent to any provider; a
  value that cannot be made JSON is a clear `TypeError` naming the tool and type.
- **Context on request.** A tool that needs to know who calls it (agent id, task id,
  call id) or wants a logger annotates a parameter with `ToolContext`; that parameter
  is left out of the schema and filled in at call time.

Tools from ``tools/*.py`` are trusted code; agent-written tools run in the sandbox
(`wippy_agents.sandbox`), not through this module.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import inspect
import logging
import threading
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args, get_origin

import docstring_parser
import pydantic
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaWarningKind

from .errors import RunError, UsageError

F = typing.TypeVar("F", bound=Callable[..., Any])


__all__ = [
    "FunctionTool",
    "ToolArgumentsError",
    "ToolBusy",
    "ToolContext",
    "ToolDefinitionError",
    "ToolThreads",
    "function_tool",
    "tool",
]

_LOGGER_PREFIX = "wippy_agents.tools"
_log = logging.getLogger(_LOGGER_PREFIX)  # made at import, like every logger of the package, so an app can filter it


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


T = typing.TypeVar("T")


class ToolThreads:
    """The threads of one synchronous tool: a few of its own, so a tool that hangs exhausts only its own.

    Python cannot stop a thread, so a call that runs past its timeout is abandoned:
    the caller gets `TimeoutError` at once while the thread keeps its place until the
    function returns. A call waits for a free thread without that counting against its
    timeout, which starts when its thread starts; once every thread is held by
    abandoned calls, a new call fails at once with `ToolBusy` instead of waiting for
    ever. Threads are daemons, so a hung tool never keeps the process from exiting.
    """

    def __init__(self, name: str, size: int = 8) -> None:
        self.name = name
        self.size = size
        self._lock = threading.Lock()
        self._running = 0  # threads in use, abandoned calls included
        self._abandoned = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def abandoned(self) -> int:
        """Calls that ran past their timeout and still hold a thread."""
        return self._abandoned

    async def run(self, fn: Callable[[], T], timeout: float | None) -> T:
        """`fn()` in a thread of this tool, with `contextvars` as the caller has them."""
        await self._take_thread()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        call = _ThreadCall(self, done)
        context = contextvars.copy_context()
        threading.Thread(target=call.work, args=(context, fn), name=f"wippy-tool {self.name}", daemon=True).start()
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(done)
        except BaseException:
            call.abandon()
            raise

    async def _take_thread(self) -> None:
        while True:
            with self._lock:
                if self._abandoned >= self.size:
                    raise ToolBusy(f"tool {self.name!r} is busy: {self._abandoned} earlier call(s) are still running "
                                   "past their timeout; it takes new calls once they return")
                if self._running < self.size:
                    self._running += 1
                    return
                waiter = asyncio.get_running_loop().create_future()
                self._waiting.append(waiter)
            await waiter

    def _give_back(self, abandoned: bool) -> None:
        """A thread finished (from that thread): wake a caller waiting for one."""
        with self._lock:
            self._running -= 1
            self._abandoned -= abandoned
            self._wake(1)

    def _abandon_one(self) -> None:
        """A call ran past its timeout: once every thread is held so, the waiting callers learn it at once."""
        with self._lock:
            self._abandoned += 1
            if self._abandoned >= self.size:
                self._wake(len(self._waiting))

    def _wake(self, count: int) -> None:
        """Wake up to `count` waiting callers (the lock is held): each takes a thread or learns why it cannot."""
        while count and self._waiting:
            waiter = self._waiting.popleft()
            try:
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
            except RuntimeError:
                continue  # that loop has closed
            count -= 1


class _ThreadCall:
    """One call on a `ToolThreads` thread: hands the outcome to the caller's loop, or drops it if abandoned."""

    def __init__(self, threads: ToolThreads, done: asyncio.Future[Any]) -> None:
        self.threads = threads
        self.done = done
        self._lock = threading.Lock()
        self._finished = False
        self._abandoned = False

    def work(self, context: contextvars.Context, fn: Callable[[], Any]) -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (context.run(fn), None)
        except Exception as error:
            outcome = (None, error)
        except BaseException as error:  # SystemExit, KeyboardInterrupt: a tool's failure, never the node's exit
            outcome = (None, RuntimeError(f"the tool raised {type(error).__name__}: {error}"))
        with self._lock:
            self._finished = True
            abandoned = self._abandoned
        self.threads._give_back(abandoned)
        if not abandoned:
            try:
                self.done.get_loop().call_soon_threadsafe(_settle, self.done, *outcome)
            except RuntimeError:
                pass  # the loop has closed

    def abandon(self) -> None:
        """The caller stopped waiting (timeout, cancel): the thread's place stays taken until it returns."""
        with self._lock:
            if self._finished or self._abandoned:
                return
            self._abandoned = True
        self.threads._abandon_one()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _settle(done: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(value)
    else:
        done.set_exception(error)


def _default_logger() -> logging.Logger:
    return _log


@dataclass(frozen=True)
class ToolContext:
    """What a tool learns about its call when it annotates a parameter with this type.

    ``def search(query: str, ctx: ToolContext) -> list[str]`` receives the caller's
    agent id, the durable task id, the LLM's tool-call id and a logger. The parameter
    is not part of the tool's JSON schema.
    """

    agent_id: str | None = None
    task_id: str | None = None
    call_id: str | None = None
    logger: logging.Logger = field(default_factory=_default_logger)


@dataclass(frozen=True)
class _Param:
    """One parameter of the tool function, in signature order."""

    name: str
    kind: inspect._ParameterKind
    field: str | None  # the field of the arguments model; None for a ToolContext parameter


@dataclass(frozen=True, eq=False)
class FunctionTool:
    """A Python function offered to an LLM as a tool. Build it with `function_tool`.

    `parameters` is the JSON schema of the arguments object (do not mutate it);
    `description` is the docstring without its Args/Returns/Raises sections.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    _model: type[BaseModel] = field(repr=False)
    _params: tuple[_Param, ...] = field(repr=False)
    _is_async: bool = field(repr=False)
    _qualname: str = field(repr=False)
    threads: ToolThreads = field(repr=False)
    """Where a synchronous tool runs: threads of its own."""

    async def call(self, arguments: Mapping[str, Any], context: ToolContext | None = None,
                   timeout: float | None = None) -> Any:
        """Validate `arguments`, run the function and return its result as JSON-compatible data.

        Raises `ToolArgumentsError` for arguments that do not match the schema (nothing
        runs then), `TypeError` for a result that cannot be made JSON, `TimeoutError`
        when the function runs longer than `timeout` seconds (counted from when it
        starts), `ToolBusy` when earlier calls that timed out still hold every thread of
        the tool, and whatever the function itself raises. `context` is passed to
        parameters annotated with `ToolContext`; without one they get a context with no
        ids and the tool's logger.
        """
        if not isinstance(arguments, Mapping):
            raise ToolArgumentsError(
                self.name, [f"arguments: expected a JSON object, got {_short_repr(arguments)}"])
        try:
            validated = self._model.model_validate(dict(arguments))
        except ValidationError as exc:
            raise ToolArgumentsError(self.name, _describe_errors(exc, self._params)) from None

        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param in self._params:
            if param.field is None:
                if context is None:
                    context = ToolContext(logger=logging.getLogger(f"{_LOGGER_PREFIX}.{self.name}"))
                value: Any = context
            else:
                value = getattr(validated, param.field)
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[param.name] = value

        if self._is_async:
            async with asyncio.timeout(timeout):
                result = await self.fn(*args, **kwargs)
        else:
            result = await self.threads.run(functools.partial(self.fn, *args, **kwargs), timeout)

        try:
            return pydantic_core.to_jsonable_python(result)
        except pydantic_core.PydanticSerializationError as exc:
            raise TypeError(
                f"tool {self.name!r} ({self._qualname}) returned a value of type {type(result).__qualname__} "
                f"that cannot be made JSON: {exc}") from None


def function_tool(fn: Callable[..., Any]) -> FunctionTool:
    """Describe `fn` as a tool: its name, its docstring and a JSON schema of its parameters.

    Every parameter needs a type hint (except those annotated `ToolContext`, which
    are injected), ``*args``/``**kwargs`` are refused, and the docstring must say what
    the tool does. Raises `ToolDefinitionError` otherwise.
    """
    if not callable(fn):
        raise TypeError(f"function_tool() needs a function, got {type(fn).__qualname__}")
    target = _unwrap(fn)
    qualname = _qualname(target)
    name = getattr(target, "__name__", None) or type(target).__name__

    if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
        raise ToolDefinitionError(qualname, "generator functions cannot be tools; return a list instead")

    description, param_docs = _parse_docstring(target, qualname)

    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ToolDefinitionError(qualname, f"its signature cannot be read ({exc})") from None
    hints = _resolve_hints(target, signature, qualname)

    params: list[_Param] = []
    fields: dict[str, Any] = {}
    for index, param in enumerate(signature.parameters.values()):
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise ToolDefinitionError(
                qualname, "*args is not supported; a tool takes named parameters (a JSON object)",
                parameter=f"*{param.name}")
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            raise ToolDefinitionError(
                qualname, "**kwargs is not supported; a tool takes named parameters (a JSON object)",
                parameter=f"**{param.name}")
        if param.name not in hints:
            raise ToolDefinitionError(
                qualname, f"has no type hint; annotate it (for example `{param.name}: str`) so the "
                "model knows what to send", parameter=param.name)
        hint = hints[param.name]
        if _is_context(hint):
            params.append(_Param(param.name, param.kind, None))
            continue
        # Internal field names with the parameter name as alias: any parameter name
        # works (`json`, `schema`, `model_config`, `_private`) without clashing with BaseModel.
        field_name = f"p{index}"
        default: Any = ... if param.default is inspect.Parameter.empty else param.default
        info_kwargs: dict[str, Any] = {"alias": param.name}
        doc = param_docs.get(param.name)
        if doc and not _annotated_description(hint):
            info_kwargs["description"] = doc
        fields[field_name] = (hint, Field(default, **info_kwargs))
        params.append(_Param(param.name, param.kind, field_name))

    model = _build_model(name, qualname, fields, params)
    return FunctionTool(
        name=name,
        description=description,
        parameters=_json_schema(model, qualname, fields, params),
        fn=fn,
        _model=model,
        _params=tuple(params),
        _is_async=_is_coroutine_function(fn),
        _qualname=qualname,
        threads=ToolThreads(name),
    )


# -- definition helpers ---------------------------------------------------------------


def _unwrap(fn: Callable[..., Any]) -> Any:
    """The object that carries the name, docstring and annotations (partials unwrapped)."""
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    return target


def _qualname(target: Any) -> str:
    module = getattr(target, "__module__", None) or "?"
    qual = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{qual}"


def _is_coroutine_function(fn: Callable[..., Any]) -> bool:
    target = _unwrap(fn)
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(target, "__call__", None)  # a callable object with `async def __call__`
    return not inspect.isroutine(target) and call is not None and inspect.iscoroutinefunction(call)


def _parse_docstring(target: Any, qualname: str) -> tuple[str, dict[str, str]]:
    raw = inspect.getdoc(target)
    if not raw and not inspect.isroutine(target) and not isinstance(target, type):
        raw = inspect.getdoc(getattr(type(target), "__call__", None))  # a callable object's __call__
    if not raw or not raw.strip():
        raise ToolDefinitionError(
            qualname, "it has no docstring; the docstring tells the model what the tool does")
    try:
        parsed = docstring_parser.parse(raw)
    except docstring_parser.ParseError:
        return raw.strip(), {}
    parts = [part.strip() for part in (parsed.short_description, parsed.long_description) if part]
    if not parts:
        raise ToolDefinitionError(
            qualname, "its docstring has no description; start it with a sentence saying what the tool does")
    param_docs = {p.arg_name: p.description.strip() for p in parsed.params if p.description}
    return "\n\n".join(parts), param_docs


def _resolve_hints(target: Any, signature: inspect.Signature, qualname: str) -> dict[str, Any]:
    """Parameter type hints, with string annotations (``from __future__ import annotations``) evaluated."""
    source = target if inspect.isroutine(target) or isinstance(target, type) else type(target).__call__
    try:
        return typing.get_type_hints(source, include_extras=True)
    except Exception:  # find which parameter's hint is broken below
        pass
    # get_type_hints fails as a whole (maybe only for the return type): resolve one by one.
    globalns = getattr(inspect.unwrap(source), "__globals__", {})
    hints: dict[str, Any] = {}
    for param in signature.parameters.values():
        annotation = param.annotation
        if annotation is inspect.Parameter.empty:
            continue
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, globalns)  # what typing.get_type_hints does
            except Exception as exc:
                raise ToolDefinitionError(
                    qualname, f"cannot resolve its type hint {param.annotation!r} ({exc})",
                    parameter=param.name) from None
        hints[param.name] = annotation
    return hints


def _is_context(hint: Any) -> bool:
    """`ToolContext`, `ToolContext | None` or `Annotated[ToolContext, ...]`."""
    if hint is ToolContext:
        return True
    origin = get_origin(hint)
    if origin is Annotated:
        return _is_context(get_args(hint)[0])
    if origin is typing.Union or origin is types.UnionType:
        rest = [arg for arg in get_args(hint) if arg is not type(None)]
        return len(rest) == 1 and _is_context(rest[0])
    return False


def _annotated_description(hint: Any) -> bool:
    """Whether ``Annotated[T, Field(description=...)]`` already describes the parameter."""
    if get_origin(hint) is not Annotated:
        return False
    return any(isinstance(meta, FieldInfo) and meta.description for meta in get_args(hint)[1:])


_CONFIG = ConfigDict(extra="forbid", arbitrary_types_allowed=False)


def _build_model(name: str, qualname: str, fields: dict[str, Any],
                 params: list[_Param]) -> type[BaseModel]:
    try:
        return pydantic.create_model(f"{name}_arguments", __config__=_CONFIG, **fields)
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError,
            NameError) as exc:
        raise _unsupported(qualname, fields, params, exc) from None


def _json_schema(model: type[BaseModel], qualname: str, fields: dict[str, Any],
                 params: list[_Param]) -> dict[str, Any]:
    try:
        raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_ToolJsonSchema)
    except (pydantic.PydanticInvalidForJsonSchema, pydantic.PydanticUserError, TypeError) as exc:
        raise _unsupported(qualname, fields, params, exc) from None
    raw = _strip_titles(raw)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": raw.get("properties", {}),
        "required": raw.get("required", []),
        "additionalProperties": False,
    }
    if "$defs" in raw:
        schema["$defs"] = raw["$defs"]
    return schema


def _unsupported(qualname: str, fields: dict[str, Any], params: list[_Param],
                 exc: Exception) -> ToolDefinitionError:
    """Name the parameter whose type pydantic cannot validate or describe as JSON schema."""
    for param in params:
        if param.field is None:
            continue
        hint = fields[param.field][0]
        try:
            pydantic.TypeAdapter(hint).json_schema()
        except Exception as field_exc:  # reported in the message
            return ToolDefinitionError(
                qualname, f"type {_type_name(hint)} is not supported as a tool argument "
                f"({_first_line(field_exc)})", parameter=param.name)
    return ToolDefinitionError(qualname, f"pydantic cannot build a schema for it ({_first_line(exc)})")


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__qualname__
    return repr(hint).replace("typing.", "")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _ToolJsonSchema(GenerateJsonSchema):
    """Omit defaults that are not JSON (a sentinel object) instead of warning about them."""

    def emit_warning(self, kind: JsonSchemaWarningKind, detail: str) -> None:
        if kind == "non-serializable-default":
            return
        super().emit_warning(kind, detail)


_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"anyOf", "allOf", "oneOf", "prefixItems"})
_SCHEMA_ONE = frozenset({"items", "additionalProperties", "additionalItems", "not", "if", "then", "else",
                         "contains", "propertyNames", "unevaluatedItems", "unevaluatedProperties"})


def _strip_titles(schema: Any) -> Any:
    """Drop pydantic's generated ``title`` keys (noise for an LLM), keeping data such as defaults intact."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _strip_titles(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_strip_titles(sub) for sub in value]
        elif key in _SCHEMA_ONE:
            out[key] = [_strip_titles(sub) for sub in value] if isinstance(value, list) else _strip_titles(value)
        else:
            out[key] = value
    return out


# -- call helpers ---------------------------------------------------------------------


def _describe_errors(exc: ValidationError, params: tuple[_Param, ...]) -> list[str]:
    known = [p.name for p in params if p.field is not None]
    out: list[str] = []
    for error in exc.errors(include_url=False):
        where = _format_loc(error["loc"])
        if error["type"] == "missing":
            out.append(f"{where}: Field required")
        elif error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
            expected = ", ".join(known) if known else "none; this tool takes no arguments"
            out.append(f"{where}: unknown argument (expected one of: {expected})")
        else:
            out.append(f"{where}: {error['msg']} (got {_short_repr(error['input'])})")
    return out


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "arguments"


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


TOOL_OPTIONS = "__wippy_tool__"


def tool(*, timeout: float | None = None, llm_alias: str | None = None) -> Callable[[F], F]:
    """Options for a tool function in `tools/`: its call timeout in seconds, the name models see it by.

    ```python
    @tool(timeout=120, llm_alias="search")
    def search_the_web(query: str) -> list[str]: ...
    ```
    """
    if timeout is not None and timeout <= 0:
        raise ValueError("a tool's timeout is a positive number of seconds")

    def mark(fn: F) -> F:
        setattr(fn, TOOL_OPTIONS, {"timeout": timeout, "llm_alias": llm_alias})
        return fn

    return mark
