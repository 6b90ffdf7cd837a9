"""Sandbox: ordinary tool code works; errors and limits are reported clearly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from wippy_agents.sandbox import CompileError, Limits, ResourceLimit, RunResult, Sandbox, SandboxError
from wippy_agents.testing import wait_until

TOOL = '''
class Counter:
    def __init__(self, start):
        self.value = start
        self.seen = []

    def add(self, *items, **named):
        for item in items:
            self.value += item
            self.seen.append(item)
        for key, item in sorted(named.items()):
            self.value += item
        return self


def main(text, start=0):
    words = [w.strip(".,").lower() for w in text.split() if w]
    counts = {}
    for w in words:
        counts[w] = counts.get(w, 0)
        counts[w] += 1
    c = Counter(start).add(1, 2, 3, bonus=10)
    a, (b, d) = 1, (2, 3)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    print("words:", len(words))
    data = json.loads(json.dumps({"top": top}, sort_keys=True))
    m = regex.search("(?P<num>\\\\d+)", text)
    return {
        "top": data["top"],
        "total": c.value,
        "seen": c.seen,
        "unpack": [a, b, d],
        "upper": "-".join(w.upper() for w in words[:2]),
        "set": sorted({len(w) for w in words}),
        "num": m["named"]["num"] if m else None,
        "sqrt": math.sqrt(16),
        "pow": 2 ** 10,
        "fmt": "%s=%d" % ("x", 3),
        "fstr": f"{len(words)} words",
    }
'''


async def test_ordinary_tool_code_works() -> None:
    async with Sandbox() as sb:
        res = await sb.run_with_output(TOOL, function="main", args={"text": "The cat, the dog 42.", "start": 5})
    assert isinstance(res, RunResult)
    assert res.value == {
        "top": [["the", 2], ["42", 1]],
        "total": 21,
        "seen": [1, 2, 3],
        "unpack": [1, 2, 3],
        "upper": "THE-CAT",
        "set": [2, 3],
        "num": "42",
        "sqrt": 4.0,
        "pow": 1024,
        "fmt": "x=3",
        "fstr": "5 words",
    }
    assert res.output == "words: 5\n"


async def test_module_result_and_contract_example() -> None:
    async with Sandbox() as sb:
        assert await sb.run("result = [i * i for i in range(4)]") == [0, 1, 4, 9]
        value = await sb.run("def main(x):\n    return x + 1\n", function="main", args={"x": 1})
        assert value == 2


async def test_print_is_captured_not_host_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    async with Sandbox() as sb:
        res = await sb.run_with_output("print('secret-marker', 1)\nresult = None")
    assert res.output == "secret-marker 1\n"
    out, err = capfd.readouterr()
    assert "secret-marker" not in out and "secret-marker" not in err


async def test_compile_error_names_line_and_rule() -> None:
    async with Sandbox() as sb:
        with pytest.raises(CompileError) as info:
            await sb.run("x = 1\ny = x.__class__\n")
        assert "Line 2" in str(info.value) and "__class__" in str(info.value)
        with pytest.raises(CompileError, match="Line 1"):
            await sb.run("def main(:\n")


async def test_runtime_error_shows_type_message_without_host_frames() -> None:
    async with Sandbox() as sb:
        with pytest.raises(SandboxError) as info:
            await sb.run("def main():\n    print('before')\n    return {}['missing']\n", function="main")
    err = info.value
    assert type(err) is SandboxError
    assert "KeyError: 'missing'" in str(err)
    assert "line 3, in main" in str(err)
    assert "wippy_agents" not in str(err) and ".py" not in str(err)
    assert err.output == "before\n"


async def test_a_missing_function_or_result_is_a_sandbox_error() -> None:
    async with Sandbox() as sb:
        with pytest.raises(SandboxError, match="no function named 'nope'"):
            await sb.run("x = 1", function="nope")
        with pytest.raises(SandboxError, match="result"):
            await sb.run("x = 1")


async def test_results_must_be_json_compatible_and_capped() -> None:
    async with Sandbox() as sb:
        with pytest.raises(SandboxError, match="JSON"):
            await sb.run("result = {1, 2}")
        with pytest.raises(SandboxError, match="JSON"):
            await sb.run("result = json")
        with pytest.raises(SandboxError, match="JSON"):
            await sb.run("result = float('nan')")
        with pytest.raises(ResourceLimit) as info:
            await sb.run("result = 'x' * 2000", limits=Limits(result_bytes=1000))
        assert info.value.limit == "result size"
        assert await sb.run("result = 1") == 1


async def test_bad_args_are_a_sandbox_error() -> None:
    async with Sandbox() as sb:
        with pytest.raises(SandboxError, match="JSON"):
            await sb.run("def main(x):\n    return 1\n", function="main", args={"x": object()})


async def test_output_is_capped() -> None:
    async with Sandbox() as sb:
        res = await sb.run_with_output(
            "for i in range(2000):\n    print('x' * 100)\nresult = 'done'", limits=Limits(output_bytes=1000)
        )
    assert res.value == "done"
    assert len(res.output) < 1100
    assert "output truncated" in res.output


async def test_limit_errors_carry_output() -> None:
    async with Sandbox() as sb:
        with pytest.raises(ResourceLimit) as info:
            await sb.run("print('started')\nwhile True:\n    pass\n", limits=Limits(cpu_seconds=0.3))
    assert info.value.limit == "cpu"
    assert info.value.output == "started\n"


async def test_concurrent_calls_each_get_their_own_answer() -> None:
    src = "def main(x):\n    return x * 2\n"
    async with Sandbox(workers=2) as sb:
        values = await asyncio.gather(*(sb.run(src, function="main", args={"x": i}) for i in range(20)))
    assert values == [i * 2 for i in range(20)]  # how fast a warm call is: benchmarks/sandbox.py


async def test_a_worker_killed_at_its_wall_clock_limit_is_replaced(sandbox_workers: Callable[[], set[int]]) -> None:
    async with Sandbox(workers=2) as sb:
        before = sandbox_workers()
        assert len(before) == 2
        with pytest.raises(ResourceLimit):
            await sb.run("while True:\n    pass\n", limits=Limits(cpu_seconds=30, wall_seconds=0.3))
        await wait_until(lambda: len(now := sandbox_workers()) == 2 and now != before, poll=0.05)
        assert await sb.run("result = 'alive'") == "alive"


async def test_a_sandbox_that_was_not_started_refuses_to_run() -> None:
    sb = Sandbox()
    with pytest.raises(SandboxError):
        await sb.run("result = 1")


async def test_classes_inherit_and_exceptions_are_caught_as_in_python() -> None:
    src = (
        "class Base:\n    def __init__(self, n):\n        self.n = n\n"
        "    def double(self):\n        return self.n * 2\n"
        "class Child(Base):\n    def double(self):\n        return super().double() + 1\n"
        "class Oops(ValueError):\n    pass\n"
        "def main():\n    try:\n        raise Oops('bad')\n    except ValueError as e:\n"
        "        msg = str(e)\n    return [Child(2).double(), msg, isinstance(Child(1), Base)]\n"
    )
    async with Sandbox() as sb:
        assert await sb.run(src, function="main") == [5, "bad", True]


@pytest.mark.parametrize("args", [{"n": 3}])
async def test_generators_and_closures_work_as_in_python(args: dict[str, Any]) -> None:
    src = (
        "def gen(n):\n    for i in range(n):\n        yield i\n"
        "def main(n):\n    add = lambda k: k + n\n    return [add(v) for v in gen(n)]\n"
    )
    async with Sandbox() as sb:
        assert await sb.run(src, function="main", args=args) == [3, 4, 5]


async def test_text_that_is_not_valid_utf8_comes_out_as_replacement_characters() -> None:
    async with Sandbox(workers=1) as sb:
        value = await sb.run("def main():\n    return {'text': chr(55296), chr(56320): [chr(55296) + 'x']}",
                             function="main")
    assert value == {"text": "\ufffd", "\ufffd": ["\ufffdx"]}  # storable: it used to make the app unbootable
