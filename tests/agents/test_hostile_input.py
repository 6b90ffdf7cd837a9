"""What an agent, a template or a tool sends cannot brick the app: each ends as that turn's error, the node stays up.

Rendering a prompt in place or in a sandbox worker gives the same text, so the template
tests tell which one happened (or is happening) by whether the app's sandbox was started:
the agent service's `restricted.tool_pool`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from wippy_agents import App
from wippy_agents.agents import AgentError
from wippy_agents.llm import Response, ToolCall
from wippy_agents.testing import ScriptedModel, wait_until, write_file
from wippy_agents.tools import ToolBusy, ToolThreads, function_tool

WIPPY = str(Path(sys.executable).with_name("wippy"))

AGENT = """
namespace: app
entries:
  - name: model
    kind: model
    provider: offline
    model: wippy-offline
  - name: assistant
    kind: agent
    prompt: prompts:assistant
    model: app:model
    tools: ["tools.*:*"]
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    write_file(tmp_path, "registry/app/_index.yaml", AGENT)
    write_file(tmp_path, "prompts/assistant.md", "You help.")
    return tmp_path


async def test_a_template_that_loops_for_hours_fails_its_turn_without_blocking_the_node(app: Path) -> None:
    write_file(app, "prompts/assistant.md",
               "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}Hello")
    async with App(root=app) as wippy:
        conv = await wippy.conversation("app:assistant")
        turn = asyncio.create_task(conv.ask("hi"))
        await wait_until(lambda: wippy.agents.restricted.tool_pool is not None)  # the render is going to a worker ...
        assert await wippy.run(_pong) == "pong"  # ... and the node goes on serving
        assert not turn.done()  # while it loops, up to its 2 s budget
        refused = r"prompts:assistant of app:assistant does not render: .*over its (cpu|wall clock) limit"
        with pytest.raises(AgentError, match=refused):
            await turn
        failed = wippy.tasks.list(status="failed")
        assert len(failed) == 1 and "does not render" in (failed[0].error or "")
    async with App(root=app) as wippy:  # the failed turn is not rendered again at the next boot
        assert wippy.tasks.status(failed[0].id) == "failed"


async def _pong() -> str:
    return "pong"


async def test_a_template_that_doubles_its_output_is_stopped_at_the_size_limit(app: Path) -> None:
    write_file(app, "prompts/assistant.md", '{% set a = "x" %}' + "{% set a = a ~ a %}" * 21 + "{{ a }}")
    async with App(root=app) as wippy:
        conv = await wippy.conversation("app:assistant")
        with pytest.raises(AgentError, match="renders to more than 1,000,000 characters"):
            await conv.ask("hi")


async def test_a_plain_template_renders_in_place_with_its_variables(app: Path) -> None:
    write_file(app, "prompts/assistant.md", "You are {{ agent.id }}; topic {{ context.topic | upper }}.")
    model = ScriptedModel(["ok"])
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = model
        conv = await wippy.conversation("app:assistant")
        await conv.ask("hi", context={"topic": "actors"})
        assert wippy.agents.restricted.tool_pool is None  # no worker was needed
    assert model.requests[0].messages[0].content == "You are app:assistant; topic ACTORS."


HANGING_TOOLS = '''
import threading
from wippy_agents.tools import tool

GATE = threading.Event()


@tool(timeout=0.2)
def hang() -> str:
    """Never returns on its own."""
    GATE.wait()
    return "late"


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First.
        b: Second.
    """
    return a + b
'''


async def test_a_hung_tool_cannot_starve_the_calls_of_a_healthy_one(app: Path) -> None:
    write_file(app, "tools/slow.py", HANGING_TOOLS)
    calls = [ToolCall(id=f"h{i}", name="tools_slow_hang", arguments={}) for i in range(50)]
    calls += [ToolCall(id=f"a{i}", name="tools_slow_add", arguments={"a": i, "b": 1}) for i in range(50)]
    model = ScriptedModel([Response(tool_calls=tuple(calls), finish_reason="tool_calls"), "done"])
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = model
        conv = await wippy.conversation("app:assistant")
        try:
            await conv.ask("go")
        finally:
            sys.modules["wippy_app.tools.slow"].GATE.set()
    results = {m.tool_call_id: m.content for m in model.requests[1].messages if m.role == "tool"}
    assert [results[f"a{i}"] for i in range(50)] == [str(i + 1) for i in range(50)]  # every healthy call answered
    hung = [results[f"h{i}"] for i in range(50)]
    assert all("did not finish within 0.2s" in text or "is busy" in text for text in hung)


async def test_a_call_waiting_for_a_thread_is_not_timed_out_while_it_waits() -> None:
    threads = ToolThreads("slow", size=1)
    gate = threading.Event()
    asyncio.get_running_loop().call_later(0.2, gate.set)  # the first call holds the only thread past 0.05 s
    first = threads.run(gate.wait, timeout=None)
    second = threads.run(lambda: "second", timeout=0.05)
    assert await asyncio.gather(first, second) == [True, "second"]


async def test_once_every_thread_is_held_by_a_timed_out_call_new_calls_fail_at_once() -> None:
    threads = ToolThreads("stuck", size=2)
    gate = threading.Event()
    for _ in range(2):
        with pytest.raises(TimeoutError):
            await threads.run(gate.wait, timeout=0.01)
    assert threads.abandoned == 2
    with pytest.raises(ToolBusy, match="2 earlier call"):
        await threads.run(lambda: 1, timeout=1)
    gate.set()
    await wait_until(lambda: threads.abandoned == 0)
    assert await threads.run(lambda: 1, timeout=1) == 1  # they returned: the tool takes calls again


def leave() -> str:
    """Tries to end the process."""
    raise SystemExit(3)


async def leave_async() -> str:
    """Tries to end the process, from the event loop (found by the crash storm suite: it took the node down)."""
    raise SystemExit(3)


@pytest.mark.parametrize("tool", [leave, leave_async])
async def test_a_tool_raising_system_exit_is_that_call_s_error_not_the_node_s_exit(tool: Any) -> None:
    with pytest.raises(RuntimeError, match="the tool raised SystemExit: 3"):
        await function_tool(tool).call({})


EXITING_TOOL = '''
import os


def explode() -> str:
    """Takes the whole process down."""
    os._exit(7)
'''


def test_a_tool_that_kills_the_node_is_parked_after_one_repeat_and_the_app_boots(app: Path) -> None:
    write_file(app, "tools/boom.py", EXITING_TOOL)

    def ask(message: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WIPPY, "ask", "app:assistant", message, "--json", "--root", str(app)],
                              capture_output=True, text=True, timeout=60)

    assert ask("/call tools.boom:explode {}").returncode == 7
    assert ask("hello").returncode == 7  # recovery at boot ran the interrupted step once more
    answered = ask("hello")  # the next boot parks that turn and serves the new one
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["text"]
    shown = subprocess.run([WIPPY, "tasks", "list", "--status", "needs_attention", "--json", "--root", str(app)],
                           capture_output=True, text=True, timeout=60)
    assert len(json.loads(shown.stdout)) == 1


async def test_a_template_with_a_loop_renders_in_the_sandbox_with_the_same_result(app: Path) -> None:
    write_file(app, "prompts/assistant.md",
               "{% for name in ['ada', 'alan'] %}{{ name | title }}{{ ', ' if not loop.last }}{% endfor %} "
               "help {{ context.who }}.")
    model = ScriptedModel(["ok"])
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = model
        conv = await wippy.conversation("app:assistant")
        await conv.ask("hi", context={"who": "you"})
        assert wippy.agents.restricted.tool_pool is not None  # it went to a worker
    assert model.requests[0].messages[0].content == "Ada, Alan help you."


CANARY = "canary-7f3a9c1e-secret"

LEAKY_TOOLS = '''
import os


def leak() -> str:
    """Returns a secret from the environment."""
    return "the token is " + os.environ["SERVICE_TOKEN"]


def fail() -> str:
    """Fails, quoting a secret."""
    raise RuntimeError("rejected token " + os.environ["SERVICE_TOKEN"])
'''


async def test_a_secret_from_the_environment_reaches_neither_the_model_nor_the_state_nor_the_log(
    app: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SERVICE_TOKEN", CANARY)
    write_file(app, "tools/leaky.py", LEAKY_TOOLS)
    calls = (ToolCall(id="c1", name="tools_leaky_leak", arguments={}),
             ToolCall(id="c2", name="tools_leaky_fail", arguments={}))
    model = ScriptedModel([Response(tool_calls=calls, finish_reason="tool_calls"), "done"])
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = model
        await (await wippy.conversation("app:assistant")).ask("go")
        logging.getLogger("wippy_agents.tools").warning("a tool logged %s", CANARY)
    shown = [m.content for m in model.requests[1].messages if m.role == "tool"]
    assert shown == ["the token is [redacted]", "error: the tool raised RuntimeError: rejected token [redacted]"]
    stored = b"".join(path.read_bytes() for path in (app / ".wippy").iterdir() if path.is_file())
    assert CANARY.encode() not in stored
    assert "a tool logged [redacted]" in caplog.text and CANARY not in caplog.text
