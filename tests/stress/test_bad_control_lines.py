"""Bad input (issue 19): generated lines sent to a running node's control socket, on many connections at once.

Each line a client sends (JSON of any shape, requests for real ops with fields of any
name and value, text that is not JSON or not UTF-8, lines nested thousands deep or over
the size limit, a partial last line) gets one final answer line, and a failure says
what is wrong without being a bug of the node's (those are logged with a traceback). A
client that stalls mid-line is disconnected. The node then answers a new connection.
tests/test_control.py has the hand-picked cases this generalizes; the ops' field lists
are read from the control package's own table (`_ops.OPS`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from wippy_agents import App
from wippy_agents.control import ControlServer, socket_path
from wippy_agents.control._ops import OPS
from wippy_agents.control._wire import REQUEST_LIMIT

from ._generated import drive, hostile_text, json_like, json_values, odd_text

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")  # a failing example may be huge

IDLE_TIMEOUT = 0.1
"""How long the node waits for the rest of a line (a stalled client's) before it disconnects, in the test of
stalled clients (short lines only: a line of a megabyte may take longer than this to arrive on a busy machine)."""

ANSWERS_UP_TO = 64 * 1024 * 1024
"""The longest answer line the test reads (a list of every entry, an error quoting a huge value)."""

OPERATIONS = sorted(set(OPS) - {"watch"})  # `watch` streams until the client leaves: it has no final line


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request for a real op: some of its own fields and some unknown ones, each with any value."""
    name = draw(st.sampled_from(OPERATIONS))
    fields = st.sampled_from(sorted(OPS[name].model.model_fields) or ["x"]) | hostile_text
    return {"op": name, **draw(st.dictionaries(fields, json_values, max_size=4))}


def line(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass") + b"\n"


lines = st.one_of(
    requests().map(line),
    json_values.map(line),
    st.binary(max_size=300).map(lambda raw: raw.replace(b"\n", b"") + b"\n"),
    hostile_text.map(lambda text: text.replace("\n", "").encode("utf-8", "surrogatepass") + b"\n"),
    st.integers(1, 100_000).map(lambda depth: b"[" * depth + b"\n"),
    st.integers(REQUEST_LIMIT, REQUEST_LIMIT + 4096).map(lambda size: b"x" * size + b"\n"),
)
"""One line a client sends, its newline included."""


short_lines = st.one_of(json_like(odd_text, 50).map(line),
                        st.binary(max_size=300).map(lambda raw: raw.replace(b"\n", b"") + b"\n"))

Session = tuple[list[bytes], bytes, bool]
"""What a client sends on one connection: whole lines, a partial line, and whether it then stalls."""


@st.composite
def sessions(draw: st.DrawFn, sent: st.SearchStrategy[bytes], stall: bool) -> Session:
    """One connection: whole lines, then maybe a partial line, then the client closes its side (or stalls)."""
    partial = draw(st.just(b"") | sent | st.binary(min_size=1, max_size=100))
    return draw(st.lists(sent, max_size=5)), partial.replace(b"\n", b""), stall


async def talk(path: Path, session: Session) -> list[dict[str, Any]]:
    """Send a session's lines and return the final answers, checking each line of the stream on the way."""
    whole, partial, stall = session
    reader, writer = await asyncio.open_unix_connection(str(path), limit=ANSWERS_UP_TO)

    async def send() -> None:
        for sent in whole:
            writer.write(sent)
            await writer.drain()
        writer.write(partial)
        if not stall:
            writer.write_eof()

    sending = asyncio.create_task(send())  # answers come while it sends: reading them keeps both sides moving
    answers: list[dict[str, Any]] = []
    while received := await reader.readline():
        assert received.endswith(b"\n"), received[:200]
        answer = json.loads(received.decode("utf-8"))  # strict UTF-8: every line the node sends is valid text
        assert isinstance(answer, dict), answer
        if "event" not in answer:
            answers.append(answer)
    await sending
    writer.close()
    return answers


@pytest.fixture
def node_errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR, logger="wippy_agents")
    return caplog


async def clients_of(node: App, examples: st.SearchStrategy[Session], errors: pytest.LogCaptureFixture) -> None:
    """Each example's sessions at once on the node's socket; then a new client's ping."""
    path = socket_path(node.root)

    async def clients(examples: list[Session]) -> None:
        answered = await asyncio.gather(*(talk(path, session) for session in examples))
        for (whole, partial, stall), answers in zip(examples, answered, strict=True):
            assert len(answers) == len(whole) + bool(partial and not stall), answers
            for answer in answers:
                assert answer["ok"] is True or (answer["ok"] is False and answer["error"] and answer["kind"])
        assert not errors.records, errors.text  # a request's fault, never the node's
        [ping] = await talk(path, ([line({"op": "ping"})], b"", False))
        assert ping["ok"]

    await drive(st.lists(examples, min_size=1, max_size=4), clients)


async def test_every_line_a_client_sends_gets_one_answer_and_the_node_answers_the_next_client(
    example_app: Path, node_errors: pytest.LogCaptureFixture
) -> None:
    async with App(root=example_app, control=ControlServer(example_app)) as node:
        await clients_of(node, sessions(lines, stall=False), node_errors)


async def test_a_client_that_stalls_mid_line_is_disconnected_after_its_whole_lines_are_answered(
    example_app: Path, node_errors: pytest.LogCaptureFixture
) -> None:
    async with App(root=example_app, control=ControlServer(example_app, idle_timeout=IDLE_TIMEOUT)) as node:
        await clients_of(node, sessions(short_lines, stall=True), node_errors)
