"""Python functions as tools: a JSON schema from the signature and docstring, validated calls.

An LLM calls a tool by naming it and sending a JSON object of arguments. This package
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
(`wippy_agents.sandbox`), not through this package.
"""

from ._errors import ToolArgumentsError, ToolBusy, ToolDefinitionError
from ._function import FunctionTool, ToolContext, function_tool
from ._options import tool
from ._threads import ToolThreads

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
