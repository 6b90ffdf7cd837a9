"""The anthropic provider against a mocked Messages API: wire format, streaming, usage, errors, retries.

The SDK sends HTTP through httpx2, so requests are intercepted by `httpx2_mock`
(respx over httpcore2); no test reaches the network.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpcore2
import httpx
import httpx2
import pytest
import respx

from wippy_agents import testing
from wippy_agents.llm import (
    AssistantMessage,
    AuthenticationError,
    BadRequestError,
    ChatMessage,
    ContextTooLongError,
    InvalidResponseError,
    MissingAPIKeyError,
    Model,
    ModelConnectionError,
    ModelError,
    ModelTimeoutError,
    RateLimitError,
    RealModelRequestError,
    Response,
    ResponseDone,
    ServerError,
    StreamEvent,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
    load_model,
)
from wippy_agents.llm.anthropic import AnthropicModel
from wippy_agents.registry import ModelSpec, Pricing

URL = "https://api.anthropic.com/v1/messages"
MODEL = "claude-sonnet-4-6"
HI = [UserMessage(content="hi")]
WEATHER = ToolDefinition(name="weather", description="Weather in a city.",
                         parameters={"type": "object", "properties": {"city": {"type": "string"}}})

Event = tuple[str, dict[str, Any]]


@pytest.fixture(autouse=True)
def _sdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads these from the process environment; keep a developer's settings out of the tests."""
    for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


KEY = "sk-ant-test-key"


def claude(**entry: Any) -> AnthropicModel:
    """The model an anthropic entry with these fields loads, its key from a fake environment."""
    model = load_model(ModelSpec(provider="anthropic", model=MODEL, **entry), environ={"ANTHROPIC_API_KEY": KEY})
    assert isinstance(model, AnthropicModel)
    return model


def sent(route: respx.Route) -> dict[str, Any]:
    """The JSON body of the last request the route answered."""
    body: dict[str, Any] = json.loads(route.calls.last.request.content)
    return body


# --- what the API answers ------------------------------------------------------------------------

def wire_usage(input_tokens: int = 10, output_tokens: int = 5, cache_read: int = 0, cache_write: int = 0
               ) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_write}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(id_: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": arguments}


def message(*content: dict[str, Any], stop_reason: str = "end_turn", **usage: int) -> httpx.Response:
    """A non-streamed Messages API answer."""
    return httpx.Response(200, json={
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": list(content),
        "stop_reason": stop_reason, "stop_sequence": None, "usage": wire_usage(**usage),
    })


def start(**usage: int) -> list[Event]:
    return [("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": wire_usage(**{"output_tokens": 1, **usage}),
    }})]


def text_block(index: int, *pieces: str) -> list[Event]:
    return content_block(index, text(""), [{"type": "text_delta", "text": piece} for piece in pieces])


def tool_block(index: int, id_: str, name: str, *fragments: str) -> list[Event]:
    deltas = [{"type": "input_json_delta", "partial_json": part} for part in ("", *fragments)]  # the API leads with ""
    return content_block(index, tool_use(id_, name, {}), deltas)


def content_block(index: int, block: dict[str, Any], deltas: list[dict[str, Any]]) -> list[Event]:
    return [
        ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}),
        *[("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas],
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def end(stop_reason: str = "end_turn", output_tokens: int = 5) -> list[Event]:
    return [
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                           "usage": {"output_tokens": output_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def sse(*parts: list[Event]) -> httpx.Response:
    """A streamed answer, framed as the API frames it: an `event:` line, a `data:` line, a blank line."""
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for part in parts for name, data in part)
    return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})


def failure(status: int, kind: str, text_: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers={"request-id": "req_1", **headers},
                          json={"type": "error", "error": {"type": kind, "message": text_}})


async def collect(model: Model, messages: Sequence[ChatMessage] = HI, **kwargs: Any) -> list[StreamEvent]:
    return [event async for event in model.stream(messages, **kwargs)]


# --- answers ------------------------------------------------------------------------------------

async def test_complete_returns_the_text_and_sends_the_key_as_a_bearer_token(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post(URL).mock(return_value=message(text("Hello"), text(" there.")))
    response = await claude().complete(HI)
    assert response == Response(text="Hello there.", finish_reason="stop", model=MODEL,
                                usage=Usage(input_tokens=10, output_tokens=5))
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "stream" not in sent(route)  # one JSON answer, not a stream


async def test_complete_keeps_text_before_parallel_tool_calls_with_their_ids(httpx2_mock: respx.Router) -> None:
    httpx2_mock.post(URL).mock(return_value=message(
        text("Let me check both."), tool_use("toolu_1", "weather", {"city": "Oslo"}),
        tool_use("toolu_2", "weather", {"city": "Rome"}), stop_reason="tool_use"))
    response = await claude().complete(HI, tools=[WEATHER])
    assert response.text == "Let me check both."
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == (ToolCall(id="toolu_1", name="weather", arguments={"city": "Oslo"}),
                                   ToolCall(id="toolu_2", name="weather", arguments={"city": "Rome"}))


async def test_stream_yields_text_and_tool_call_deltas_then_the_whole_response(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post(URL).mock(return_value=sse(
        start(input_tokens=20, cache_read=100),
        [("ping", {"type": "ping"})],
        text_block(0, "Checking", " both."),
        tool_block(1, "toolu_1", "weather", '{"city": ', '"Oslo"}'),
        tool_block(2, "toolu_2", "weather"),  # no input at all: arguments {}
        end("tool_use", output_tokens=42),
    ))
    events = await collect(claude(pricing=Pricing(input=3, output=15, cached=0.3)), tools=[WEATHER])
    assert events == [
        TextDelta(text="Checking"), TextDelta(text=" both."),
        ToolCallStart(index=0, id="toolu_1", name="weather"),
        ToolCallDelta(index=0, arguments='{"city": '), ToolCallDelta(index=0, arguments='"Oslo"}'),
        ToolCallStart(index=1, id="toolu_2", name="weather"),
        ResponseDone(response=Response(
            text="Checking both.", finish_reason="tool_calls", model=MODEL,
            tool_calls=(ToolCall(id="toolu_1", name="weather", arguments={"city": "Oslo"}),
                        ToolCall(id="toolu_2", name="weather", arguments={})),
            usage=Usage(input_tokens=120, output_tokens=42, cached_tokens=100),
            cost_usd=(20 * 3 + 100 * 0.3 + 42 * 15) / 1e6,
        )),
    ]
    assert sent(route)["stream"] is True


async def test_a_tool_input_sent_whole_at_block_start_is_passed_on_as_one_delta(httpx2_mock: respx.Router) -> None:
    httpx2_mock.post(URL).mock(return_value=sse(
        start(), content_block(0, tool_use("toolu_1", "weather", {"city": "Oslo"}), []), end("tool_use")))
    events = await collect(claude())
    assert events[:2] == [ToolCallStart(index=0, id="toolu_1", name="weather"),
                          ToolCallDelta(index=0, arguments='{"city": "Oslo"}')]
    assert isinstance(events[-1], ResponseDone)
    assert events[-1].response.tool_calls == (ToolCall(id="toolu_1", name="weather", arguments={"city": "Oslo"}),)


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("tool_use", "tool_calls"), ("max_tokens", "length"),
    ("refusal", "content_filter"),
])
async def test_stop_reasons_map_to_finish_reasons(
    httpx2_mock: respx.Router, stop_reason: str, finish_reason: str
) -> None:
    httpx2_mock.post(URL).mock(return_value=sse(start(), text_block(0, "x"), end(stop_reason)))
    events = await collect(claude())
    assert isinstance(events[-1], ResponseDone)
    assert events[-1].response.finish_reason == finish_reason


async def test_usage_counts_cache_reads_and_writes_as_input_and_prices_them(httpx2_mock: respx.Router) -> None:
    httpx2_mock.post(URL).mock(return_value=message(
        text("ok"), input_tokens=100, cache_read=800, cache_write=100, output_tokens=50))
    response = await claude(pricing=Pricing(input=3, output=15, cached=0.3)).complete(HI)
    assert response.usage == Usage(input_tokens=1000, output_tokens=50, cached_tokens=800)
    assert response.cost_usd == pytest.approx((200 * 3 + 800 * 0.3 + 50 * 15) / 1e6)


async def test_a_tool_call_cut_off_by_max_tokens_keeps_its_raw_input(httpx2_mock: respx.Router) -> None:
    httpx2_mock.post(URL).mock(return_value=sse(
        start(), text_block(0, "Sure"), tool_block(1, "toolu_1", "weather", '{"ci'), end("max_tokens")))
    done = (await collect(claude()))[-1]
    assert isinstance(done, ResponseDone)
    assert done.response.finish_reason == "length"
    assert done.response.tool_calls == (ToolCall(id="toolu_1", name="weather", arguments={"_raw_arguments": '{"ci'}),)


# --- what is sent -------------------------------------------------------------------------------

async def test_request_carries_system_merged_tool_results_tool_use_blocks_and_tools(
    httpx2_mock: respx.Router
) -> None:
    route = httpx2_mock.post(URL).mock(return_value=message(text("Both mild.")))
    conversation: list[ChatMessage] = [
        SystemMessage(content="You are terse."),
        SystemMessage(content="Use metric units."),
        UserMessage(content="Weather in Oslo and Rome?"),
        AssistantMessage(content="Checking.", tool_calls=(
            ToolCall(id="toolu_1", name="weather", arguments={"city": "Oslo"}),
            ToolCall(id="toolu_2", name="weather", arguments={"city": "Rome"}))),
        ToolResultMessage(tool_call_id="toolu_1", name="weather", content="12C"),
        ToolResultMessage(tool_call_id="toolu_2", name="weather", content="no such city", is_error=True),
        UserMessage(content="Quickly, please."),
    ]
    await claude().complete(conversation, tools=[WEATHER])
    body = sent(route)
    assert body["model"] == MODEL
    assert body["system"] == "You are terse.\n\nUse metric units."
    assert body["messages"] == [
        {"role": "user", "content": [text("Weather in Oslo and Rome?")]},
        {"role": "assistant", "content": [
            text("Checking."), tool_use("toolu_1", "weather", {"city": "Oslo"}),
            tool_use("toolu_2", "weather", {"city": "Rome"})]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12C", "is_error": False},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such city", "is_error": True},
            text("Quickly, please.")]},
    ]
    assert body["tools"] == [{"name": "weather", "description": "Weather in a city.",
                              "input_schema": WEATHER.parameters}]


async def test_an_assistant_turn_of_only_tool_calls_has_no_empty_text_block(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post(URL).mock(return_value=message(text("ok")))
    call = ToolCall(id="toolu_1", name="weather", arguments={})
    await claude().complete([UserMessage(content="go"), AssistantMessage(tool_calls=(call,)),
                             ToolResultMessage(tool_call_id="toolu_1", name="weather", content="")])
    assert sent(route)["messages"][1:] == [
        {"role": "assistant", "content": [tool_use("toolu_1", "weather", {})]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": False}]},
    ]


@pytest.mark.parametrize(("entry", "call", "expected"), [
    ({}, {}, 4096),
    ({"max_tokens": 1000}, {}, 1000),
    ({"max_tokens": 1000}, {"max_tokens": 50}, 50),
])
async def test_max_tokens_comes_from_the_call_the_entry_or_the_default(
    httpx2_mock: respx.Router, entry: dict[str, Any], call: dict[str, Any], expected: int
) -> None:
    route = httpx2_mock.post(URL).mock(return_value=message(text("ok")))
    await claude(**entry).complete(HI, **call)
    assert sent(route)["max_tokens"] == expected


async def test_temperature_is_not_sent_as_the_api_refuses_sampling_parameters(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post(URL).mock(return_value=message(text("ok")))
    await claude(temperature=0.2).complete(HI, temperature=0.5)
    assert "temperature" not in sent(route)


async def test_complete_streams_when_max_tokens_is_too_many_for_one_blocking_call(
    httpx2_mock: respx.Router
) -> None:
    route = httpx2_mock.post(URL).mock(return_value=sse(start(), text_block(0, "long"), end()))
    response = await claude(max_tokens=64_000).complete(HI)
    assert response.text == "long"
    assert sent(route)["stream"] is True


async def test_a_custom_base_url_is_honoured(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post("https://llm-proxy.example/anthropic/v1/messages").mock(return_value=message(text("ok")))
    assert (await claude(base_url="https://llm-proxy.example/anthropic").complete(HI)).text == "ok"
    assert route.call_count == 1


# --- failures -----------------------------------------------------------------------------------

FAST_RETRY = {"retry-after-ms": "1"}  # the SDK honours it, so a retry waits a millisecond


@pytest.mark.parametrize(("status", "kind", "text_", "error", "retried"), [
    (401, "authentication_error", "invalid x-api-key", AuthenticationError, False),
    (403, "permission_error", "no access to this model", AuthenticationError, False),
    (429, "rate_limit_error", "too many tokens per minute", RateLimitError, True),
    (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum", ContextTooLongError, False),
    (400, "invalid_request_error", "messages.0.content: field required", BadRequestError, False),
    (404, "not_found_error", "model: claude-nope", BadRequestError, False),
    (500, "api_error", "internal server error", ServerError, True),
    (529, "overloaded_error", "Overloaded", ServerError, True),
], ids=["401", "403", "429", "400-too-long", "400", "404", "500", "529"])
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_http_errors_become_distinct_errors_with_the_providers_message_after_the_sdks_retries(
    httpx2_mock: respx.Router, status: int, kind: str, text_: str, error: type[ModelError], retried: bool,
    streaming: bool,
) -> None:
    route = httpx2_mock.post(URL).mock(return_value=failure(status, kind, text_, **(FAST_RETRY if retried else {})))
    model = claude(max_retries=2)
    with pytest.raises(error) as raised:
        await (collect(model) if streaming else model.complete(HI))
    assert type(raised.value) is error
    assert f"{text_} (request id req_1)" in str(raised.value)
    assert (raised.value.provider, raised.value.model, raised.value.status) == ("anthropic", MODEL, status)
    assert route.call_count == (3 if retried else 1)  # 1 + max_retries, or never retried


async def test_a_rate_limit_is_retried_and_then_succeeds(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post(URL).mock(side_effect=[
        failure(429, "rate_limit_error", "slow down", **FAST_RETRY), message(text("ok"))])
    assert (await claude(max_retries=2).complete(HI)).text == "ok"
    assert route.call_count == 2


@pytest.mark.parametrize(("transport_error", "error"), [
    (httpcore2.ReadTimeout("read timed out"), ModelTimeoutError),
    (httpcore2.ConnectError("connection refused"), ModelConnectionError),
])
async def test_timeouts_and_connection_failures_become_their_own_errors(
    httpx2_mock: respx.Router, transport_error: Exception, error: type[ModelError]
) -> None:
    httpx2_mock.post(URL).mock(side_effect=transport_error)
    with pytest.raises(error, match=str(transport_error)):
        await claude(max_retries=0).complete(HI)


async def test_an_error_event_inside_the_stream_is_mapped_by_its_type(httpx2_mock: respx.Router) -> None:
    httpx2_mock.post(URL).mock(return_value=sse(
        start(), text_block(0, "Hel"),
        [("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})]))
    events: list[StreamEvent] = []
    with pytest.raises(ServerError, match="Overloaded"):
        async for event in claude().stream(HI):
            events.append(event)
    assert events == [TextDelta(text="Hel")]


async def test_a_stream_cut_short_is_a_connection_error_not_an_answer(httpx2_mock: respx.Router) -> None:
    httpx2_mock.post(URL).mock(return_value=sse(start(), text_block(0, "Hel")))
    with pytest.raises(ModelConnectionError, match="message_stop"):
        await collect(claude())


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_a_server_that_is_not_the_messages_api_is_named_with_a_hint(
    httpx2_mock: respx.Router, streaming: bool
) -> None:
    httpx2_mock.post("https://wrong.example/v1/messages").mock(
        return_value=httpx.Response(200, text="<html>welcome</html>", headers={"content-type": "text/html"}))
    model = claude(base_url="https://wrong.example")
    with pytest.raises(InvalidResponseError, match="https://wrong.example did not answer as the Messages API.*"
                                                   "<html>welcome</html>.*without /v1"):
        await (collect(model) if streaming else model.complete(HI))


async def test_aclose_closes_only_a_connection_pool_the_model_made() -> None:
    shared = httpx2.AsyncClient()
    borrowed = load_model(ModelSpec(provider="anthropic", model=MODEL), environ={"ANTHROPIC_API_KEY": KEY},
                          http_client=shared)
    await borrowed.aclose()
    assert not shared.is_closed
    await shared.aclose()
    own = claude()
    await own.aclose()
    with pytest.raises(ModelConnectionError, match="the client has been closed"):
        await own.complete(HI)


def test_a_missing_key_names_the_variable_to_set() -> None:
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY"):
        load_model(ModelSpec(provider="anthropic", model=MODEL), environ={})


async def test_forbidden_model_requests_send_nothing(httpx2_mock: respx.Router) -> None:
    model = claude()  # httpx2_mock without routes fails any request that does go out
    with testing.forbid_model_requests():
        with pytest.raises(RealModelRequestError):
            await model.complete(HI)
        with pytest.raises(RealModelRequestError):
            await collect(model)
