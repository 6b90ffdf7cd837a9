"""The live registry on a real app folder and a real DuckDB state file: changes, versions, events, reload."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from wippy_agents import App, ProcessError, process
from wippy_agents.registry import Delete, Entry, EntryNotFound, Registry, RegistryError, RegistryEvent
from wippy_agents.testing import wait_until
from wippy_agents.testing import write_file as write

INDEX = "registry/app/_index.yaml"


def config(name: str, **fields: Any) -> Entry:
    return Entry(f"app:{name}", "config", {}, fields)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    write(tmp_path, INDEX, """namespace: app
entries:
  # the model everyone uses
  - name: model
    kind: model
    provider: offline
    model: wippy-offline
  - name: agent
    kind: agent
    model: app:model
    tools: ["tools.*:*"]
  - name: settings
    kind: config
    level: 1
""")
    return tmp_path


# -- reading ---------------------------------------------------------------------------


async def test_get_find_and_a_close_match_for_an_unknown_id(app: Path) -> None:
    async with App(root=app) as wippy:
        registry = wippy.registry
        assert registry.get("app:settings").data == {"level": 1}
        assert [e.id for e in registry.find(kind="model")] == ["app:model"]
        assert [e.id for e in registry.find(pattern="app:*")] == ["app:agent", "app:model", "app:settings"]
        with pytest.raises(KeyError, match="did you mean 'app:settings'"):
            registry.get("app:setings")
        with pytest.raises(EntryNotFound):
            registry.get("app:nothing")


# -- apply --------------------------------------------------------------------------------


async def test_apply_commits_a_version_and_writes_through_to_files(app: Path) -> None:
    async with App(root=app) as wippy:
        registry = wippy.registry
        version = registry.apply(
            [config("settings", level=2), Entry("generated:hello", "prompt", {"title": "Hi"}, {"template": "Hi"})],
            author="app:toolsmith", reason="tune", task="task-1",
        )
        assert version == 2 and registry.version == 2
        assert registry.get("app:settings").data == {"level": 2}
        text = (app / INDEX).read_text()
        assert "level: 2" in text and "# the model everyone uses" in text
        assert "name: hello" in (app / "registry/generated/_index.yaml").read_text()
        [record] = registry.history("generated:hello")
        assert (record.version, record.author, record.reason, record.task) == (2, "app:toolsmith", "tune", "task-1")
        assert record.entries == ("app:settings", "generated:hello")
        registry.apply([Delete("generated:hello")], author="app:toolsmith")
        assert "generated:hello" not in registry
        assert "hello" not in (app / "registry/generated/_index.yaml").read_text()


async def test_the_watcher_does_not_turn_our_own_write_into_a_second_version(app: Path) -> None:
    async with App(root=app) as wippy:
        registry = wippy.registry
        registry.apply([config("settings", level=5)], author="me")
        write(app, "registry/other/_index.yaml", "namespace: other\nentries:\n  - {name: x, kind: config}\n")
        await wait_until(lambda: "other:x" in registry)  # the watcher has caught up past our write
        assert [v.author for v in registry.history()] == ["files", "me", "file:registry/other/_index.yaml"]


async def test_apply_is_all_or_nothing(app: Path) -> None:
    async with App(root=app) as wippy:
        registry = wippy.registry
        before = (app / INDEX).read_text()
        with pytest.raises(RegistryError) as error:
            registry.apply(
                [config("settings", level=9), Entry("app:bad", "model", {}, {"provider": "nobody", "model": "x"})],
                author="me",
            )
        [problem] = error.value.problems
        assert (problem.entry, problem.field) == ("app:bad", "provider")
        assert registry.get("app:settings").data == {"level": 1}
        assert registry.version == 1 and (app / INDEX).read_text() == before
        assert not (app / "registry" / "app" / "bad").exists()


async def test_a_dangling_reference_is_refused_naming_the_missing_id_and_close_matches(app: Path) -> None:
    async with App(root=app) as wippy:
        registry = wippy.registry
        agent = registry.get("app:agent")
        with pytest.raises(RegistryError) as error:
            registry.apply([Entry(agent.id, "agent", {}, dict(agent.data) | {"model": "app:modle"})], author="me")
        [problem] = error.value.problems
        assert problem.field == "model" and "'app:modle'" in problem.message and "app:model" in problem.message
        with pytest.raises(RegistryError, match="app:agent.*field model.*no model 'app:model'"):
            registry.apply([Delete("app:model")], author="me")
        with pytest.raises(RegistryError, match="no such entry to delete"):
            registry.apply([Delete("app:ghost")], author="me")
        assert registry.version == 1


async def test_policy_hook_sees_author_action_and_entry_and_can_refuse(app: Path) -> None:
    seen = []

    def policy(author: str, action: str, before: Entry | None, after: Entry | None) -> str | None:
        seen.append((author, action, (after or before).id if (after or before) else None))
        return "agents may not touch settings" if author == "app:agent" else None

    async with App(root=app) as wippy:
        wippy.registry.policy = policy
        with pytest.raises(RegistryError, match="registry.update refused by policy: agents may not touch settings"):
            wippy.registry.apply([config("settings", level=3)], author="app:agent")
        wippy.registry.apply([config("new", a=1)], author="person")
    assert seen == [("app:agent", "registry.update", "app:settings"), ("person", "registry.create", "app:new")]


# -- versions ---------------------------------------------------------------------------------


async def test_history_diff_and_rollback_survive_a_restart(app: Path) -> None:
    async with App(root=app) as wippy:
        wippy.registry.apply([config("settings", level=2)], author="a")
        wippy.registry.apply([config("extra", on=True)], author="b")
    async with App(root=app) as wippy:
        registry = wippy.registry
        assert [(v.version, v.author) for v in registry.history()] == [(1, "files"), (2, "a"), (3, "b")]
        changes = registry.diff(1, 3)
        assert [(c.id, c.op) for c in changes] == [("app:extra", "create"), ("app:settings", "update")]
        assert changes[1].before.data == {"level": 1} and changes[1].after.data == {"level": 2}
        version = registry.rollback(1, author="person")
        assert version == 4 and "app:extra" not in registry
        assert registry.get("app:settings").data == {"level": 1}
        assert "level: 1" in (app / INDEX).read_text()
    async with App(root=app) as wippy:  # the rollback was written through: a third boot finds nothing new
        assert wippy.registry.version == 4
        assert wippy.registry.history()[-1].reason == "rollback to version 1"


async def test_edits_made_while_the_node_was_down_are_recorded_at_boot(app: Path) -> None:
    async with App(root=app):
        pass
    index = app / INDEX
    index.write_text(index.read_text().replace("level: 1", "level: 7"))
    async with App(root=app) as wippy:
        [_, record] = wippy.registry.history("app:settings")
        assert record.author == f"file:{INDEX}" and record.reason == "files changed while the node was not running"
        assert wippy.registry.get("app:settings").data == {"level": 7}


# -- hot reload ----------------------------------------------------------------------------------


async def test_a_saved_file_becomes_a_version_authored_by_the_file(app: Path) -> None:
    async with App(root=app) as wippy:
        registry = wippy.registry
        index = app / INDEX
        index.write_text(index.read_text().replace("level: 1", "level: 2"))
        await wait_until(lambda: registry.get("app:settings").data == {"level": 2})
        assert registry.history()[-1].author == f"file:{INDEX}"


async def test_a_bad_save_keeps_the_last_good_version_and_the_next_good_save_applies(app: Path) -> None:
    async def listener(registry: Registry, parent: Any) -> None:
        registry.subscribe("app:*")
        process.send(parent, "ready")
        while True:
            msg = await process.receive()
            process.send(parent, "event", msg)

    async with App(root=app) as wippy:
        registry = wippy.registry
        errors: list[RegistryEvent] = []

        async def main() -> None:
            process.spawn(listener, registry, process.self())
            await process.receive("ready")
            index = app / INDEX
            good = index.read_text()
            index.write_text(good.replace("level: 1", "level: [unclosed"))
            msg = (await process.receive("event", timeout=10)).payload
            assert msg.topic == "registry.error"
            errors.append(msg.payload)
            assert registry.get("app:settings").data == {"level": 1}
            assert INDEX in registry.problems
            index.write_text(good.replace("level: 1", "level: 3"))
            topics = [(await process.receive("event", timeout=10)).payload.topic for _ in range(3)]
            assert topics == ["registry.begin", "registry.update", "registry.commit"]

        await wippy.run(main)
        assert registry.get("app:settings").data == {"level": 3} and INDEX not in registry.problems
    [error] = errors
    [problem] = error.problems
    assert (problem.file, problem.line) == (INDEX, 15)
    assert "while parsing a flow sequence that starts on line 14" in problem.message


async def test_two_saves_in_quick_succession_end_in_the_last_content(app: Path) -> None:
    async with App(root=app) as wippy:
        index = app / INDEX
        text = index.read_text()
        index.write_text(text.replace("level: 1", "level: 2"))
        index.write_text(text.replace("level: 1", "level: 3"))
        await wait_until(lambda: wippy.registry.get("app:settings").data == {"level": 3})
        write(app, "registry/later/_index.yaml", "namespace: later\nentries:\n  - {name: x, kind: config}\n")
        await wait_until(lambda: "later:x" in wippy.registry)  # saved after both: their events are all handled
        assert wippy.registry.get("app:settings").data == {"level": 3}


async def test_deleting_a_file_deletes_its_entries(app: Path) -> None:
    async with App(root=app) as wippy:
        write(app, "registry/extra/_index.yaml", "namespace: extra\nentries:\n  - {name: x, kind: config}\n")
        await wait_until(lambda: "extra:x" in wippy.registry)
        (app / "registry/extra/_index.yaml").unlink()
        await wait_until(lambda: "extra:x" not in wippy.registry)
        assert wippy.registry.history()[-1].author == "file:registry/extra/_index.yaml"


async def test_a_dropped_tool_file_is_a_tool_and_a_tool_file_that_raises_is_skipped(app: Path) -> None:
    async with App(root=app) as wippy:
        registry = wippy.registry
        write(app, "tools/broken.py", "import json\nraise RuntimeError('no')\n")
        write(app, "tools/weather.py", '''
def forecast(city: str, days: int = 3) -> str:
    """Weather forecast for a city.

    Args:
        city: The city.
        days: Days ahead.
    """
    return f"sunny in {city} for {days} days"
''')
        await wait_until(lambda: "tools.weather:forecast" in registry)
        tool = registry.get("tools.weather:forecast")
        assert tool.data["parameters"]["required"] == ["city"]
        assert await registry.tools["tools.weather:forecast"].call({"city": "Lisbon"}) == "sunny in Lisbon for 3 days"
        await wait_until(lambda: "tools/broken.py" in registry.problems)
        [problem] = registry.problems["tools/broken.py"]
        assert problem.line == 2 and "RuntimeError: no" in problem.message


# -- events -----------------------------------------------------------------------------------------


async def test_subscribers_get_matching_events_in_commit_order(app: Path) -> None:
    async def subscriber(registry: Registry, parent: Any, pattern: str, kinds: list[str] | None) -> None:
        registry.subscribe(pattern, kinds=kinds)
        process.send(parent, "ready")
        got = []
        while True:
            msg = await process.receive()
            if msg.topic == "dump":
                process.reply(msg, got)
            else:
                got.append((msg.topic, msg.payload.version, msg.payload.id))

    async def main(registry: Registry) -> tuple[Any, Any, Any]:
        me = process.self()
        everything = process.spawn(subscriber, registry, me, "*", None)
        only_models = process.spawn(subscriber, registry, me, "app:*", ["model"])
        generated = process.spawn(subscriber, registry, me, "generated:*", None)
        for _ in range(3):
            await process.receive("ready")
        registry.apply([config("settings", level=2)], author="a")
        model = registry.get("app:model")
        registry.apply([Entry(model.id, "model", {}, dict(model.data) | {"max_retries": 5})], author="b")
        return tuple([await process.call(pid, "dump") for pid in (everything, only_models, generated)])

    async with App(root=app) as wippy:
        everything, only_models, generated = await wippy.run(main, wippy.registry)
    assert everything == [
        ("registry.begin", 2, None), ("registry.update", 2, "app:settings"), ("registry.commit", 2, None),
        ("registry.begin", 3, None), ("registry.update", 3, "app:model"), ("registry.commit", 3, None),
    ]
    assert only_models == everything[3:]
    assert generated == []


async def test_a_slow_subscriber_never_blocks_a_commit(app: Path) -> None:
    subscribed = asyncio.Event()

    async def sleeper(registry: Registry) -> None:
        registry.subscribe()
        subscribed.set()
        await asyncio.sleep(3600)  # never reads its mailbox

    async with App(root=app) as wippy:
        pid = wippy.node.spawn(sleeper, wippy.registry)
        await subscribed.wait()
        for level in range(100):
            wippy.registry.apply([config("settings", level=level)], author="loop")
        [info] = [p for p in wippy.processes() if p.pid == pid]
        assert wippy.registry.version == 101 and info.mailbox == 300


async def test_example_worker_picks_up_a_new_setting_without_a_restart(example_app: Path) -> None:
    async with App(root=example_app) as wippy:
        await wait_until(lambda: wippy.node.whereis("app.workers.db_client") is not None)
        worker = wippy.node.whereis("app.workers.db_client")
        assert (await wippy.node.call(worker, "settings"))["port"] == 5432
        index = example_app / "registry/db/_index.yaml"
        index.write_text(index.read_text().replace("port: 5432", "port: 6543"))
        await wait_until(lambda: wippy.registry.get("app.db:postgres").data["port"] == 6543)
        assert (await wippy.node.call(worker, "settings"))["port"] == 6543
        assert wippy.node.whereis("app.workers.db_client") == worker  # same process: no restart


async def test_processes_spawn_by_registry_id(example_app: Path) -> None:
    async with App(root=example_app) as wippy:
        pid = wippy.node.spawn("app.workers:db_client")  # its `registry: Registry` parameter gets the app's
        assert (await wippy.node.call(pid, "settings"))["host"] == "localhost"
        with pytest.raises(RegistryError, match="is a config; only process and supervisor"):
            wippy.node.spawn("app.db:postgres")
        with pytest.raises(ProcessError, match="cannot spawn on host 'elsewhere': the hosts are 'local'"):
            wippy.node.spawn("app.workers:db_client", host="elsewhere")
