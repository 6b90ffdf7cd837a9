"""The OpenAI provider: Chat Completions through the official SDK, mocked at the HTTP layer, plus a real local server.

The SDK sends through httpx2, so the `httpx2_mock` fixture (respx over httpcore2)
intercepts it; the openai-compatible tests run against a small server on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore2
import httpx
import pytest
import respx

from wippy_agents.llm import (
    AssistantMessage,
    AuthenticationError,
    BadRequestError,
    ChatMessage,
    ContextTooLongError,
    InvalidResponseError,
    MissingAPIKeyError,
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
    _guard,
    load_model,
)
from wippy_agents.llm.openai import OpenAIModel
from wippy_agents.registry import ModelSpec

URL = "https://api.openai.com/v1/chat/completions"
ENV = {"OPENAI_API_KEY": "sk-test"}
PRICING = {"input": 2.5, "output": 10, "cached": 1.25}
SERVED = "gpt-test-2025-01-01"  # the snapshot name a server answers with
ADD = ToolDefinition(name="add", id="tools.calc:add", description="Add two numbers.",
                     parameters={"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}})
HI = [UserMessage(content="hi")]
USAGE = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
         "prompt_tokens_details": {"cached_tokens": 400}}
PRICED = Usage(input_tokens=1000, output_tokens=100, cached_tokens=400)
COST = (600 * 2.5 + 400 * 1.25 + 100 * 10) / 1e6  # the same sum cost_usd does, so exactly equal


# -- helpers ---------------------------------------------------------------------------


def openai_model(environ: dict[str, str] = ENV, **spec: Any) -> OpenAIModel:
    """An `openai` model built the way an app builds it: from an entry, through the loader."""
    spec.setdefault("pricing", PRICING)
    model = load_model(ModelSpec(provider="openai", model="gpt-test", **spec), environ=environ)
    assert isinstance(model, OpenAIModel)
    return model


def call(id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def completion(content: str | None = "Hello!", tool_calls: list[dict[str, Any]] | None = None,
               finish: str = "stop", usage: dict[str, Any] | None = USAGE) -> dict[str, Any]:
    """A non-streaming Chat Completions body."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": SERVED,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """One streamed chunk; without a delta it is the usage-only last chunk `include_usage` adds."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": SERVED,
            "choices": choices, "usage": usage}


def text(piece: str) -> dict[str, Any]:
    return chunk({"content": piece})


def tool_delta(index: int, id: str | None = None, name: str | None = None, arguments: str = "") -> dict[str, Any]:
    wire: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id is not None:
        wire.update(id=id, type="function")
        wire["function"]["name"] = name
    return chunk({"tool_calls": [wire]})


def sse_body(*chunks: dict[str, Any]) -> bytes:
    """Server-sent events as OpenAI frames them: one `data:` line per chunk, a blank line, then `[DONE]`."""
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def sse(*chunks: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, content=sse_body(*chunks), headers={"content-type": "text/event-stream"})


def api_error(status: int, message: str, code: str | None = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})


def body_of(request: httpx.Request) -> dict[str, Any]:
    return json.loads(request.content)  # type: ignore[no-any-return]


def priced(**fields: Any) -> Response:
    """The response our model should end with: the server's model name, its usage, priced."""
    return Response(model=SERVED, usage=PRICED, cost_usd=COST, **fields)


async def collect(model: OpenAIModel, *args: Any, **settings: Any) -> list[StreamEvent]:
    return [event async for event in model.stream(*args, **settings)]


# -- answers ----------------------------------------------------------------------------


async def test_complete_returns_text_usage_and_cost(httpx2_mock: respx.Router) -> None:
    httpx2_mock.post(URL).mock(return_value=httpx.Response(200, json=completion("Hello!")))
    response = await openai_model().complete(HI)
    assert response == priced(text="Hello!", finish_reason="stop")


async def test_cached_tokens_may_be_absent(httpx2_mock: respx.Router) -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    httpx2_mock.post(URL).mock(return_value=httpx.Response(200, json=completion(usage=usage)))
    response = await openai_model().complete(HI)
    assert response.usage == Usage(input_tokens=10, output_tokens=2)
    assert response.cost_usd == pytest.approx((10 * 2.5 + 2 * 10) / 1e6)


async def test_request_maps_messages_tools_and_settings(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post(URL).mock(return_value=httpx.Response(200, json=completion()))
    conversation: list[ChatMessage] = [
        SystemMessage(content="Be brief."),
        UserMessage(content="Add 1 and 2, then 3 and 4."),
        AssistantMessage(content="Adding.", tool_calls=(ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2}),
                                                        ToolCall(id="c2", name="add", arguments={"a": 3, "b": 4}))),
        ToolResultMessage(tool_call_id="c1", name="add", content="3"),
        ToolResultMessage(tool_call_id="c2", name="add", content="b is missing", is_error=True),
        AssistantMessage(content="One worked."),
        UserMessage(content="Thanks"),
    ]
    await openai_model(max_tokens=50, temperature=0.9).complete(conversation, tools=[ADD], temperature=0.3)
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer sk-test"
    assert body_of(request) == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Add 1 and 2, then 3 and 4."},
            {"role": "assistant", "content": "Adding.", "tool_calls": [
                call("c1", "add", '{"a": 1, "b": 2}'), call("c2", "add", '{"a": 3, "b": 4}')]},
            {"role": "tool", "tool_call_id": "c1", "content": "3"},
            {"role": "tool", "tool_call_id": "c2", "content": "Error: b is missing"},
            {"role": "assistant", "content": "One worked."},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "add", "description": "Add two numbers.", "parameters": ADD.parameters}}],
        "max_completion_tokens": 50,
        "temperature": 0.3,
    }


async def test_an_assistant_turn_of_only_tool_calls_sends_null_content(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post(URL).mock(return_value=httpx.Response(200, json=completion()))
    only_calls = AssistantMessage(tool_calls=(ToolCall(id="c1", name="add"),))
    await openai_model().complete([only_calls, ToolResultMessage(tool_call_id="c1", name="add", content="0")])
    assert body_of(route.calls.last.request)["messages"][0] == {
        "role": "assistant", "content": None, "tool_calls": [call("c1", "add", "{}")]}


async def test_stream_yields_deltas_then_the_priced_response(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post(URL).mock(return_value=sse(
        chunk({"role": "assistant", "content": ""}), text("Hel"), text("lo!"), chunk({}, finish="stop"),
        chunk(usage=USAGE),
    ))
    events = await collect(openai_model(max_tokens=20), HI)
    assert events == [TextDelta(text="Hel"), TextDelta(text="lo!"),
                      ResponseDone(response=priced(text="Hello!", finish_reason="stop"))]
    sent = body_of(route.calls.last.request)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_completion_tokens"] == 20 and "max_tokens" not in sent and "tools" not in sent


async def test_stream_keeps_text_before_parallel_tool_calls(httpx2_mock: respx.Router) -> None:
    httpx2_mock.post(URL).mock(return_value=sse(
        chunk({"role": "assistant", "content": ""}), text("Let me "), text("add both."),
        tool_delta(0, "call_a", "add"), tool_delta(0, arguments='{"a": 1,'),
        tool_delta(1, "call_b", "add"), tool_delta(1, arguments='{"a": 3, "b": 4}'),
        tool_delta(0, arguments=' "b": 2}'),
        chunk({}, finish="tool_calls"), chunk(usage=USAGE),
    ))
    events = await collect(openai_model(), HI, tools=[ADD])
    calls = (ToolCall(id="call_a", name="add", arguments={"a": 1, "b": 2}),
             ToolCall(id="call_b", name="add", arguments={"a": 3, "b": 4}))
    assert events == [
        TextDelta(text="Let me "), TextDelta(text="add both."),
        ToolCallStart(index=0, id="call_a", name="add"), ToolCallDelta(index=0, arguments='{"a": 1,'),
        ToolCallStart(index=1, id="call_b", name="add"), ToolCallDelta(index=1, arguments='{"a": 3, "b": 4}'),
        ToolCallDelta(index=0, arguments=' "b": 2}'),
        ResponseDone(response=priced(text="Let me add both.", tool_calls=calls, finish_reason="tool_calls")),
    ]


async def test_complete_keeps_text_and_parallel_tool_call_ids(httpx2_mock: respx.Router) -> None:
    httpx2_mock.post(URL).mock(return_value=httpx.Response(200, json=completion(
        "Adding both.", [call("call_a", "add", '{"a": 1, "b": 2}'), call("call_b", "add", '{"a": 3, "b": 4}')],
        finish="tool_calls")))
    response = await openai_model().complete(HI, tools=[ADD])
    assert response == priced(text="Adding both.", finish_reason="tool_calls", tool_calls=(
        ToolCall(id="call_a", name="add", arguments={"a": 1, "b": 2}),
        ToolCall(id="call_b", name="add", arguments={"a": 3, "b": 4})))


@pytest.mark.parametrize(("raw", "arguments"), [
    ('{"a": 1', {"_raw_arguments": '{"a": 1'}),  # cut-off JSON
    ("[1, 2]", {"_raw_arguments": "[1, 2]"}),  # JSON, but not an object
    ('{"a": ' + "[" * 65 + "]" * 65 + "}", {"_raw_arguments": '{"a": ' + "[" * 65 + "]" * 65 + "}"}),  # too deep
    ("[" * 100_000, {"_raw_arguments": "[" * 100_000}),  # too deep for json.loads
    ("", {}),  # a tool without parameters, as some servers send it
])
async def test_arguments_that_are_not_a_json_object_are_kept_raw(
    httpx2_mock: respx.Router, raw: str, arguments: dict[str, Any]
) -> None:
    route = httpx2_mock.post(URL).mock(side_effect=[
        httpx.Response(200, json=completion(None, [call("c1", "add", raw)], "tool_calls")),
        sse(tool_delta(0, "c1", "add", raw), chunk({}, finish="tool_calls")),
        httpx.Response(200, json=completion()),
    ])
    [completed] = (await openai_model().complete(HI, tools=[ADD])).tool_calls
    *_, done = await collect(openai_model(), HI, tools=[ADD])
    assert isinstance(done, ResponseDone)
    assert completed == done.response.tool_calls[0] == ToolCall(id="c1", name="add", arguments=arguments)
    # sent back in the conversation, the model sees exactly what it wrote
    await openai_model().complete([AssistantMessage(tool_calls=(completed,))])
    assert body_of(route.calls.last.request)["messages"][0]["tool_calls"][0]["function"]["arguments"] == (raw or "{}")


async def test_stream_from_a_server_that_numbers_every_call_zero_and_says_stop(httpx2_mock: respx.Router) -> None:
    """Some local servers send each call whole at index 0, one without an id, and finish with `stop`."""
    httpx2_mock.post(URL).mock(return_value=sse(
        tool_delta(0, "x1", "add", '{"a": 1}'), tool_delta(0, "x2", "add", '{"a": 2}'),
        chunk({"tool_calls": [{"index": 1, "function": {"name": "add", "arguments": "{}"}}]}, finish="stop"),
    ))
    *_, done = await collect(openai_model(), HI, tools=[ADD])
    assert isinstance(done, ResponseDone)
    assert [(c.id, c.arguments) for c in done.response.tool_calls] == [("x1", {"a": 1}), ("x2", {"a": 2}),
                                                                        ("call_2", {})]
    assert done.response.finish_reason == "tool_calls" and done.response.usage == Usage()


@pytest.mark.parametrize(("wire", "ours"), [
    ("length", "length"), ("content_filter", "content_filter"), ("function_call", "tool_calls"), ("eos", "stop")])
async def test_each_finish_reason_on_the_wire_becomes_one_of_ours(
    httpx2_mock: respx.Router, wire: str, ours: str
) -> None:
    httpx2_mock.post(URL).mock(return_value=httpx.Response(200, json=completion(finish=wire)))
    assert (await openai_model().complete(HI)).finish_reason == ours


# -- errors and retries --------------------------------------------------------------------

FAST_RETRY = {"retry-after-ms": "1"}


@pytest.mark.parametrize(("reply", "error", "requests"), [
    (api_error(401, "Incorrect API key provided."), AuthenticationError, 1),
    (api_error(403, "Project does not have access to model gpt-test."), AuthenticationError, 1),
    (api_error(429, "Rate limit reached for gpt-test.", **FAST_RETRY), RateLimitError, 3),
    (api_error(400, "This model's maximum context length is 128000 tokens.", "context_length_exceeded"),
     ContextTooLongError, 1),
    (api_error(400, "the request exceeds the available context size, try increasing it"), ContextTooLongError, 1),
    (api_error(400, "Invalid value for 'temperature'.", "invalid_value"), BadRequestError, 1),
    (api_error(404, "The model 'gpt-test' does not exist."), BadRequestError, 1),
    (api_error(422, "Unprocessable entity."), BadRequestError, 1),
    (api_error(500, "The server had an error processing your request.", **FAST_RETRY), ServerError, 3),
])
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_status_errors_map_to_our_kinds_with_the_providers_message(
    httpx2_mock: respx.Router, reply: httpx.Response, error: type[ModelError], requests: int, streaming: bool
) -> None:
    route = httpx2_mock.post(URL).mock(return_value=reply)
    model = openai_model(max_retries=2)
    with pytest.raises(error) as raised:
        await (collect(model, HI) if streaming else model.complete(HI))
    assert type(raised.value) is error
    assert json.loads(reply.content)["error"]["message"] in str(raised.value)
    assert (raised.value.provider, raised.value.model, raised.value.status) == ("openai", "gpt-test",
                                                                               reply.status_code)
    assert route.call_count == requests  # 429 and 5xx are retried by the SDK, the rest never
    assert ("after 2 retries" in str(raised.value)) == (requests == 3)


@pytest.mark.parametrize(("failure", "error", "builtin"), [
    (httpcore2.ReadTimeout("timed out reading"), ModelTimeoutError, TimeoutError),
    (httpcore2.ConnectError("[Errno 111] Connection refused"), ModelConnectionError, ConnectionError),
])
async def test_a_timeout_or_a_failed_connection_names_the_url_and_the_low_level_cause(
    httpx2_mock: respx.Router, failure: Exception, error: type[ModelError], builtin: type[Exception]
) -> None:
    route = httpx2_mock.post(URL).mock(side_effect=failure)
    with pytest.raises(error, match=re.escape("https://api.openai.com/v1")) as raised:
        await openai_model(max_retries=0).complete(HI)
    assert str(failure) in str(raised.value)  # the low-level reason, which the SDK's own message leaves out
    assert isinstance(raised.value, builtin) and route.call_count == 1
    with pytest.raises(error):
        await collect(openai_model(max_retries=0), HI)


async def test_an_error_in_the_middle_of_a_stream_fails_it_after_the_text_so_far(httpx2_mock: respx.Router) -> None:
    httpx2_mock.post(URL).mock(return_value=sse(text("Hel"), {"error": {"message": "The server overloaded."}}))
    events: list[StreamEvent] = []
    with pytest.raises(ServerError, match="The server overloaded."):
        async for event in openai_model().stream(HI):
            events.append(event)
    assert events == [TextDelta(text="Hel")]


async def test_a_page_that_is_not_the_api_is_refused_with_a_hint_about_the_base_url(httpx2_mock: respx.Router) -> None:
    httpx2_mock.post(URL).mock(return_value=httpx.Response(200, text="<html>Welcome</html>",
                                                           headers={"content-type": "text/html"}))
    with pytest.raises(InvalidResponseError, match="did not answer as the Chat Completions API.*<html>Welcome</html>"
                                                   ".*ending in /v1"):
        await openai_model().complete(HI)


async def test_a_rate_limit_is_retried_after_the_servers_delay(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post(URL).mock(side_effect=[
        api_error(429, "Slow down.", **FAST_RETRY), httpx.Response(200, json=completion("Made it."))])
    response = await openai_model(max_retries=2).complete(HI)
    assert response.text == "Made it." and route.call_count == 2
    assert route.calls[1].request.headers["x-stainless-retry-count"] == "1"


async def test_the_entry_timeout_reaches_the_sdk(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post(URL).mock(return_value=httpx.Response(200, json=completion()))
    await openai_model(timeout=7).complete(HI)
    await openai_model().complete(HI)
    assert [c.request.headers["x-stainless-read-timeout"] for c in route.calls] == ["7.0", "600"]


# -- configuration -------------------------------------------------------------------------


def test_a_missing_key_names_openai_api_key() -> None:
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        openai_model(environ={})
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        OpenAIModel("gpt-test", base_url=None, api_key=None, timeout=None, max_retries=0, http_client=None)


async def test_base_url_from_the_environment_or_the_entry(httpx2_mock: respx.Router) -> None:
    proxy = httpx2_mock.post("https://proxy.example/v1/chat/completions").mock(
        return_value=httpx.Response(200, json=completion("via env")))
    entry = httpx2_mock.post("https://entry.example/v1/chat/completions").mock(
        return_value=httpx.Response(200, json=completion("via entry")))
    environ = {**ENV, "OPENAI_BASE_URL": "https://proxy.example/v1"}
    assert (await openai_model(environ=environ).complete(HI)).text == "via env"
    assert (await openai_model(environ=environ, base_url="https://entry.example/v1").complete(HI)).text == "via entry"
    assert proxy.call_count == entry.call_count == 1


async def test_the_test_guard_stops_requests_before_they_are_sent(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post(URL).mock(return_value=httpx.Response(200, json=completion()))
    model = openai_model()
    _guard.forbid(1)
    try:
        with pytest.raises(RealModelRequestError):
            await model.complete(HI)
        with pytest.raises(RealModelRequestError):
            await collect(model, HI)
    finally:
        _guard.forbid(-1)
    assert route.call_count == 0
    assert (await model.complete(HI)).text == "Hello!" and route.call_count == 1  # lifted, the model works


# -- openai-compatible, end to end against a real local server ---------------------------------


@dataclass
class Received:
    path: str
    authorization: str
    body: dict[str, Any]


@dataclass
class LocalServer:
    """An OpenAI-compatible server on 127.0.0.1, answering like Ollama: a call to the first tool when offered
    (whole, in one chunk, finishing with `stop`), else a fixed reply; it records every request."""

    reply: str = "Hi from the local model"
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def answer(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks of the answer; a non-streaming reply is made from the same chunks."""
        tools = body.get("tools") or []
        if tools:
            name = tools[0]["function"]["name"]
            return [tool_delta(0, "call_local", name, '{"a": 2, "b": 3}'), chunk({}, finish="stop")]
        words = self.reply.split(" ")
        return [text(w if i == len(words) - 1 else w + " ") for i, w in enumerate(words)] + [chunk({}, "stop")]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.received.append(Received(self.path, self.headers.get("authorization", ""), body))
                if self.path != "/v1/chat/completions":
                    return self._send(404, "application/json", b'{"error": {"message": "no such route"}}')
                chunks = server.answer(body)
                usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
                if body.get("stream"):
                    if body.get("stream_options", {}).get("include_usage"):
                        chunks.append(chunk(usage=usage))
                    self._send(200, "text/event-stream", sse_body(*chunks))
                else:
                    self._send(200, "application/json", json.dumps(as_completion(chunks, usage)).encode())

            def _send(self, status: int, content_type: str, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        return Handler


def as_completion(chunks: list[dict[str, Any]], usage: dict[str, Any]) -> dict[str, Any]:
    """The non-streaming reply with the same content as `chunks`."""
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    content = "".join(d.get("content") or "" for d in deltas)
    calls = [call(t["id"], t["function"]["name"], t["function"]["arguments"])
             for d in deltas for t in d.get("tool_calls", [])]
    return completion(content or None, calls, finish="stop", usage=usage)


@pytest.fixture
def local_server() -> Iterator[LocalServer]:
    server = LocalServer()
    try:
        yield server
    finally:
        server.close()


async def test_openai_compatible_against_a_local_server(local_server: LocalServer) -> None:
    spec = ModelSpec(provider="openai-compatible", model="llama3.2", base_url=local_server.base_url, max_tokens=64)
    model = load_model(spec, environ={})
    assert isinstance(model, OpenAIModel) and model.provider == "openai-compatible"
    try:
        answer = await model.complete(HI)
        events = await collect(model, HI)
        tool_answer = await model.complete(HI, tools=[ADD])
        tool_events = await collect(model, HI, tools=[ADD])
    finally:
        await model.aclose()

    usage = Usage(input_tokens=12, output_tokens=5)
    assert (answer.text, answer.finish_reason, answer.usage, answer.model) == (local_server.reply, "stop", usage,
                                                                               SERVED)
    assert events[:-1] == [TextDelta(text="Hi "), TextDelta(text="from "), TextDelta(text="the "),
                           TextDelta(text="local "), TextDelta(text="model")]
    assert events[-1] == ResponseDone(response=answer)
    expected_call = ToolCall(id="call_local", name="add", arguments={"a": 2, "b": 3})
    assert tool_answer.tool_calls == (expected_call,) and tool_answer.finish_reason == "tool_calls"
    assert tool_events == [ToolCallStart(index=0, id="call_local", name="add"),
                           ToolCallDelta(index=0, arguments='{"a": 2, "b": 3}'), ResponseDone(response=tool_answer)]

    assert [r.path for r in local_server.received] == ["/v1/chat/completions"] * 4
    assert {r.authorization for r in local_server.received} == {"Bearer not-needed"}
    plain, streamed, with_tools, _ = (r.body for r in local_server.received)
    assert plain == {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
    assert streamed == {**plain, "stream": True, "stream_options": {"include_usage": True}}
    assert with_tools["tools"][0]["function"]["name"] == "add"


async def test_openai_compatible_sends_a_key_when_the_entry_names_one(local_server: LocalServer) -> None:
    spec = ModelSpec(provider="openai-compatible", model="m", base_url=local_server.base_url,
                     api_key_env="OPENROUTER_API_KEY")
    model = load_model(spec, environ={"OPENROUTER_API_KEY": "or-key"})
    try:
        await model.complete(HI)
    finally:
        assert isinstance(model, OpenAIModel)
        await model.aclose()
    assert local_server.received[0].authorization == "Bearer or-key"


async def test_openai_compatible_reports_a_server_that_is_not_there() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]  # a port nobody listens on once the server is closed
    model = load_model(ModelSpec(provider="openai-compatible", model="m", base_url=f"http://127.0.0.1:{port}/v1",
                                 max_retries=0), environ={})
    with pytest.raises(ModelConnectionError, match=f"the connection to http://127.0.0.1:{port}/v1 failed "
                                                    r"\(ConnectError: .*\): check that the server is up"):
        await model.complete(HI)
