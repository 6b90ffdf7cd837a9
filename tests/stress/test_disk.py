"""Disk: the state's disk fills up while conversations take turns, twice, and room comes back each time.

The node runs on an app whose `.wippy/` is a small disk of its own (a tmpfs in a mount
namespace). Mid-run the disk fills up: the node says why it cannot write, refuses new
durable work with that reason, keeps every turn it answered, and once there is room it
takes work again and the turns that paused finish (their askers were told they paused). A boot afterwards finds every answered
turn in its history. (A disk turning read-only under open files is the same path with
another errno; Linux will not remount a tmpfs read-only while files on it are open for
writing, so a read-only disk is tested at boot, in tests/test_cli.py.)
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

NODE = """
import asyncio, json, os, subprocess, sys
from pathlib import Path
from wippy_agents import App, durable
from wippy_agents.agents import AgentError, turns
from wippy_agents.llm import Response, ToolCall, ToolResultMessage
from wippy_agents.testing import FunctionModel

root, count = Path(sys.argv[1]), int(sys.argv[2])
state = root / ".wippy"
state.mkdir()
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(state)], check=True)


def calculator(request):
    last = request.messages[-1]
    if isinstance(last, ToolResultMessage):
        return Response(text=f"the sum is {last.content}")
    _, a, _, b = str(last.content).split()
    return Response(tool_calls=(ToolCall(id="c1", name="tools_calc_add", arguments={"a": int(a), "b": int(b)}),))


def fill():
    fd = os.open(state / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 65536)
    except OSError:
        os.close(fd)


async def until(condition, what):
    async with asyncio.timeout(20):
        while not condition():
            await asyncio.sleep(0.02)


async def ask(conversation, number, round):
    try:
        return (await conversation.ask(f"add {number} and {round}")).text
    except (AgentError, durable.StateUnavailable) as error:
        return f"error: {error}"


async def main():
    out = {"answered": {}}
    async with App(root=root) as app:
        app.agents.model_overrides["*"] = FunctionModel(calculator)
        journal = app.tasks.journal
        conversations = [await app.conversation("app:assistant") for _ in range(count)]
        for number, text in enumerate(await asyncio.gather(*(ask(c, n, 1) for n, c in enumerate(conversations)))):
            out["answered"][conversations[number].id] = [text]

        for round, trouble in ((2, "full"), (3, "full again")):
            fill()
            waiting = [asyncio.ensure_future(ask(c, n, round)) for n, c in enumerate(conversations)]
            await until(lambda: journal.problem is not None, "the journal to notice")
            out[trouble] = {"problem": journal.problem}
            try:
                await app.tasks.start("wippy:agent_turn", "app:assistant", "x", 1, "hi", {}, [])
            except durable.StateUnavailable as error:
                out[trouble]["refused"] = str(error)
            (state / "filler").unlink()
            texts = await asyncio.gather(*waiting)
            await until(lambda: journal.problem is None, "the journal to recover")
            out[trouble]["after"] = texts
            for conversation, text in zip(conversations, texts):
                out["answered"][conversation.id].append(text)
        # the turns that paused finish now, though nobody waits for them any more: their askers were told
        await until(lambda: all(app.tasks.status(t.id) == "completed" for t in app.tasks.list()), "paused turns")
        await journal.append([])
    async with App(root=root) as app:  # a boot afterwards: the history holds every answered turn
        out["history"] = {c.id: [t.result["answer"].text for t in turns(app.tasks, "app:assistant", c.id)
                                 if t.status == "completed"] for c in conversations}
    print(json.dumps(out))

asyncio.run(main())
"""


def test_a_disk_that_fills_up_mid_run_pauses_durable_work_loses_nothing_and_recovers(
        example_app: Path, soak: bool, in_a_mount_namespace: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    count = 200 if soak else 10
    done = in_a_mount_namespace(NODE, str(example_app), str(count))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    for trouble in ("full", "full again"):
        assert "No space left on device" in out[trouble]["problem"]
        assert "No space left on device" in out[trouble]["refused"]  # no new durable work meanwhile
    for number, (conversation, texts) in enumerate(out["answered"].items()):
        sums = [f"the sum is {float(number + round)}" for round in (1, 2, 3)]
        refused = [text.startswith("error") and "is paused until" not in text for text in texts]
        for text, expected, no in zip(texts, sums, refused, strict=True):  # answered, paused, or refused: said so
            assert text == expected or "is paused until" in text or (no and "No space left on device" in text), text
        # every turn that was not refused is in the history: the paused ones finished once there was room
        assert out["history"][conversation] == [s for s, no in zip(sums, refused, strict=True) if not no], texts
    assert not any(text.startswith("error") for texts in out["answered"].values() for text in texts[:1])
    assert "Traceback" not in done.stderr
