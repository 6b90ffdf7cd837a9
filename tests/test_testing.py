"""The test doubles shipped in `wippy_agents.testing`."""

from __future__ import annotations

import pytest

from wippy_agents.llm import (
    RealModelRequestError,
    Response,
    ResponseDone,
    TextDelta,
    ToolCall,
    UserMessage,
    load_model,
)
from wippy_agents.registry import ModelSpec
from wippy_agents.testing import FunctionModel, ModelRequest, ScriptedModel, ScriptExhausted, forbid_model_requests


async def test_scripted_model_answers_in_order_and_records_requests() -> None:
    call = ToolCall(id="c1", name="add", arguments={"a": 1})
    with ScriptedModel(["first", Response(text="second", tool_calls=(call,), finish_reason="tool_calls")]) as model:
        one = await model.complete([UserMessage(content="1")])
        two = await model.complete([UserMessage(content="2")], max_tokens=7)
    assert (one.text, two.text, two.tool_calls) == ("first", "second", (call,))
    assert [r.messages[-1].content for r in model.requests] == ["1", "2"]
    assert model.requests[1].settings.max_tokens == 7


async def test_scripted_model_fails_clearly_when_it_runs_dry_or_is_left_with_responses() -> None:
    model = ScriptedModel(["only"])
    await model.complete([UserMessage(content="a")])
    with pytest.raises(ScriptExhausted, match="ran out of responses at call 2.*'b'"):
        await model.complete([UserMessage(content="b")])
    with pytest.raises(ScriptExhausted, match="left with 1 unused response"):
        with ScriptedModel(["x", "y"]) as left_over:
            await left_over.complete([UserMessage(content="a")])


async def test_scripted_model_streams_exact_events_and_raises_scripted_errors() -> None:
    events = [TextDelta(text="He"), TextDelta(text="llo"), ResponseDone(response=Response(text="Hello"))]
    model = ScriptedModel([events, TimeoutError("scripted failure")])
    streamed = [e async for e in model.stream([UserMessage(content="hi")])]
    assert streamed[:2] == events[:2] and streamed[2].response.text == "Hello"  # type: ignore[union-attr]
    assert streamed[2].response.model == "scripted"  # type: ignore[union-attr]
    with pytest.raises(TimeoutError, match="scripted failure"):
        await model.complete([UserMessage(content="again")])


async def test_function_model_decides_each_response() -> None:
    async def reply(request: ModelRequest) -> str:
        return f"you sent {len(request.messages)} message(s)"

    model = FunctionModel(reply)
    assert (await model.complete([UserMessage(content="a"), UserMessage(content="b")])).text == "you sent 2 message(s)"
    sync = FunctionModel(lambda request: Response(text=request.messages[-1].content.upper()))  # type: ignore[union-attr]
    assert (await sync.complete([UserMessage(content="shout")])).text == "SHOUT"


async def test_forbid_model_requests_stops_real_models_but_not_test_doubles() -> None:
    real = load_model(ModelSpec(provider="openai", model="gpt"), environ={"OPENAI_API_KEY": "k"})
    with forbid_model_requests():
        with pytest.raises(RealModelRequestError, match="ScriptedModel"):
            await real.complete([UserMessage(content="hi")])
        with pytest.raises(RealModelRequestError):
            [e async for e in real.stream([UserMessage(content="hi")])]
        assert (await ScriptedModel(["fine"]).complete([UserMessage(content="hi")])).text == "fine"
