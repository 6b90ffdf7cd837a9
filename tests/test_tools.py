"""wippy_agents.tools: a documented Python function becomes a tool with a JSON schema and validated calls."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import importlib.util
import logging
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from wippy_agents.tools import FunctionTool, ToolArgumentsError, ToolContext, ToolDefinitionError, function_tool


def load_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> ModuleType:
    """Import `source` as module `name`, the way the registry loads a file from tools/."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


# -- schema -------------------------------------------------------------------------


def add(a: int, b: int = 2) -> int:
    """Add two integers.

    Use it for exact integer arithmetic.

    Args:
        a: The first addend.
        b: The second addend.

    Returns:
        The sum.
    """
    return a + b


def test_google_docstring_gives_name_description_and_exact_schema() -> None:
    tool = function_tool(add)
    assert isinstance(tool, FunctionTool)
    assert tool.name == "add"
    assert tool.fn is add
    assert tool.description == "Add two integers.\n\nUse it for exact integer arithmetic."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "description": "The first addend."},
            "b": {"type": "integer", "description": "The second addend.", "default": 2},
        },
        "required": ["a"],
        "additionalProperties": False,
    }


def test_numpy_and_rest_docstrings_describe_the_parameters_too() -> None:
    def numpy_style(city: str, days: int = 3) -> str:
        """Weather forecast.

        Parameters
        ----------
        city : str
            The city's name.
        days : int
            Days ahead.

        Returns
        -------
        str
        """
        return city

    def rest_style(city: str, days: int = 3) -> str:
        """Weather forecast.

        :param city: The city's name.
        :param days: Days ahead.
        :returns: the forecast
        """
        return city

    for fn in (numpy_style, rest_style):
        tool = function_tool(fn)
        assert tool.description == "Weather forecast."
        props = tool.parameters["properties"]
        assert props["city"] == {"type": "string", "description": "The city's name."}
        assert props["days"] == {"type": "integer", "description": "Days ahead.", "default": 3}
        assert tool.parameters["required"] == ["city"]


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Place(BaseModel):
    name: str
    title: str = ""  # a field called "title" survives title stripping


@dataclasses.dataclass
class Window:
    start: datetime.date
    days: int = 1


def test_optional_literal_enum_nested_models_and_constraints() -> None:
    def forecast(place: Place, window: Window, unit: Unit = Unit.CELSIUS,
                 detail: Literal["brief", "full"] = "brief", note: str | None = None,
                 tags: list[str] | None = None,
                 count: Annotated[int, Field(ge=1, le=10, description="How many.")] = 1) -> None:
        """Forecast.

        Args:
            count: Overridden by the Field description.
        """

    schema = function_tool(forecast).parameters
    assert schema["required"] == ["place", "window"]
    props = schema["properties"]
    assert props["place"] == {"$ref": "#/$defs/Place"}
    assert props["window"] == {"$ref": "#/$defs/Window"}
    assert props["unit"] == {"$ref": "#/$defs/Unit", "default": "celsius"}
    assert props["detail"] == {"enum": ["brief", "full"], "type": "string", "default": "brief"}
    assert props["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert props["tags"] == {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                             "default": None}
    assert props["count"] == {"type": "integer", "minimum": 1, "maximum": 10, "description": "How many.",
                              "default": 1}
    assert schema["$defs"] == {
        "Place": {"type": "object", "properties": {"name": {"type": "string"},
                                                   "title": {"type": "string", "default": ""}},
                  "required": ["name"]},
        # a stdlib dataclass takes the arguments' config: unknown fields are refused there too
        "Window": {"type": "object", "properties": {"start": {"type": "string", "format": "date"},
                                                    "days": {"type": "integer", "default": 1}},
                   "required": ["start"], "additionalProperties": False},
        "Unit": {"enum": ["celsius", "fahrenheit"], "type": "string"},
    }
    assert "title" not in str({k: v for k, v in props.items()})


async def test_nested_and_constrained_arguments_are_validated_into_python_objects() -> None:
    seen: dict[str, Any] = {}

    def forecast(place: Place, window: Window, unit: Unit = Unit.CELSIUS,
                 count: Annotated[int, Field(ge=1)] = 1) -> None:
        """Forecast."""
        seen.update(place=place, window=window, unit=unit, count=count)

    tool = function_tool(forecast)
    await tool.call({"place": {"name": "Lisbon"}, "window": {"start": "2025-01-02"}, "unit": "fahrenheit"})
    assert seen == {"place": Place(name="Lisbon"), "window": Window(datetime.date(2025, 1, 2)),
                    "unit": Unit.FAHRENHEIT, "count": 1}
    with pytest.raises(ToolArgumentsError, match=r"count: Input should be greater than or equal to 1 \(got 0\)"):
        await tool.call({"place": {"name": "x"}, "window": {"start": "2025-01-02"}, "count": 0})


async def test_a_module_with_future_annotations_gives_the_same_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_module(tmp_path, monkeypatch, "wippy_test_tools_future", """
        from __future__ import annotations
        import dataclasses
        from typing import TYPE_CHECKING

        from wippy_agents.tools import ToolContext

        if TYPE_CHECKING:
            from decimal import Decimal

        @dataclasses.dataclass
        class Reading:
            city: str
            celsius: float

        def forecast(reading: Reading, ctx: ToolContext, days: int | None = None) -> Decimal:
            '''Echo a reading.

            Args:
                reading: A reading.
                days: Days ahead.
            '''
            return {"city": reading.city, "agent": ctx.agent_id, "days": days}

        def broken(when: Decimal) -> None:
            '''Uses a type that exists only for type checkers.'''
    """)
    tool = function_tool(module.forecast)  # the unresolvable return hint does not matter
    assert tool.parameters["required"] == ["reading"]
    assert set(tool.parameters["properties"]) == {"reading", "days"}
    assert tool.parameters["properties"]["days"]["description"] == "Days ahead."
    assert tool.parameters["$defs"]["Reading"]["properties"]["celsius"] == {"type": "number"}
    result = await tool.call({"reading": {"city": "Oslo", "celsius": "1.5"}}, ToolContext(agent_id="app:bot"))
    assert result == {"city": "Oslo", "agent": "app:bot", "days": None}

    with pytest.raises(ToolDefinitionError) as info:
        function_tool(module.broken)
    assert "wippy_test_tools_future.broken" in str(info.value)
    assert "'when'" in str(info.value) and "Decimal" in str(info.value)
    assert info.value.parameter == "when"


def test_parameter_names_that_clash_with_pydantic_still_work() -> None:
    def fetch(json: str, schema: int, model_config: bool = False) -> None:
        """Fetch."""

    props = function_tool(fetch).parameters["properties"]
    assert list(props) == ["json", "schema", "model_config"]


def test_a_tool_without_parameters_takes_an_empty_object() -> None:
    def now() -> str:
        """The current time."""
        return "noon"

    assert function_tool(now).parameters == {"type": "object", "properties": {}, "required": [],
                                             "additionalProperties": False}


# -- context ------------------------------------------------------------------------


async def test_context_parameter_is_hidden_from_schema_and_injected() -> None:
    received: list[ToolContext] = []

    def search(query: str, ctx: ToolContext, limit: int = 5) -> list[str]:
        """Search.

        Args:
            query: What to look for.
        """
        received.append(ctx)
        return [query] * limit

    tool = function_tool(search)
    assert list(tool.parameters["properties"]) == ["query", "limit"]
    assert tool.parameters["required"] == ["query"]

    context = ToolContext(agent_id="app:assistant", task_id="t1", call_id="c1", logger=logging.getLogger("x"))
    assert await tool.call({"query": "q", "limit": 1}, context) == ["q"]
    assert received[-1] is context

    await tool.call({"query": "q"})  # no context given: ids are None, a logger named after the tool
    assert received[-1].agent_id is None and received[-1].task_id is None
    assert received[-1].logger.name == "wippy_agents.tools.search"


async def test_optional_context_and_context_argument_is_not_accepted_from_the_llm() -> None:
    def whoami(ctx: ToolContext | None = None) -> str | None:
        """Who is calling."""
        return ctx.agent_id if ctx else "nobody"

    tool = function_tool(whoami)
    assert tool.parameters["properties"] == {}
    assert await tool.call({}, ToolContext(agent_id="a")) == "a"
    with pytest.raises(ToolArgumentsError, match="ctx: unknown argument"):
        await tool.call({"ctx": {"agent_id": "spoofed"}})


# -- running ------------------------------------------------------------------------


async def test_sync_tools_run_in_a_thread_async_tools_on_the_loop() -> None:
    loop_thread = threading.get_ident()

    def blocking() -> int:
        """Blocking work."""
        return threading.get_ident()

    async def nonblocking() -> int:
        """Async work."""
        await asyncio.sleep(0)
        return threading.get_ident()

    assert await function_tool(blocking).call({}) != loop_thread
    assert await function_tool(nonblocking).call({}) == loop_thread


async def test_positional_only_and_keyword_only_parameters_get_their_arguments() -> None:
    def scale(x: float, /, factor: float = 2.0, *, offset: float = 0.0) -> float:
        """Scale a number."""
        return x * factor + offset

    tool = function_tool(scale)
    assert tool.parameters["required"] == ["x"]
    assert await tool.call({"x": 3}) == 6.0
    assert await tool.call({"x": 3, "factor": 1, "offset": 0.5}) == 3.5


async def test_invalid_arguments_message_lists_every_bad_field() -> None:
    tool = function_tool(add)
    with pytest.raises(ToolArgumentsError) as info:
        await tool.call({"a": "x", "c": 1})
    message = str(info.value)
    assert message.startswith("invalid arguments for tool 'add': a: Input should be a valid integer")
    assert "(got 'x')" in message
    assert "c: unknown argument (expected one of: a, b)" in message
    assert info.value.tool == "add" and len(info.value.errors) == 2

    with pytest.raises(ToolArgumentsError, match=r"^invalid arguments for tool 'add': a: Field required$"):
        await tool.call({"b": 1})
    with pytest.raises(ToolArgumentsError, match="expected a JSON object"):
        await tool.call([1, 2])  # type: ignore[arg-type]


async def test_function_is_not_run_when_arguments_are_invalid() -> None:
    calls: list[int] = []

    def record(n: int) -> None:
        """Record."""
        calls.append(n)

    with pytest.raises(ToolArgumentsError):
        await function_tool(record).call({"n": [1]})
    assert calls == []


async def test_return_values_become_json() -> None:
    when = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)

    def report() -> dict[str, Any]:
        """Report."""
        return {"window": Window(datetime.date(2025, 1, 2)), "at": when, "place": Place(name="Rome"),
                "unit": Unit.CELSIUS, "pair": (1, 2)}

    assert await function_tool(report).call({}) == {
        "window": {"start": "2025-01-02", "days": 1},
        "at": "2025-01-02T03:04:05Z",
        "place": {"name": "Rome", "title": ""},
        "unit": "celsius",
        "pair": [1, 2],
    }


async def test_result_that_cannot_be_json_is_a_clear_error() -> None:
    class Opaque:
        pass

    def leak() -> object:
        """Leak an object."""
        return Opaque()

    with pytest.raises(TypeError, match=r"tool 'leak' .*returned a value of type .*Opaque that cannot be made JSON"):
        await function_tool(leak).call({})


async def test_exceptions_from_the_tool_propagate() -> None:
    async def fail() -> None:
        """Fail."""
        raise LookupError("no such city")

    with pytest.raises(LookupError, match="no such city"):
        await function_tool(fail).call({})


# -- definition errors --------------------------------------------------------------


def _definition_error(fn: Callable[..., Any]) -> ToolDefinitionError:
    with pytest.raises(ToolDefinitionError) as info:
        function_tool(fn)
    assert isinstance(info.value, ValueError)
    return info.value


def test_missing_type_hint_names_function_and_parameter() -> None:
    def untyped(city: str, days) -> str:  # type: ignore[no-untyped-def]
        """Forecast."""
        return city

    error = _definition_error(untyped)
    assert f"{__name__}.test_missing_type_hint_names_function_and_parameter.<locals>.untyped" in str(error)
    assert "parameter 'days'" in str(error) and "type hint" in str(error)
    assert error.parameter == "days"


def test_variadic_parameters_are_refused() -> None:
    def star_args(*cities: str) -> None:
        """Forecast."""

    def star_kwargs(city: str, **options: int) -> None:
        """Forecast."""

    assert "'*cities'" in str(_definition_error(star_args))
    assert "'**options'" in str(_definition_error(star_kwargs))
    assert "star_kwargs" in str(_definition_error(star_kwargs))


def test_missing_docstring_is_refused() -> None:
    def undocumented(city: str) -> None:
        pass

    def params_only(city: str) -> None:
        """:param city: The city."""

    assert "undocumented: it has no docstring" in str(_definition_error(undocumented))
    assert "no description" in str(_definition_error(params_only))


def test_unsupported_types_are_refused() -> None:
    class Opaque:
        pass

    def opaque(city: str, thing: Opaque) -> None:
        """Forecast."""

    def callback(city: str, then: Callable[[int], int]) -> None:
        """Forecast."""

    error = _definition_error(opaque)
    assert "opaque" in str(error) and "parameter 'thing'" in str(error) and "Opaque" in str(error)
    assert error.parameter == "thing"
    assert _definition_error(callback).parameter == "then"
