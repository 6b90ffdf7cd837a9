"""Durable workflows on a real state file: steps journaled once, replayed after a restart."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wippy_agents import App, UsageError, durable
from wippy_agents.durable import NondeterminismError, StepError, TaskFailed
from wippy_agents.testing import VirtualClock, wait_until

LOG: list[str] = []


def record(what: str) -> str:
    LOG.append(what)
    return what.upper()


@durable.workflow("test:two_steps")
async def two_steps(ctx: durable.TaskContext, topic: str) -> dict[str, Any]:
    first = await ctx.step("first", record, f"first {topic}")
    approval = await ctx.wait_signal("approve")
    second = await ctx.step("second", record, f"second {approval}")
    return {"first": first, "second": second}


@pytest.fixture(autouse=True)
def _clean_log() -> None:
    LOG.clear()


async def test_a_finished_step_is_not_run_again_after_a_restart(tmp_path: Path) -> None:
    async with App(root=tmp_path) as app:
        task = await app.tasks.start("test:two_steps", "actors")
        await wait_until(lambda: app.tasks.get(task).steps)
        assert app.tasks.status(task) == "running"
    assert LOG == ["first actors"]  # the node stopped while the task waited for its signal
    async with App(root=tmp_path) as app:  # recovery at boot resumes it
        await app.tasks.signal(task, "approve", "yes")
        assert await app.tasks.result(task) == {"first": "FIRST ACTORS", "second": "SECOND YES"}
    assert LOG == ["first actors", "second yes"]


async def test_starting_with_an_existing_id_attaches(tmp_path: Path) -> None:
    async with App(root=tmp_path) as app:
        one = await app.tasks.start("test:two_steps", "x", task_id="report-1")
        two = await app.tasks.start("test:two_steps", "x", task_id="report-1")
        assert one == two == "report-1"
        await app.tasks.signal(one, "approve", "ok")
        await app.tasks.result(one)
        assert await app.tasks.run("test:two_steps", "x", task_id="report-1") == {"first": "FIRST X",
                                                                                  "second": "SECOND OK"}
    assert LOG == ["first x", "second ok"]


async def test_a_signal_sent_before_the_wait_is_waiting_for_the_task(tmp_path: Path) -> None:
    @durable.workflow("test:late_wait")
    async def late_wait(ctx: durable.TaskContext) -> Any:
        await ctx.step("pause", lambda: None)
        return await ctx.wait_signal("go")

    async with App(root=tmp_path) as app:
        task = await app.tasks.start("test:late_wait")
        await app.tasks.signal(task, "go", {"n": 1})
        assert await app.tasks.result(task) == {"n": 1}


async def test_a_changed_workflow_fails_replay_naming_both_steps(tmp_path: Path) -> None:
    @durable.workflow("test:changes")
    async def before(ctx: durable.TaskContext) -> None:
        await ctx.step("fetch", lambda: 1)
        await ctx.wait_signal("never")

    async with App(root=tmp_path) as app:
        task = await app.tasks.start("test:changes")
        await wait_until(lambda: app.tasks.get(task).steps)

    @durable.workflow("test:changes")
    async def after(ctx: durable.TaskContext) -> None:
        await ctx.step("download", lambda: 1)

    async with App(root=tmp_path) as app:
        with pytest.raises(TaskFailed, match="NondeterminismError.*step 0 was recorded as 'fetch'.*asks for 'download'"):
            await app.tasks.result(task)
    assert issubclass(NondeterminismError, UsageError)  # the code must change back, or the task be upgraded


async def test_a_failing_step_is_retried_then_recorded_as_failed(tmp_path: Path) -> None:
    attempts: list[int] = []

    def flaky(succeed_on: int) -> str:
        attempts.append(1)
        if len(attempts) < succeed_on:
            raise ConnectionError(f"attempt {len(attempts)} failed")
        return "ok"

    @durable.workflow("test:retries")
    async def retries(ctx: durable.TaskContext, succeed_on: int) -> str:
        return await ctx.step("call", flaky, succeed_on, retries=2, retry_delay=0.001)

    async with App(root=tmp_path) as app:
        assert await app.tasks.run("test:retries", 3) == "ok" and len(attempts) == 3
        attempts.clear()
        task = await app.tasks.start("test:retries", 9)
        with pytest.raises(TaskFailed, match="step 'call' failed: ConnectionError: attempt 3 failed"):
            await app.tasks.result(task)
        [step] = app.tasks.get(task).steps
        assert (step.name, step.ok, step.error) == ("call", False, "ConnectionError: attempt 3 failed")
    assert len(attempts) == 3 and issubclass(StepError, Exception)


async def test_a_step_result_the_journal_cannot_store_is_a_clear_failure(tmp_path: Path) -> None:
    @durable.workflow("test:bad_result")
    async def bad_result(ctx: durable.TaskContext) -> Any:
        return await ctx.step("make", lambda: {1, 2})

    async with App(root=tmp_path) as app:
        with pytest.raises(TaskFailed, match="journal cannot store a set"):
            await app.tasks.run("test:bad_result")


async def test_steps_see_a_stable_idempotency_key(tmp_path: Path) -> None:
    @durable.workflow("test:keys")
    async def keys(ctx: durable.TaskContext) -> list[str]:
        return [await ctx.step("a", durable.idempotency_key), await ctx.step("b", durable.idempotency_key)]

    async with App(root=tmp_path) as app:
        assert await app.tasks.run("test:keys", task_id="k") == ["k:0", "k:1"]
    with pytest.raises(UsageError, match="only known inside a durable step"):
        durable.idempotency_key()


@pytest.mark.virtual_clock
async def test_a_durable_sleep_waits_only_for_what_is_left_after_a_restart(clock: VirtualClock,
                                                                           tmp_path: Path) -> None:
    @durable.workflow("test:sleepy")
    async def sleepy(ctx: durable.TaskContext) -> str:
        await ctx.sleep(3600)
        return await ctx.step("after", record, "woke")

    async with App(root=tmp_path, wall_clock=clock.time) as app:
        started = clock.now
        task = await app.tasks.start("test:sleepy")
        await asyncio.sleep(1000)
    async with App(root=tmp_path, wall_clock=clock.time) as app:
        assert await app.tasks.result(task) == "WOKE"
    assert clock.now - started == pytest.approx(3600, abs=1)


@pytest.mark.virtual_clock
async def test_a_signal_wait_times_out_durably(clock: VirtualClock, tmp_path: Path) -> None:
    @durable.workflow("test:deadline")
    async def deadline(ctx: durable.TaskContext) -> str:
        try:
            await ctx.wait_signal("reply", timeout=60)
        except TimeoutError as error:
            return str(error)
        return "got it"

    async with App(root=tmp_path, wall_clock=clock.time) as app:
        assert await app.tasks.run("test:deadline") == "no 'reply' signal within 60s"


@pytest.mark.virtual_clock
async def test_cancelling_a_sleeping_task_stops_it(clock: VirtualClock, tmp_path: Path) -> None:
    @durable.workflow("test:cancel_me")
    async def cancel_me(ctx: durable.TaskContext) -> str:
        await ctx.sleep(10_000)
        return await ctx.step("never", record, "should not run")

    async with App(root=tmp_path, wall_clock=clock.time) as app:
        task = await app.tasks.start("test:cancel_me")
        await asyncio.sleep(5)
        await app.tasks.cancel(task)
        with pytest.raises(TaskFailed, match="cancelled"):
            await app.tasks.result(task)
        assert app.tasks.status(task) == "cancelled"
    assert LOG == [] and clock.now < 100


async def test_a_task_that_never_progresses_is_parked_after_repeated_recoveries(tmp_path: Path) -> None:
    @durable.workflow("test:stuck")
    async def stuck(ctx: durable.TaskContext) -> None:
        await ctx.step("hang", asyncio.Event().wait)

    async with App(root=tmp_path) as app:
        task = await app.tasks.start("test:stuck")
    for _ in range(3):
        async with App(root=tmp_path) as app:
            assert app.tasks.status(task) == "running"
    async with App(root=tmp_path) as app:
        assert app.tasks.status(task) == "needs_attention"
        with pytest.raises(TaskFailed, match="needs_attention: no progress over 3 recoveries"):
            await app.tasks.result(task)


async def test_a_client_asking_for_a_task_while_boot_recovers_it_does_not_count_a_second_recovery(
    tmp_path: Path,
) -> None:
    from wippy_agents import Node
    from wippy_agents.durable import TaskManager
    from wippy_agents.state import open_state

    @durable.workflow("test:waits")
    async def waits(ctx: durable.TaskContext) -> str:
        await ctx.step("first", record, "first")
        return str(await ctx.wait_signal("go"))

    async with App(root=tmp_path) as app:
        task = await app.tasks.start("test:waits")
        await wait_until(lambda: app.tasks.get(task).steps)
    with open_state(tmp_path / ".wippy" / "state.duckdb") as state:
        async with Node() as node:
            tasks = TaskManager(node, state.journal)
            assert await asyncio.gather(tasks.recover(), tasks.start("test:waits", task_id=task)) == [[task], task]
            assert state.journal.recovery([task])[task].stalls == 1
            await tasks.signal(task, "go", "once")
            assert await tasks.result(task) == "once"
    assert LOG == ["first"]


async def test_concurrent_steps_share_commits(tmp_path: Path) -> None:
    @durable.workflow("test:many")
    async def many(ctx: durable.TaskContext, n: int) -> int:
        for i in range(n):
            await ctx.step(f"s{i}", lambda i=i: i)
        return n

    async with App(root=tmp_path) as app:
        before = app.tasks.journal.commits
        ids = [await app.tasks.start("test:many", 20) for _ in range(50)]
        assert await asyncio.gather(*(app.tasks.result(i) for i in ids)) == [20] * 50
        commits = app.tasks.journal.commits - before
    assert commits < 50 * 20 / 4  # 1,000 steps (plus task rows) in far fewer commits


async def test_unknown_workflow_and_task_are_clear_errors(tmp_path: Path) -> None:
    async with App(root=tmp_path) as app:
        with pytest.raises(LookupError, match="no workflow 'test:nope' is registered"):
            await app.tasks.start("test:nope")
        with pytest.raises(LookupError, match="no task 'ghost'"):
            await app.tasks.signal("ghost", "x")


async def test_a_task_keeps_its_registry_version_until_upgraded(tmp_path: Path) -> None:
    from wippy_agents.registry import Entry
    from wippy_agents.testing import write_file

    write_file(tmp_path, "registry/app/_index.yaml", """
        namespace: app
        entries:
          - {name: limits, kind: config, size: 1}
        """)

    @durable.workflow("test:pinned")
    async def pinned(ctx: durable.TaskContext) -> list[int]:
        sizes = []
        for round in range(2):
            await ctx.wait_signal(f"go{round}")
            sizes.append(await ctx.step(f"read{round}", lambda: ctx.registry.get("app:limits").data["size"]))
        return sizes

    async with App(root=tmp_path) as app:
        task = await app.tasks.start("test:pinned")
        app.registry.apply([Entry("app:limits", "config", {}, {"size": 2})], author="test")
        await app.tasks.signal(task, "go0")
        await wait_until(lambda: len(app.tasks.get(task).steps) >= 3)
    async with App(root=tmp_path) as app:  # still pinned after a restart
        assert app.tasks.get(task).registry_version == 1
        assert await app.tasks.upgrade(task) == 2
        await app.tasks.signal(task, "go1")
        assert await app.tasks.result(task) == [1, 2]
    async with App(root=tmp_path) as app:
        assert app.tasks.get(task).registry_version == 2


@pytest.mark.virtual_clock
async def test_retention_deletes_old_finished_tasks_but_keeps_running_ones(clock: VirtualClock,
                                                                            tmp_path: Path) -> None:
    @durable.workflow("test:quick")
    async def quick(ctx: durable.TaskContext, n: int) -> int:
        return await ctx.step("double", lambda: 2 * n)

    @durable.workflow("test:waits")
    async def waits(ctx: durable.TaskContext) -> Any:
        return await ctx.wait_signal("go")

    async with App(root=tmp_path, wall_clock=clock.time) as app:
        old = [await app.tasks.start("test:quick", i) for i in range(3)]
        waiting = await app.tasks.start("test:waits")
        for task in old:
            await app.tasks.result(task)
        await asyncio.sleep(3 * 86400)
        recent = await app.tasks.run("test:quick", 9, task_id="recent")
        assert recent == 18
        assert app.tasks.prune(86400) == 3
        assert {info.id for info in app.tasks.list()} == {waiting, "recent"}
        with pytest.raises(LookupError):
            app.tasks.get(old[0])
    async with App(root=tmp_path, wall_clock=clock.time) as app:
        assert {info.id for info in app.tasks.list()} == {waiting, "recent"}


async def test_attaching_by_id_retries_a_task_parked_for_making_no_progress(tmp_path: Path) -> None:
    gate = {"hang": True}

    async def maybe_hang() -> str:
        if gate["hang"]:
            await asyncio.Event().wait()
        return "done"

    @durable.workflow("test:parked")
    async def parked(ctx: durable.TaskContext) -> str:
        return await ctx.step("work", maybe_hang)

    async with App(root=tmp_path) as app:
        task = await app.tasks.start("test:parked", task_id="p1")
    for _ in range(4):
        async with App(root=tmp_path) as app:
            pass
    async with App(root=tmp_path) as app:
        assert app.tasks.status(task) == "needs_attention"
        gate["hang"] = False
        assert await app.tasks.run("test:parked", task_id="p1") == "done"


async def test_cancelling_a_task_interrupts_the_step_it_is_in(tmp_path: Path) -> None:
    started, interrupted = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            interrupted.set()
            raise

    @durable.workflow("test:busy")
    async def busy(ctx: durable.TaskContext) -> None:
        await ctx.step("forever", forever)

    async with App(root=tmp_path) as app:
        task = await app.tasks.start("test:busy")
        await started.wait()
        await app.tasks.cancel(task)
        async with asyncio.timeout(10):  # a deadline for a failing run, not a timing assertion
            with pytest.raises(TaskFailed, match="cancelled"):
                await app.tasks.result(task)
        assert interrupted.is_set() and app.tasks.status(task) == "cancelled"
    async with App(root=tmp_path) as app:  # and it stays cancelled: recovery does not run it again
        assert app.tasks.status(task) == "cancelled"


NODE_KILLING_STEP = """
import asyncio, os, sys
from pathlib import Path
from wippy_agents import App, durable

def exit_while_told():
    if Path(sys.argv[1], "die").exists():
        os._exit(7)
    return "fixed"

@durable.workflow("test:kills_the_node")
async def kills_the_node(ctx):
    await ctx.step("fine", lambda: 1)
    return await ctx.step("tool:exit", exit_while_told, mark_start=True)

async def main():
    async with App(root=Path(sys.argv[1])) as app:
        if len(sys.argv) > 2:
            await app.tasks.start("test:kills_the_node", task_id="t1")
        try:
            print("result:", await app.tasks.result("t1"))
        except durable.TaskFailed as error:
            print(error)

asyncio.run(main())
"""


@pytest.mark.parametrize("store", ["duckdb", "postgres"])
def test_a_step_that_kills_the_node_is_parked_on_its_first_repeat_and_asking_again_retries_it(
        tmp_path: Path, store: str, request: pytest.FixtureRequest) -> None:
    environ = dict(os.environ)
    if store == "postgres":
        environ["WIPPY_STATE"] = request.getfixturevalue("postgres").database()

    def boot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", NODE_KILLING_STEP, str(tmp_path), *args], capture_output=True,
                              text=True, timeout=60, env=environ)

    (tmp_path / "die").touch()
    assert boot("start").returncode == 7  # the step took the node down
    assert boot().returncode == 7  # recovery ran it once more (the machine might have died): down again
    parked = boot()  # the next boot parks the task instead of running the step a third time
    assert parked.returncode == 0, parked.stderr
    assert "task t1 needs_attention: step 1 (tool:exit) was running each of the last 2 times the node stopped"\
        in parked.stdout
    assert "wippy tasks resume t1" in parked.stdout
    (tmp_path / "die").unlink()  # mended: asking for the task by id again (as `wippy tasks resume` does) runs it
    retried = boot("start")
    assert retried.returncode == 0 and "result: fixed" in retried.stdout, retried.stderr


FULL_DISK_NODE = """
import asyncio, json, os, subprocess, sys
from pathlib import Path
from wippy_agents import App, durable

root = Path(sys.argv[1])
(root / ".wippy").mkdir()
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root / ".wippy")], check=True)
gate, ran = asyncio.Event(), []

def work(name):
    ran.append(name)
    return name * 5000  # bigger than a page: its journal line needs room the full disk does not have

@durable.workflow("test:writes")
async def writes(ctx):
    await ctx.step("one", work, "one")
    await gate.wait()
    return len(await ctx.step("two", work, "two"))

def fill(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 65536)
    except OSError:
        os.close(fd)

async def until(condition):
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.02)

async def main():
    out = {}
    async with App(root=root) as app:
        task = await app.tasks.start("test:writes", task_id="w1")
        await until(lambda: ran == ["one"])
        fill(root / ".wippy" / "filler")
        gate.set()
        try:
            await app.tasks.result(task)
        except durable.StateUnavailable as error:  # paused, not failed
            out["paused"] = str(error)
        try:
            await app.tasks.start("test:writes")
        except durable.StateUnavailable as error:
            out["refused"] = str(error)
        (root / ".wippy" / "filler").unlink()
        await until(lambda: app.tasks.status(task) == "completed")
        out["result"] = await app.tasks.result(task)
    out["ran"] = ran
    print(json.dumps(out))

asyncio.run(main())
"""


def test_a_task_pauses_while_the_disk_is_full_and_finishes_once_there_is_room(
    tmp_path: Path, in_a_mount_namespace: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    done = in_a_mount_namespace(FULL_DISK_NODE, str(tmp_path))
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert "is paused until the app's state can be written again" in outcome["paused"]
    assert "No space left on device" in outcome["refused"]  # no new durable work meanwhile
    assert outcome["result"] == len("two" * 5000)
    assert outcome["ran"] == ["one", "two", "two"]  # "one" was acknowledged: never again; "two" was not
    assert done.stderr.count("Traceback") == 0


async def test_cancelling_a_task_waiting_to_retry_a_step_stops_it_at_once(tmp_path: Path) -> None:
    attempts: list[str] = []
    failed = asyncio.Event()

    async def fails_then_hangs() -> str:
        attempts.append("attempt")
        if len(attempts) == 1:
            failed.set()
            raise RuntimeError("the first attempt fails")
        await asyncio.Event().wait()
        return "never"

    @durable.workflow("test:retrying")
    async def retrying(ctx: durable.TaskContext) -> str:
        return await ctx.step("flaky", fails_then_hangs, retries=1, retry_delay=30)

    async with App(root=tmp_path) as app:
        task = await app.tasks.start("test:retrying")
        await failed.wait()
        await app.tasks.cancel(task)
        with pytest.raises(TaskFailed, match="cancelled"):
            await asyncio.wait_for(app.tasks.result(task), 5)
    assert attempts == ["attempt"]  # no second attempt after the cancel
