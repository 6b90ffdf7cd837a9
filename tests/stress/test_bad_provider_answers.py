"""Bad input (issue 19): generated provider answers, to the OpenAI and Anthropic models.

Whatever a provider sends back (a stream cut anywhere, events of the wrong shape or of
kinds nobody knows, invalid JSON in a tool call's arguments, an error status with any
body), the caller gets a valid `Response` it can journal, or a `ModelError` that says
what happened: never another exception, never a wait past the entry's timeout.
tests/llm/test_bad_answers.py has the hand-picked cases this generalizes.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from hypothesis import strategies as st

from wippy_agents.llm import ModelError, Response

from ..llm.test_bad_answers import MODES, PROVIDERS, Mode, Provider, ask, served
from ._generated import drive, hostile_text, json_values

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")  # a failing example may be huge

TIMEOUT = 5.0
"""The model entry's `timeout`: no answer, however bad, may take longer."""

STATUSES = [400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504, 529]

arguments_text = st.one_of(
    st.just('{"city": "Paris"}'), hostile_text, json_values.map(json.dumps),
    st.integers(1, 5000).map(lambda depth: '{"a": ' + "[" * depth + "]" * depth + "}"),
    st.integers(1, 5000).map(lambda depth: "[" * depth),
)
"""A tool call's arguments as a model writes them: JSON, JSON of any shape, text, nesting thousands deep."""


@st.composite
def event_stream(draw: st.DrawFn, provider: Provider) -> bytes:
    """A stream made of the API's own events, events of the wrong shape or unknown kinds, and junk, cut anywhere."""
    text_piece = hostile_text.map(provider.piece)
    tool = st.tuples(hostile_text, arguments_text)
    parts = st.one_of(
        text_piece,
        st.builds(lambda texts, call, whole: provider.stream(*texts, tool=call, whole=whole),
                  st.lists(hostile_text, max_size=3), st.none() | tool, st.booleans()),
        st.just(provider.unknown),
        st.sampled_from(provider.malformed).map(provider.event),
        json_values.map(lambda value: provider.event(json.dumps(value).encode())),
        hostile_text.map(provider.error_event),
        st.binary(max_size=200),
    )
    body = b"".join(draw(st.lists(parts, min_size=1, max_size=6)))
    return body[:draw(st.integers(0, len(body)))] if draw(st.booleans()) else body


@st.composite
def json_answer(draw: st.DrawFn, provider: Provider) -> bytes:
    """The API's whole answer, with any field replaced by any value, or cut anywhere."""
    answer: dict[str, Any] = provider.answer(draw(hostile_text), ("get_weather", '{"city": "Paris"}'))
    if draw(st.booleans()):
        path = draw(st.sampled_from(sorted(_paths(answer))))
        _replace(answer, path, draw(json_values))
    body = json.dumps(answer).encode()
    return body[:draw(st.integers(0, len(body)))] if draw(st.booleans()) else body


def _paths(value: Any, path: tuple[Any, ...] = ()) -> set[tuple[Any, ...]]:
    """Every place in JSON data that holds a value."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    found = {path} if path else set()
    for key, child in items:
        found |= _paths(child, (*path, key))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> None:
    for key in path[:-1]:
        value = value[key]
    value[path[-1]] = new


@st.composite
def answers(draw: st.DrawFn) -> tuple[Provider, Mode, httpx.Response]:
    """A provider, how it is asked, and what it answers: a stream, a JSON body, or an error status."""
    provider, mode = draw(st.sampled_from(PROVIDERS)), draw(st.sampled_from(MODES))
    kind = draw(st.sampled_from(["body", "status"]))
    if kind == "status":
        body = draw(st.one_of(json_values.map(lambda value: json.dumps(value).encode()), st.binary(max_size=200),
                              st.just(b'{"error": {"type": "overloaded_error", "message": "busy"}}')))
        headers = draw(st.fixed_dictionaries({}, optional={
            "retry-after": st.sampled_from(["0", "1", "-5", "soon", "99999999999"]),
            "content-type": st.sampled_from(["application/json", "text/html", "text/event-stream"])}))
        return provider, mode, httpx.Response(draw(st.sampled_from(STATUSES)), content=body, headers=headers)
    if mode == "stream":
        return provider, mode, served(draw(event_stream(provider)))
    return provider, mode, served(draw(json_answer(provider)), "application/json")


@pytest.mark.httpx2(assert_all_called=False)
async def test_any_answer_a_provider_sends_is_a_response_or_a_model_error_within_the_timeout(
    httpx2_mock: respx.Router,
) -> None:
    models = {provider.name: provider.model(timeout=TIMEOUT) for provider in PROVIDERS}  # each takes every answer

    async def asked(example: tuple[Provider, Mode, httpx.Response]) -> None:
        provider, mode, answer = example
        httpx2_mock.post(provider.url).mock(return_value=answer)
        try:
            response = await ask(models[provider.name], mode)
        except ModelError as error:
            assert str(error).strip(), f"{type(error).__name__} without a message"
        else:  # what the journal stores it as, and reads back
            assert Response.model_validate_json(response.model_dump_json().encode()) == response

    try:
        await drive(answers(), asked)
    finally:
        for model in models.values():
            await model.aclose()
