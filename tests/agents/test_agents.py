"""Agents as supervised conversation processes, driven by scripted models on a real app folder.

One test speaks to an agent spawned by its registry id in the conversation process's own
message protocol (`agents._turn.AskRequest`): a spawned agent has no public handle yet.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from wippy_agents import App, process
from wippy_agents.agents import AgentError, Delegated, TextDelta, ToolFinished, ToolStarted, TurnDone, UsageReport
from wippy_agents.agents._turn import AskRequest
from wippy_agents.llm import Response, ToolCall, ToolResultMessage, Usage, UserMessage
from wippy_agents.testing import FunctionModel, ModelRequest, ScriptedModel, wait_until, write_file

AGENTS = """
namespace: app
entries:
  - name: model
    kind: model
    provider: offline
    model: wippy-offline
    pricing: {input: 1000000, output: 1000000}
  - name: assistant
    kind: agent
    meta: {title: Assistant}
    prompt: prompts:assistant
    model: app:model
    tools: ["tools.*:*"]
    delegates: [app:helper]
    vars: {name: Ada}
    max_steps: 3
  - name: helper
    kind: agent
    model: app:model
    delegates: [app:assistant]
"""

CALC = '''
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First.
        b: Second.
    """
    return a + b


def explode(reason: str) -> str:
    """Always fails.

    Args:
        reason: Why.
    """
    raise RuntimeError(reason)


'''


def call(name: str, call_id: str = "c1", **arguments: Any) -> Response:
    return Response(tool_calls=(ToolCall(id=call_id, name=name, arguments=arguments),), finish_reason="tool_calls",
                    usage=Usage(input_tokens=10, output_tokens=2))


@pytest.fixture
def app(tmp_path: Path) -> Path:
    write_file(tmp_path, "registry/app/_index.yaml", AGENTS)
    write_file(tmp_path, "prompts/assistant.md", "You help {{ name }}. Context: {{ context.topic }}")
    write_file(tmp_path, "tools/calc.py", CALC)
    return tmp_path




async def test_a_turn_with_a_tool_call_round_trip(app: Path) -> None:
    model = ScriptedModel([call("tools_calc_add", a=2, b=3), Response(text="2 + 3 = 5", usage=Usage(output_tokens=4))])
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = model
        conv = await wippy.conversation("app:assistant")
        answer = await conv.ask("What is 2 + 3?", context={"topic": "sums"})
    assert answer.text == "2 + 3 = 5" and answer.steps == 2 and answer.agent == "app:assistant"
    assert answer.usage == Usage(input_tokens=10, output_tokens=6)
    first, second = model.requests
    assert first.messages[0].content == "You help Ada. Context: sums"  # type: ignore[union-attr]
    assert [t.name for t in first.tools] == ["tools_calc_add", "tools_calc_explode", "delegate_app_helper"]
    result = second.messages[-1]
    assert isinstance(result, ToolResultMessage) and (result.content, result.is_error) == ("5", False)


async def test_stream_yields_text_tool_and_usage_events_then_the_answer(app: Path) -> None:
    model = ScriptedModel([call("tools_calc_add", a=1, b=1), "It is 2."])
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = model
        conv = await wippy.conversation("app:assistant")
        events = [event async for event in conv.stream("1 + 1?")]
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "TurnStarted" and kinds[-1] == "TurnDone"
    started = next(e for e in events if isinstance(e, ToolStarted))
    finished = next(e for e in events if isinstance(e, ToolFinished))
    assert (started.tool, started.arguments) == ("tools.calc:add", {"a": 1, "b": 1})
    assert (finished.tool, finished.result, finished.is_error) == ("tools.calc:add", "2", False)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "It is 2."
    assert sum(isinstance(e, UsageReport) for e in events) == 2


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (call("tools_calc_explode", reason="boom"), "error: the tool raised RuntimeError: boom"),
        (call("tools_calc_add", a="two", b=3), "error: invalid arguments for tool 'add': a:"),
        (call("tools_calc_add", a=1), "b: Field required"),
        (call("tools_calc_nope"), "there is no tool named 'tools_calc_nope'"),
    ],
)
async def test_tool_errors_go_back_to_the_model_and_never_crash_the_agent(
    app: Path, response: Response, expected: str
) -> None:
    model = ScriptedModel([response, "I see the error."])
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = model
        conv = await wippy.conversation("app:assistant")
        answer = await conv.ask("try it")
    assert answer.text == "I see the error."
    result = model.requests[1].messages[-1]
    assert isinstance(result, ToolResultMessage) and result.is_error and expected in result.content


async def test_max_steps_stops_the_turn_and_says_why(app: Path) -> None:
    model = ScriptedModel([call("tools_calc_add", f"c{i}", a=i, b=i) for i in range(3)])
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = model
        answer = await (await wippy.conversation("app:assistant")).ask("loop forever")
    assert answer.stopped == "max_steps" and answer.steps == 3
    assert "stopped after 3 steps" in answer.text and "max_steps is 3" in answer.text


async def test_history_survives_between_turns_and_a_reattach(app: Path) -> None:
    def echo_history(request: ModelRequest) -> str:
        return " | ".join(m.content for m in request.messages if isinstance(m, UserMessage))

    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(echo_history)
        conv = await wippy.conversation("app:assistant")
        await conv.ask("first")
        conversation_id = conv.id
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(echo_history)
        again = await wippy.conversation("app:assistant", id=conversation_id)
        assert (await again.ask("second")).text == "first | second"


async def test_hot_reload_of_a_prompt_and_a_dropped_tool_between_two_turns(app: Path) -> None:
    model = ScriptedModel(["one", "two"])
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = model
        conv = await wippy.conversation("app:assistant")
        await conv.ask("turn one")
        write_file(app, "prompts/assistant.md", "You now help {{ name }} differently.")
        write_file(app, "tools/weather.py", '''
def forecast(city: str) -> str:
    """Weather for a city.

    Args:
        city: The city.
    """
    return "sunny"
''')
        await wait_until(lambda: "tools.weather:forecast" in wippy.registry
                    and "differently" in wippy.registry.get("prompts:assistant").data["template"])
        await conv.ask("turn two")
    first, second = model.requests
    assert "tools_weather_forecast" not in [t.name for t in first.tools]
    assert "tools_weather_forecast" in [t.name for t in second.tools]
    assert second.messages[0].content == "You now help Ada differently."  # type: ignore[union-attr]


async def test_delegation_answers_through_the_delegate_and_rolls_up_usage(app: Path) -> None:
    def by_agent(request: ModelRequest) -> Response | str:
        last = request.messages[-1]
        if isinstance(last, UserMessage) and last.content == "ask the helper":
            return call("delegate_app_helper", message="what is the answer?")
        if isinstance(last, UserMessage):
            return Response(text="42", usage=Usage(input_tokens=5, output_tokens=1))
        return Response(text=f"helper says {last.content}", usage=Usage(output_tokens=3))  # type: ignore[union-attr]

    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(by_agent)
        conv = await wippy.conversation("app:assistant")
        events = [event async for event in conv.stream("ask the helper")]
    answer = events[-1].answer  # type: ignore[union-attr]
    assert answer.text == "helper says 42"
    assert answer.usage == Usage(input_tokens=15, output_tokens=6)  # parent 10+0 / 2+3, delegate 5 / 1
    nested = [e for e in events if isinstance(e, Delegated)]
    assert nested and all(e.agent == "app:helper" for e in nested)
    assert isinstance(nested[-1].event, TurnDone)


async def test_a_delegation_cycle_is_refused_with_a_clear_tool_error(app: Path) -> None:
    def loop(request: ModelRequest) -> Response | str:
        last = request.messages[-1]
        if isinstance(last, ToolResultMessage):
            return f"got: {last.content}"
        target = "delegate_app_helper" if request.tools[-1].name == "delegate_app_helper" else "delegate_app_assistant"
        return call(target, message="again")

    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(loop)
        answer = await (await wippy.conversation("app:assistant")).ask("start")
    assert "refused: asking app:assistant would be a cycle (app:assistant -> app:helper -> app:assistant)" in answer.text


async def test_a_failing_delegate_is_a_tool_error_for_the_parent(app: Path) -> None:
    def flaky(request: ModelRequest) -> Response | str:
        last = request.messages[-1]
        if isinstance(last, UserMessage) and last.content == "go":
            return call("delegate_app_helper", message="fail please")
        if isinstance(last, UserMessage):
            raise ZeroDivisionError("provider bug")
        return f"parent saw: {getattr(last, 'content', '')}"

    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(flaky)
        answer = await (await wippy.conversation("app:assistant")).ask("go")
    assert answer.text == ("parent saw: error: the delegate app:helper failed: "
                           "StepError: step 'model:1' failed: ZeroDivisionError: provider bug")


async def test_a_failing_turn_touches_only_its_conversation_whose_history_goes_on(app: Path) -> None:
    state = {"fail": False}

    def model_fn(request: ModelRequest) -> str:
        if state["fail"]:
            state["fail"] = False
            raise ZeroDivisionError("boom")
        return " | ".join(m.content for m in request.messages if isinstance(m, UserMessage))

    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(model_fn)
        one = await wippy.conversation("app:assistant")
        other = await wippy.conversation("app:assistant")
        await one.ask("a")
        await other.ask("x")
        state["fail"] = True
        with pytest.raises(AgentError, match="ZeroDivisionError: boom"):
            await one.ask("b")
        assert (await other.ask("y")).text == "x | y"
        assert (await one.ask("c")).text == "a | c"  # the failed turn is not in the history


async def test_a_killed_conversation_process_is_restarted_with_its_history(app: Path) -> None:
    def echo(request: ModelRequest) -> str:
        return " | ".join(m.content for m in request.messages if isinstance(m, UserMessage))

    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(echo)
        conv = await wippy.conversation("app:assistant")
        await conv.ask("before")
        old = wippy.node.whereis(f"conversation:{conv.id}")
        assert old is not None
        wippy.node.exit(None, old, "kill")
        await wait_until(lambda: wippy.node.whereis(f"conversation:{conv.id}") not in (None, old))
        [info] = [p for p in wippy.processes() if p.name == f"conversation:{conv.id}"]
        assert info.pid != old and info.restarts == 1
        assert (await conv.ask("after")).text == "before | after"


async def test_a_turn_whose_task_process_is_killed_resumes_without_repeating_steps(app: Path) -> None:
    gate = asyncio.Event()
    calls: list[str] = []

    async def model_fn(request: ModelRequest) -> Response | str:
        last = request.messages[-1]
        if isinstance(last, UserMessage):
            calls.append("first")
            return call("tools_calc_add", a=20, b=22)
        calls.append("second")
        await gate.wait()  # the task is killed here, mid-step
        return f"sum is {last.content}"  # type: ignore[union-attr]

    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(model_fn)
        conv = await wippy.conversation("app:assistant")
        asking = asyncio.ensure_future(conv.ask("add them"))
        await wait_until(lambda: calls == ["first", "second"])
        [task] = [p.pid for p in wippy.processes() if p.name and p.name.startswith("task:turn:")]
        wippy.node.exit(None, task, "kill")
        gate.set()
        answer = await asking
    assert answer.text == "sum is 42"
    assert calls == ["first", "second", "second"]  # the first model call and the tool were not repeated


async def test_model_errors_fail_the_turn_and_keep_the_conversation(app: Path) -> None:
    async with App(root=app) as wippy:
        wippy.registry.apply([wippy.registry.get("app:model").__class__(
            "app:model", "model", {}, {"provider": "openai", "model": "gpt", "api_key_env": "WIPPY_TEST_NO_KEY"})],
            author="test")
        conv = await wippy.conversation("app:assistant")
        with pytest.raises(AgentError, match="set the environment variable WIPPY_TEST_NO_KEY"):
            await conv.ask("hello")
        wippy.agents.model_overrides["*"] = ScriptedModel(["fine now"])
        assert (await conv.ask("again")).text == "fine now"


async def test_unknown_agent_and_non_agent_are_clear_errors(app: Path) -> None:
    async with App(root=app) as wippy:
        with pytest.raises(AgentError, match="no agent 'app:asistant'.*did you mean 'app:assistant'\\?$"):
            await wippy.conversation("app:asistant")
        with pytest.raises(AgentError, match="app:model is a model, not an agent"):
            await wippy.conversation("app:model")


async def test_spawn_by_agent_id_starts_a_conversation_process(app: Path) -> None:
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = ScriptedModel(["hi from a spawned agent"])

        async def main() -> Any:
            pid = process.spawn("app:assistant")
            process.send(pid, "agent.ask", AskRequest("hello", process.self(), {}, ()))
            while True:
                msg = await process.receive("agent.event", timeout=10)
                if isinstance(msg.payload, TurnDone):
                    return msg.payload.answer.text

        assert await wippy.run(main) == "hi from a spawned agent"


async def test_tool_timeout_is_reported_to_the_model(app: Path) -> None:
    write_file(app, "tools/slow.py", '''
import asyncio

from wippy_agents.tools import tool


@tool(timeout=0.01, llm_alias="nap")
async def sleepy() -> str:
    """Sleeps far longer than its timeout."""
    await asyncio.sleep(3600)
    return "never"
''')
    model = ScriptedModel([call("nap"), "gave up"])
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = model
        assert wippy.registry.spec("tools.slow:sleepy").timeout == 0.01  # type: ignore[attr-defined]
        await (await wippy.conversation("app:assistant")).ask("be slow")
    result = model.requests[1].messages[-1]
    assert isinstance(result, ToolResultMessage) and "did not finish within 0.01s" in result.content


async def test_two_tools_offered_under_one_name_are_refused_at_commit(app: Path) -> None:
    async with App(root=app) as wippy:
        write_file(app, "tools/copy.py", '''
from wippy_agents.tools import tool


@tool(llm_alias="tools_calc_add")
def plus(a: int, b: int) -> int:
    """Also adds.

    Args:
        a: First.
        b: Second.
    """
    return a + b
''')
        await wait_until(lambda: "tools/copy.py" in wippy.registry.problems)
        [problem] = wippy.registry.problems["tools/copy.py"]
        assert "tools.copy:plus" not in wippy.registry
    assert problem.entry == "app:assistant" and problem.field == "tools"
    assert "tools.calc:add and tools.copy:plus would both be offered to the model as 'tools_calc_add'" in problem.message


async def test_a_subscribed_process_sees_every_turn_of_the_conversation(app: Path) -> None:
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = ScriptedModel(["first answer", "second answer"])
        conv = await wippy.conversation("app:assistant")

        async def watcher() -> list[str]:
            await conv.subscribe()
            process.send("tester", "subscribed")
            answers = []
            while len(answers) < 2:
                event = (await process.receive("agent.event", timeout=10)).payload
                if isinstance(event, TurnDone):
                    answers.append(event.answer.text)
            return answers

        async def main() -> list[str]:
            process.register("tester")
            pid, _ = process.spawn_monitor(watcher)
            await process.receive("subscribed", timeout=10)
            await conv.ask("one")
            await conv.ask("two")
            down = await process.receive(process.DOWN, timeout=10)
            assert down.payload.pid == pid and down.payload.reason == "normal"  # it saw both answers
            return ["ok"]

        assert await wippy.run(main) == ["ok"]
