"""Nothing a provider sends may brick the app: every bad answer is a clear `ModelError`, every call has a deadline.

Each hostile answer goes to both providers (`PROVIDERS` says how each API frames its
answers), mocked at the HTTP layer with `httpx2_mock`, or sent by the fake provider
on 127.0.0.1 (conftest.py) where only a real connection shows it: a trickling
stream, a connection cut or reset in the middle of one.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import traceback
from typing import Any, Literal

import httpx
import pytest
import respx

from wippy_agents.llm import (
    AuthenticationError,
    InvalidResponseError,
    Model,
    ModelConnectionError,
    ModelError,
    ModelTimeoutError,
    Response,
    ResponseDone,
    StreamEvent,
    TextDelta,
    UserMessage,
    load_model,
)
from wippy_agents.registry import ModelSpec

KEY = "sk-hostile-0123456789abcdef"
HI = [UserMessage(content="hi")]
Mode = Literal["complete", "stream"]
MODES: list[Mode] = ["complete", "stream"]


class Provider:
    """A provider under test: how to load its model, and how its API frames answers."""

    name = ""
    key_env = ""
    root = ""  # the default base URL
    path = ""  # the endpoint under it
    served_under = ""  # what follows a server's address in base_url
    malformed: tuple[bytes, ...] = ()  # event data shaped like no event of the API
    unknown = b""  # events of kinds the assembler does not know, carrying nothing for us

    def __repr__(self) -> str:
        return self.name

    def model(self, server: Any = None, **entry: Any) -> Model:
        """The provider's model, at `server` (the `fake_provider` fixture) or the provider's own URL."""
        base_url = server.base_url + self.served_under if server else None
        entry.setdefault("max_retries", 0)
        spec = ModelSpec(provider=self.name, model="m", base_url=base_url, **entry)
        return load_model(spec, environ={self.key_env: KEY})

    @property
    def url(self) -> str:
        return self.root + self.path

    def event(self, data: bytes) -> bytes:
        """One server-sent event carrying `data` where the API's text deltas go."""
        raise NotImplementedError

    def piece(self, text: str) -> bytes:
        """The event of one text delta."""
        raise NotImplementedError

    def stream(self, *texts: str, tool: tuple[str, str] | None = None, whole: bool = True) -> bytes:
        """The API's stream of these text deltas, then the `tool` call (name, JSON arguments), then its end."""
        raise NotImplementedError

    def answer(self, text: str, tool: tuple[str, str]) -> dict[str, Any]:
        """The API's non-streamed answer: `text` then the `tool` call."""
        raise NotImplementedError

    def error_event(self, message: str) -> bytes:
        raise NotImplementedError


class OpenAI(Provider):
    name, key_env, root, path, served_under = "openai", "OPENAI_API_KEY", "https://api.openai.com/v1", \
        "/chat/completions", "/v1"
    malformed = (b"[1, 2]", b"null", b'{"choices": "abc"}', b'{"choices": [{"delta": {"content": 5}}]}',
                 b'{"choices": [{"delta": {}}], "usage": {"prompt_tokens": "many"}}')
    unknown = b'data: {"type": "brand.new.event"}\n\ndata: {"choices": [{"index": 0, "delta": null}]}\n\n'

    def event(self, data: bytes) -> bytes:
        return b"data: " + data + b"\n\n"

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self.event(json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode())

    def piece(self, text: str) -> bytes:
        return self._chunk({"content": text})

    def stream(self, *texts: str, tool: tuple[str, str] | None = None, whole: bool = True) -> bytes:
        body = self._chunk({"role": "assistant", "content": ""}) + b"".join(map(self.piece, texts))
        if tool:
            body += self._chunk({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                                 "function": {"name": tool[0], "arguments": tool[1]}}]})
        return body + (self._chunk({}, "tool_calls" if tool else "stop") + b"data: [DONE]\n\n" if whole else b"")

    def answer(self, text: str, tool: tuple[str, str]) -> dict[str, Any]:
        call = {"id": "c1", "type": "function", "function": {"name": tool[0], "arguments": tool[1]}}
        return {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
            {"index": 0, "finish_reason": "tool_calls",
             "message": {"role": "assistant", "content": text, "refusal": text, "tool_calls": [call]}}]}

    def error_event(self, message: str) -> bytes:
        return self.event(json.dumps({"error": {"message": message}}).encode())


class Anthropic(Provider):
    name, key_env, root, path, served_under = "anthropic", "ANTHROPIC_API_KEY", "https://api.anthropic.com", \
        "/v1/messages", ""
    malformed = (b"[1, 2]", b'{"type": "content_block_delta", "index": 0, "delta": null}',
                 b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}}')
    unknown = (b'event: brand_new_event\ndata: {"type": "brand_new_event"}\n\n'
               b'event: content_block_start\ndata: {"type": "content_block_start", "index": 5, '
               b'"content_block": {"type": "thinking", "thinking": ""}}\n\n'
               b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 5, '
               b'"delta": {"type": "signature_delta", "signature": "abc"}}\n\n')

    def event(self, data: bytes) -> bytes:
        return b"event: content_block_delta\ndata: " + data + b"\n\n"

    def _sent(self, *events: dict[str, Any]) -> bytes:
        return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)

    def piece(self, text: str) -> bytes:
        return self._sent({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})

    def stream(self, *texts: str, tool: tuple[str, str] | None = None, whole: bool = True) -> bytes:
        usage = {"input_tokens": 1, "output_tokens": 1}
        body = self._sent(
            {"type": "message_start", "message": {"id": "msg", "type": "message", "role": "assistant", "model": "m",
                                                  "content": [], "stop_reason": None, "usage": usage}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ) + b"".join(map(self.piece, texts))
        if tool:
            body += self._sent(
                {"type": "content_block_start", "index": 1,
                 "content_block": {"type": "tool_use", "id": "c1", "name": tool[0], "input": {}}},
                {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta",
                                                                      "partial_json": tool[1]}})
        end = {"type": "message_delta", "delta": {"stop_reason": "tool_use" if tool else "end_turn"}, "usage": usage}
        return body + (self._sent(end, {"type": "message_stop"}) if whole else b"")

    def answer(self, text: str, tool: tuple[str, str]) -> dict[str, Any]:
        return {"id": "msg", "type": "message", "role": "assistant", "model": "m", "stop_reason": "tool_use",
                "usage": {"input_tokens": 1, "output_tokens": 1},
                "content": [{"type": "text", "text": text},
                            {"type": "tool_use", "id": "c1", "name": tool[0], "input": json.loads(tool[1])}]}

    def error_event(self, message: str) -> bytes:
        return self._sent({"type": "error", "error": {"type": "authentication_error", "message": message}})


PROVIDERS = [OpenAI(), Anthropic()]


def served(body: bytes, content_type: str = "text/event-stream") -> httpx.Response:
    """A 200 with `body`, by default as an event stream."""
    return httpx.Response(200, content=body, headers={"content-type": content_type})


def as_json(body: dict[str, Any], status: int = 200) -> httpx.Response:
    """`body` as providers send it: ASCII JSON, where a lone surrogate is a valid `\\ud800` escape."""
    return httpx.Response(status, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def storable(text: str) -> bool:
    """Whether `text` encodes as UTF-8, as the journal, files and terminals need (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def ask(model: Model, mode: Mode, seen: list[StreamEvent] | None = None) -> Response:
    """The model's answer to "hi", by `complete` or by `stream` (its events also collected into `seen`)."""
    if mode == "complete":
        return await model.complete(HI)
    seen = [] if seen is None else seen
    async for event in model.stream(HI):
        seen.append(event)
    done = seen[-1]
    assert isinstance(done, ResponseDone)
    return done.response


# -- answers that are not the API's -------------------------------------------------------------------------

NOT_THE_API = {
    "an html page": ("text/html", b"<html>\n  <title>Welcome to nginx!</title>\n</html>", "<html> <title>Welcome"),
    "json cut off": ("application/json", b'{"id": "msg_1", "choi', '{"id": "msg_1", "choi'),
    "json with no answer": ("application/json", b"{}", "'{}'"),
}


@pytest.mark.parametrize("provider", PROVIDERS, ids=repr)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sent", NOT_THE_API.values(), ids=NOT_THE_API.keys())
async def test_a_200_that_is_not_the_apis_answer_is_an_invalid_response_quoting_it_and_naming_the_base_url(
    httpx2_mock: respx.Router, provider: Provider, mode: Mode, sent: tuple[str, bytes, str]
) -> None:
    content_type, body, quoted = sent
    httpx2_mock.post(provider.url).mock(return_value=served(body, content_type))
    with pytest.raises(InvalidResponseError) as raised:
        await ask(provider.model(), mode)
    message = str(raised.value)
    assert quoted in message and f"{provider.root} did not answer as" in message and "Check `base_url`" in message


@pytest.mark.parametrize("provider", PROVIDERS, ids=repr)
async def test_an_event_stream_with_no_events_is_an_invalid_response_not_an_empty_answer(
    httpx2_mock: respx.Router, provider: Provider
) -> None:
    httpx2_mock.post(provider.url).mock(return_value=served(b": nothing to see\n\n"))
    with pytest.raises(InvalidResponseError, match="its event stream had no"):
        await ask(provider.model(), "stream")


@pytest.mark.parametrize("provider", PROVIDERS, ids=repr)
async def test_stream_data_that_is_not_json_is_an_invalid_response_after_the_text_before_it(
    httpx2_mock: respx.Router, provider: Provider
) -> None:
    httpx2_mock.post(provider.url).mock(return_value=served(provider.stream("Hel", whole=False)
                                                         + provider.event(b"{not json")))
    seen: list[StreamEvent] = []
    with pytest.raises(InvalidResponseError, match=r"JSONDecodeError.*it sent '\{not json'"):
        await ask(provider.model(), "stream", seen)
    assert seen == [TextDelta(text="Hel")]


@pytest.mark.parametrize(("provider", "data"), [(p, data) for p in PROVIDERS for data in (*p.malformed, b"\xff\xfe")],
                         ids=lambda value: repr(value))
async def test_stream_data_of_the_wrong_shape_or_encoding_is_an_invalid_response(
    httpx2_mock: respx.Router, provider: Provider, data: bytes
) -> None:
    httpx2_mock.post(provider.url).mock(return_value=served(provider.stream(whole=False) + provider.event(data)
                                                         + provider.stream("never seen")))
    with pytest.raises(InvalidResponseError, match="its answer could not be read"):
        await ask(provider.model(), "stream")


@pytest.mark.parametrize("provider", PROVIDERS, ids=repr)
async def test_events_of_kinds_it_does_not_know_are_passed_over(httpx2_mock: respx.Router, provider: Provider) -> None:
    whole = provider.stream("Hello")
    httpx2_mock.post(provider.url).mock(return_value=served(provider.unknown + whole))
    assert (await ask(provider.model(), "stream")).text == "Hello"


@pytest.mark.parametrize("provider", PROVIDERS, ids=repr)
async def test_a_stream_that_ends_before_its_finish_is_a_connection_error_not_a_short_answer(
    httpx2_mock: respx.Router, provider: Provider
) -> None:
    httpx2_mock.post(provider.url).mock(return_value=served(provider.stream("Hel", whole=False)))
    with pytest.raises(ModelConnectionError, match="ended before the answer did"):
        await ask(provider.model(), "stream")


@pytest.mark.parametrize("provider", PROVIDERS, ids=repr)
@pytest.mark.parametrize(("ending", "why"), [("cut", "peer closed connection"), ("reset", "Connection reset by peer")])
async def test_a_connection_cut_or_reset_mid_stream_is_a_connection_error_naming_the_server_and_why(
    fake_provider: Any, provider: Provider, ending: Literal["cut", "reset"], why: str
) -> None:
    read = threading.Event()  # the server ends the stream only once the text is read (a reset would drop it)
    fake_provider.serve([provider.stream("Hel", whole=False)], ending=ending, hold=read)
    seen: list[StreamEvent] = []
    with pytest.raises(ModelConnectionError, match=f"the connection to {re.escape(fake_provider.base_url)}/?\\S* "
                                                   f"failed \\(.*{why}.*\\): check that the server is up"):
        async for event in provider.model(fake_provider).stream(HI):
            seen.append(event)
            read.set()
    assert seen == [TextDelta(text="Hel")]


@pytest.mark.parametrize("provider", PROVIDERS, ids=repr)
@pytest.mark.parametrize("mode", MODES)
async def test_a_body_that_does_not_decode_as_its_content_encoding_says_is_an_invalid_response(
    fake_provider: Any, provider: Provider, mode: Mode
) -> None:
    fake_provider.serve([b"this is not gzip"], content_encoding="gzip")
    with pytest.raises(InvalidResponseError, match="does not decode as its content-encoding says"):
        await ask(provider.model(fake_provider), mode)


# -- the deadline --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("provider", PROVIDERS, ids=repr)
@pytest.mark.parametrize("mode", MODES)
async def test_a_server_that_trickles_its_answer_is_cut_off_at_the_entrys_timeout(
    fake_provider: Any, provider: Provider, mode: Mode
) -> None:
    """Every piece comes well within the SDK's wait for one read; only the call's total deadline stops it."""
    fake_provider.serve(itertools.chain([provider.stream(whole=False)], itertools.repeat(provider.piece("la"))),
                        every=0.02)
    with pytest.raises(ModelTimeoutError, match=r"within 0\.3 s.*raise `timeout` in the model's entry"):
        await ask(provider.model(fake_provider, timeout=0.3), mode)


@pytest.mark.parametrize("provider", PROVIDERS, ids=repr)
async def test_the_deadline_covers_the_sdks_retries(httpx2_mock: respx.Router, provider: Provider) -> None:
    route = httpx2_mock.post(provider.url).mock(return_value=httpx.Response(
        429, headers={"retry-after-ms": "20"}, json={"error": {"type": "rate_limit_error", "message": "slow down"}}))
    with pytest.raises(ModelTimeoutError, match=r"within 0\.2 s"):
        await provider.model(timeout=0.2, max_retries=50).complete(HI)
    assert route.call_count < 51  # cut off while the SDK was still retrying


# -- the API key and invalid text ---------------------------------------------------------------------------

@pytest.mark.parametrize("provider", PROVIDERS, ids=repr)
@pytest.mark.parametrize("echo", ["401", "page", "error event"])
async def test_a_provider_that_echoes_the_api_key_never_gets_it_into_an_error(
    httpx2_mock: respx.Router, provider: Provider, echo: str
) -> None:
    said = f"Incorrect API key provided: {KEY}."
    httpx2_mock.post(provider.url).mock(return_value={
        "401": httpx.Response(401, json={"type": "error", "error": {"type": "authentication_error", "message": said}}),
        "page": served(f"<html>{said}</html>".encode(), "text/html"),
        "error event": served(provider.stream("Hel", whole=False) + provider.error_event(said)),
    }[echo])
    with pytest.raises(AuthenticationError if echo == "401" else ModelError) as raised:
        await ask(provider.model(), "complete" if echo == "401" else "stream")
    assert "Incorrect API key provided: [redacted]" in str(raised.value)
    assert KEY not in "".join(traceback.format_exception(raised.value))  # nor in the SDK's errors chained to it


@pytest.mark.parametrize("provider", PROVIDERS, ids=repr)
@pytest.mark.parametrize("mode", MODES)
async def test_text_that_is_not_valid_unicode_leaves_the_model_as_valid_text(
    httpx2_mock: respx.Router, provider: Provider, mode: Mode
) -> None:
    """A lone surrogate (valid as a JSON escape, invalid in UTF-8) becomes U+FFFD in text, names and arguments."""
    tool = ("add\udc00", json.dumps({"a": "\ud83d"}))  # `\ud83d` stays an escape here, to be decoded as arguments
    streamed, answered = provider.stream("caf\ud800", tool=tool), provider.answer("caf\ud800", tool)
    httpx2_mock.post(provider.url).mock(return_value=served(streamed) if mode == "stream" else as_json(answered))
    seen: list[StreamEvent] = []
    response = await ask(provider.model(), mode, seen)
    assert response.text.startswith("caf\ufffd") and response.tool_calls[0].name == "add\ufffd"
    assert response.tool_calls[0].arguments == {"a": "\ufffd"}
    assert all(storable(json.dumps(item.model_dump(), ensure_ascii=False)) for item in [response, *seen])


@pytest.mark.parametrize("provider", PROVIDERS, ids=repr)
async def test_an_error_message_that_is_not_valid_unicode_leaves_the_model_as_valid_text(
    httpx2_mock: respx.Router, provider: Provider
) -> None:
    httpx2_mock.post(provider.url).mock(return_value=as_json(
        {"type": "error", "error": {"type": "invalid_request_error", "message": "bad \ud800 input"}}, status=400))
    with pytest.raises(ModelError, match="bad \ufffd input") as raised:
        await provider.model().complete(HI)
    assert storable(str(raised.value))
