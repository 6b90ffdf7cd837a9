"""A Python function as a tool: its schema from the signature and docstring, its calls validated and run."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args, get_origin

import docstring_parser
import pydantic
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaWarningKind

from ..errors import ArgumentError
from ._errors import ToolArgumentsError, ToolDefinitionError
from ._threads import ToolThreads

_LOGGER_PREFIX = "wippy_agents.tools"
_log = logging.getLogger(_LOGGER_PREFIX)  # made at import, like every logger of the package, so an app can filter it


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
            try:
                async with asyncio.timeout(timeout):
                    result = await self.fn(*args, **kwargs)
            except (SystemExit, KeyboardInterrupt) as error:  # a tool's failure, never the node's exit
                raise RuntimeError(f"the tool raised {type(error).__name__}: {error}") from None
        else:
            result = await self.threads.run(functools.partial(self.fn, *args, **kwargs), timeout)

        try:
            return pydantic_core.to_jsonable_python(result)
        except pydantic_core.PydanticSerializationError as exc:
            raise ArgumentError(
                f"tool {self.name!r} ({self._qualname}) returned a value of type {type(result).__qualname__} "
                f"that cannot be made JSON: {exc}") from None


def function_tool(fn: Callable[..., Any]) -> FunctionTool:
    """Describe `fn` as a tool: its name, its docstring and a JSON schema of its parameters.

    Every parameter needs a type hint (except those annotated `ToolContext`, which
    are injected), ``*args``/``**kwargs`` are refused, and the docstring must say what
    the tool does. Raises `ToolDefinitionError` otherwise.
    """
    if not callable(fn):
        raise ArgumentError(f"function_tool() needs a function, got {type(fn).__qualname__}")
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
