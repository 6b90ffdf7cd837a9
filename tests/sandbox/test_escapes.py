"""Every escape category ends in an error, leaves the host alone, and the pool keeps serving."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from wippy_agents.sandbox import CompileError, Limits, ResourceLimit, Sandbox, SandboxError

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


@pytest.mark.parametrize(("source", "error", "limit"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_escape_is_refused(
    source: str, error: type[SandboxError], limit: str | None, capfd: pytest.CaptureFixture[str]
) -> None:
    env_before = dict(os.environ)
    cwd_before = sorted(os.listdir("."))
    async with Sandbox() as sb:
        with pytest.raises(error) as info:
            await sb.run(source, limits=FAST)
        if limit is not None:
            assert isinstance(info.value, ResourceLimit) and info.value.limit == limit, info.value
            assert limit in str(info.value)
        assert len(info.value.output) <= FAST.output_bytes + 100
        # the pool still serves
        assert await sb.run("result = 'ok'") == "ok"
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
