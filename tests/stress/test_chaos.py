"""Chaos: `kill -9` one node over and over while it runs agent turns and restricted workflows at once, and change
the app's files while it is down; every task ends right, nothing done runs twice, the registry's history holds.

A driver script (a subprocess, tests/durable/_kill9.py's `Driver`) boots a node on a small app and runs, at the same
time, CONVERSATIONS conversations of TURNS turns of `app:agent` (each turn: a model call that calls the one tool,
the tool, a model call that answers) and LANES lanes of FLOWS tasks of the restricted workflow `app:flow` (each
round: the tool, a question to the delegate agent `app:helper`, a durable sleep), one after another in each lane,
every task under a fixed id, so a driver started again attaches to the work that exists. The model is a loopback
Chat Completions server here; the tool appends a line to a file (the side effect counted).

The test kills the driver with SIGKILL at points drawn from a seeded RNG (a while after its start, before or after
the server answers, right after the tool wrote its line, right after a task ended, a moment after the work the
last run left had all moved on). Between runs, while the node is down, it may change the app's files, one change
at a time: the agent's prompt edited, a tool file added, the workflow's source edited compatibly (the label in its
result). Then:

- after every run the state opens cleanly, and its registry history is versions 1..n, contiguous, each change of
  an entry recorded once: version 1 loaded from the files, then each change made while down as one version by
  `file:<the file changed>`, "files changed while the node was not running", with its entries, nothing else;
- every run that booted shows the registry as the files are (its version, prompt, tools, workflow source);
- in each run a step runs at most once, never when the journal held it as the run started (`_kill9`'s check);
- every turn and workflow task completes with the result its script implies, each on the registry version it
  was pinned to when it began: its prompt and tools in every model request, its label in the result;
- at the end `Registry.history` (in the last run) and `wippy registry history` agree with the state.

Figures (via the `figures` fixture): kills, runs, tasks, changes, steps run again because the node died before
journaling them, and the recovery time: from a driver's start (its imports included: a restarted node pays them)
to every task the last run left unfinished having journaled a step or ended. `make test` runs about 10 kills;
`make soak` 200, on more work. `WIPPY_KILL9_SEED=<n>` draws another sequence of kill points and changes.

`make soak` also runs it against a cluster (tests/cluster's Ray cluster and Postgres state; too heavy for `make
test` on two cores, so that parameter exists only in a soak run): a wippy node's process is killed with SIGKILL
RAY_KILLS times while conversations' turns run there, and the agent's prompt edited while it is down; Ray restarts
it. Every turn answers right, each of its steps is journaled once, no step the journal held right after a kill ran
again, each edit is one version by its file, and the turns asked last run on the last edit on every node.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import re
import signal
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from wippy_agents.cluster import ClusterDriver
from wippy_agents.testing import write_file

from ..cluster._model import ChatServer
from ..cluster.conftest import ClusterApp, chat, cluster_app, ignore, ray_cluster, until  # noqa: F401 (fixtures)
from ..conftest import SOAK
from ..durable._kill9 import (
    SEED,
    SIDE_TOOL,
    Driver,
    Journal,
    KillPlan,
    ModelServer,
    Run,
    check_nothing_completed_ran_twice,
    chunk,
    read_postgres_journal,
    text_chunks,
)
from ..test_cli import wippy
from ._figures import Figures, latency_summary


@dataclass(frozen=True)
class Size:
    """How much work and how many kills a version of the suite has."""

    kills: int
    conversations: int
    turns: int
    lanes: int
    flows: int  # workflow tasks per lane, one after another
    rounds: int  # per workflow task

    @property
    def arguments(self) -> list[str]:
        return [str(n) for n in (self.conversations, self.turns, self.lanes, self.flows, self.rounds)]


SHORT = Size(kills=10, conversations=2, turns=4, lanes=2, flows=2, rounds=2)
SOAKED = Size(kills=200, conversations=4, turns=40, lanes=3, flows=16, rounds=3)
SLEEP = 0.1  # each round's ctx.sleep, in seconds
CHANGE_CHANCE = 0.5  # before a run, with every earlier change recorded: how often the files change
TOOL = "tools_side_record"  # how the registry offers tools/side.py's `record` to the model
SIDE = "tools.side:record"
BOOT_REASON, DOWN_REASON = "loaded from files", "files changed while the node was not running"
FINISHED = ("completed", "failed", "cancelled")  # needs_attention is not: the driver retries it by asking again

INDEX = """
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
    prompt: prompts:agent
    tools: ["tools.*:*"]
    max_steps: 4
  - name: helper
    kind: agent
    model: app:m
    max_steps: 2
  - name: flow
    kind: workflow
    runtime: restricted
    source: |
      def main(ctx, task: str, rounds: int):
          \"\"\"Each round: record it with the tool, ask the helper about it, sleep.\"\"\"
          done = []
          for number in range(1, rounds + 1):
              recorded = ctx.tool("{side}", key=task, part="r" + str(number))
              answer = ctx.ask("app:helper", task + " r" + str(number) + ": " + recorded)
              ctx.sleep({sleep})
              done.append([recorded, answer])
          return {{"task": task, "label": "{label}", "rounds": done}}
  - name: grant
    kind: policy
    subjects: ["app:flow"]
    actions: [tool.call, agent.delegate]
    resources: ["{side}", "app:helper"]
    effect: allow
"""

PROMPT = "You record what you are asked to, revision {revision}.\n"


EXTRA_TOOL = '''
def echo(text: str) -> str:
    """Say the text back (added while the node was down, as change {revision}).

    Args:
        text: What to say back.
    """
    return text
'''

DRIVER = '''
import time

STARTED = time.monotonic()  # before the imports: a node started again after a kill pays them too

import asyncio
import functools
import json
import sys

from wippy_agents import App
from wippy_agents.agents import AgentError
from wippy_agents.durable import TaskFailed

APP, UNFINISHED = sys.argv[1], sys.argv[2]
CONVERSATIONS, TURNS, LANES, FLOWS, ROUNDS = map(int, sys.argv[3:8])
FINISHED = ("completed", "failed", "cancelled")


def say(line):
    """One line in one write, so a kill never leaves half a line that looks like a whole one."""
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()


async def conversation(app, c):
    conv = await app.conversation("app:agent", id=f"c{c}")
    for t in range(1, TURNS + 1):
        turn = f"c{c}-t{t}"
        try:
            answer = await conv.ask(f"{turn}: record it", task_id=turn)  # attaches to the turn if it exists
        except AgentError as error:  # the test decides what a failed turn means; the other work goes on
            say(f"FAILED {turn} {error}")
            return
        say(f"DONE {turn} {answer.text}")


async def lane(app, number):
    for k in range(1, FLOWS + 1):
        task = f"w{number}-{k}"
        await app.tasks.start("app:flow", {"task": task, "rounds": ROUNDS}, task_id=task)  # attaches, or retries
        try:
            result = await app.tasks.result(task)
        except TaskFailed as error:
            say(f"FAILED {task} {error}")
            return
        say(f"DONE {task} {json.dumps(result)}")


async def resumed(app, unfinished):
    """Say when every task the last run left unfinished has journaled a step or ended."""
    while unfinished:
        for task, steps in list(unfinished.items()):
            info = app.tasks.get(task)
            if info.status in FINISHED or len(info.steps) > steps:
                del unfinished[task]
        await asyncio.sleep(0.005)
    say(f"RESUMED {time.monotonic() - STARTED:.4f}")


async def main():
    with open(UNFINISHED) as file:
        unfinished = json.load(file)  # task -> its journaled steps, as the last run left them
    async with App(root=APP) as app:
        registry = app.registry
        say("BOOTED " + json.dumps({
            "version": registry.version, "prompt": registry.get("prompts:agent").data["template"],
            "tools": sorted(entry.id for entry in registry.find(kind="tool") if entry.id.startswith("tools.")),
            "flow": registry.get("app:flow").data["source"]}))
        watch = asyncio.create_task(resumed(app, unfinished))
        await asyncio.gather(*(conversation(app, c) for c in range(1, CONVERSATIONS + 1)),
                             *(lane(app, n) for n in range(1, LANES + 1)))
        await asyncio.wait_for(watch, 10)  # every task has ended: the watch has seen them all
        say("HISTORY " + json.dumps([[v.version, v.author, v.reason, list(v.entries)] for v in registry.history()]))
    say("ALL DONE")


asyncio.run(main())
'''


# -- the work and what it must give ----------------------------------------------------------------


def turn_ids(size: Size) -> list[str]:
    return [f"c{c}-t{t}" for c in range(1, size.conversations + 1) for t in range(1, size.turns + 1)]


def flow_ids(size: Size) -> list[str]:
    return [f"w{n}-{k}" for n in range(1, size.lanes + 1) for k in range(1, size.flows + 1)]


def recorded(key: str, part: str) -> str:
    return f"recorded {key} {part}"


def turn_answer(turn: str) -> str:
    return f"{turn} answered: {recorded(turn, 'a')}"


def helper_answer(task: str, number: int) -> str:
    return f"helper heard {task} r{number}"


def turn_steps(turn: str) -> list[tuple[int, str]]:
    return list(enumerate(["model:1", f"tool:{call_id(turn)}", "model:2"]))


def flow_steps(size: Size) -> list[tuple[int, str]]:
    return list(enumerate(name for _ in range(size.rounds) for name in (f"tool:{SIDE}", "ask:app:helper", "sleep")))


def call_id(turn: str) -> str:
    return f"call_{turn}"


def delegate_task(task: str, number: int) -> str:
    """The helper's turn of a round's ctx.ask: named after the operation's position (3 a round, the ask second)."""
    return f"delegate:{task}:op{(number - 1) * 3 + 1}"


# -- the registry changes made while the node is down ------------------------------------------------


@dataclass
class Change:
    """One change of the app's files, made while the node was down; `version` is the one that recorded it."""

    revision: int  # 1, 2, ...: the n-th change
    kind: str  # prompt, tool or flow
    version: int | None = None

    @property
    def ids(self) -> list[str]:
        return {"prompt": ["prompts:agent"], "tool": [f"tools.extra{self.revision}:echo"],
                "flow": ["app:flow"]}[self.kind]

    @property
    def author(self) -> str:
        """The file it changed, as the version that records it names it."""
        return "file:" + {"prompt": "prompts/agent.md", "tool": f"tools/extra{self.revision}.py",
                          "flow": "registry/app/_index.yaml"}[self.kind]


@dataclass
class Files:
    """The app's folder, as the test wrote it, with every change made to it since."""

    root: Path
    base_url: str
    side_log: Path
    changes: list[Change] = field(default_factory=list)
    loaded: bool = False  # the state holds version 1: a change now is a change of its own, not part of the load

    @property
    def settled(self) -> bool:
        """Whether the registry recorded the files as they are: the next change will be a version of its own."""
        return self.loaded and all(c.version for c in self.changes)

    def write(self) -> None:
        write_file(self.root, "wippy.yaml", "watch: false\n")
        write_file(self.root, "tools/side.py", SIDE_TOOL.format(log=str(self.side_log)))
        self._write_prompt(0)
        self._write_index(0)

    def change(self) -> Change:
        revision = len(self.changes) + 1
        change = Change(revision, ("prompt", "tool", "flow")[(revision - 1) % 3])
        if change.kind == "prompt":
            self._write_prompt(revision)
        elif change.kind == "tool":
            write_file(self.root, f"tools/extra{revision}.py", EXTRA_TOOL.format(revision=revision))
        else:
            self._write_index(revision)
        self.changes.append(change)
        return change

    def as_of(self, version: int) -> dict[str, Any]:
        """What the registry holds at `version`: the prompt's and the label's revisions, the tools."""
        made = [c for c in self.changes if c.version is not None and c.version <= version]
        return {"prompt": max((c.revision for c in made if c.kind == "prompt"), default=0),
                "label": max((c.revision for c in made if c.kind == "flow"), default=0),
                "tools": sorted([SIDE, *(c.ids[0] for c in made if c.kind == "tool")])}

    def _write_prompt(self, revision: int) -> None:
        write_file(self.root, "prompts/agent.md", PROMPT.format(revision=revision))

    def _write_index(self, revision: int) -> None:
        write_file(self.root, "registry/app/_index.yaml", INDEX.format(
            base_url=self.base_url, side=SIDE, sleep=SLEEP, label=label(revision)))


def label(revision: int) -> str:
    return f"rev{revision}"


@dataclass(frozen=True)
class RegistryState:
    """The registry's history and the tasks' pinned versions, as a killed node left them in the state file."""

    versions: list[tuple[int, str, str, list[str]]]  # version, author, reason, the entries it changed
    doubled: list[tuple[int, str]]  # (version, entry) recorded more than once
    pinned: dict[str, int]  # task -> the registry version it runs on


def read_registry(state: Path) -> RegistryState:
    db = duckdb.connect(str(state), read_only=True)  # as read_journal: the file stays as the node left it
    try:
        versions = db.execute("""
            SELECT version, any_value(author), any_value(reason), list(DISTINCT entry_id ORDER BY entry_id)
            FROM registry_changes GROUP BY version ORDER BY version""").fetchall()
        doubled = db.execute("""
            SELECT version, entry_id FROM registry_changes GROUP BY version, entry_id HAVING count(*) > 1""").fetchall()
        pinned = dict(db.execute("SELECT id, registry_version FROM tasks").fetchall())
    finally:
        db.close()
    return RegistryState([(int(v), a, r, list(ids)) for v, a, r, ids in versions],
                         [(int(v), e) for v, e in doubled], {task: int(v) for task, v in pinned.items()})


# -- the model: an OpenAI-compatible server on 127.0.0.1 -----------------------------------------


@dataclass
class Request:
    """One request the server received: of a turn of `app:agent`, or of the helper asked about a workflow's round."""

    run: int
    task: str  # the turn, or the workflow task
    call: int  # the turn's n-th model call (the helper answers in one)
    number: int  # the workflow's round (0: a turn)
    users: tuple[str, ...]
    system: str
    offered: tuple[str, ...]
    tool_results: tuple[str, ...]
    answered: bool = False

    @property
    def step(self) -> tuple[str, int, str]:
        if self.number:
            return delegate_task(self.task, self.number), 0, "model:1"
        return self.task, 0 if self.call == 1 else 2, f"model:{self.call}"


class ChaosModel(ModelServer[Request]):
    """A turn's question gets a call to the tool, its result the answer; the helper answers the round it hears of."""

    def request(self, run: int, body: dict[str, Any]) -> Request:
        messages = body["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        users = tuple(m["content"] for m in messages if m["role"] == "user")
        system = "".join(m["content"] for m in messages if m["role"] == "system")
        offered = tuple(sorted(t["function"]["name"] for t in body.get("tools") or []))
        results = tuple(m["content"] for m in messages[last_user + 1:] if m["role"] == "tool")
        if turn := re.fullmatch(r"(c\d+-t\d+): record it", users[-1]):
            call = 1 + sum(m["role"] == "assistant" for m in messages[last_user + 1:])
            return Request(run, turn[1], call, 0, users, system, offered, results)
        helper = re.fullmatch(r"(w\d+-\d+) r(\d+): recorded \1 r\2", users[-1])
        assert helper and len(users) == 1, f"a question the script does not know: {users}"
        return Request(run, helper[1], 1, int(helper[2]), users, system, offered, results)

    def answer(self, body: dict[str, Any], request: Request) -> list[dict[str, Any]]:
        if request.number:
            return text_chunks(helper_answer(request.task, request.number))
        if request.call == 1:
            wire = {"index": 0, "id": call_id(request.task), "type": "function",
                    "function": {"name": TOOL, "arguments": json.dumps({"key": request.task, "part": "a"})}}
            return [chunk({"role": "assistant", "content": None, "tool_calls": [wire]}), chunk({}, finish="tool_calls")]
        assert request.call == 2 and request.tool_results, f"a request the script has no answer for: {request}"
        return text_chunks(f"{request.task} answered: " + "; ".join(request.tool_results))


@pytest.fixture
def server() -> Iterator[ChaosModel]:
    model_server = ChaosModel()
    try:
        yield model_server
    finally:
        model_server.close()


def kill_plan(rng: random.Random, work_left: bool) -> KillPlan:
    """A random kill point, weighted to the risky windows (see tests/durable/test_kill9.py)."""
    kind = rng.choice(["after", "after", "server-before", "server-after", "answered", "tool", "tool", "done",
                       "resumed"])
    if kind == "after" or not work_left:  # from the start: imports, boot, the registry's load, recovery
        return KillPlan("after", delay=rng.uniform(0.05, 1.5))
    if kind == "resumed":  # every task the last run left has moved on (the driver printed RESUMED): a while later
        return KillPlan(kind, n=1, delay=rng.uniform(0.0, 0.3))
    if kind.startswith("server-"):
        return KillPlan(kind, n=rng.randint(1, 4))
    if kind == "answered":
        return KillPlan(kind, n=rng.randint(1, 4), delay=rng.uniform(0.0, 0.02))
    if kind == "tool":
        return KillPlan(kind, n=rng.randint(1, 3), delay=rng.uniform(0.0, 0.015))
    return KillPlan(kind, n=rng.randint(1, 2), delay=rng.uniform(0.0, 0.01))


# -- the test ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["one node", *(["ray nodes"] if SOAK else [])])  # a cluster: soak only
def test_a_node_killed_over_and_over_while_its_files_change_finishes_every_task_once_and_keeps_its_history(
    tmp_path: Path, server: ChaosModel, soak: bool, figures: Figures, where: str, request: pytest.FixtureRequest
) -> None:
    if where == "ray nodes":
        asyncio.run(kill_ray_nodes(request.getfixturevalue("cluster_app"), request.getfixturevalue("chat"), figures))
        return
    size = SOAKED if soak else SHORT
    rng = random.Random(SEED)
    files = Files(tmp_path / "app", server.base_url, tmp_path / "side.log")
    files.write()
    unfinished = tmp_path / "unfinished.json"
    unfinished.write_text("{}")
    driver = Driver(tmp_path, files.root, server, files.side_log, DRIVER, [str(unfinished), *size.arguments])
    work_left = True
    while sum(run.killed for run in driver.runs) < size.kills and len(driver.runs) < 3 * size.kills:
        if files.settled and rng.random() < CHANGE_CHANCE:
            files.change()
        run = driver.run(kill_plan(rng, work_left))
        check_run(driver, files, run)
        if not run.killed:  # it ended before its kill point came
            work_left = False
        unfinished.write_text(json.dumps(unfinished_tasks(run.journal)))
    if files.settled:
        files.change()  # one more, which a run that is not killed picks up
    final = driver.run(None)
    check_run(driver, files, final)
    assert final.finished, f"seed {SEED}: the last run failed\n{driver.tail(final)}"
    assert sum(run.killed for run in driver.runs) >= size.kills, driver.summary()

    repeats = check_nothing_completed_ran_twice(driver, ran_in(driver), journaled)
    state = read_registry(driver.state)
    check_every_task_completed(driver, files, size, final.journal, state)
    check_history_agrees(files, final, state)
    recoveries = [float(line.split()[1]) for run in driver.runs for line in run.stdout if line.startswith("RESUMED ")]
    figures.record("chaos", {
        "kills": sum(run.killed for run in driver.runs), "runs": len(driver.runs),
        "turns": len(turn_ids(size)), "workflow_tasks": len(flow_ids(size)),
        "registry_changes_while_down": len(files.changes),
        "tasks_on_a_changed_version": sum(state.pinned[task] > 1 for task in [*turn_ids(size), *flow_ids(size)]),
        "steps_run_again_killed_before_journaled": dict(repeats),
        "recovery_after_a_kill": {"runs": len(recoveries), **latency_summary(recoveries)},
        "seconds": round(sum(run.seconds for run in driver.runs), 1)})


def unfinished_tasks(journal: Journal | None) -> dict[str, int]:
    """Each task the run left unfinished, with how many steps it had journaled."""
    assert journal is not None
    return {task: sum(step[0] == task for step in journal.steps)
            for task in journal.tasks if journal.status.get(task) not in FINISHED}


def check_run(driver: Driver, files: Files, run: Run) -> None:
    """What every run must leave: no task failed, no server error, the registry's history whole and as the files
    changed, and (if it booted) the registry as the files are."""
    assert driver.server.errors == [], f"seed {SEED}: the model server failed: {driver.server.errors}"
    assert run.killed or run.finished, f"seed {SEED}, run {run.number}: the driver failed\n{driver.tail(run)}"
    assert not run.printed("FAILED"), f"seed {SEED}, run {run.number}: {run.printed('FAILED')}\n{driver.tail(run)}"
    assert run.journal is not None
    if not run.journal.schema:  # killed before its first commit
        assert not files.loaded, f"seed {SEED}, run {run.number}: the state lost its tables"
        return
    state = read_registry(driver.state)
    where = f"seed {SEED}, run {run.number} ({run.plan})"
    assert not state.doubled, f"{where}: entries recorded twice in a version: {state.doubled}"
    assert [v[0] for v in state.versions] == list(range(1, len(state.versions) + 1)), f"{where}: {state.versions}"
    if not state.versions:  # killed before the registry's first load committed
        assert not files.loaded, f"{where}: the registry's history is gone"
        return
    assert state.versions[0][1:3] == ("files", BOOT_REASON), f"{where}: {state.versions[0]}"
    files.loaded = True
    later = state.versions[1:]
    assert len(later) <= len(files.changes), f"{where}: versions no change made: {later}"
    for (version, author, reason, ids), change in zip(later, files.changes, strict=False):
        assert (author, reason, ids) == (change.author, DOWN_REASON, change.ids), (
            f"{where}: version {version} should record change {change}: {author}, {reason}, {ids}")
        change.version = version
    assert all(c.version for c in files.changes[:-1]), f"{where}: an earlier change was never recorded"
    booted = [json.loads(line.removeprefix("BOOTED ")) for line in run.stdout if line.startswith("BOOTED ")]
    for seen in booted:  # it loaded the files as they are
        assert all(c.version for c in files.changes), f"{where}: booted without recording {files.changes[-1]}"
        expected = files.as_of(seen["version"])
        assert seen["version"] == len(state.versions), f"{where}: booted on {seen['version']}: {state.versions}"
        assert seen["prompt"] == PROMPT.format(revision=expected["prompt"]), f"{where}: {seen}"
        assert seen["tools"] == expected["tools"], f"{where}: {seen}"
        assert f'"label": "{label(expected["label"])}"' in seen["flow"], f"{where}: {seen}"


def ran_in(driver: Driver) -> Callable[[Run], list[tuple[str, Hashable]]]:
    """What a run did outside the node: the tool's lines and the model's requests, as the steps they are."""

    def ran(run: Run) -> list[tuple[str, Hashable]]:
        done: list[tuple[str, Hashable]] = []
        for key, part, _ in driver.side_lines(run.number):
            step = (key, 1, f"tool:{call_id(key)}") if part == "a" else (key, (int(part[1:]) - 1) * 3, f"tool:{SIDE}")
            done.append(("tool side effect", step))
        return done + [("model request", r.step) for r in driver.server.of_run(run.number)]

    return ran


def journaled(journal: Journal) -> set[Hashable]:
    return {(task, seq, name) for task, seq, name, _ in journal.steps}


def check_every_task_completed(driver: Driver, files: Files, size: Size, journal: Journal | None,
                               state: RegistryState) -> None:
    """Every task completed, with each step journaled once, on the registry version it began on."""
    assert journal is not None
    turns, flows = turn_ids(size), flow_ids(size)
    delegates = [delegate_task(task, n) for task in flows for n in range(1, size.rounds + 1)]
    unfinished = {t: (journal.status.get(t), journal.error(t)) for t in [*turns, *flows, *delegates]
                  if journal.status.get(t) != "completed"}
    assert not unfinished, f"seed {SEED}: tasks did not complete: {unfinished}\n{driver.summary()}"
    assert sorted(journal.tasks) == sorted([*turns, *flows, *delegates]), f"seed {SEED}: {journal.tasks}"
    by_task: dict[str, list[tuple[int, str]]] = {}
    for task, seq, name, ok in journal.steps:
        assert ok, f"seed {SEED}: step {seq} ({name}) of {task} failed"
        by_task.setdefault(task, []).append((seq, name))
    expected_steps = {turn: turn_steps(turn) for turn in turns} | {task: flow_steps(size) for task in flows} | {
        task: [(0, "model:1")] for task in delegates}
    assert by_task == expected_steps, f"seed {SEED}: {by_task}"

    results = {task: journal.result(task) for task in flows}
    assert results == {task: {"task": task, "label": label(files.as_of(state.pinned[task])["label"]),
                              "rounds": [[recorded(task, f"r{n}"), helper_answer(task, n)]
                                         for n in range(1, size.rounds + 1)]} for task in flows}, f"seed {SEED}"
    assert {turn: journal.result(turn)["answer"].text for turn in turns} == {turn: turn_answer(turn) for turn in turns}
    for run in driver.runs:  # whatever a run printed before its kill is the result the task ends with
        for task, text in run.printed("DONE").items():
            assert text == (turn_answer(task) if task in turns else json.dumps(results[task])), f"seed {SEED}: {text}"
    for request in driver.server.requests:
        if request.number:
            continue
        as_of = files.as_of(state.pinned[request.task])  # a turn runs on the version it began on, after kills too
        conversation, number = request.task.split("-t")
        assert request.users == tuple(f"{conversation}-t{t}: record it" for t in range(1, int(number) + 1)), request
        assert request.system == PROMPT.format(revision=as_of["prompt"]), f"seed {SEED}: {request}"
        assert request.offered == tuple(sorted(tool.replace(".", "_").replace(":", "_") for tool in as_of["tools"]))
    assert {(key, part) for key, part, _ in driver.side_lines()} == {(turn, "a") for turn in turns} | {
        (task, f"r{n}") for task in flows for n in range(1, size.rounds + 1)}  # (again only if killed: see above)


def check_history_agrees(files: Files, final: Run, state: RegistryState) -> None:
    """`Registry.history` in the last run, `wippy registry history` and the state hold the same versions."""
    printed = [line.removeprefix("HISTORY ") for line in final.stdout if line.startswith("HISTORY ")]
    assert [json.loads(line) for line in printed] == [[list(v) for v in state.versions]], printed
    assert len(state.versions) == 1 + len(files.changes), state.versions
    done = wippy("registry", "history", "--root", files.root)
    assert done.returncode == 0, done.stderr
    listed = [re.fullmatch(r"v(\d+)  \S+ \S+  (\S+)  (.+)  \((.*)\)", line) for line in done.stdout.splitlines()]
    assert all(listed), done.stdout
    assert [(int(m[1]), m[2], m[3], m[4].split(", ")) for m in listed if m] == [
        (v, author, reason, ids) for v, author, reason, ids in state.versions], done.stdout


# -- the same against a cluster's nodes (make soak only) -------------------------------------------

RAY_KILLS = 20  # node processes killed, each with turns under way
RAY_LANES = 4  # conversations at once, each lane one after another
RAY_TURNS = 10  # a lane's conversation's turns (short: its history never needs compacting)
RAY_TURNS_AFTER = 2  # turns each lane takes once the last node is back


async def kill_ray_nodes(app: ClusterApp, model: ChatServer, figures: Figures) -> None:
    """`kill -9` the process of a wippy node of a Ray cluster (Postgres state), again and again, while conversations'
    turns run there, and edit the agent's prompt while it is down: Ray restarts the node, the driver asks its turns
    again under their ids. Every turn answers right; no step the journal held when the node died ran again; each
    edit is one version; the turns asked once every node follows the last edit run on it.

    (Taking the machine away instead, as tests/cluster/test_failover.py does once, and adding a new one each time,
    fails here after a few rounds for a reason of this one-host test cluster: every Ray node of it unpacks the app
    folder to the same /tmp/ray path, and a new node's unpacking, which overwrites, deletes the folder that a node
    running elsewhere has as its working directory.)"""
    state = yaml.safe_load((app.root / "wippy.yaml").read_text())["state"]
    snapshots: list[tuple[Journal, int, int]] = []  # the journal right after a kill; the lines and requests then
    failovers: list[float] = []
    killed = asyncio.Event()  # every kill is done, its node is back and every prompt edit is recorded
    late: list[str] = []  # the questions asked after that
    async with ClusterDriver(app.root) as driver:

        async def converse(lane: int) -> dict[str, list[str]]:
            said: dict[str, list[str]] = {}
            after = 0
            while after < RAY_TURNS_AFTER:
                after += killed.is_set()
                total = sum(map(len, said.values()))
                conversation, turn = f"chaos-{lane}-{total // RAY_TURNS + 1}", total % RAY_TURNS + 1
                if after:
                    late.append(ray_question(conversation, turn))
                reply = await driver.handle({"op": "ask", "agent": "app:agent", "conversation": conversation,
                                             "message": ray_question(conversation, turn),
                                             "task_id": f"turn:{conversation}:{turn}"}, ignore)
                assert reply["ok"], reply
                said.setdefault(conversation, []).append(reply["result"]["text"])
            return said

        talking = asyncio.gather(*(converse(lane) for lane in range(1, RAY_LANES + 1)))
        for kill in range(RAY_KILLS):
            name = driver.names[kill % len(driver.names)]
            await more_lines(app, 5)  # turns are under way
            [before] = [row for row in await driver.status() if row["name"] == name]
            os.kill(before["pid"], signal.SIGKILL)
            gone = time.monotonic()
            journal = read_postgres_journal(state)  # what happens after it is checked against it: check_ray_repeats
            snapshots.append((journal, len(app.lines()), len(model.requests)))
            (app.root / PROMPT_FILE).write_text(ray_prompt(kill + 1))  # while the node is down
            await until(functools.partial(restarted, driver, before), 120)
            failovers.append(time.monotonic() - gone)
        await until(functools.partial(follow, driver, ray_prompt(RAY_KILLS)), 60)
        killed.set()
        said = {conversation: answers for lane in await asyncio.wait_for(talking, 600)
                for conversation, answers in lane.items()}
        versions = (await driver.handle({"op": "registry.history"}, ignore))["result"]
    assert said == {c: [ray_answer(c, t) for t in range(1, len(answers) + 1)] for c, answers in said.items()}
    final = read_postgres_journal(state)
    turns = [f"turn:{c}:{t}" for c, answers in said.items() for t in range(1, len(answers) + 1)]
    assert sorted(final.tasks) == sorted(turns), final.tasks
    assert all(final.status.get(turn) == "completed" for turn in turns), final.status
    for turn in turns:  # one row per step: a step journaled twice ran (and was recorded) twice
        names = [name for task, _, name, _ in final.steps if task == turn]
        assert len(names) == 3 and names[0] == "model:1" and names[1].startswith("tool:") and names[2] == "model:2", (
            turn, names)
    assert [(v["version"], v["author"], v["entries"]) for v in versions] == [(1, "files", versions[0]["entries"])] + [
        (n, f"file:{PROMPT_FILE}", ["prompts:agent"]) for n in range(2, RAY_KILLS + 2)], versions  # each edit once
    with model.lock:
        prompts = {system for (message, _), system in zip(model.requests, model.system, strict=True)
                   if message in late}
    assert late and prompts == {ray_prompt(RAY_KILLS)}, prompts  # the turns asked last ran on the last edit
    repeats = check_ray_repeats(app, model, snapshots)
    figures.record("chaos_ray", {"kills": RAY_KILLS, "turns": len(turns),
                                 "steps_run_again_killed_before_journaled": repeats,
                                 "failover": latency_summary(failovers)})


PROMPT_FILE = "prompts/agent.md"


def ray_prompt(edit: int) -> str:
    return f"You are the agent as edited {edit} times while a node was down.\n"


async def follow(driver: ClusterDriver, prompt: str) -> bool:
    """Whether every node's registry has the agent's prompt as the file now says (the driver recorded the edit, and
    the nodes followed)."""
    for name in driver.names:
        if (await driver.run("app:entry_data", "prompts:agent", host=name))["template"] != prompt:
            return False
    return True


async def more_lines(app: ClusterApp, count: int) -> None:
    """Wait until the tool has written `count` more lines."""
    at = len(app.lines())
    await until(lambda: len(app.lines()) >= at + count, 120)


async def restarted(driver: ClusterDriver, before: dict[str, Any]) -> bool:
    """Whether the node of that status row runs again, in a new incarnation, and every other node is up."""
    rows = {row["name"]: row for row in await driver.status()}
    return all(row["status"] == "up" for row in rows.values()) and (
        rows[before["name"]]["incarnation"] != before["incarnation"])


def ray_question(conversation: str, turn: int) -> str:
    return f"call tools_work_quick {json.dumps({'text': f'{conversation}-{turn}'})}"


def ray_answer(conversation: str, turn: int) -> str:
    return f"done: quick {conversation}-{turn}"


def check_ray_repeats(app: ClusterApp, model: ChatServer, snapshots: list[tuple[Journal, int, int]]) -> int:
    """No tool line written or model request made after a kill belongs to a step the journal held right after
    it; returns how many steps ran again (killed before they were journaled)."""
    lines, requests = app.lines(), list(model.requests)
    for journal, lines_then, requests_then in snapshots:
        done = journal.step_keys
        for line in lines[lines_then:]:
            conversation, turn = line.removeprefix("quick ").rsplit("-", 1)
            tools = {name for task, name in done if task == f"turn:{conversation}:{turn}" and name.startswith("tool:")}
            assert not tools, f"{line!r} written again after {tools} were journaled"
        for message, call in requests[requests_then:]:
            conversation, turn = json.loads(message.split(" ", 2)[2])["text"].rsplit("-", 1)
            assert (f"turn:{conversation}:{turn}", f"model:{call}") not in done, f"model call {call} of {message} again"
    return len(lines) - len(set(lines)) + len(requests) - len(set(requests))
