"""The memory screen (f6): the agents that keep notes, an agent's notes, and a note's versions, as they change.

Runs hosted and attached (`open_tui`); the notes are written through the node's own
memory, as `wippy:remember` and `wippy memory forget` write them.
"""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable, Static

from wippy_agents.testing import wait_until
from wippy_agents.tui._screens import MemoryScreen


def column(table: DataTable[Any], key: str) -> list[str]:
    return [str(table.get_cell(row, key)) for row in table.rows]


async def test_the_memory_screen_lists_each_agents_notes_and_a_notes_versions(open_tui: Any) -> None:
    async with open_tui() as (app, pilot):
        await pilot.press("f6")
        screen = app.screen
        assert isinstance(screen, MemoryScreen)
        detail = screen.query_one("#memory-versions", Static)
        await wait_until(lambda: "No notes yet" in str(detail.render()))

        memory = app.application.agents.memory
        memory.remember("app:assistant", "Ada drinks oolong", ["prefs"], author="app:assistant", task="turn:c:1")
        memory.remember("app:assistant", "Deploys on Fridays", [], author="app:assistant", task="turn:c:2")
        memory.remember("app:researcher", "The registry has 15 entries", [], author="app:researcher", task=None)
        memory.forget("app:assistant", 2, author="user:ada")
        memory.remember("app:assistant", "Ada drinks sencha now", ["prefs"], author="app:assistant",
                        task="turn:c:3", note=1)

        agents = screen.query_one("#memory-agents", DataTable)
        await screen.refresh_view()
        await wait_until(lambda: column(agents, "agent") == ["app:assistant", "app:researcher"])
        assert column(agents, "notes") == ["1", "1"]
        notes = screen.query_one("#memory-notes", DataTable)
        assert (column(notes, "note"), column(notes, "text"), column(notes, "tags")) == (
            ["1"], ["Ada drinks sencha now"], ["prefs"])
        shown = str(detail.render())
        assert "v1 " in shown and "app:assistant in turn:c:1: Ada drinks oolong" in shown
        assert "v4 " in shown and "app:assistant in turn:c:3: Ada drinks sencha now" in shown

        await pilot.press("down")  # the researcher's notes
        await wait_until(lambda: column(notes, "text") == ["The registry has 15 entries"])
