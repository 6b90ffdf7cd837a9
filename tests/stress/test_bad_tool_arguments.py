"""Bad input (issue 19): generated tool arguments from a model, through a real agent turn.

Whatever arguments a model sends (wrong types, missing or unknown fields, huge or invalid
text, deep nesting), a tool call ends in that call's result: an error naming the argument,
or the tool's answer. The turn finishes and the next one works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from wippy_agents import App
from wippy_agents.llm import Response, ToolCall, ToolResultMessage
from wippy_agents.sandbox import Limits
from wippy_agents.testing import ScriptedModel, write_file

from ._generated import as_valid_text, drive, hostile_text, json_values

APP = """
namespace: app
entries:
  - {name: model, kind: model, provider: offline, model: wippy-offline}
  - name: assistant
    kind: agent
    prompt: prompts:assistant
    model: app:model
    tools: ["tools.*:*", "lab:*"]
"""

RESTRICTED = """
namespace: lab
entries:
  - name: repeat
    kind: tool
    runtime: restricted
    description: Repeats a text.
    source: |
      def main(text: str, times: int) -> str:
          return text * times
"""

PYTHON = '''
def repeat(text: str, times: int) -> str:
    """Repeats a text.

    Args:
        text: What to repeat.
        times: How many times.
    """
    return text * times
'''

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")  # a failing example may be huge

TOOLS = ("tools_echo_repeat", "lab_repeat")
"""The same function twice: run by the node (a python tool) and in the sandbox (a restricted tool)."""

NOT_AN_INT = st.one_of(st.none(), st.floats().filter(lambda x: not x.is_integer()),
                       hostile_text.filter(lambda text: not text.strip().lstrip("+-").isdigit()),
                       st.lists(json_values, max_size=3), st.dictionaries(st.text(max_size=5), json_values, max_size=3))
NOT_TEXT = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.lists(json_values, max_size=3),
                     st.dictionaries(st.text(max_size=5), json_values, max_size=3))


@st.composite
def arguments(draw: st.DrawFn) -> tuple[dict[str, Any], str | None]:
    """Arguments for `repeat`, and the one argument they get wrong (None when they are valid)."""
    args: dict[str, Any] = {"text": draw(hostile_text), "times": draw(st.integers(0, 3))}
    how = draw(st.sampled_from(["valid", "wrong type", "missing", "unknown"]))
    if how == "valid":
        return args, None
    if how == "unknown":
        name = draw(hostile_text.filter(lambda text: text not in args))
        args[name] = draw(json_values)
        return args, name
    field = draw(st.sampled_from(sorted(args)))
    if how == "missing":
        del args[field]
    else:
        args[field] = draw(NOT_AN_INT if field == "times" else NOT_TEXT)
    return args, field


@pytest.fixture
def app(tmp_path: Path) -> Path:
    write_file(tmp_path, "registry/app/_index.yaml", APP)
    write_file(tmp_path, "registry/lab/_index.yaml", RESTRICTED)
    write_file(tmp_path, "prompts/assistant.md", "You help.")
    write_file(tmp_path, "tools/echo.py", PYTHON)
    return tmp_path


async def test_bad_arguments_to_a_tool_are_that_calls_error_naming_the_argument_and_the_next_turn_works(
    app: Path,
) -> None:
    async with App(root=app) as wippy:
        async def turn(example: tuple[dict[str, Any], str | None]) -> None:
            args, wrong = example
            calls = tuple(ToolCall(id=name, name=name, arguments=args) for name in TOOLS)
            model = ScriptedModel([Response(tool_calls=calls, finish_reason="tool_calls"), "done", "next"])
            wippy.agents.model_overrides["*"] = model
            conversation = await wippy.conversation("app:assistant")
            assert (await conversation.ask("go")).text == "done"
            results = [m for m in model.requests[1].messages if isinstance(m, ToolResultMessage)]
            assert [result.tool_call_id for result in results] == list(TOOLS)
            answer = as_valid_text(args["text"] * args["times"]) if wrong is None else None
            for result in results:
                if answer is None:
                    assert result.is_error and f"{as_valid_text(wrong)}: " in result.content, result.content
                elif result.tool_call_id == "lab_repeat" and len(json.dumps(answer)) > Limits().result_bytes:
                    assert result.is_error and "result size limit" in result.content, result.content
                else:
                    assert (result.is_error, result.content) == (False, answer)
            assert (await conversation.ask("and now?")).text == "next"

        await drive(arguments(), turn)
