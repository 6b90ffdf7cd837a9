"""`kill -9` a node over and over while it runs agent turns; every turn still ends right and nothing done runs twice.

A driver script (a subprocess) boots a node on a small app whose model is an
OpenAI-compatible server on 127.0.0.1 (here, in the test process) and whose one
tool appends a line to a file. The driver asks CONVERSATIONS conversations for
TURNS turns each, every turn under a fixed task id, so a driver started again
after a kill attaches to the turns that exist instead of starting them over.
Each turn is: model call 1 (the model answers with a call to the tool; in even
turns with two calls at once, which run as parallel steps), the tool calls, model
call 2 (the model answers with text that quotes the tools' results).

The test kills the driver with SIGKILL at a point chosen by a seeded RNG: a
while after it starts (boot, recovery, early work), in the server just before or
just after it answers the n-th request of the run, a moment after the server
finished an answer, after the tool's side effect, or after a turn finished. After
every kill the state file must open cleanly, and the test reads which steps the
journal holds. Then it starts the driver again; after MIN_KILLS kills one last
run must finish everything.

What "completed" means. A model request or a tool call is completed once its
step is in the journal. The node may die after the server answered (or after the
tool wrote its line) but before the step committed: then doing it again is
right, as nobody recorded it. So the assertions are:

- in each run, a step runs at most once (one request per model step, one line per tool step);
- a step already in the journal when a run starts is never run in that run;
- a step that ran in a run but is not in the journal after it: that run was killed;
- the journal holds each step once, in order, and every turn completed with the answer the server's
  script implies; every answer the driver printed, in any run, is that answer;
- every model request carried exactly the conversation's earlier turns (nothing lost or doubled).

The test runs on both stores: the DuckDB state file, and a Postgres database on a real
server (`WIPPY_STATE`), killed half as often there to keep the suite short.

`WIPPY_KILL9_SEED=<n>` draws another sequence of kill points (the seed is in every failure message; the
points are drawn from it, the timing around them is real, so a seed is a scenario, not an exact replay).

A turn parked as `needs_attention` after repeated kills (the engine cannot tell a
poison task from a node killed from outside) is retried when the driver asks for
it again by its task id, so every turn completes.
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
    KillPlan,
    ModelServer,
    Run,
    check_nothing_completed_ran_twice,
    chunk,
    text_chunks,
)

CONVERSATIONS = 3
TURNS = 8
MIN_KILLS = 20
MAX_ROUNDS = 40  # rounds whose driver finished before its kill point do not count as kills
TOOL = "tools_side_record"  # how the registry offers tools/side.py's `record` to the model

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
  - name: agent
    kind: agent
    model: app:m
    tools: ["tools.*:*"]
    max_steps: 6
"""


DRIVER = '''
import asyncio
import sys

from wippy_agents import App
from wippy_agents.agents import AgentError

APP, CONVERSATIONS, TURNS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


async def conversation(app, c):
    conv = await app.conversation("app:agent", id=f"c{c}")
    for t in range(1, TURNS + 1):
        turn = f"c{c}-t{t}"
        try:
            answer = await conv.ask(f"{turn}: record it", task_id=turn)  # attaches to the turn if it exists
        except AgentError as error:  # the test decides what a failed turn means; the other conversations go on
            say(f"FAILED {turn} {error}")
            return
        say(f"DONE {turn} {answer.text}")


def say(line):
    """One line in one write: print() writes each piece apart when unbuffered, and a kill between them would leave
    half a line that looks like a whole one."""
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()


async def main():
    async with App(root=APP) as app:
        say("BOOTED")
        await asyncio.gather(*(conversation(app, c) for c in range(1, CONVERSATIONS + 1)))
    say("ALL DONE")


asyncio.run(main())
'''


def turn_ids() -> list[str]:
    return [f"c{c}-t{t}" for c in range(1, CONVERSATIONS + 1) for t in range(1, TURNS + 1)]


def question(turn: str) -> str:
    return f"{turn}: record it"


def parts(turn: str) -> tuple[str, ...]:
    """The tool calls the model makes in a turn: two at once (run together, as parallel steps) in even turns."""
    return ("a", "b") if int(turn.split("-t")[1]) % 2 == 0 else ("a",)


def call_id(turn: str, part: str) -> str:
    return f"call_{turn}_{part}"  # stable for the call, so its step is always `tool:call_<turn>_<part>`


def tool_result(turn: str, part: str) -> str:
    return f"recorded {turn} {part}"


def expected_answer(turn: str) -> str:
    return f"{turn} answered: " + "; ".join(tool_result(turn, part) for part in parts(turn))


def expected_steps(turn: str) -> list[tuple[int, str]]:
    """The turn's steps in the journal: model call 1, its tool calls (numbered in call order), model call 2."""
    names = ["model:1", *(f"tool:{call_id(turn, part)}" for part in parts(turn)), "model:2"]
    return list(enumerate(names))


# -- the model: an OpenAI-compatible server on 127.0.0.1 -----------------------------------------


@dataclass
class Request:
    """One request the server received."""

    run: int
    turn: str
    call: int  # the turn's n-th model call: its step is `model:<n>`
    users: tuple[str, ...]  # the user messages it carried: the conversation's earlier turns, then this one
    tool_results: tuple[str, ...]  # the tool results after the turn's last assistant message
    streamed: bool
    answered: bool = False  # the server wrote its whole response (whether the client read it is unknowable)

    @property
    def step(self) -> tuple[str, str]:
        return self.turn, f"model:{self.call}"


class TurnModel(ModelServer[Request]):
    """Chat Completions, scripted from the request: a user's question gets a call to the tool, a tool result gets
    the final answer."""

    def request(self, run: int, body: dict[str, Any]) -> Request:
        messages = body["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        users = tuple(m["content"] for m in messages if m["role"] == "user")
        turn = messages[last_user]["content"].split(":")[0]
        call = 1 + sum(m["role"] == "assistant" for m in messages[last_user + 1:])
        results: list[str] = []
        for message in reversed(messages):
            if message["role"] != "tool":
                break
            results.insert(0, message["content"])
        return Request(run, turn, call, users, tuple(results), bool(body.get("stream")))

    def answer(self, body: dict[str, Any], request: Request) -> list[dict[str, Any]]:
        if request.call == 1:
            offered = [t["function"]["name"] for t in body.get("tools") or []]
            assert TOOL in offered, f"the model was not offered {TOOL}: {offered}"
            wires = [{"index": i, "id": call_id(request.turn, part), "type": "function",
                      "function": {"name": TOOL, "arguments": json.dumps({"key": request.turn, "part": part})}}
                     for i, part in enumerate(parts(request.turn))]
            return [chunk({"role": "assistant", "content": None, "tool_calls": [wire]}) for wire in wires] + [
                chunk({}, finish="tool_calls")]
        assert request.call == 2 and request.tool_results, f"a request the script has no answer for: {request}"
        return text_chunks(f"{request.turn} answered: " + "; ".join(request.tool_results))


@pytest.fixture
def server() -> Iterator[TurnModel]:
    model_server = TurnModel()
    try:
        yield model_server
    finally:
        model_server.close()


def kill_plan(rng: random.Random, work_left: bool) -> KillPlan:
    """A random kill point: anywhere from the start to the middle of the work, weighted to the risky windows."""
    if not work_left:  # everything is done: only a kill early in the run is sure to land
        return KillPlan("after", delay=rng.uniform(0.05, 0.6))
    kind = rng.choice(["after", "after", "server-before", "server-after", "server-after", "answered", "tool", "tool",
                       "done"])
    if kind == "after":  # from the start: imports, boot, recovery, the first requests
        return KillPlan(kind, delay=rng.uniform(0.05, 1.0))
    if kind.startswith("server-"):  # exactly before, or exactly after, the server answers the n-th request of the run
        return KillPlan(kind, n=rng.randint(1, 3))
    if kind == "answered":  # a moment after the n-th answer was sent: reading it, journaling it, or just after
        return KillPlan(kind, n=rng.randint(1, 3), delay=rng.uniform(0.0, 0.02))
    if kind == "tool":  # the tool wrote its line: its step may or may not be journaled yet
        return KillPlan(kind, n=rng.randint(1, 2), delay=rng.uniform(0.0, 0.015))
    return KillPlan(kind, n=rng.randint(1, 2), delay=rng.uniform(0.0, 0.01))  # a turn was just answered


# -- the test ------------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path, server: TurnModel) -> Path:
    root = tmp_path / "app"
    write_file(root, "wippy.yaml", "watch: false\n")
    write_file(root, "registry/app/_index.yaml", APP.format(base_url=server.base_url))
    write_file(root, "tools/side.py", SIDE_TOOL.format(log=str(tmp_path / "side.log")))
    return root


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("store", "kills"), [("duckdb", MIN_KILLS), ("postgres", MIN_KILLS // 2)])
def test_kill_9_at_random_points_loses_nothing_and_repeats_nothing_completed(
    tmp_path: Path, app: Path, server: ModelServer, store: str, kills: int, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(SEED)
    database = request.getfixturevalue("postgres").database() if store == "postgres" else None
    driver = Driver(tmp_path, app, server, tmp_path / "side.log", DRIVER, [str(CONVERSATIONS), str(TURNS)], database)
    work_left = True
    while sum(run.killed for run in driver.runs) < kills and len(driver.runs) < MAX_ROUNDS:
        run = driver.run(kill_plan(rng, work_left))
        assert server.errors == [], f"seed {SEED}: the model server failed: {server.errors}\n{driver.summary()}"
        if not run.killed:  # it ended before its kill point came
            assert run.finished, f"seed {SEED}, run {run.number}: the driver failed\n{driver.tail(run)}"
            work_left = False
    final = driver.run(None)
    assert server.errors == [], f"seed {SEED}: the model server failed: {server.errors}\n{driver.summary()}"
    assert final.finished, f"seed {SEED}: the last run failed\n{driver.tail(final)}"
    assert sum(run.killed for run in driver.runs) >= kills, driver.summary()

    repeats = check_nothing_completed_ran_twice(driver, ran_in(driver), lambda journal: journal.step_keys)
    print(f"repeats of steps interrupted before they were journaled: {dict(repeats)}")
    check_requests_carried_the_history(driver)
    check_every_turn_completed(driver, final)
    print(driver.summary())


def ran_in(driver: Driver) -> Callable[[Run], list[tuple[str, Hashable]]]:
    """What a run did outside the node: the model's requests and the tool's lines, as the journal's steps they are."""

    def ran(run: Run) -> list[tuple[str, Hashable]]:
        done: list[tuple[str, Hashable]] = [("model request", r.step) for r in driver.server.of_run(run.number)]
        return done + [("tool side effect", (turn, f"tool:{call_id(turn, part)}"))
                       for turn, part, _ in driver.side_lines(run.number)]

    return ran


def check_requests_carried_the_history(driver: Driver) -> None:
    """Every request carried the conversation's earlier turns once each, then this turn's question; the second
    model call of a turn carried the tool's result."""
    for request in driver.server.requests:
        conversation, number = request.turn.split("-t")
        history = tuple(question(f"{conversation}-t{t}") for t in range(1, int(number) + 1))
        assert request.users == history, f"seed {SEED}, run {request.run}: {request}"
        assert request.streamed, request
        if request.call == 2:
            expected = tuple(tool_result(request.turn, part) for part in parts(request.turn))
            assert request.tool_results == expected, f"seed {SEED}: {request}"
        else:
            assert (request.call, request.tool_results) == (1, ()), f"seed {SEED}: {request}"


def check_every_turn_completed(driver: Driver, final: Run) -> None:
    journal = final.journal
    assert journal is not None
    turns = turn_ids()
    for run in driver.runs:  # whatever a run printed before its kill is the answer the turn ends with
        for turn, text in run.printed("DONE").items():
            assert text == expected_answer(turn), f"seed {SEED}, run {run.number}: {turn} answered {text!r}"
    assert sorted(journal.tasks) == sorted(set(journal.tasks)), f"seed {SEED}: a task row is doubled: {journal.tasks}"
    by_task: dict[str, list[tuple[int, str]]] = {}
    for task, seq, name, ok in journal.steps:
        assert ok, f"seed {SEED}: step {name} of {task} failed"
        by_task.setdefault(task, []).append((seq, name))
    for task, steps in by_task.items():  # one row per step: a step journaled twice ran (and was recorded) twice
        # (of an unfinished turn, any of them: its parallel tool steps may commit in either order)
        assert len(set(steps)) == len(steps) and set(steps) <= set(expected_steps(task)), (
            f"seed {SEED}: the steps of {task}: {steps}")

    unfinished = [turn for turn in turns if journal.status.get(turn) != "completed"]
    assert not unfinished, (f"seed {SEED}: turns did not complete: "
                            f"{ {t: (journal.status.get(t), journal.error(t)) for t in unfinished} }\n{driver.summary()}")
    answers = {turn: journal.result(turn)["answer"].text for turn in turns}
    assert answers == {turn: expected_answer(turn) for turn in turns}
    assert final.printed("DONE") == {turn: expected_answer(turn) for turn in turns}, f"seed {SEED}: {final.stdout}"
    assert sorted(journal.tasks) == sorted(turns), f"seed {SEED}: {journal.tasks}"
    assert by_task == {turn: expected_steps(turn) for turn in turns}, f"seed {SEED}: {by_task}"
