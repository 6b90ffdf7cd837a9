"""A turn's steps on its time line, read from the journal through the `chat.steps` op (what the TUI's waterfall draws).

The offline model makes the calls (`/call <tool> <json>`), so the steps are real
model calls, tool calls and a delegate's turn, journaled as any turn's are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wippy_agents import App
from wippy_agents.agents import TurnSteps
from wippy_agents.control import ControlError, Hosted
from wippy_agents.durable import TaskContext
from wippy_agents.testing import write_file

AGENTS = """
namespace: app
entries:
  - name: model
    kind: model
    provider: offline
    model: wippy-offline
    pricing: {input: 1.0, output: 2.0}
  - name: assistant
    kind: agent
    model: app:model
    delegates: [app:helper]
  - name: helper
    kind: agent
    model: app:model
    tools: ["tools.*:*"]
"""

CALC = '''
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First.
        b: Second.
    """
    return a + b
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    write_file(tmp_path, "registry/app/_index.yaml", AGENTS)
    write_file(tmp_path, "tools/calc.py", CALC)
    return tmp_path


async def test_a_delegates_steps_nest_under_the_call_that_asked_it_and_a_failed_tool_call_is_marked(app: Path) -> None:
    inner = '/call tools.calc:add {"a": 1, "b": "x"}'  # the helper calls add with a bad argument
    async with App(root=app) as wippy:
        conversation = await wippy.conversation("app:assistant")
        answer = await conversation.ask(f"/call app:helper {json.dumps({'message': inner})}")
        [turn] = [info for info in wippy.tasks.list() if info.id.startswith("turn:")]
        steps = TurnSteps.model_validate(await Hosted(wippy).request("chat.steps", task=turn.id))

    assert (steps.task, steps.agent, steps.turn, steps.status) == (turn.id, "app:assistant", 1, "completed")
    shown = [(depth, span.name, span.kind, span.label, span.ok) for depth, span in steps.spans()]
    call = steps.steps[1].name
    assert shown == [
        (0, "model:1", "model", "wippy-offline", True),
        (0, call, "delegate", "app:helper", True),
        (1, "model:1", "model", "wippy-offline", True),
        (1, steps.steps[1].steps[1].name, "tool", "tools.calc:add", False),
        (1, "model:2", "model", "wippy-offline", True),
        (0, "model:2", "model", "wippy-offline", True),
    ]
    failed = steps.steps[1].steps[1]
    assert failed.error is not None and "invalid arguments for tool 'add'" in failed.error
    delegate = steps.steps[1]
    for child in delegate.steps:  # the delegate's steps on the parent's time line, inside the call that asked
        assert delegate.offset <= child.offset and child.offset + child.seconds <= delegate.offset + delegate.seconds
    models = [span for _, span in steps.spans() if span.kind == "model"]
    assert all(span.usage is not None and span.usage.total_tokens > 0 for span in models)
    assert all(span.usage is None and span.cost_usd is None for _, span in steps.spans() if span.kind != "model")
    assert steps.usage == answer.usage and steps.cost_usd == pytest.approx(answer.cost_usd)
    assert steps.seconds == max(span.offset + span.seconds for _, span in steps.spans())


async def test_the_steps_of_a_task_that_is_no_turn_or_no_task_are_refused_with_why(app: Path) -> None:
    async def report(ctx: TaskContext) -> str:
        return "done"

    async with App(root=app) as wippy:
        wippy.tasks.register("app:report", report)
        task = await wippy.tasks.start("app:report")
        await wippy.tasks.result(task)
        ops = Hosted(wippy)
        with pytest.raises(ControlError, match=f"task {task} is a app:report task, not an agent turn"):
            await ops.request("chat.steps", task=task)
        with pytest.raises(ControlError, match="no task 'turn:nope'"):
            await ops.request("chat.steps", task="turn:nope")
        with pytest.raises(ControlError, match=r"chat.steps takes task"):
            await ops.request("chat.steps", id="x")
