"""Traces of turns, model calls, tool calls, durable steps and registry commits, as an OpenTelemetry backend gets them.

Most tests hand the app an SDK tracer provider with the in-memory exporter; two send
spans through the real OTLP HTTP exporter to a receiver on loopback (set in
wippy.yaml, and by `OTEL_EXPORTER_OTLP_ENDPOINT`); one speaks to a real MCP server.
"""

from __future__ import annotations

import asyncio
import http.server
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from wippy_agents import App, durable
from wippy_agents.agents import AgentError, ToolFinished
from wippy_agents.llm import Response, ToolCall, Usage, UserMessage
from wippy_agents.registry import Pricing, RegistryError
from wippy_agents.testing import FunctionModel, ModelRequest, ScriptedModel, wait_until, write_file

AGENTS = """
namespace: app
entries:
  - {name: model, kind: model, provider: offline, model: wippy-offline}
  - name: assistant
    kind: agent
    model: app:model
    tools: ["tools.*:*"]
    delegates: [app:helper]
  - {name: helper, kind: agent, model: app:model}
"""

CALC = '''
import os


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First.
        b: Second.
    """
    return a + b


def secret() -> str:
    """Reads the deploy key."""
    return "the key is " + os.environ["WIPPY_TEST_DEPLOY_KEY"]


def whoami() -> str:
    """The trace context this call runs in (a tool's own instrumentation would nest there)."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}/{context.span_id:016x}"
'''

SECRET = "s3cr3t-deploy-key-value"


class Traced:
    """A tracer provider whose finished spans are kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, prefix: str = "") -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.name.startswith(prefix)]

    def one(self, name: str) -> ReadableSpan:
        [span] = self.spans(name)
        return span


@pytest.fixture
def traced() -> Traced:
    return Traced()


@pytest.fixture
def app(tmp_path: Path) -> Path:
    write_file(tmp_path, "registry/app/_index.yaml", AGENTS)
    write_file(tmp_path, "tools/calc.py", CALC)
    return tmp_path


def call(name: str, call_id: str = "c1", **arguments: Any) -> Response:
    return Response(tool_calls=(ToolCall(id=call_id, name=name, arguments=arguments),), finish_reason="tool_calls",
                    usage=Usage(input_tokens=10, output_tokens=2), model="scripted-2026")


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


async def test_a_turn_with_a_tool_call_is_invoke_agent_over_chat_execute_tool_chat(app: Path, traced: Traced) -> None:
    model = ScriptedModel([call("tools_calc_add", a=2, b=3),
                           Response(text="5", usage=Usage(input_tokens=20, output_tokens=1), model="scripted-2026")])
    model.pricing = Pricing(input=1_000_000, output=1_000_000)  # a dollar a token
    async with App(root=app, tracer_provider=traced.provider) as wippy:
        wippy.agents.model_overrides["*"] = model
        conv = await wippy.conversation("app:assistant")
        answer = await conv.ask("What is 2 + 3?")
        version = wippy.registry.version
    turn = traced.one("invoke_agent")
    first, second = sorted(traced.spans("chat "), key=lambda span: span.start_time or 0)
    tool = traced.one("execute_tool")
    assert (turn.name, first.name, tool.name) == (
        "invoke_agent app:assistant", "chat scripted", "execute_tool tools.calc:add")
    assert turn.parent is None and {parent_of(first), parent_of(second), parent_of(tool)} == {span_id(turn)}
    assert first.end_time is not None and tool.start_time is not None and first.end_time <= tool.start_time
    assert attrs(turn) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "app:assistant",
        "gen_ai.conversation.id": conv.id, "wippy.task.id": f"turn:{conv.id}:1",
        "wippy.registry.version": version, "gen_ai.provider.name": "test",
        "gen_ai.request.model": "scripted"}
    assert attrs(first) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "test", "gen_ai.request.model": "scripted",
        "gen_ai.response.model": "scripted-2026", "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2,
        "wippy.cost_usd": 12.0,
        "wippy.task.id": f"turn:{conv.id}:1", "wippy.step": "model:1", "wippy.replay": False}
    assert attrs(second)["gen_ai.usage.input_tokens"] == 20 and attrs(second)["wippy.step"] == "model:2"
    assert attrs(tool) == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "tools.calc:add", "gen_ai.tool.call.id": "c1",
        "wippy.task.id": f"turn:{conv.id}:1", "wippy.step": "tool:c1", "wippy.replay": False}
    assert all(span.status.status_code == StatusCode.UNSET for span in (turn, first, second, tool))
    assert answer.usage == Usage(input_tokens=30, output_tokens=3)


async def test_a_tool_running_in_its_own_thread_runs_inside_its_execute_tool_span(app: Path, traced: Traced) -> None:
    async with App(root=app, tracer_provider=traced.provider) as wippy:
        wippy.agents.model_overrides["*"] = ScriptedModel([call("tools_calc_whoami"), "done"])
        conv = await wippy.conversation("app:assistant")
        finished = [event async for event in conv.stream("who?") if isinstance(event, ToolFinished)]
    tool = traced.one("execute_tool tools.calc:whoami")
    assert tool.context is not None
    assert finished[0].result == f"{tool.context.trace_id:032x}/{tool.context.span_id:016x}"


async def test_a_delegate_s_turn_nests_under_the_delegating_tool_call(app: Path, traced: Traced) -> None:
    model = ScriptedModel([call("delegate_app_helper", message="say hi"), "hi from the helper", "it said hi"])
    async with App(root=app, tracer_provider=traced.provider) as wippy:
        wippy.agents.model_overrides["*"] = model
        conv = await wippy.conversation("app:assistant")
        assert (await conv.ask("ask the helper")).text == "it said hi"
    outer, inner = traced.one("invoke_agent app:assistant"), traced.one("invoke_agent app:helper")
    delegating = traced.one("execute_tool app:helper")
    assert parent_of(delegating) == span_id(outer) and parent_of(inner) == span_id(delegating)
    assert inner.context is not None and outer.context is not None
    assert inner.context.trace_id == outer.context.trace_id
    [helper_chat] = [span for span in traced.spans("chat ") if parent_of(span) == span_id(inner)]
    assert attrs(helper_chat)["wippy.step"] == "model:1"


async def test_a_turn_resumed_after_its_process_was_killed_marks_replays_and_counts_usage_once(
        app: Path, traced: Traced) -> None:
    gate = asyncio.Event()
    calls: list[str] = []

    async def model_fn(request: ModelRequest) -> Response | str:
        last = request.messages[-1]
        if isinstance(last, UserMessage):
            calls.append("first")
            return call("tools_calc_add", a=20, b=22)
        calls.append("second")
        await gate.wait()  # the task is killed here, mid-step
        return Response(text=f"sum is {last.content}", usage=Usage(input_tokens=7, output_tokens=3))

    async with App(root=app, tracer_provider=traced.provider) as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(model_fn)
        conv = await wippy.conversation("app:assistant")
        with traced.provider.get_tracer("test").start_as_current_span("request"):  # the service that asks
            asking = asyncio.ensure_future(conv.ask("add them"))
        await wait_until(lambda: calls == ["first", "second"])
        [task] = [p.pid for p in wippy.processes() if p.name and p.name.startswith("task:turn:")]
        wippy.node.exit(None, task, "kill")
        gate.set()
        answer = await asking
    assert answer.text == "sum is 42" and calls == ["first", "second", "second"]
    killed, resumed = sorted(traced.spans("invoke_agent"), key=lambda span: span.start_time or 0)
    assert attrs(killed)["error.type"] == "CancelledError" and "error.type" not in attrs(resumed)
    request = traced.one("request")
    assert parent_of(killed) == parent_of(resumed) == span_id(request)  # both under the asker's span
    replayed = [span for span in traced.spans() if attrs(span).get("wippy.replay")]
    assert sorted((span.name, attrs(span)["wippy.step"]) for span in replayed) == [
        ("chat function", "model:1"), ("execute_tool tools.calc:add", "tool:c1")]
    assert {parent_of(span) for span in replayed} == {span_id(resumed)}
    assert not any(key.startswith("gen_ai.usage.") for span in replayed for key in attrs(span))
    reported = [attrs(span) for span in traced.spans("chat ") if "gen_ai.usage.input_tokens" in attrs(span)]
    assert sum(a["gen_ai.usage.input_tokens"] for a in reported) == answer.usage.input_tokens == 17


async def test_contents_go_on_spans_only_when_the_app_opts_in_and_secrets_never(
        app: Path, traced: Traced, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIPPY_TEST_DEPLOY_KEY", SECRET)
    for content in (False, True):
        write_file(app, "wippy.yaml", f"telemetry: {{content: {str(content).lower()}}}\n")
        async with App(root=app, tracer_provider=traced.provider) as wippy:
            wippy.agents.model_overrides["*"] = ScriptedModel([call("tools_calc_secret"), f"it is {SECRET}"])
            await (await wippy.conversation("app:assistant")).ask(f"my key is {SECRET}; read yours")
        texts = " ".join(str(value) for span in traced.spans() for value in attrs(span).values())
        assert SECRET not in texts
        recorded = {key for span in traced.spans() for key in attrs(span)
                    if key in ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments",
                               "gen_ai.tool.call.result")}
        if not content:
            assert recorded == set()
            traced.exporter.clear()
    assert recorded == {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments",
                        "gen_ai.tool.call.result"}
    assert attrs(traced.one("execute_tool"))["gen_ai.tool.call.result"] == "the key is [redacted]"
    assert "my key is [redacted]" in attrs(traced.one("invoke_agent"))["gen_ai.input.messages"]
    assert "it is [redacted]" in attrs(traced.one("invoke_agent"))["gen_ai.output.messages"]


async def test_a_failed_model_call_and_a_failed_tool_set_error_type(app: Path, traced: Traced) -> None:
    async with App(root=app, tracer_provider=traced.provider) as wippy:
        wippy.agents.model_overrides["*"] = ScriptedModel([call("tools_calc_add", a="two", b=3),
                                                           ConnectionResetError("the provider hung up")])
        with pytest.raises(AgentError, match="the provider hung up"):
            await (await wippy.conversation("app:assistant")).ask("add")
    tool, turn = traced.one("execute_tool"), traced.one("invoke_agent")
    failed_chat = next(span for span in traced.spans("chat ") if attrs(span)["wippy.step"] == "model:2")
    assert attrs(tool)["error.type"] == "tool_error" and tool.status.status_code == StatusCode.ERROR
    assert attrs(failed_chat)["error.type"] == "ConnectionResetError"
    assert attrs(turn)["error.type"] == "ConnectionResetError" and turn.status.status_code == StatusCode.ERROR
    assert "the provider hung up" in (turn.status.description or "")


async def test_registry_commits_and_workflow_steps_are_spans(app: Path, traced: Traced) -> None:
    async def double(x: int) -> int:
        return 2 * x

    async def flow(ctx: durable.TaskContext, x: int) -> int:
        return int(await ctx.step("double", double, x))

    async with App(root=app, tracer_provider=traced.provider) as wippy:
        version = wippy.registry.apply([wippy.registry.get("app:helper").__class__(
            "app:other", "agent", {}, {"model": "app:model"})], author="ada", reason="another agent")
        wippy.tasks.register("test:double", flow)
        assert await wippy.tasks.run("test:double", 21, task_id="t1") == 42
    commit = next(span for span in traced.spans("registry.commit")
                  if attrs(span)["wippy.registry.version"] == version)
    assert attrs(commit) == {"wippy.registry.author": "ada", "wippy.registry.reason": "another agent",
                             "wippy.registry.changes": 1, "wippy.registry.version": version}
    assert attrs(traced.one("step double")) == {"wippy.task.id": "t1", "wippy.step": "double", "wippy.replay": False}


def test_a_bad_telemetry_setting_names_the_file_line_and_field(app: Path) -> None:
    write_file(app, "wippy.yaml", "name: demo\ntelemetry:\n  otlp_endpoint: localhost:4318\n  contents: true\n")
    with pytest.raises(RegistryError) as raised:
        asyncio.run(App(root=app).__aenter__())
    problems = {(p.file, p.line, p.field): p.message for p in raised.value.problems}
    assert "an http:// or https:// URL" in problems[("wippy.yaml", 3, "telemetry.otlp_endpoint")]
    assert problems[("wippy.yaml", 4, "telemetry.contents")].endswith("the settings here are otlp_endpoint, content")


MCP_SERVER = '''
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

server = MCPServer("echo")


@server.tool()
async def traceparent(ctx: Context) -> str:
    """The trace context the call came with."""
    return (ctx.request_context.meta or {}).get("traceparent", "none")


server.run("stdio")
'''


async def test_an_mcp_call_carries_the_tool_call_s_trace_context(tmp_path: Path, traced: Traced) -> None:
    write_file(tmp_path, "echo_server.py", MCP_SERVER)
    write_file(tmp_path, "registry/app/_index.yaml", textwrap.dedent(f"""\
        namespace: app
        entries:
          - {{name: model, kind: model, provider: offline, model: wippy-offline}}
          - {{name: helper, kind: agent, model: app:model, tools: ["mcp.echo:*"]}}
          - {{name: echo, kind: mcp_server, command: {sys.executable}, args: [echo_server.py], timeout: 10}}
        """))
    async with App(root=tmp_path, tracer_provider=traced.provider) as wippy:
        await wait_until(lambda: "mcp.echo:traceparent" in wippy.registry, timeout=30)
        wippy.agents.model_overrides["*"] = ScriptedModel([call("mcp_echo_traceparent"), "done"])
        await (await wippy.conversation("app:helper")).ask("go")
        [step] = [s for s in wippy.tasks.get(wippy.tasks.list()[-1].id).steps if s.name == "tool:c1"]
    tool = traced.one("execute_tool mcp.echo:traceparent")
    assert tool.context is not None
    assert f"00-{tool.context.trace_id:032x}-{tool.context.span_id:016x}-" in (step.result or "")


class Receiver:
    """An OTLP HTTP receiver on loopback: keeps every span POSTed to /v1/traces."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.services: set[str] = set()
        self.paths: list[str] = []
        self.received = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append(self.path)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.spans += [span for resource in request.resource_spans for scope in resource.scope_spans
                                   for span in scope.spans]
                receiver.services |= {attribute.value.string_value for resource in request.resource_spans
                                      for attribute in resource.resource.attributes if attribute.key == "service.name"}
                receiver.received.set()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


async def ask_once(root: Path, shutdown_timeout: float = 5.0) -> None:
    async with App(root=root, shutdown_timeout=shutdown_timeout) as wippy:
        assert wippy.telemetry.on
        wippy.agents.model_overrides["*"] = ScriptedModel([call("tools_calc_add", a=1, b=2), "3"])
        assert (await (await wippy.conversation("app:assistant")).ask("1 + 2?")).text == "3"


async def test_spans_reach_an_otlp_receiver_set_in_wippy_yaml(app: Path, receiver: Receiver) -> None:
    write_file(app, "wippy.yaml", f"name: demo\ntelemetry: {{otlp_endpoint: {receiver.url}}}\n")
    await ask_once(app)  # leaving the app exports what is queued
    names = {span.name for span in receiver.spans}
    assert {"invoke_agent app:assistant", "chat scripted", "execute_tool tools.calc:add"} <= names
    assert set(receiver.paths) == {"/v1/traces"} and receiver.services == {"demo"}  # the app's name


async def test_spans_reach_an_otlp_receiver_named_by_the_standard_variable(
        app: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    await ask_once(app)
    assert "invoke_agent app:assistant" in {span.name for span in receiver.spans}
    assert set(receiver.paths) == {"/v1/traces"}


async def test_a_collector_that_is_down_never_breaks_a_turn(app: Path, receiver: Receiver) -> None:
    url = receiver.url
    receiver.close()  # nothing listens on that port any more
    write_file(app, "wippy.yaml", f"telemetry: {{otlp_endpoint: {url}}}\n")
    await ask_once(app, shutdown_timeout=0.5)  # the exporter's retries are left to its own thread after that


def test_nothing_is_traced_by_default_and_the_sdk_is_not_imported(app: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys
        from wippy_agents import App
        from wippy_agents.testing import ScriptedModel

        async def main():
            async with App(root={str(app)!r}) as wippy:
                wippy.agents.model_overrides["*"] = ScriptedModel(["hello"])
                await (await wippy.conversation("app:assistant")).ask("hi")
                print(wippy.telemetry.on, any(name.startswith("opentelemetry.sdk") for name in sys.modules))

        asyncio.run(main())
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(app)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_an_app_in_a_traced_program_traces_into_the_program_s_global_provider(app: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from wippy_agents import App
        from wippy_agents.testing import ScriptedModel

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)  # the program's, set before the app boots

        async def main():
            async with App(root={str(app)!r}) as wippy:
                wippy.agents.model_overrides["*"] = ScriptedModel(["hello"])
                with trace.get_tracer("program").start_as_current_span("request"):
                    await (await wippy.conversation("app:assistant")).ask("hi")
            spans = {{span.name: span for span in exporter.get_finished_spans()}}
            turn, request = spans["invoke_agent app:assistant"], spans["request"]
            print(turn.parent.span_id == request.context.span_id)

        asyncio.run(main())
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(app)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]
