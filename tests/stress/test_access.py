"""Access: what a node keeps is its owner's alone, and a secret from its environment shows up nowhere.

One run uses every feature that writes to `.wippy/` or could carry a secret: turns on a
model entry whose key is in the environment, a trusted tool that returns a secret, a
tool call that waits for a person's approval (the model put the secret in its
arguments), a tool the model writes with the secret in its code, agents' memory, a
restricted tool and a restricted workflow that look for the secret every way the
sandbox lets code try at run time (imports and `_` names are refused when it is
compiled, as tests/sandbox/test_escapes.py checks), an MCP server that is handed the
secret and prints it, an MCP token, the control socket, retention (which keeps the
MCP tool's pin; DuckDB writes its WAL anew after it) and a damaged journal repaired
(its bytes set aside). The model echoes both secrets, streamed in small pieces.

Then (a) every folder under `.wippy/` is 0700 and every file and the socket 0600, the
process's umask being the usual 022 (files made with default modes would be 0644);
(b) neither secret is in any file of the app, any row of any table of the state, the
log, the captured output, what the model was sent, or the sandbox workers' environment.
tests/agents/test_hostile_input.py checks the narrower case of one trusted tool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from wippy_agents import App
from wippy_agents.control import ControlClient, ControlServer
from wippy_agents.llm import (
    Response,
    ResponseDone,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from wippy_agents.state import check_journal
from wippy_agents.testing import FunctionModel, ModelRequest, VirtualClock, wait_until, write_file

SECRET = "tok-3b1e9f2c77d04a5e"
"""In SERVICE_TOKEN: a variable the redactor knows by its name."""
MODEL_KEY = "mk-0c9d4e18a6f2b357"
"""In ACCESS_MODEL: a variable known only because a model entry names it as its key."""
SECRETS = (SECRET, MODEL_KEY)

ENTRIES = f"""
namespace: access
entries:
  - name: model
    kind: model
    provider: offline
    model: wippy-offline
    api_key_env: ACCESS_MODEL
  - name: agent
    kind: agent
    prompt: prompts:assistant
    model: access:model
    tools: ["tools.leaky:*", "access:snoop", "wippy:remember", "wippy:recall", "mcp.canary:*", "wippy:create_tool"]
    max_steps: 4
  - name: snoop
    kind: tool
    runtime: restricted
    description: Looks for a secret wherever it might be.
    source: |
      def main(name: str) -> str:
          found = []
          for attempt in (lambda: open("/proc/self/environ").read(), lambda: environ[name],
                          lambda: getattr(main, "func_globals"), lambda: str(globals()), lambda: str(vars())):
              try:
                  found.append(str(attempt()))
              except Exception as error:
                  found.append("refused: " + str(error))
          return " | ".join(found)
  - name: flow
    kind: workflow
    runtime: restricted
    source: |
      def main(ctx, name: str) -> dict:
          \"\"\"Ask a trusted tool and the snooping one for the secret.\"\"\"
          return {{"leaked": ctx.tool("tools.leaky:leak"), "snooped": ctx.tool("access:snoop", name=name)}}
  - name: flow_may_call
    kind: policy
    subjects: [access:flow]
    actions: [tool.call]
    resources: ["tools.leaky:leak", "access:snoop"]
    effect: allow
  - name: agent_writes_tools
    kind: policy
    subjects: [access:agent]
    actions: [registry.create]
    resources: ["generated:*"]
    kinds: [tool]
    effect: allow
  - name: guarded_asks
    kind: policy
    subjects: [access:agent]
    actions: [tool.call]
    resources: ["tools.leaky:guarded"]
    effect: ask
  - name: canary
    kind: mcp_server
    command: {sys.executable}
    args: [canary_server.py]
    env: {{CANARY: "${{SERVICE_TOKEN}}"}}
    timeout: 10
"""

WRITTEN_TOOL = {"id": "generated:token", "description": "Says the token.",
                "source": 'def main() -> str:\n    """Says the token."""\n    return "$SECRET"\n'}
"""A tool the model writes with the secret in its code (which would go into the registry and its files)."""

LEAKY = '''
import os


def leak() -> str:
    """Returns the service token."""
    return "the token is " + os.environ["SERVICE_TOKEN"]


def guarded(text: str) -> str:
    """Stores a text (a person approves each call).

    Args:
        text: The text.
    """
    return "stored " + text
'''

SERVER = '''
import os
import sys
import time

from mcp.server import MCPServer

print("starting with", os.environ["CANARY"], file=sys.stderr, flush=True)
server = MCPServer("canary")


@server.tool()
def whisper() -> str:
    """Tells the secret it was given."""
    print("whispering", os.environ["CANARY"], file=sys.stderr, flush=True)
    return "psst: " + os.environ["CANARY"]


server.run("stdio")
'''


def echoing(request: ModelRequest) -> Response | list[StreamEvent]:
    """Asked "call NAME JSON", call that tool (`$SECRET` in the JSON: with the secret); given its result, or asked
    anything else, echo every secret."""
    last = request.messages[-1]
    if isinstance(last, UserMessage) and str(last.content).startswith("call "):
        _, name, arguments = str(last.content).replace("$SECRET", SECRET).split(" ", 2)  # the model knows it
        return Response(tool_calls=(ToolCall(id="c1", name=name, arguments=json.loads(arguments)),))
    seen = last.content if isinstance(last, ToolResultMessage) else ""
    text = f"the key is {MODEL_KEY}, the token {SECRET}; I saw {seen}"
    return [*(TextDelta(text=text[start : start + 5]) for start in range(0, len(text), 5)),  # secrets split too
            ResponseDone(response=Response(text=text))]


@pytest.fixture
def secret_app(example_app: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SERVICE_TOKEN", SECRET)
    monkeypatch.setenv("ACCESS_MODEL", MODEL_KEY)
    write_file(example_app, "registry/access/_index.yaml", ENTRIES)
    write_file(example_app, "tools/leaky.py", LEAKY)
    write_file(example_app, "canary_server.py", SERVER)
    config = example_app / "wippy.yaml"
    config.write_text(config.read_text() + "retention:\n  audit_days: 30\n")
    return example_app


@pytest.fixture
def usual_umask() -> Iterator[None]:
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


async def use_everything(root: Path) -> dict[str, Any]:
    """Run the app once through every feature; what the model was sent and what came back."""
    seen: dict[str, Any] = {"requests": [], "answers": []}
    model = FunctionModel(echoing)
    clock = VirtualClock(start=time.time())
    async with App(root=root, control=ControlServer(root), wall_clock=clock.time) as app:
        app.agents.model_overrides["*"] = model
        await wait_until(lambda: "mcp.canary:whisper" in app.registry, timeout=30)
        conversation = await app.conversation("access:agent")
        seen["answers"].append("".join([event.text async for event in conversation.stream("hello")
                                        if isinstance(event, TextDelta)]))  # as it streamed
        for text in ("call tools_leaky_leak {}", "call access_snoop {\"name\": \"SERVICE_TOKEN\"}",
                     f"call wippy_remember {json.dumps({'text': 'the token is ' + SECRET})}",
                     "call wippy_recall {\"query\": \"token\"}", "call mcp_canary_whisper {}",
                     f"call wippy_create_tool {json.dumps(WRITTEN_TOOL)}"):
            seen["answers"].append((await conversation.ask(text)).text)
        seen["written"] = app.registry.get("generated:token").data["source"]
        guarded = asyncio.ensure_future(conversation.ask('call tools_leaky_guarded {"text": "$SECRET"}'))
        await wait_until(lambda: bool(app.approvals.pending()), timeout=10)
        await app.approvals.approve(app.approvals.pending()[0].id, by="alice")
        seen["answers"].append((await guarded).text)
        task = await app.tasks.start("access:flow", {"name": "SERVICE_TOKEN"})
        seen["answers"].append(json.dumps(await app.tasks.result(task)))
        seen["workers"] = [environ for pid, environ in children_environments() if b"sandbox._worker" in cmdline(pid)]
        client = await ControlClient.open(root / ".wippy" / "node.sock")
        try:
            await client.request("mcp.token.create", name="reader", digest="ab" * 32)
        finally:
            await client.close()
        clock.now += 60 * 86400
        pruned = await app.retention.prune()
        assert pruned["tasks"] == 1 and pruned["audit"] > 0  # the workflow's task went: DuckDB checkpointed ...
        assert [r.action for r in app.audit.list(resource="mcp.canary:whisper")] == ["mcp.tool.pin"]  # it stays
        await (await app.conversation("access:agent")).ask("hello again")  # ... and writes its WAL anew
        app.agents.conversations()  # a read: the journal's writer has copied the turn into DuckDB first
        seen["running"] = modes(root / ".wippy")
        seen["requests"] = [str(message.content) for request in model.requests for message in request.messages]
    with (root / ".wippy" / "journal.log").open("ab") as log:  # a damaged line, then a good one after it
        log.write(b'{"g": 999998, "rows": [\n{"g": 999999, "rows": []}\n')
    check_journal(root / ".wippy" / "state.duckdb", repair=True)
    return seen


def children_environments() -> list[tuple[int, bytes]]:
    """The environment of each process this one started (by /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    found.append((int(entry.name), (entry / "environ").read_bytes()))
            except (OSError, ValueError, IndexError):
                continue
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def modes(folder: Path) -> dict[str, str]:
    """The mode of the folder and of everything under it, by path."""
    return {str(path.relative_to(folder.parent)): oct(stat.S_IMODE(path.lstat().st_mode))
            for path in [folder, *sorted(folder.rglob("*"))]}


def table_texts(state_file: Path) -> dict[str, str]:
    """Every row of every table of the state, as text, by table."""
    with duckdb.connect(str(state_file)) as db:
        tables = [name for (name,) in db.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {table: json.dumps(db.execute(f"SELECT * FROM {table}").fetchall(), default=str) for table in tables}


async def test_the_wippy_folder_and_everything_in_it_are_the_owners_alone(secret_app: Path, usual_umask: None) -> None:
    seen = await use_everything(secret_app)
    after = modes(secret_app / ".wippy")
    for when, found in (("while it ran", seen["running"]), ("after it stopped", after)):
        expected = {path: "0o700" if (secret_app / path).is_dir() or path.endswith("/") else "0o600"
                    for path in found}
        loose = {path: mode for path, mode in found.items()
                 if mode != expected[path] and not (when == "while it ran" and mode == "0o700")}
        assert loose == {}, f"{when}: {loose}"
    assert {".wippy/node.sock", ".wippy/state.duckdb.wal", ".wippy/mcp"} <= seen["running"].keys(), json.dumps(seen["running"])
    assert {".wippy/journal.damaged", ".wippy/mcp/access.canary.log", ".wippy/lock"} <= after.keys()


async def test_a_secret_from_the_environment_appears_nowhere_the_node_keeps_or_shows(
        secret_app: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    seen = await use_everything(secret_app)
    assert any("[redacted]" in answer for answer in seen["answers"]), "the run reached the secrets"
    assert seen["workers"], "the sandbox's workers ran"
    assert 'return "[redacted]"' in seen["written"], "the model wrote its tool, with the secret taken out"
    found: dict[str, list[str]] = {}
    files = [path for path in secret_app.rglob("*") if path.is_file() and "state.duckdb" not in path.name
             and path.name not in ("canary_server.py",)]
    for secret in SECRETS:
        places = [str(path.relative_to(secret_app)) for path in files if secret.encode() in path.read_bytes()]
        places += [f"table {table}" for table, text in table_texts(secret_app / ".wippy" / "state.duckdb").items()
                   if secret in text]
        places += [f"answer {number}" for number, answer in enumerate(seen["answers"]) if secret in answer]
        places += ["what the model was sent"] * any(secret in text for text in seen["requests"])
        places += ["a sandbox worker's environment"] * any(secret.encode() in env for env in seen["workers"])
        places += ["the log"] * (secret in caplog.text)
        places += ["the output"] * (secret in "".join(capfd.readouterr()))
        if places:
            found[secret] = places
    assert found == {}, json.dumps(found, indent=1)
