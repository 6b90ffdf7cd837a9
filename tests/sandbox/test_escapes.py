"""Every escape category ends in an error, leaves the host alone, and the pool keeps serving.

Each attempt runs as tool code and as a restricted workflow's `main(ctx)`; then come the
escapes only a workflow has: its `ctx` (the host's channel behind it, the unwinding it
raises), the operations it sends, and the host's answers to them.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wippy_agents.sandbox import (
    SUSPEND,
    CompileError,
    Limits,
    Operation,
    Outcome,
    ReplayMismatch,
    ResourceLimit,
    Sandbox,
    SandboxError,
    WorkflowRun,
)

CANARY = "/tmp/wippy-sandbox-canary"

# (id, source, expected error class, expected limit name or None)
CASES: list[tuple[str, str, type[SandboxError], str | None]] = [
    # imports of every kind
    ("import", "import os\nresult = 1", CompileError, None),
    ("import-as", "import os as o\nresult = 1", CompileError, None),
    ("from-import", "from os import system\nresult = 1", CompileError, None),
    ("import-in-function", "def main():\n    import subprocess\n    return 1\nresult = main()", CompileError, None),
    ("dunder-import", "result = __import__('os')", CompileError, None),
    ("builtins", "result = __builtins__['open']", CompileError, None),
    ("getattr-import", "result = getattr(json, '__builtins__')", SandboxError, None),
    # introspection
    ("class", "result = ().__class__", CompileError, None),
    ("subclasses", "result = object.__subclasses__()", CompileError, None),
    ("mro-subclasses", "result = str(getattr(object.mro()[0], '__subclasses__')())", SandboxError, None),
    ("globals", "def f():\n    pass\nresult = f.__globals__", CompileError, None),
    ("getattr-globals", "result = str(getattr(json.dumps, '__globals__'))", SandboxError, None),
    ("gi_frame", "def g():\n    yield 1\nresult = str(g().gi_frame)", CompileError, None),
    ("getattr-gi_frame", "def g():\n    yield 1\nresult = str(getattr(g(), 'gi_frame').f_globals)", SandboxError, None),
    ("getattr-gi_code", "def g():\n    yield 1\nresult = str(getattr(g(), 'gi_code'))", SandboxError, None),
    ("traceback", "try:\n    1/0\nexcept Exception as e:\n    result = str(e.__traceback__)", CompileError, None),
    ("tb_frame", "try:\n    1/0\nexcept Exception as e:\n    result = str(getattr(e, 'tb_frame'))", SandboxError, None),
    ("map-getattr", "def g():\n    yield 1\nresult = str(list(map(getattr, [g()], ['gi_frame'])))", SandboxError, None),
    ("vars", "result = str(vars())", SandboxError, None),
    ("globals-builtin", "result = str(globals())", SandboxError, None),
    ("type", "result = str(type(1))", SandboxError, None),
    ("setattr-dunder", "class A:\n    pass\nsetattr(A, '__init__', 1)\nresult = 1", SandboxError, None),
    ("aug-helper", "json.dumps += 1\nresult = 1", SandboxError, None),
    ("aug-dunder", "class A:\n    pass\na = A()\na.__class__ += 1", CompileError, None),
    ("aug-tuple", "t = (1,)\nt[0] += 1", SandboxError, None),
    ("write-helper", "json.dumps = 1\nresult = 1", SandboxError, None),
    ("setattr-helper", "setattr(math, 'sqrt', 1)\nresult = 1", SandboxError, None),
    # format-string attribute access
    ("format", "result = '{0.__class__}'.format(1)", SandboxError, None),
    ("format-map", "result = '{x.__class__}'.format_map({'x': 1})", SandboxError, None),
    ("str-format", "f = getattr(str, 'format')\nresult = f('{0.__class__}', 1)", SandboxError, None),
    ("fstring", "x = 1\nresult = f'{x.__class__}'", CompileError, None),
    ("format-builtin", "result = format(1, 'x')", SandboxError, None),
    # eval / exec / compile
    ("eval", "result = eval('1')", SandboxError, None),
    ("exec", "exec('x = 1')\nresult = 1", SandboxError, None),
    ("compile", "result = str(compile('1', 'x', 'eval'))", SandboxError, None),
    # guard rebinding
    ("rebind-getattr", "_getattr_ = lambda o, n: 1\nresult = 1", CompileError, None),
    ("rebind-write", "def main():\n    global _write_\n    _write_ = None\nresult = 1", CompileError, None),
    ("rebind-metaclass", "__metaclass__ = type\nresult = 1", CompileError, None),
    # files, environment, process
    ("open", f"result = open('{CANARY}', 'w').write('x')", SandboxError, None),
    ("environ", "import os\nresult = dict(os.environ)", CompileError, None),
    ("print-file", "print('x', file=json)\nresult = 1", SandboxError, None),
    ("write-fd-1", "result = open(1, 'w').write('{}')", SandboxError, None),
    ("exit", "raise SystemExit(3)", SandboxError, None),
    ("keyboard-interrupt", "raise KeyboardInterrupt()", SandboxError, None),
    # resource bombs
    ("memory", "x = [0] * (10 ** 9)\nresult = 1", ResourceLimit, "memory"),
    ("memory-str", "result = len('a' * (600 * 1024 * 1024))", ResourceLimit, "memory"),
    ("cpu", "while True:\n    pass\n", ResourceLimit, "cpu"),
    (
        "cpu-caught",
        "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n",
        ResourceLimit,
        "cpu",
    ),
    ("huge-int", "result = 10 ** 10 ** 8", ResourceLimit, "integer size"),
    ("huge-int-inplace", "x = 10\nx **= 10 ** 8\nresult = 1", ResourceLimit, "integer size"),
    ("huge-int-pow", "result = pow(10, 10 ** 8)", ResourceLimit, "integer size"),
    ("huge-int-shift", "result = 1 << 10 ** 9", ResourceLimit, "integer size"),
    ("recursion", "def f(n):\n    return f(n + 1)\nresult = f(0)", ResourceLimit, "recursion depth"),
    ("json-nesting", "result = json.loads('[' * 100000)", SandboxError, None),
    ("regex-backtracking", "result = regex.match('(a+)+$', 'a' * 40 + 'b')", ResourceLimit, "cpu"),
    ("regex-input-size", "result = regex.search('a', 'b' * 2000000)", SandboxError, None),
    ("output-flood", "while True:\n    print('x' * 1000)\n", ResourceLimit, "cpu"),
    (
        "generator-finally",
        "def g():\n    try:\n        yield 1\n    finally:\n        while True:\n            pass\n"
        "it = g()\nnext(it)\nloop = [it]\nloop.append(loop)\nresult = 1",
        ResourceLimit,
        "cpu",
    ),
]

FAST = Limits(cpu_seconds=0.4, wall_seconds=4.0, output_bytes=4096)


async def echo(operation: Operation) -> Outcome:
    """The host's answer to every operation: what was asked, as the host received it."""
    return Outcome({"name": operation.name, "args": operation.args})


async def no_operation(operation: Operation) -> Outcome:
    raise AssertionError(f"the attempt reached the host with an operation: {operation}")


def as_workflow(source: str) -> str:
    """The attempt as the body of a workflow's `main(ctx)`, returning its `result`."""
    return "def main(ctx):\n" + textwrap.indent(source, "    ") + "\n    return result\n"


async def attempt(sb: Sandbox, runtime: str, source: str) -> None:
    if runtime == "tool":
        await sb.run(source, limits=FAST)
    else:
        await sb.run_workflow(as_workflow(source), {}, [], no_operation, limits=FAST)


async def assert_still_serves(sb: Sandbox) -> None:
    """Tool code runs, and a workflow's operation gets its own answer (the protocol is not out of step)."""
    assert await sb.run("result = 'ok'") == "ok"
    run = await sb.run_workflow("def main(ctx, n):\n    return [ctx.tool('t:a', n=n), ctx.tool('t:b')]\n", {"n": 7},
                                [], echo)
    assert run == WorkflowRun([{"name": "tool:t:a", "args": {"id": "t:a", "args": {"n": 7}}},
                               {"name": "tool:t:b", "args": {"id": "t:b", "args": {}}}], None, "")


@pytest.mark.parametrize("runtime", ["tool", "workflow"])
@pytest.mark.parametrize(("source", "error", "limit"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_escape_is_refused(
    source: str, error: type[SandboxError], limit: str | None, runtime: str, capfd: pytest.CaptureFixture[str]
) -> None:
    env_before = dict(os.environ)
    cwd_before = sorted(os.listdir("."))
    async with Sandbox() as sb:
        with pytest.raises(error) as info:
            await attempt(sb, runtime, source)
        if limit is not None:
            assert isinstance(info.value, ResourceLimit) and info.value.limit == limit, info.value
            assert limit in str(info.value)
        assert len(info.value.output) <= FAST.output_bytes + 100
        await assert_still_serves(sb)
    assert dict(os.environ) == env_before
    assert sorted(os.listdir(".")) == cwd_before
    assert not Path(CANARY).exists()
    out, _ = capfd.readouterr()
    assert "xxxx" not in out


async def test_wall_clock_kills_and_replaces() -> None:
    async with Sandbox() as sb:
        with pytest.raises(ResourceLimit) as info:
            await sb.run("while True:\n    pass\n", limits=Limits(cpu_seconds=30, wall_seconds=0.3))
        assert info.value.limit == "wall clock"
        assert "wall clock" in str(info.value)
        assert await sb.run("result = 'ok'") == "ok"


async def test_worker_sees_no_environment_and_own_directory(sandbox_workers: Callable[[], set[int]]) -> None:
    os.environ["WIPPY_SANDBOX_SECRET"] = "s3cret"
    try:
        async with Sandbox() as sb:
            # nothing in the sandbox can read the environment; the worker itself got env={}
            with pytest.raises(SandboxError):
                await sb.run("result = getenv('WIPPY_SANDBOX_SECRET')")
            workers = sandbox_workers()
            assert len(workers) == sb.size
            for pid in workers:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                assert b"s3cret" not in environ
                assert os.readlink(f"/proc/{pid}/cwd") != os.getcwd()
    finally:
        del os.environ["WIPPY_SANDBOX_SECRET"]


async def test_private_function_names_are_refused() -> None:
    async with Sandbox() as sb:
        for name in ("_getattr_", "__builtins__", "_write_", "a.b"):
            with pytest.raises(SandboxError, match="bad function name"):
                await sb.run("x = 1", function=name)


async def test_state_does_not_leak_between_calls() -> None:
    async with Sandbox(workers=1) as sb:
        await sb.run("counter = 41\nresult = 1")
        with pytest.raises(SandboxError, match="NameError"):
            await sb.run("result = counter + 1")
        with pytest.raises(SandboxError):
            await sb.run("json.loads = None\nresult = 1")
        assert await sb.run("result = json.loads('[1]')") == [1]
        assert await sb.run("result = str(getattr(json, '__dict__', None))") == "None"


# -- a workflow's own escapes: its ctx, its operations, the host's answers ----------------------------------------

async def answer(operation: Operation) -> Outcome:
    """The host as a task runs it: waits give the worker back, everything else answers at once."""
    if operation.name == "sleep" or operation.name.startswith("signal:"):
        return SUSPEND
    return Outcome(1.5)


# (id, main's body, expected error class, expected limit name or None)
CTX_CASES: list[tuple[str, str, type[SandboxError], str | None]] = [
    ("private-attribute", "return str(ctx._channel)", CompileError, None),
    ("getattr-channel", "return str(getattr(ctx, '_channel'))", SandboxError, None),
    ("getattr-state", "return str(getattr(ctx, '_state'))", SandboxError, None),
    ("setattr-records", "setattr(ctx, '_records', [])\nreturn 1", SandboxError, None),
    ("replace-operation", "ctx.tool = len\nreturn 1", SandboxError, None),
    ("bound-self", "return str(ctx.tool.__self__)", CompileError, None),
    ("getattr-bound-self", "return str(getattr(getattr(ctx.tool, '__self__'), 'now'))", SandboxError, None),
    ("finish-for-the-host", "return ctx.finish({'status': 'suspended'})", SandboxError, None),
    ("type", "return str(type(ctx))", SandboxError, None),
    ("class", "return str(ctx.__class__)", CompileError, None),
    ("vars", "return str(vars(ctx))", SandboxError, None),
    ("format", "return '{0._channel}'.format(ctx)", SandboxError, None),
    ("format-bound-self", "return '{0.tool.__self__}'.format(ctx)", SandboxError, None),
    ("map-getattr", "return str(list(map(getattr, [ctx], ['_channel'])))", SandboxError, None),
    ("json-default", "return json.dumps(ctx, default=str)", SandboxError, None),
    ("return-ctx", "return ctx", SandboxError, None),
    ("catch-suspension-and-loop", "while True:\n    try:\n        ctx.sleep(5)\n    except:\n        pass",
     ResourceLimit, "cpu"),
    ("catch-suspension-and-spin", "try:\n    ctx.wait_signal('go')\nexcept BaseException:\n    while True:\n"
                                  "        pass", ResourceLimit, "cpu"),
    ("more-operations-than-allowed", "while True:\n    ctx.now()", ResourceLimit, "operations"),
    ("more-operations-caught", "try:\n    while True:\n        ctx.random()\nexcept BaseException:\n    pass\n"
                               "return 'went on'", ResourceLimit, "operations"),
    ("recursion-to-an-operation", "def down(n):\n    return down(n + 1) if n < 10000 else ctx.now()\nreturn down(0)",
     ResourceLimit, "recursion depth"),
    ("deeply-nested-arguments", "x = []\nfor i in range(100000):\n    x = [x]\nreturn ctx.tool('t:a', x=x)",
     ResourceLimit, "recursion depth"),
]
MAX_OPERATIONS = 20


@pytest.mark.parametrize(("body", "error", "limit"), [c[1:] for c in CTX_CASES], ids=[c[0] for c in CTX_CASES])
async def test_reaching_for_the_host_through_ctx_is_refused(body: str, error: type[SandboxError],
                                                            limit: str | None) -> None:
    asked: list[Operation] = []

    async def counted(operation: Operation) -> Outcome:
        asked.append(operation)
        return await answer(operation)

    async with Sandbox() as sb:
        with pytest.raises(error) as info:
            await sb.run_workflow("def main(ctx):\n" + textwrap.indent(body, "    ") + "\n", {}, [], counted,
                                  max_operations=MAX_OPERATIONS, limits=FAST)
        if limit is not None:
            assert isinstance(info.value, ResourceLimit) and info.value.limit == limit, info.value
        assert len(asked) <= MAX_OPERATIONS
        await assert_still_serves(sb)


# (id, the call, what the error the code catches says): refused in the worker, before anything reaches the host
BAD_OPERATIONS = [
    ("tool-id-not-str", "ctx.tool(5)", "TypeError: ctx.tool: id must be a non-empty str"),
    ("tool-id-empty", "ctx.tool('')", "TypeError: ctx.tool: id must be a non-empty str"),
    ("agent-not-str", "ctx.ask(None, 'hi')", "TypeError: ctx.ask: agent must be a non-empty str"),
    ("message-not-str", "ctx.ask('app:a', ['hi'])", "TypeError: ctx.ask: message must be a non-empty str"),
    ("signal-name-list", "ctx.wait_signal(['go'])", "TypeError: ctx.wait_signal: name must be a non-empty str"),
    ("signal-name-huge", "ctx.wait_signal('g' * 100000)", "ValueError: ctx.wait_signal: name is 100,000 characters"),
    ("signal-name-lone-surrogate", "ctx.wait_signal('go\\ud800')", "holds a control character or a lone surrogate"),
    ("signal-name-split-pair", "ctx.wait_signal('go\\ud83d\\ude00')", "holds a control character or a lone surrogate"),
    ("tool-id-nul", "ctx.tool('t:a\\x00')", "holds a control character or a lone surrogate"),
    ("agent-newline", "ctx.ask('app:a\\nb', 'hi')", "holds a control character or a lone surrogate"),
    ("signal-timeout-negative", "ctx.wait_signal('go', timeout=-1)", "ValueError: ctx.wait_signal's timeout"),
    ("signal-timeout-bool", "ctx.wait_signal('go', timeout=True)", "ValueError: ctx.wait_signal's timeout"),
    ("sleep-str", "ctx.sleep('5')", "ValueError: ctx.sleep takes a number of seconds"),
    ("sleep-nan", "ctx.sleep(float('nan'))", "ValueError: ctx.sleep takes a number of seconds"),
    ("sleep-infinite", "ctx.sleep(float('inf'))", "TypeError: sleep: the arguments must be JSON values"),
    ("nan-argument", "ctx.tool('t:a', v=float('nan'))", "TypeError: tool:t:a: the arguments must be JSON values"),
    ("set-argument", "ctx.tool('t:a', v={1})", "TypeError: tool:t:a: the arguments must be JSON values"),
    ("function-argument", "ctx.tool('t:a', v=ctx.now)", "TypeError: tool:t:a: the arguments must be JSON values"),
    ("huge-int-argument", "ctx.tool('t:a', v=10 ** 5000)", "TypeError: tool:t:a: the arguments must be JSON values"),
    ("non-str-keyword", "ctx.tool('t:a', **{1: 2})", "TypeError"),
    ("huge-argument", "ctx.tool('t:a', v='a' * 2000000)", "ValueError: tool:t:a: the arguments are 2,000,"),
    ("huge-message", "ctx.ask('app:a', 'a' * 2000000)", "ValueError: ask:app:a: the arguments are 2,000,"),
]


@pytest.mark.parametrize(("call", "says"), [c[1:] for c in BAD_OPERATIONS], ids=[c[0] for c in BAD_OPERATIONS])
async def test_a_bad_operation_is_an_error_the_code_sees(call: str, says: str) -> None:
    source = (f"def main(ctx):\n    try:\n        {call}\n    except TypeError as error:\n"
              "        return 'TypeError: ' + str(error)\n    except ValueError as error:\n"
              "        return 'ValueError: ' + str(error)\n    return 'accepted'\n")
    async with Sandbox(workers=1) as sb:
        run = await sb.run_workflow(source, {}, [], no_operation, limits=FAST)
        assert says in run.value
        await assert_still_serves(sb)


@pytest.mark.parametrize("after", ["return 'escaped'", "return ctx.now()", "return ctx.tool('t:a', x=1)"])
async def test_a_workflow_that_catches_its_suspension_stays_suspended(after: str) -> None:
    asked: list[Operation] = []

    async def counted(operation: Operation) -> Outcome:
        asked.append(operation)
        return await answer(operation)

    source = f"def main(ctx):\n    try:\n        ctx.sleep(5)\n    except:\n        pass\n    {after}\n"
    async with Sandbox(workers=1) as sb:
        run = await sb.run_workflow(source, {}, [], counted, limits=FAST)
        assert run.value is None and run.suspended == Operation(0, "sleep", {"seconds": 5})
        assert asked == [run.suspended]  # nothing the code asked after it reached the host
        await assert_still_serves(sb)


@pytest.mark.parametrize("after", ["return 'went on'", "return ctx.now()"])
async def test_a_workflow_that_catches_its_divergence_from_the_journal_is_still_refused(after: str) -> None:
    source = f"def main(ctx):\n    try:\n        ctx.tool('t:a')\n    except:\n        pass\n    {after}\n"
    async with Sandbox(workers=1) as sb:
        with pytest.raises(ReplayMismatch) as info:
            await sb.run_workflow(source, {}, [Outcome(1.5).record("now")], no_operation, limits=FAST)
        assert (info.value.position, info.value.recorded, info.value.asked) == (0, "now", "tool:t:a")
        await assert_still_serves(sb)


async def test_printed_frames_never_reach_the_protocol() -> None:
    """Printed text, even shaped as the worker's frames (length prefix and all), is the run's output, not a reply."""
    source = '''
def frame(message):
    text = json.dumps(message)
    size = len(text)
    return ''.join(chr(b) for b in [size >> 24, (size >> 16) & 255, (size >> 8) & 255, size & 255]) + text

def main(ctx):
    print(frame({"status": "op", "position": 0, "name": "tool:t:forged", "args": {}}), end="")
    print(frame({"status": "ok", "value": "forged", "output": ""}), end="")
    return ctx.tool('t:real')
'''
    async with Sandbox(workers=1) as sb:
        run = await sb.run_workflow(source, {}, [], echo, limits=FAST)
        assert run.value == {"name": "tool:t:real", "args": {"id": "t:real", "args": {}}}
        assert '"name": "tool:t:forged"' in run.output and '"value": "forged"' in run.output
        await assert_still_serves(sb)


async def test_a_lone_surrogate_in_arguments_reaches_the_host_as_clean_text() -> None:
    async with Sandbox(workers=1) as sb:
        run = await sb.run_workflow("def main(ctx):\n    return ctx.tool('t:a', text='x\\ud800y')\n", {}, [], echo)
        assert run.value == {"name": "tool:t:a", "args": {"id": "t:a", "args": {"text": "x\ufffdy"}}}


async def _fails(operation: Operation) -> Outcome:
    raise RuntimeError("the host's step failed")


async def _unsendable(operation: Operation) -> Outcome:
    return Outcome(float("nan"))


@pytest.mark.parametrize(("host", "error"), [(_fails, RuntimeError), (_unsendable, ValueError)],
                         ids=["on_operation-raises", "answer-not-json"])
async def test_a_host_failing_an_operation_leaves_no_worker_out_of_step(
    host: Callable[[Operation], Any], error: type[Exception], sandbox_workers: Callable[[], set[int]]
) -> None:
    source = "def main(ctx):\n    first = ctx.tool('t:a')\n    return [first, ctx.tool('t:b')]\n"
    async with Sandbox(workers=1) as sb:
        before = sandbox_workers()
        with pytest.raises(error):
            await sb.run_workflow(source, {}, [], host, limits=FAST)
        await assert_still_serves(sb)  # on the worker that replaced the one left waiting for its answer
        assert sandbox_workers().isdisjoint(before)
        assert sb.busy == 0


async def test_a_workflow_cancelled_while_the_host_runs_its_operation_leaves_the_pool_serving(
    sandbox_workers: Callable[[], set[int]]
) -> None:
    asked = asyncio.Event()

    async def forever(operation: Operation) -> Outcome:
        asked.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    async with Sandbox(workers=1) as sb:
        before = sandbox_workers()
        run = asyncio.create_task(sb.run_workflow("def main(ctx):\n    return ctx.tool('t:a')\n", {}, [], forever))
        await asyncio.wait_for(asked.wait(), 10)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        await assert_still_serves(sb)
        assert sandbox_workers().isdisjoint(before)
        assert sb.busy == 0


@pytest.mark.parametrize("limit, hit", [
    ("cpu", "while True:\n            pass"),
    ("integer size", "x = 10 ** 10 ** 8"),
    ("operations", "for i in range(100):\n            ctx.now()"),
])
async def test_after_a_limit_the_code_caught_no_operation_reaches_the_host(limit: str, hit: str) -> None:
    asked: list[Operation] = []

    async def counted(operation: Operation) -> Outcome:
        asked.append(operation)
        return await answer(operation)

    source = (f"def main(ctx):\n    try:\n        {hit}\n    except BaseException:\n        pass\n"
              "    ctx.tool('t:after', x=1)\n    return 'went on'\n")
    async with Sandbox(workers=1) as sb:
        with pytest.raises(ResourceLimit) as info:
            await sb.run_workflow(source, {}, [], counted, max_operations=MAX_OPERATIONS, limits=FAST)
        assert info.value.limit == limit
        assert [operation.name for operation in asked if operation.name != "now"] == []
        await assert_still_serves(sb)
