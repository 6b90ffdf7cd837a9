"""The model interface without a network: the offline model, settings, pricing, usage totals, loading."""

from __future__ import annotations

from typing import Any

import pytest

from wippy_agents.llm import (
    MissingAPIKeyError,
    Response,
    ResponseDone,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UsageLedger,
    UserMessage,
    cost_usd,
    default_model_spec,
    load_model,
)
from wippy_agents.llm.offline import OfflineModel
from wippy_agents.registry import ModelSpec, Pricing

ADD = ToolDefinition(name="tools_calc_add", id="tools.calc:add", description="Add two numbers.",
                     parameters={"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}})


def offline() -> OfflineModel:
    model = load_model(ModelSpec(provider="offline", model="wippy-offline"), environ={})
    assert isinstance(model, OfflineModel)
    return model


async def test_offline_model_echoes_and_says_how_to_configure_a_real_model() -> None:
    response = await offline().complete([UserMessage(content="hello there")])
    assert "offline model" in response.text and "You said: hello there" in response.text
    assert "OPENAI_API_KEY" in response.text and "ANTHROPIC_API_KEY" in response.text
    assert response.finish_reason == "stop" and response.tool_calls == ()
    assert response.usage.input_tokens == 2 and response.usage.output_tokens > 0


async def test_offline_model_calls_a_tool_by_registry_id_or_offered_name() -> None:
    for name in ("tools.calc:add", "tools_calc_add"):
        response = await offline().complete([UserMessage(content=f'/call {name} {{"a": 2, "b": 3}}')], tools=[ADD])
        assert response.finish_reason == "tool_calls"
        [call] = response.tool_calls
        assert (call.name, call.arguments) == ("tools_calc_add", {"a": 2, "b": 3})


async def test_offline_model_summarises_tool_results() -> None:
    messages = [
        UserMessage(content='/call tools.calc:add {"a": 2, "b": 3}'),
        (await offline().complete([UserMessage(content='/call tools.calc:add {"a": 2, "b": 3}')], tools=[ADD]))
        .message(),
        ToolResultMessage(tool_call_id="offline_1", name="tools_calc_add", content="5"),
    ]
    response = await offline().complete(messages, tools=[ADD])
    assert response.text == "Here is what the tools said:\n- tools_calc_add returned: 5"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("/call", "Usage: /call <tool> <json arguments>"),
        ("/call tools.calc:sub {}", "cannot call 'tools.calc:sub'"),
        ("/call tools.calc:add {a: 1}", "not valid JSON"),
        ("/call tools.calc:add [1, 2]", "must be a JSON object"),
    ],
)
async def test_offline_model_explains_a_bad_call(message: str, expected: str) -> None:
    response = await offline().complete([UserMessage(content=message)], tools=[ADD])
    assert expected in response.text and response.tool_calls == ()


async def test_offline_stream_ends_with_the_same_response_complete_returns() -> None:
    model = offline()
    messages = [UserMessage(content="stream me")]
    events = [event async for event in model.stream(messages)]
    assert all(isinstance(e, TextDelta) for e in events[:-1]) and isinstance(events[-1], ResponseDone)
    assert "".join(e.text for e in events[:-1] if isinstance(e, TextDelta)) == events[-1].response.text
    assert events[-1].response == await model.complete(messages)
    tool_events = [e async for e in model.stream([UserMessage(content='/call tools_calc_add {"a": 1}')], [ADD])]
    assert [type(e) for e in tool_events] == [ToolCallStart, ToolCallDelta, ResponseDone]


def test_cost_prices_fresh_cached_and_output_tokens_per_million() -> None:
    pricing = Pricing(input=2.0, output=8.0, cached=0.5)
    usage = Usage(input_tokens=1_000_000, cached_tokens=400_000, output_tokens=100_000)
    assert cost_usd(usage, pricing) == pytest.approx(0.6 * 2.0 + 0.4 * 0.5 + 0.1 * 8.0)
    assert cost_usd(usage, Pricing(input=2.0, output=8.0)) == pytest.approx(2.0 + 0.8)  # no cached price: full
    assert cost_usd(usage, None) == 0.0


async def test_responses_are_priced_from_the_entry() -> None:
    model = load_model(ModelSpec(provider="offline", model="m", pricing=Pricing(input=1e6, output=1e6)), environ={})
    response = await model.complete([UserMessage(content="one two three")])
    assert response.cost_usd == pytest.approx(response.usage.input_tokens + response.usage.output_tokens)


def test_ledger_totals_by_agent_and_task() -> None:
    ledger = UsageLedger()
    for agent, task, tokens, cost in (("a", "t1", 10, 0.1), ("a", "t2", 20, 0.2), ("b", "t1", 5, 0.05)):
        ledger.record(Response(usage=Usage(input_tokens=tokens), cost_usd=cost), agent=agent, task=task)
    assert ledger.totals(agent="a").usage.input_tokens == 30 and ledger.totals(agent="a").calls == 2
    assert ledger.totals(task="t1").cost_usd == pytest.approx(0.15)
    assert ledger.totals().usage.input_tokens == 35


@pytest.mark.parametrize("field", ["max_output_tokens", "max_tokens"])
def test_a_model_entry_s_output_limit_is_max_output_tokens_or_its_older_name(field: str) -> None:
    spec = ModelSpec.model_validate({"provider": "offline", "model": "m", field: 300})
    assert spec.max_output_tokens == 300
    assert load_model(spec, environ={}).settings.max_tokens == 300


async def test_entry_settings_are_defaults_the_caller_can_override() -> None:
    seen: list[Any] = []

    class Recording(OfflineModel):
        async def _complete(self, messages: Any, tools: Any, settings: Any) -> Response:
            seen.append(settings)
            return Response(text="ok")

    model = Recording("m", settings=load_model(ModelSpec(provider="offline", model="m", max_tokens=100,
                                                         temperature=0.2), environ={}).settings)
    await model.complete([UserMessage(content="x")])
    await model.complete([UserMessage(content="x")], max_tokens=5)
    assert [(s.max_tokens, s.temperature) for s in seen] == [(100, 0.2), (5, 0.2)]
    with pytest.raises(TypeError, match="unknown model setting.*top_k"):
        await model.complete([UserMessage(content="x")], top_k=3)


@pytest.mark.parametrize(
    ("provider", "variable"), [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")]
)
def test_a_missing_key_says_which_variable_to_set(provider: Any, variable: str) -> None:
    with pytest.raises(MissingAPIKeyError, match=f"set the environment variable {variable}.*app:gpt"):
        load_model(ModelSpec(provider=provider, model="x"), entry_id="app:gpt", environ={})
    with pytest.raises(MissingAPIKeyError, match="MY_KEY"):
        load_model(ModelSpec(provider=provider, model="x", api_key_env="MY_KEY"), environ={variable: "k"})


def test_openai_compatible_needs_a_base_url_but_no_key() -> None:
    with pytest.raises(MissingAPIKeyError, match="base_url"):
        load_model(ModelSpec(provider="openai-compatible", model="llama3"), environ={})
    model = load_model(ModelSpec(provider="openai-compatible", model="llama3", base_url="http://127.0.0.1:1/v1"),
                       environ={})
    assert model.provider == "openai-compatible"


def test_an_entry_without_a_timeout_gives_each_call_the_default_deadline_its_description_names() -> None:
    assert load_model(ModelSpec(provider="offline", model="m"), environ={}).timeout == 600
    assert load_model(ModelSpec(provider="offline", model="m", timeout=7), environ={}).timeout == 7
    description = ModelSpec.model_fields["timeout"].description or ""
    assert "600 when unset" in description


def test_default_model_is_offline_without_keys() -> None:
    assert default_model_spec({}).provider == "offline"
    assert default_model_spec({"OPENAI_API_KEY": "k"}).provider == "openai"
    assert default_model_spec({"ANTHROPIC_API_KEY": "k"}).provider == "anthropic"


def test_tool_call_survives_a_json_round_trip() -> None:
    response = Response(text="let me add", tool_calls=(ToolCall(id="c1", name="add", arguments={"a": 1}),),
                        finish_reason="tool_calls", usage=Usage(input_tokens=3))
    assert Response.model_validate_json(response.model_dump_json()) == response
