"""Restricted (agent-written) workflows on a real app folder: their code runs in the sandbox's worker processes,
each `ctx` operation a journaled step of the task, and a wait holds no worker.

The workflows' tools are the app's own Python (`tools.notes:*`): `note` appends its line to a file, so a test
counts how many times a step really ran, restarts and replays included; `repeat` gives a long result and `pause`
takes its time. The app does not watch its files (`watch: false`): entries change through `registry.apply`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from wippy_agents import App
from wippy_agents.durable import TaskFailed, TaskNotFound, UpgradeRefused
from wippy_agents.registry import Delete, Entry
from wippy_agents.testing import FunctionModel, ModelRequest, ScriptedModel, VirtualClock, wait_until, write_file

WIPPY = str(Path(sys.executable).with_name("wippy"))  # the installed console script

NOTES = '''
import asyncio


def note(path: str, text: str) -> str:
    """Append a line to a file and return it in capitals.

    Args:
        path: The file.
        text: The line.
    """
    with open(path, "a", encoding="utf-8") as file:
        file.write(text + "\\n")
    return text.upper()


def repeat(text: str, times: int) -> str:
    """The text, repeated.

    Args:
        text: The text.
        times: How many times.
    """
    return text * times


async def pause(seconds: float) -> str:
    """Wait, then say so.

    Args:
        seconds: How long.
    """
    await asyncio.sleep(seconds)
    return "paused"
'''

APP = """
namespace: app
entries:
  - name: model
    kind: model
    provider: offline
    model: wippy-offline
  - name: helper
    kind: agent
    model: app:model
"""

JOURNEY = '''
def main(ctx, topic: str, path: str):
    """Note the topic, ask the helper, sleep, hear two signals, miss a third, then tell the time."""
    noted = ctx.tool("tools.notes:note", path=path, text=topic)
    answer = ctx.ask("app:helper", "look into " + topic)
    ctx.sleep(0.2)
    early = ctx.wait_signal("early")
    late = ctx.wait_signal("late")
    try:
        ctx.wait_signal("never", timeout=0.2)
        missed = "it came"
    except TimeoutError as error:
        missed = str(error)
    ctx.log("finished", topic)
    return {"noted": noted, "answer": answer, "early": early, "late": late, "missed": missed,
            "now": ctx.now(), "random": ctx.random()}
'''

WAITER = '''
def main(ctx, path: str, n: int = 0):
    """Note that it began, wait for go, note what came."""
    ctx.tool("tools.notes:note", path=path, text="began " + str(n))
    got = ctx.wait_signal("go")
    return ctx.tool("tools.notes:note", path=path, text="got " + str(got))
'''


def allow(subject: str, actions: list[str], resources: list[str], effect: str = "allow") -> dict[str, Any]:
    return {"name": f"{effect}_{subject.replace(':', '_')}", "kind": "policy", "subjects": [subject],
            "actions": actions, "resources": resources, "effect": effect}


def restricted(name: str, source: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "workflow", "runtime": "restricted", "source": source, **fields}


class _Dumper(yaml.SafeDumper):
    """Writes code as a block (`source: |`), line for line, as people and agents write it."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def make_app(root: Path, *entries: dict[str, Any]) -> Path:
    """An app with the offline model, an agent `app:helper`, the tools `tools.notes:*` and `flows:` entries."""
    write_file(root, "registry/app/_index.yaml", APP)
    write_file(root, "tools/notes.py", NOTES)
    (root / "registry/flows").mkdir(parents=True, exist_ok=True)
    (root / "registry/flows/_index.yaml").write_text(yaml.dump({"namespace": "flows", "entries": list(entries)},
                                                               Dumper=_Dumper, sort_keys=False))
    write_file(root, "wippy.yaml", "name: flows\nwatch: false\n")
    return root


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def step_names(app: App, task: str) -> list[str]:
    return [step.name for step in app.tasks.get(task).steps]


async def waiting_for(app: App, task: str, signal: str) -> None:
    """Until the task's journal shows it waiting for `signal`."""
    await wait_until(lambda: f"wait:{signal}" in step_names(app, task))


async def test_a_workflow_runs_a_tool_a_delegate_a_sleep_signals_and_a_timeout_and_returns_its_result(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "wippy_agents.workflows")
    notes = tmp_path / "notes.txt"
    root = make_app(tmp_path / "app", restricted("journey", JOURNEY),
                    allow("flows:journey", ["tool.call", "agent.delegate"], ["tools.notes:*", "app:helper"]))
    model = ScriptedModel(["Actors are everywhere."])
    async with App(root=root) as app:
        app.agents.model_overrides["*"] = model
        task = await app.tasks.start("flows:journey", {"topic": "actors", "path": str(notes)})
        await app.tasks.signal(task, "early", {"sent": "before the wait"})
        await waiting_for(app, task, "late")
        await app.tasks.signal(task, "late", "during the wait")
        result = await app.tasks.result(task)
        info = app.tasks.get(task)

    assert {key: result[key] for key in ("noted", "answer", "early", "late", "missed")} == {
        "noted": "ACTORS", "answer": "Actors are everywhere.", "early": {"sent": "before the wait"},
        "late": "during the wait", "missed": "no 'never' signal within 0.2s"}
    assert result["now"] >= info.created.timestamp() and 0 <= result["random"] < 1
    assert [step.name for step in info.steps] == [
        "tool:tools.notes:note", "ask:app:helper", "sleep", "wait:early", "signal:early", "wait:late",
        "signal:late", "wait:never", "signal:never", "log", "now", "random"]
    assert [step.ok for step in info.steps if step.name == "signal:never"] == [False]
    assert lines(notes) == ["actors"]  # run once, though the code ran again from the top after each wait
    [asked] = model.requests
    assert asked.messages[-1].content == "look into actors"  # type: ignore[union-attr]
    assert [r.getMessage() for r in caplog.records if r.name == "wippy_agents.workflows"] == [
        f"workflow flows:journey, task {task}: finished actors"]  # once, not on every replay


async def test_a_sleeping_or_waiting_workflow_holds_no_worker(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    sleeper = 'def main(ctx):\n    """Sleep for a day."""\n    ctx.sleep(86400)\n    return "woke"\n'
    root = make_app(tmp_path / "app", restricted("sleeper", sleeper), restricted("waiter", WAITER),
                    allow("flows:waiter", ["tool.call"], ["tools.notes:*"]))
    async with App(root=root) as app:
        sleeping = await app.tasks.start("flows:sleeper", {})
        waiting = await app.tasks.start("flows:waiter", {"path": str(notes)})
        await wait_until(lambda: step_names(app, sleeping) == ["sleep"])
        await waiting_for(app, waiting, "go")
        pool = app.agents.restricted.workflow_pool
        assert pool is not None and pool.busy == 0
        assert app.tasks.status(sleeping) == app.tasks.status(waiting) == "running"
        await app.tasks.signal(waiting, "go", "now")
        assert await app.tasks.result(waiting) == "GOT NOW"
        await app.tasks.cancel(sleeping)


async def test_twenty_waiting_workflows_share_two_workers_and_all_finish_once_signalled(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    root = make_app(tmp_path / "app", restricted("waiter", WAITER),
                    allow("flows:waiter", ["tool.call"], ["tools.notes:*"]))
    async with App(root=root) as app:
        tasks = [await app.tasks.start("flows:waiter", {"path": str(notes), "n": n}) for n in range(20)]
        for task in tasks:
            await waiting_for(app, task, "go")
        pool = app.agents.restricted.workflow_pool
        assert pool is not None and (pool.size, pool.busy) == (2, 0)
        for n, task in enumerate(tasks):
            await app.tasks.signal(task, "go", n)
        results = await asyncio.gather(*(app.tasks.result(task) for task in tasks))
    assert results == [f"GOT {n}" for n in range(20)]
    assert sorted(lines(notes)) == sorted([f"began {n}" for n in range(20)] + [f"got {n}" for n in range(20)])


async def test_after_a_restart_a_waiting_workflow_finishes_without_running_its_finished_steps_again(
        tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    root = make_app(tmp_path / "app", restricted("waiter", WAITER),
                    allow("flows:waiter", ["tool.call"], ["tools.notes:*"]))
    async with App(root=root) as app:
        task = await app.tasks.start("flows:waiter", {"path": str(notes), "n": 7})
        await waiting_for(app, task, "go")
    assert lines(notes) == ["began 7"]
    async with App(root=root) as app:  # the task resumes at boot: its code replays from the top
        await app.tasks.signal(task, "go", "after the restart")
        assert await app.tasks.result(task) == "GOT AFTER THE RESTART"
        assert step_names(app, task) == ["tool:tools.notes:note", "wait:go", "signal:go", "tool:tools.notes:note"]
    assert lines(notes) == ["began 7", "got after the restart"]



async def test_a_workflow_stopped_during_a_delegates_turn_asks_again_after_a_restart_and_repeats_no_tool(
        tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    asker = '''
def main(ctx, path: str):
    """Note, ask the helper, note again."""
    ctx.tool("tools.notes:note", path=path, text="before")
    answer = ctx.ask("app:helper", "what is new?")
    ctx.tool("tools.notes:note", path=path, text="after")
    return answer
'''
    root = make_app(tmp_path / "app", restricted("asker", asker),
                    allow("flows:asker", ["tool.call", "agent.delegate"], ["tools.notes:*", "app:helper"]))
    asked = asyncio.Event()

    async def never_answers(request: ModelRequest) -> str:
        asked.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with App(root=root) as app:
        app.agents.model_overrides["*"] = FunctionModel(never_answers)
        task = await app.tasks.start("flows:asker", {"path": str(notes)})
        await asked.wait()
        assert step_names(app, task) == ["tool:tools.notes:note"]
    async with App(root=root) as app:  # the offline model answers this time
        answer = await app.tasks.result(task)
        assert step_names(app, task) == ["tool:tools.notes:note", "ask:app:helper", "tool:tools.notes:note"]
    assert "You said: what is new?" in answer
    assert lines(notes) == ["before", "after"]

def waiter_version(returned: str, after: str = "") -> Entry:
    """`flows:waiter`'s code as edited: what it returns, and what it does after its wait."""
    source = (f'def main(ctx, path: str, n: int = 0):\n    """Note, wait for go, {returned}."""\n'
              f'{after}    ctx.tool("tools.notes:note", path=path, text="began " + str(n))\n'
              f'    got = ctx.wait_signal("go")\n    return "{returned} " + str(got)\n')
    return Entry("flows:waiter", "workflow", {}, {"runtime": "restricted", "source": source})



async def test_a_workflow_looping_over_a_set_of_names_takes_the_same_path_in_new_workers_after_a_restart(
        tmp_path: Path) -> None:
    names = [f"name{n}" for n in range(20)]
    visitor = f'''
def main(ctx):
    """Wait for a signal named after each name in a set."""
    heard = []
    for name in set({names!r}):
        heard.append(ctx.wait_signal(name))
    return heard
'''
    root = make_app(tmp_path / "app", restricted("visitor", visitor))
    async with App(root=root) as app:
        task = await app.tasks.start("flows:visitor", {})
        await wait_until(lambda: len(step_names(app, task)) == 1)
        first = step_names(app, task)[0].removeprefix("wait:")
        await app.tasks.signal(task, first, first)
        await wait_until(lambda: len(step_names(app, task)) == 3)
    async with App(root=root) as app:  # new worker processes replay the loop from the top
        for name in names:
            if name != first:
                await app.tasks.signal(task, name, name)
        heard = await app.tasks.result(task)
        waited = [step.removeprefix("wait:") for step in step_names(app, task) if step.startswith("wait:")]
    assert heard == waited and heard[0] == first and sorted(heard) == sorted(names)

async def test_an_upgrade_that_extends_the_steps_taken_moves_a_waiting_task_to_the_new_code(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    root = make_app(tmp_path / "app", restricted("waiter", WAITER),
                    allow("flows:waiter", ["tool.call"], ["tools.notes:*"]))
    async with App(root=root) as app:
        old = await app.tasks.start("flows:waiter", {"path": str(notes)})
        await waiting_for(app, old, "go")
        version = app.registry.apply([waiter_version("new")], author="user:test")
        assert await app.tasks.upgrade(old) == version
        await app.tasks.signal(old, "go", 1)
        assert await app.tasks.result(old) == "new 1"
        assert app.tasks.get(old).registry_version == version
    assert lines(notes) == ["began 0"]


async def test_an_upgrade_that_would_not_replay_is_refused_naming_both_operations_and_the_task_ends_on_its_old_code(
        tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    root = make_app(tmp_path / "app", restricted("waiter", WAITER),
                    allow("flows:waiter", ["tool.call"], ["tools.notes:*"]))
    async with App(root=root) as app:
        old = await app.tasks.start("flows:waiter", {"path": str(notes), "n": 1})
        await waiting_for(app, old, "go")
        started_on = app.tasks.get(old).registry_version
        version = app.registry.apply([waiter_version("new", after="    ctx.log('first')\n")], author="user:test")
        with pytest.raises(UpgradeRefused) as refused:
            await app.tasks.upgrade(old)
        assert str(refused.value) == (
            f"task {old} stays on registry version {started_on}: on version {version}, at operation 0 the task took "
            "'tool:tools.notes:note' where the code asks for 'log'; let it finish where it is")
        raising = app.registry.apply([waiter_version("new", after="    raise ValueError('not this way')\n")],
                                     author="user:test")
        with pytest.raises(UpgradeRefused) as refused:
            await app.tasks.upgrade(old)
        assert str(refused.value).startswith(
            f"task {old} stays on registry version {started_on}: the code of version {raising} fails replaying the 1 "
            "operation(s) the task took: ValueError: not this way")
        app.registry.apply([waiter_version("new", after="    ctx.log('first')\n")], author="user:test")
        version = app.registry.version
        new = await app.tasks.start("flows:waiter", {"path": str(notes), "n": 2})
        await waiting_for(app, new, "go")
        for task in (old, new):
            await app.tasks.signal(task, "go", "go")
        assert (await app.tasks.result(old), await app.tasks.result(new)) == ("GOT GO", "new go")
        assert (app.tasks.get(old).registry_version, app.tasks.get(new).registry_version) == (started_on, version)
        assert step_names(app, new)[0] == "log"



async def test_a_deleted_workflow_finishes_the_tasks_it_has_and_starts_no_more(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    root = make_app(tmp_path / "app", restricted("waiter", WAITER),
                    allow("flows:waiter", ["tool.call"], ["tools.notes:*"]))
    async with App(root=root) as app:
        task = await app.tasks.start("flows:waiter", {"path": str(notes)})
        await waiting_for(app, task, "go")
        app.registry.apply([Delete("flows:waiter")], author="user:test")
        with pytest.raises(TaskNotFound, match="no workflow 'flows:waiter' is registered or in the registry"):
            await app.tasks.start("flows:waiter", {"path": str(notes)})
        assert await app.tasks.start("flows:waiter", {"path": str(notes)}, task_id=task) == task  # attaching
        await app.tasks.signal(task, "go", "on")
        assert await app.tasks.result(task) == "GOT ON"
        assert [info.id for info in app.tasks.list()] == [task]
    assert lines(notes) == ["began 0", "got on"]

def failure(app: App, task: str) -> str:
    info = app.tasks.get(task)
    assert info.status == "failed", info
    return info.error or ""


async def test_a_workflow_that_takes_more_operations_than_its_cap_fails_saying_so(tmp_path: Path) -> None:
    counter = 'def main(ctx):\n    """Ask the time forever."""\n    while True:\n        ctx.now()\n'
    root = make_app(tmp_path / "app", restricted("counter", counter, max_operations=5))
    async with App(root=root) as app:
        task = await app.tasks.start("flows:counter", {})
        with pytest.raises(TaskFailed, match="the workflow asked for more than 5 operations in one task"):
            await app.tasks.result(task)
        assert step_names(app, task) == ["now"] * 5


async def test_a_result_over_max_value_bytes_fails_that_operation_and_the_code_sees_why(tmp_path: Path) -> None:
    big = '''
def main(ctx):
    """Ask for a long text, and say how that went."""
    try:
        ctx.tool("tools.notes:repeat", text="ab", times=600)
    except RuntimeError as error:
        return str(error)
    return "it passed"
'''
    root = make_app(tmp_path / "app", restricted("big", big, max_value_bytes=1000),
                    allow("flows:big", ["tool.call"], ["tools.notes:*"]))
    async with App(root=root) as app:
        assert await app.tasks.run("flows:big", {}) == (
            "tool:tools.notes:repeat failed: ValueError: tool tools.notes:repeat gave 1,202 bytes, over the "
            "workflow's max_value_bytes (1,000)")



async def test_a_signal_payload_over_max_value_bytes_fails_the_wait_the_same_way_after_a_restart(
        tmp_path: Path) -> None:
    listener = '''
def main(ctx):
    """Hear a signal, then another."""
    try:
        first = len(ctx.wait_signal("go"))
    except RuntimeError as error:
        first = str(error)
    return [first, ctx.wait_signal("next")]
'''
    root = make_app(tmp_path / "app", restricted("listener", listener, max_value_bytes=1000))
    async with App(root=root) as app:
        task = await app.tasks.start("flows:listener", {})
        await app.tasks.signal(task, "go", "x" * 5000)
        await waiting_for(app, task, "next")
    async with App(root=root) as app:  # the replay meets the same refusal, not the payload
        await app.tasks.signal(task, "next", "small")
        assert await app.tasks.result(task) == [
            "signal:go failed: the 'go' signal's payload is 5,002 bytes as JSON, over the workflow's max_value_bytes "
            "(1,000)", "small"]

async def test_an_endless_loop_fails_the_task_with_the_cpu_limit(tmp_path: Path) -> None:
    spin = 'def main(ctx):\n    """Spin."""\n    ctx.log("spinning")\n    while True:\n        pass\n'
    root = make_app(tmp_path / "app", restricted("spin", spin, cpu_seconds=0.3))
    async with App(root=root) as app:
        task = await app.tasks.start("flows:spin", {})
        with pytest.raises(TaskFailed, match="cpu limit"):
            await app.tasks.result(task)
        assert "cpu limit" in failure(app, task)


async def test_arguments_that_do_not_fit_the_signature_fail_the_task_saying_which_and_why(tmp_path: Path) -> None:
    typed = 'def main(ctx, n: int, name: str = "x"):\n    """Typed."""\n    return n\n'
    root = make_app(tmp_path / "app", restricted("typed", typed))
    async with App(root=root) as app:
        task = await app.tasks.start("flows:typed", {"n": "seven"})
        with pytest.raises(TaskFailed):
            await app.tasks.result(task)
        assert failure(app, task) == "ArgumentError: flows:typed: bad arguments: n: 'seven' is not of type 'integer'"
        task = await app.tasks.start("flows:typed", {"name": "y"})
        with pytest.raises(TaskFailed):
            await app.tasks.result(task)
        assert failure(app, task) == "ArgumentError: flows:typed: bad arguments: n: Field required"


async def test_a_workflow_without_main_or_with_a_syntax_error_is_refused_with_its_file_line_and_field(
        tmp_path: Path) -> None:
    nameless = 'def start(ctx):\n    """No main."""\n    return 1\n'
    broken = 'def main(ctx):\n    """Broken."""\n    return (\n'
    root = make_app(tmp_path / "app", restricted("nameless", nameless), restricted("broken", broken))
    text = (root / "registry/flows/_index.yaml").read_text().splitlines()
    source_line = text.index("  source: |") + 1  # nameless's
    [broken_line] = [number for number, line in enumerate(text, 1) if line.strip() == "return ("]
    lint = subprocess.run([WIPPY, "registry", "lint", "--root", str(root)], capture_output=True, text=True,
                          timeout=60)
    assert lint.returncode == 1 and "2 problem(s)" in lint.stderr
    assert (f"registry/flows/_index.yaml:{source_line}: entry flows:nameless: field source: the code defines no "
            "top-level function 'main' (it defines start)") in lint.stderr
    assert f"registry/flows/_index.yaml:{broken_line}: entry flows:broken: field source: SyntaxError" in lint.stderr
    async with App(root=root) as app:
        assert "flows:nameless" not in app.registry and "flows:broken" not in app.registry
        with pytest.raises(TaskNotFound):
            await app.tasks.start("flows:broken", {})


async def test_cancelling_a_sleeping_workflow_ends_it_at_once(tmp_path: Path) -> None:
    sleeper = 'def main(ctx):\n    """Sleep for a day."""\n    ctx.sleep(86400)\n    return "woke"\n'
    root = make_app(tmp_path / "app", restricted("sleeper", sleeper))
    async with App(root=root) as app:
        task = await app.tasks.start("flows:sleeper", {})
        await wait_until(lambda: step_names(app, task) == ["sleep"])
        await app.tasks.cancel(task)
        with pytest.raises(TaskFailed, match="cancelled"):
            await asyncio.wait_for(app.tasks.result(task), 5)
        assert app.tasks.status(task) == "cancelled"


GUARDED = '''
def main(ctx, path: str):
    """Note a line if allowed; say how it went."""
    try:
        return ctx.tool("tools.notes:note", path=path, text="guarded")
    except RuntimeError as error:
        return str(error)
'''


async def test_with_no_policy_a_tool_call_is_refused_inside_the_code_and_audited_as_denied(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    root = make_app(tmp_path / "app", restricted("guarded", GUARDED))
    async with App(root=root) as app:
        task = await app.tasks.start("flows:guarded", {"path": str(notes)})
        assert await app.tasks.result(task) == (
            "tool:tools.notes:note failed: PermissionError: refused: no policy lets the workflow flows:guarded call "
            "tools.notes:note: a restricted workflow may call only what a policy entry allows it (subjects: "
            "[flows:guarded], actions: [tool.call])")
        [audit] = app.approvals.audit.list(subject="flows:guarded")
        assert (audit.decision, audit.action, audit.resource, audit.task) == (
            "denied", "tool.call", "tools.notes:note", task)
    assert lines(notes) == []



async def test_a_policy_revoked_while_a_workflow_waits_refuses_its_next_tool_call(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    later = '''
def main(ctx, path: str):
    """Wait for go, then note a line if still allowed."""
    ctx.wait_signal("go")
    try:
        return ctx.tool("tools.notes:note", path=path, text="after")
    except RuntimeError as error:
        return str(error)
'''
    grant = allow("flows:later", ["tool.call"], ["tools.notes:*"])
    root = make_app(tmp_path / "app", restricted("later", later), grant)
    async with App(root=root) as app:
        task = await app.tasks.start("flows:later", {"path": str(notes)})
        await waiting_for(app, task, "go")
        app.registry.apply([Delete(f"flows:{grant['name']}")], author="user:admin")
        await app.tasks.signal(task, "go")
        assert (await app.tasks.result(task)).startswith(
            "tool:tools.notes:note failed: PermissionError: refused: no policy lets the workflow flows:later call")
    assert lines(notes) == []  # the task's registry version keeps its code, not a revoked grant

async def asked_for(app: App, path: Path) -> tuple[str, str]:
    """Start `flows:guarded` under an `ask` policy; its task id and the approval it waits for."""
    task = await app.tasks.start("flows:guarded", {"path": str(path)})
    await wait_until(lambda: len(app.approvals.pending()) == 1)
    [approval] = app.approvals.pending()
    assert (approval.agent, approval.task_id, approval.action, approval.resource) == (
        "flows:guarded", task, "tool.call", "tools.notes:note")
    await wait_until(lambda: step_names(app, task) == [f"wait:approval:{approval.id}"])
    pool = app.agents.restricted.workflow_pool
    assert pool is not None and pool.busy == 0  # a person deciding holds no worker
    return task, approval.id


async def test_a_policy_that_asks_runs_the_tool_once_a_person_approves(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    root = make_app(tmp_path / "app", restricted("guarded", GUARDED),
                    allow("flows:guarded", ["tool.call"], ["tools.notes:*"], effect="ask"))
    async with App(root=root) as app:
        task, approval = await asked_for(app, notes)
        assert lines(notes) == []
        await app.approvals.approve(approval, by="user:alice")
        assert await app.tasks.result(task) == "GUARDED"
        assert step_names(app, task) == [f"wait:approval:{approval}", f"signal:approval:{approval}",
                                         "tool:tools.notes:note"]
    assert lines(notes) == ["guarded"]


async def test_a_policy_that_asks_fails_the_operation_when_a_person_denies_it(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    root = make_app(tmp_path / "app", restricted("guarded", GUARDED),
                    allow("flows:guarded", ["tool.call"], ["tools.notes:*"], effect="ask"))
    async with App(root=root) as app:
        task, approval = await asked_for(app, notes)
        await app.approvals.deny(approval, by="user:bob", reason="not today")
        assert await app.tasks.result(task) == (
            "tool:tools.notes:note failed: PermissionError: denied by user:bob: not today")
    assert lines(notes) == []


@pytest.mark.virtual_clock
async def test_a_day_long_sleep_holds_no_worker_and_a_restart_waits_only_for_what_is_left(
        clock: VirtualClock, tmp_path: Path) -> None:
    sleeper = 'def main(ctx):\n    """Sleep a day, then tell the time."""\n    ctx.sleep(86400)\n    return ctx.now()\n'
    root = make_app(tmp_path / "app", restricted("sleeper", sleeper))
    async with App(root=root, wall_clock=clock.time) as app:
        task = await app.tasks.start("flows:sleeper", {})
        await wait_until(lambda: step_names(app, task) == ["sleep"])
        await asyncio.sleep(3600)
        pool = app.agents.restricted.workflow_pool
        assert pool is not None and pool.busy == 0 and app.tasks.status(task) == "running"
        [sleep] = app.tasks.get(task).steps
    async with App(root=root, wall_clock=clock.time) as app:
        woke = await app.tasks.result(task)
        assert step_names(app, task) == ["sleep", "now"]
        assert app.tasks.get(task).steps[0] == sleep  # the timer set before the restart, not a new one
    assert woke == pytest.approx(json.loads(sleep.result or "null"), abs=60)


async def test_a_workflow_calls_a_tool_that_takes_an_argument_named_id(tmp_path: Path) -> None:
    lookup = 'def main(ctx, entry: str):\n    """Read an entry\'s kind."""\n    return ctx.tool("wippy:registry_get", id=entry)["kind"]\n'
    root = make_app(tmp_path / "app", restricted("lookup", lookup),
                    allow("flows:lookup", ["tool.call"], ["wippy:registry_get"]))
    async with App(root=root) as app:
        assert await app.tasks.run("flows:lookup", {"entry": "app:helper"}) == "agent"



async def test_cancelling_a_workflow_during_a_slow_tool_call_ends_it_at_once_and_frees_its_worker(
        tmp_path: Path) -> None:
    slow = 'def main(ctx, seconds: float):\n    """Pause."""\n    return ctx.tool("tools.notes:pause", seconds=seconds)\n'
    root = make_app(tmp_path / "app", restricted("slow", slow), allow("flows:slow", ["tool.call"], ["tools.notes:*"]))
    async with App(root=root) as app:
        task = await app.tasks.start("flows:slow", {"seconds": 600})
        await wait_until(lambda: (pool := app.agents.restricted.workflow_pool) is not None and pool.busy == 1)
        await app.tasks.cancel(task)
        with pytest.raises(TaskFailed, match="cancelled"):
            await asyncio.wait_for(app.tasks.result(task), 5)
        assert app.tasks.status(task) == "cancelled" and step_names(app, task) == []
        pool = app.agents.restricted.workflow_pool
        assert pool is not None and pool.busy == 0
        assert await app.tasks.run("flows:slow", {"seconds": 0}) == "paused"
