"""The shared state restarted under a running cluster: the nodes refuse new durable work while Postgres is down,
lose nothing, and carry on (turns, registry following) once it is back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wippy_agents.cluster import ClusterDriver
from wippy_agents.testing import TemporaryPostgres

from ._model import ChatServer
from .conftest import ClusterApp, ignore, until

pytestmark = pytest.mark.timeout(240)


def ask(conversation: str, text: str) -> dict[str, Any]:
    return {"op": "ask", "agent": "app:agent", "conversation": conversation,
            "message": f"call tools_work_quick {json.dumps({'text': text})}"}


async def test_postgres_restarted_under_the_cluster_refuses_work_meanwhile_then_everything_goes_on(
    tmp_path: Path, ray_cluster: Any, chat: ChatServer
) -> None:
    with TemporaryPostgres() as server:  # this test's own: it stops it
        app = ClusterApp(tmp_path / "app", server.database(), ray_cluster.address, chat, nodes=2)
        async with ClusterDriver(app.root) as driver:
            conversations = {driver.place(f"c{number}"): f"c{number}" for number in range(20)}
            assert sorted(conversations) == ["node-1", "node-2"]  # a conversation on each node
            for conversation in conversations.values():
                assert (await driver.handle(ask(conversation, f"{conversation}-1"), ignore))["ok"]

            server.stop()
            await until(lambda: all_status(driver, "state unavailable"), 30)  # each node notices, and says so
            for conversation in conversations.values():
                refused = await driver.handle(ask(conversation, "refused"), ignore)
                assert not refused["ok"] and refused["kind"] == "StateUnavailable", refused
                assert "127.0.0.1" in refused["error"]  # which database to check

            server.start()
            await until(lambda: all_status(driver, "up"), 60)
            for conversation in conversations.values():
                reply = await driver.handle(ask(conversation, f"{conversation}-2"), ignore)
                assert reply["ok"], reply
                assert reply["result"]["turn"] == 2  # the first turn is still there; the refused one never began
            assert sorted(app.lines()) == sorted(f"quick {c}-{n}" for c in conversations.values() for n in (1, 2))

            (app.root / "prompts/agent.md").write_text("You are version two.\n")  # the nodes LISTEN again

            async def everywhere() -> bool:
                data = [await driver.run("app:entry_data", "prompts:agent", host=name) for name in driver.names]
                return all("version two" in str(entry["template"]) for entry in data)

            await until(everywhere, 30)


async def all_status(driver: ClusterDriver, status: str) -> bool:
    return all(row["status"] == status for row in await driver.status())
