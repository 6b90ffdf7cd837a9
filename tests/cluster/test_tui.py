"""`wippy chat` attached to a cluster's driver: the turn runs on its conversation's node, the process view shows
each node's tree under its name, and a registry change shows once, however many nodes follow it."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable

from wippy_agents.app import load_config
from wippy_agents.cluster import ClusterDriver
from wippy_agents.control import Attached, ControlServer, socket_path
from wippy_agents.testing import wait_until
from wippy_agents.tui import WippyApp
from wippy_agents.tui._chat import ChatInput, MarkdownText, TurnView

from .conftest import ClusterApp

pytestmark = pytest.mark.timeout(240)


async def test_the_tui_attached_to_the_driver_chats_and_shows_every_node(cluster_app: ClusterApp) -> None:
    root: Path = cluster_app.root
    server = ControlServer(root)
    await server.claim()
    async with ClusterDriver(root) as driver:
        await server.listen(driver.handle, node="cluster")
        try:
            app = WippyApp(Attached(socket_path(root)), "app:agent", config=load_config(root))
            async with app.run_test(size=(120, 40)) as pilot:
                app.chat.query_one(ChatInput).insert('call tools_work_quick {"text": "a"}')
                await pilot.press("enter")
                await wait_until(lambda: bool(app.screen.query(TurnView)) and app.screen.query(TurnView).last().done,
                                 timeout=60)
                view = app.screen.query(TurnView).last()
                assert "done: quick a" in "".join(part.source for part in view.body.query(MarkdownText))
                assert cluster_app.lines() == ["quick a"]
                conversation = app.chat.conversation
                assert conversation is not None
                await wait_until(lambda: app.chat.query_one("#conversations").option_count > 1, timeout=30)

                await pilot.press("f4")
                table = app.screen.query_one(DataTable)
                await wait_until(lambda: table.row_count > 2, timeout=30)
                keys = [key.value for key in table.rows]
                assert [key for key in keys if key and key.startswith("node ")] == ["node node-1", "node node-2"]
                nodes = [key.split(".")[0].lstrip("<") for key in keys if key and key.startswith("<")]
                first_of_second = nodes.index("node-2")  # each node's processes come under its own row
                assert set(nodes[:first_of_second]) == {"node-1"} and set(nodes[first_of_second:]) == {"node-2"}

                def versions() -> int:
                    return sum(line.plain.startswith("v") and "prompts:agent" in line.plain for line in app.activity)

                before = versions()  # the version that loaded the files
                (root / "prompts/agent.md").write_text("You are version two.\n")
                await wait_until(lambda: versions() > before, timeout=30)
                await pilot.pause()
                assert versions() == before + 1
        finally:
            await server.close()
