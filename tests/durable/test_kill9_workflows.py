"""`kill -9` a node over and over while restricted workflows run; every task still ends right and nothing done runs twice.

A driver script (a subprocess) boots a node on a small app with a restricted
workflow, `app:flow`, and starts TASKS tasks of it under fixed task ids, so a
driver started again after a kill attaches to the tasks that exist. Each task
runs ROUNDS rounds of four operations, each a kind of step to be killed in:

- `ctx.tool("tools.side:record", ...)`: a python tool that appends a line to a file (the side effect counted);
- `ctx.ask("app:helper", ...)`: a delegate agent whose model is an OpenAI-compatible server on 127.0.0.1, here in
  the test process, which counts requests;
- `ctx.sleep(SLEEP)`: a durable timer (the driver prints `SLEEP` when it sees one journaled);
- `ctx.wait_signal("go<round>")`: once every task waits for it, the driver prints `WAIT`, holds HOLD seconds, and
  sends it with `tasks.signal` (journaled: a signal sent just before a kill is found after the restart).

The test kills the driver with SIGKILL at a point chosen by a seeded RNG, at least once in each kind of step:
after the tool wrote its line, right before or after the server answers (or a moment after it answered), after a
sleep started, while every task waits for its signal; and a while after the start. After every kill the state
file must open cleanly. A step is completed once the journal holds it: the node may die after the tool wrote its
line or the server answered but before the step committed, and then doing it again is right. So:

- in each run, a tool step or a model request happens at most once, never when the journal held it as the run
  started, and one not journaled after the run happened in a run that was killed;
- every task completes with the result its tool results, answers and signals imply, its journal holds each of its
  steps once and in order, and every result the driver printed, in any run, is that result;
- while every task waits for its signal, the workflows' sandbox has no worker busy and the driver has no sandbox
  worker process beyond its pool's: a waiting workflow holds no worker;
- a killed node's sandbox workers end with it.

A task parked as `needs_attention` after repeated kills (one waiting for its signal makes no progress over
recoveries) is retried when the driver asks for it again by its task id, so every task completes.

`WIPPY_KILL9_SEED=<n>` draws another sequence of kill points (see test_kill9.py: a seed is a scenario, not an exact
replay).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wippy_agents.testing import write_file

from ._kill9 import (
    SEED,
    SIDE_TOOL,
    Driver,
    Journal,
    KillPlan,
    ModelServer,
    Run,
    check_nothing_completed_ran_twice,
    text_chunks,
)

TASKS = 3
ROUNDS = 4
SLEEP = 0.3  # each round's ctx.sleep, in seconds
HOLD = 0.3  # how long the driver lets every task wait for a signal before it sends it
MIN_KILLS = 10
KINDS = ("tool", "ask", "sleep", "wait")  # each killed in at least once
MAX_ROUNDS = 30  # rounds whose driver finished before its kill point do not count as kills
TOOL = "tools.side:record"
STEPS_PER_ROUND = ("tool:" + TOOL, "ask:app:helper", "sleep", "wait:go{r}", "signal:go{r}")
OPERATIONS_PER_ROUND = 4  # the positions of ctx's operations: tool, ask, sleep, signal

APP = """
namespace: app
entries:
  - name: m
    kind: model
    provider: openai-compatible
    base_url: {base_url}
    model: m
    max_retries: 0
    timeout: 20
  - name: helper
    kind: agent
    model: app:m
    max_steps: 2
  - name: flow
    kind: workflow
    runtime: restricted
    source: |
      def main(ctx, task: str, rounds: int):
          \"\"\"Record each round, ask the helper about it, sleep, then wait for the round's signal.\"\"\"
          done = []
          for number in range(1, rounds + 1):
              recorded = ctx.tool("{tool}", key=task, part="r" + str(number))
              answer = ctx.ask("app:helper", task + " r" + str(number) + ": " + recorded)
              ctx.sleep({sleep})
              go = ctx.wait_signal("go" + str(number))
              done.append([recorded, answer, go])
          return {{"task": task, "rounds": done}}
  - name: grant
    kind: policy
    subjects: ["app:flow"]
    actions: [tool.call, agent.delegate]
    resources: ["{tool}", "app:helper"]
    effect: allow
"""


DRIVER = '''
import asyncio
import json
import os
import sys

from wippy_agents import App
from wippy_agents.durable import TaskFailed

APP, TASKS, ROUNDS, HOLD = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ENDED = ("completed", "failed", "cancelled", "needs_attention")


def say(line):
    """One line in one write, so a kill never leaves half a line that looks like a whole one."""
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()


def sandbox_workers():
    """How many of this process's children are sandbox workers."""
    me, count = str(os.getpid()), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                parent, command = stat.read().rsplit(")", 1)[1].split()[1], cmdline.read()
        except OSError:
            continue
        count += parent == me and b"wippy_agents.sandbox._worker" in command
    return count


class Watch:
    """The tasks' journaled steps, read every few milliseconds; says when a task has begun a new sleep."""

    def __init__(self, app, ids):
        self.app, self.ids = app, ids
        self.steps = {}
        self.ended = set()

    async def run(self):
        while True:
            for task in self.ids:
                info = self.app.tasks.get(task)
                names = [step.name for step in info.steps]
                if task in self.steps and names.count("sleep") > self.steps[task].count("sleep"):
                    say(f"SLEEP {task} {names.count('sleep')}")
                self.steps[task] = names
                if info.status in ENDED:
                    self.ended.add(task)
            await asyncio.sleep(0.01)

    async def barrier(self, number):
        """Wait until every task waits for the signal `go<number>` or is past it; the ones that wait."""
        wait, got = f"wait:go{number}", f"signal:go{number}"
        while True:
            if len(self.steps) == len(self.ids):
                waiting = [t for t in self.ids if wait in self.steps[t] and got not in self.steps[t]]
                past = [t for t in self.ids if got in self.steps[t] or t in self.ended]
                if len(waiting) + len(past) == len(self.ids):
                    return waiting
            await asyncio.sleep(0.01)


async def idle_pool(app):
    """The workflows' sandbox once no worker is busy (a task replayed after a restart unwinds to its wait)."""
    for _ in range(500):
        pool = app.agents.restricted.workflow_pool
        if pool is not None and pool.busy == 0:
            break
        await asyncio.sleep(0.01)
    return pool


async def main():
    async with App(root=APP) as app:
        say("BOOTED")
        ids = [f"t{n}" for n in range(1, TASKS + 1)]
        for task in ids:  # attaches to the task if it exists (and retries it if recovery parked it)
            await app.tasks.start("app:flow", {"task": task, "rounds": ROUNDS}, task_id=task)
        watch = Watch(app, ids)
        watching = asyncio.create_task(watch.run())
        for number in range(1, ROUNDS + 1):
            waiting = await watch.barrier(number)
            if not waiting:
                continue
            pool = await idle_pool(app)
            say(f"WAIT {number} busy={pool and pool.busy} size={pool and pool.size} workers={sandbox_workers()} "
                f"tasks={','.join(waiting)}")
            await asyncio.sleep(HOLD)  # every task waits meanwhile: the test kills in this window
            for task in waiting:
                await app.tasks.signal(task, f"go{number}", f"go {task} {number}")
        for task in ids:
            try:
                result = await app.tasks.result(task)
            except TaskFailed as error:
                say(f"FAILED {task} {error}")
            else:
                say(f"DONE {task} {json.dumps(result)}")
        watching.cancel()
    say("ALL DONE")


asyncio.run(main())
'''


def task_ids() -> list[str]:
    return [f"t{n}" for n in range(1, TASKS + 1)]


def recorded(task: str, number: int) -> str:
    return f"recorded {task} r{number}"


def question(task: str, number: int) -> str:
    return f"{task} r{number}: {recorded(task, number)}"


def helper_answer(task: str, number: int) -> str:
    return f"helper heard {task} r{number}"


def expected_result(task: str) -> dict[str, Any]:
    return {"task": task, "rounds": [[recorded(task, n), helper_answer(task, n), f"go {task} {n}"]
                                     for n in range(1, ROUNDS + 1)]}


def expected_steps(task: str) -> list[tuple[int, str]]:
    """The workflow task's journal: per round, the tool call, the helper's answer, the sleep, the signal's wait."""
    names = [name.format(r=n) for n in range(1, ROUNDS + 1) for name in STEPS_PER_ROUND]
    return list(enumerate(names))


def tool_step(task: str, number: int) -> tuple[str, int, str]:
    return task, (number - 1) * len(STEPS_PER_ROUND), "tool:" + TOOL


def delegate_task(task: str, number: int) -> str:
    """The helper's turn task for the round's ctx.ask: named after the operation's position in the workflow."""
    return f"delegate:{task}:op{(number - 1) * OPERATIONS_PER_ROUND + 1}"


# -- the helper's model ------------------------------------------------------------------------


@dataclass
class Request:
    """One request the server received: the helper asked about a round of a task."""

    run: int
    task: str
    number: int
    answered: bool = False

    @property
    def step(self) -> tuple[str, int, str]:
        return delegate_task(self.task, self.number), 0, "model:1"


class HelperModel(ModelServer[Request]):
    """The helper's model answers the round it is asked about."""

    def request(self, run: int, body: dict[str, Any]) -> Request:
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        assert len(users) == 1, f"a delegate's turn carries only its question: {users}"
        task, number = users[0].split(":")[0].split(" r")
        assert users[0] == question(task, int(number)), f"the helper was asked {users[0]!r}"
        return Request(run, task, int(number))

    def answer(self, body: dict[str, Any], request: Request) -> list[dict[str, Any]]:
        return text_chunks(helper_answer(request.task, request.number))


@pytest.fixture
def server() -> Iterator[HelperModel]:
    model_server = HelperModel()
    try:
        yield model_server
    finally:
        model_server.close()


@pytest.fixture
def app(tmp_path: Path, server: HelperModel) -> Path:
    root = tmp_path / "app"
    write_file(root, "wippy.yaml", "watch: false\n")
    write_file(root, "registry/app/_index.yaml", APP.format(base_url=server.base_url, tool=TOOL, sleep=SLEEP))
    write_file(root, "tools/side.py", SIDE_TOOL.format(log=str(tmp_path / "side.log")))
    return root


def kill_plan(rng: random.Random, kind: str) -> KillPlan:
    """A kill point in a step of that kind (`after`: a while after the start: boot, recovery, early work)."""
    if kind == "tool":  # the tool wrote its line: its step may or may not be journaled yet
        return KillPlan("tool", n=rng.randint(1, 3), delay=rng.uniform(0.0, 0.015))
    if kind == "ask":  # right before or after the server answers, or a moment after: reading it, journaling it
        plan = rng.choice(["server-before", "server-after", "answered"])
        return KillPlan(plan, n=rng.randint(1, 3), delay=rng.uniform(0.0, 0.02) if plan == "answered" else 0.0)
    if kind == "sleep":
        return KillPlan("sleep", n=rng.randint(1, 3), delay=rng.uniform(0.0, SLEEP / 2))
    if kind == "wait":
        return KillPlan("wait", n=1, delay=rng.uniform(0.0, HOLD * 1.2))  # at times as the signals go out
    return KillPlan("after", delay=rng.uniform(0.05, 1.5))


def kind_of(plan: KillPlan | None) -> str | None:
    if plan is None:
        return None
    return "ask" if plan.kind in ("server-before", "server-after", "answered") else plan.kind


# -- the test ------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_kill_9_in_every_kind_of_workflow_step_loses_nothing_and_repeats_nothing_completed(
    tmp_path: Path, app: Path, server: HelperModel
) -> None:
    rng = random.Random(SEED)
    driver = Driver(tmp_path, app, server, tmp_path / "side.log", DRIVER,
                    [str(TASKS), str(ROUNDS), str(HOLD)])
    work_left = True
    while len(driver.runs) < MAX_ROUNDS:
        killed = [kind_of(run.plan) for run in driver.runs if run.killed]
        missing = [kind for kind in KINDS if kind not in killed]
        if len(killed) >= MIN_KILLS and not missing:
            break
        kind = rng.choice(missing or ["tool", "ask", "ask", "sleep", "after"]) if work_left else "after"
        run = driver.run(kill_plan(rng, kind))
        assert server.errors == [], f"seed {SEED}: the model server failed: {server.errors}\n{driver.summary()}"
        check_printed(driver, run)
        if not run.killed:  # it ended before its kill point came
            assert run.finished, f"seed {SEED}, run {run.number}: the driver failed\n{driver.tail(run)}"
            work_left = False
    final = driver.run(None)
    assert server.errors == [], f"seed {SEED}: the model server failed: {server.errors}\n{driver.summary()}"
    check_printed(driver, final)
    assert final.finished, f"seed {SEED}: the last run failed\n{driver.tail(final)}"
    killed = [kind_of(run.plan) for run in driver.runs if run.killed]
    assert len(killed) >= MIN_KILLS and set(KINDS) <= set(killed), (
        f"seed {SEED}: the work ran out before a kill in each kind of step: {killed}\n{driver.summary()}")

    repeats = check_nothing_completed_ran_twice(driver, ran_in(driver), journaled)
    check_every_task_completed(driver, final)
    check_waiting_tasks_held_no_worker(driver)
    print(driver.summary())
    print("\n".join(line for run in driver.runs for line in run.stdout if line.startswith("WAIT ")))
    print(f"kills by kind: { {kind: killed.count(kind) for kind in set(killed)} }; repeats of steps interrupted "
          f"before they were journaled: {dict(repeats)}")


def ran_in(driver: Driver) -> Callable[[Run], list[tuple[str, Hashable]]]:
    """What a run did outside the node: the tool's lines, the model's requests, as the journal's steps they are."""

    def ran(run: Run) -> list[tuple[str, Hashable]]:
        done: list[tuple[str, Hashable]] = [("tool side effect", tool_step(task, int(part.removeprefix("r"))))
                                            for task, part, _ in driver.side_lines(run.number)]
        return done + [("model request", request.step) for request in driver.server.of_run(run.number)]

    return ran


def journaled(journal: Journal) -> set[Hashable]:
    return {(task, seq, name) for task, seq, name, _ in journal.steps}


def check_printed(driver: Driver, run: Run) -> None:
    """Whatever a run printed before its kill is the result the task ends with; no task failed."""
    for task, text in run.printed("DONE").items():
        assert json.loads(text) == expected_result(task), f"seed {SEED}, run {run.number}: {task} gave {text}"
    assert not run.printed("FAILED"), f"seed {SEED}, run {run.number}: {run.printed('FAILED')}\n{driver.tail(run)}"


def check_every_task_completed(driver: Driver, final: Run) -> None:
    journal = final.journal
    assert journal is not None
    tasks = task_ids()
    unfinished = [task for task in tasks if journal.status.get(task) != "completed"]
    assert not unfinished, (f"seed {SEED}: tasks did not complete: "
                            f"{ {t: (journal.status.get(t), journal.error(t)) for t in unfinished} }\n"
                            f"{driver.summary()}")
    assert {task: journal.result(task) for task in tasks} == {task: expected_result(task) for task in tasks}
    assert final.printed("DONE") == {task: json.dumps(expected_result(task)) for task in tasks}, final.stdout
    by_task: dict[str, list[tuple[int, str]]] = {}
    for task, seq, name, ok in journal.steps:
        assert ok, f"seed {SEED}: step {seq} ({name}) of {task} failed"
        by_task.setdefault(task, []).append((seq, name))
    assert {task: by_task.get(task) for task in tasks} == {task: expected_steps(task) for task in tasks}, (
        f"seed {SEED}: {by_task}")
    delegates = {delegate_task(task, n) for task in tasks for n in range(1, ROUNDS + 1)}
    assert {task: by_task.get(task) for task in delegates} == {task: [(0, "model:1")] for task in delegates}
    assert sorted(journal.tasks) == sorted([*tasks, *delegates]), f"seed {SEED}: {journal.tasks}"
    lines = {(task, int(part.removeprefix("r"))) for task, part, _ in driver.side_lines()}
    assert lines == {(task, n) for task in tasks for n in range(1, ROUNDS + 1)}


def check_waiting_tasks_held_no_worker(driver: Driver) -> None:
    """Each time every task waited for its signal, no sandbox worker was busy and none was there beyond the pool."""
    waits = [line for run in driver.runs for line in run.stdout if line.startswith("WAIT ")]
    assert len(waits) >= ROUNDS, f"seed {SEED}: {waits}"
    for line in waits:
        fields = dict(field.split("=") for field in line.split()[2:])
        assert fields["busy"] == "0" and fields["workers"] == fields["size"], f"seed {SEED}: {line}"
