"""`wippy mcp serve`: the app's agents as MCP tools, driven by the `mcp` SDK's own client over stdio and over
streamable HTTP (a real `wippy` subprocess each time), and the bearer tokens of `wippy mcp token`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from wippy_agents.control import tool_names
from wippy_agents.testing import write_file

pytestmark = pytest.mark.timeout(120)

WIPPY = str(Path(sys.executable).with_name("wippy"))
RunningNode = Callable[[Path], AbstractContextManager[subprocess.Popen[str]]]


def an_app(root: Path) -> Path:
    write_file(root, "registry/app/_index.yaml", """
        namespace: app
        entries:
          - {name: offline, kind: model, provider: offline, model: wippy-offline}
          - {name: down, kind: model, provider: openai-compatible, model: x, base_url: "http://127.0.0.1:9/v1"}
          - {name: helper, kind: agent, model: app:offline, tools: ["tools.noisy:*"],
             meta: {description: Helps with anything.}}
          - {name: unlucky, kind: agent, model: app:down, meta: {title: Unlucky}}
        """)
    write_file(root, "tools/noisy.py", """
        def shout() -> str:
            \"\"\"Prints to stdout, as a careless tool might.\"\"\"
            print("NOISE on stdout")
            return "shouted"
        """)
    write_file(root, "registry/ops/_index.yaml", """
        namespace: ops
        entries:
          - {name: pager, kind: agent, model: app:offline}
        """)
    return root


def wippy(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WIPPY, *map(str, args)], capture_output=True, text=True, timeout=60)


def stdio(root: Path, *args: str, mode: str = "auto") -> Client:
    return Client(StdioServerParameters(command=WIPPY, args=["mcp", "serve", "--root", str(root), *args]), mode=mode)


async def ask(client: Client, tool: str, message: str, conversation: str | None = None) -> Any:
    arguments = {"message": message} | ({} if conversation is None else {"conversation": conversation})
    return await client.call_tool(tool, arguments)


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # legacy: a desktop client that opens with `initialize`
async def test_an_mcp_client_over_stdio_asks_each_agent_as_a_tool_and_continues_a_conversation(
        tmp_path: Path, mode: str) -> None:
    root = an_app(tmp_path / "app")
    async with stdio(root, mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert sorted(tools) == ["app__helper", "app__unlucky", "ops__pager"]
        assert tools["app__helper"].description == "Helps with anything."
        assert tools["app__unlucky"].description == "Unlucky"  # no description: its title
        assert tools["app__helper"].input_schema["required"] == ["message"]

        first = await ask(client, "app__helper", "hello there")
        assert not first.is_error and "You said: hello there" in first.content[0].text
        conversation = first.structured_content["conversation"]
        assert first.structured_content["turn"] == 1 and first.structured_content["agent"] == "app:helper"
        again = await ask(client, "app__helper", "and again", conversation)
        assert (again.structured_content["conversation"], again.structured_content["turn"]) == (conversation, 2)

    listed = wippy("tasks", "list", "--json", "--root", root)  # each call was a durable turn of the app
    assert listed.returncode == 0, listed.stderr
    assert f"turn:{conversation}:" in listed.stdout


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "desktop", "version": "1"}}}
"""What a desktop client of the older protocol sends first."""


def test_over_stdio_stdout_carries_only_the_protocol_even_when_a_tool_prints(tmp_path: Path) -> None:
    root = an_app(tmp_path / "app")
    requests = [
        INITIALIZE,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "app__helper", "arguments": {"message": "/call tools.noisy:shout {}"}}},
    ]
    server = subprocess.Popen([WIPPY, "mcp", "serve", "--root", str(root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write("".join(json.dumps(request) + "\n" for request in requests))
        server.stdin.flush()
        lines = [json.loads(server.stdout.readline()) for _ in range(2)]  # not JSON: the test fails here
        assert [line.get("id") for line in lines] == [1, 2]
        assert not lines[1]["result"]["isError"] and "shouted" in json.dumps(lines[1]["result"])
        server.stdin.close()  # the client goes: the server ends
        assert server.wait(timeout=30) == 0
        rest, errors = server.stdout.read(), server.stderr.read() if server.stderr else ""
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        for pipe in (server.stdout, server.stderr):
            if pipe is not None:
                pipe.close()
    assert rest == ""
    assert "NOISE on stdout" in errors  # the tool's print went to stderr


def test_over_stdio_sigterm_stops_a_server_whose_client_says_nothing_and_the_app_closes(tmp_path: Path) -> None:
    root = an_app(tmp_path / "app")
    server = subprocess.Popen([WIPPY, "mcp", "serve", "--root", str(root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(json.dumps(INITIALIZE) + "\n")
        server.stdin.flush()
        assert "serverInfo" in server.stdout.readline()  # up; the client keeps stdin open and says nothing more
        assert (root / ".wippy" / "node.sock").exists()  # the hosted app is reachable from the CLI meanwhile
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert not (root / ".wippy" / "node.sock").exists()  # the app closed
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        for pipe in (server.stdin, server.stdout):
            if pipe is not None:
                pipe.close()


async def test_a_failed_turn_or_a_bad_call_is_an_error_result_and_the_server_goes_on(tmp_path: Path) -> None:
    root = an_app(tmp_path / "app")
    async with stdio(root, "--agents", "app:*") as client:
        assert sorted(tool.name for tool in (await client.list_tools()).tools) == ["app__helper", "app__unlucky"]
        failed = await ask(client, "app__unlucky", "hi")
        assert failed.is_error and "app:unlucky" in failed.content[0].text
        assert "the connection to http://127.0.0.1:9/v1 failed" in failed.content[0].text
        outside = await ask(client, "ops__pager", "hi")  # not served under --agents app:*
        assert outside.is_error and "no agent tool 'ops__pager'" in outside.content[0].text
        bad = await client.call_tool("app__helper", {"text": "hi"})
        assert bad.is_error and "takes `message`" in bad.content[0].text
        fine = await ask(client, "app__helper", "still here?")
        assert not fine.is_error


async def test_with_a_node_running_the_calls_and_token_checks_go_to_that_node(tmp_path: Path,
                                                                     running_node: RunningNode) -> None:
    root = an_app(tmp_path / "app")
    with running_node(root):
        async with stdio(root) as client:
            answer = await ask(client, "ops__pager", "through the node")
        assert not answer.is_error
        conversation = answer.structured_content["conversation"]
        listed = wippy("tasks", "list", "--json", "--root", root)  # the node holds the state: only it can tell
        assert listed.returncode == 0 and f"turn:{conversation}:" in listed.stdout

        token = wippy("mcp", "token", "create", "ops", "--agents", "ops:*", "--root", root).stdout.strip()  # kept by the node
        async with serving_http(root) as url, over_http(url, token) as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["ops__pager"]
            assert not (await ask(client, "ops__pager", "over http, through the node")).is_error


def test_token_create_prints_the_token_alone_and_the_state_keeps_only_its_hash(tmp_path: Path) -> None:
    root = an_app(tmp_path / "app")
    created = wippy("mcp", "token", "create", "laptop", "--agents", "app:*", "--root", root)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert created.stdout == token + "\n" and re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert "shown this once" in created.stderr

    listed = wippy("mcp", "token", "list", "--json", "--root", root)
    assert [(t["name"], t["agents"]) for t in json.loads(listed.stdout)] == [("laptop", "app:*")]
    assert token not in listed.stdout
    state = [path for path in (root / ".wippy").rglob("*") if path.is_file()]
    assert state and not any(token.encode() in path.read_bytes() for path in state)

    again = wippy("mcp", "token", "create", "laptop", "--root", root)
    assert again.returncode == 1 and "already a token named 'laptop'" in again.stderr
    assert wippy("mcp", "token", "revoke", "laptop", "--root", root).returncode == 0
    gone = wippy("mcp", "token", "revoke", "laptop", "--root", root)
    assert gone.returncode == 1 and "no token named 'laptop'" in gone.stderr


@contextlib.asynccontextmanager
async def serving_http(root: Path) -> AsyncIterator[str]:
    """`wippy mcp serve --http 127.0.0.1:0` in a subprocess; its URL once it says it listens."""
    proc = await asyncio.create_subprocess_exec(WIPPY, "mcp", "serve", "--root", str(root), "--http", "127.0.0.1:0",
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        found = re.search(r"http://127\.0\.0\.1:\d+/mcp", line.decode())
        assert found, f"wippy mcp serve did not come up: {line.decode()}{(await proc.stderr.read()).decode()}"
        yield found.group(0)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


def over_http(url: str, token: str) -> Client:
    @contextlib.asynccontextmanager
    async def transport() -> AsyncIterator[Any]:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http, \
                streamable_http_client(url, http_client=http) as streams:
            yield streams

    return Client(transport())


async def status_of(url: str, headers: dict[str, str]) -> int:
    async with httpx2.AsyncClient() as http:
        response = await http.post(url, headers={"Content-Type": "application/json",
                                                 "Accept": "application/json, text/event-stream", **headers},
                                   content=b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}')
        return response.status_code


async def test_over_http_a_token_reaches_only_its_agents_and_stops_when_revoked(tmp_path: Path) -> None:
    root = an_app(tmp_path / "app")
    every = wippy("mcp", "token", "create", "everything", "--root", root).stdout.strip()
    pager = wippy("mcp", "token", "create", "pager", "--agents", "ops:*", "--root", root).stdout.strip()
    async with serving_http(root) as url:
        assert await status_of(url, {}) == 401
        assert await status_of(url, {"Authorization": "Bearer not-a-token"}) == 401
        assert await status_of(url, {"Authorization": f"Basic {every}"}) == 401

        async with over_http(url, every) as client:
            assert sorted(t.name for t in (await client.list_tools()).tools) == [
                "app__helper", "app__unlucky", "ops__pager"]
            first = await ask(client, "app__helper", "over http")
            assert not first.is_error and "You said: over http" in first.content[0].text
            again = await ask(client, "app__helper", "more", first.structured_content["conversation"])
            assert again.structured_content["turn"] == 2

        async with over_http(url, pager) as client:  # a token for another agent
            assert [t.name for t in (await client.list_tools()).tools] == ["ops__pager"]
            refused = await ask(client, "app__helper", "let me in")
            assert refused.is_error and "no agent tool 'app__helper'" in refused.content[0].text
            assert not (await ask(client, "ops__pager", "hi")).is_error

            # revoked through the serving process's control socket (it hosts the app): refused from the next request
            revoked = wippy("mcp", "token", "revoke", "pager", "--root", root)
            assert revoked.returncode == 0, revoked.stderr
            with pytest.raises(MCPError):
                await ask(client, "ops__pager", "still there?")
        assert await status_of(url, {"Authorization": f"Bearer {pager}"}) == 401
        assert await status_of(url, {"Authorization": f"Bearer {every}"}) != 401


def test_tool_names_are_valid_mcp_names_unique_for_every_agent() -> None:
    agents = ["app:helper", "app.agents:assistant", "app:a b", "app:a_b", "app:" + "x" * 200, "ns:é"]
    names = tool_names(agents)
    assert sorted(names.values()) == sorted(agents)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", name) for name in names)
    assert names["app__helper"] == "app:helper" and names["app.agents__assistant"] == "app.agents:assistant"
    assert "app__a_b" not in names  # two agents would share it: each gets its id's hash instead
    assert tool_names(reversed(agents)) == names  # the same names whatever the order


def test_the_help_says_the_http_transport_has_no_tls() -> None:
    shown = wippy("mcp", "serve", "--help")
    assert "no TLS" in " ".join(shown.stdout.split())
    refused = wippy("mcp", "serve", "--http", "8765", "--root", os.devnull)
    assert refused.returncode == 2 and "is not HOST:PORT" in refused.stderr
