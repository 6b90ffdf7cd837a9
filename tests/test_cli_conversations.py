"""`wippy conversations list|search`: read from the index agents keep as turns happen, with and without a node."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from wippy_agents import App
from wippy_agents.control import ControlError, ControlServer, connect

WIPPY = str(Path(sys.executable).with_name("wippy"))


def wippy(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WIPPY, *map(str, args)], capture_output=True, text=True, timeout=60)


def firsts(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The FIRST MESSAGE column of a listing, in order (its header left out)."""
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    return [row[header.index("FIRST MESSAGE"):] for row in rows]


async def test_conversations_are_listed_latest_first_and_searched_by_words_with_or_without_a_node(
        example_app: Path) -> None:
    async with App(root=example_app) as app:
        paris = await app.conversation("app:assistant")
        await paris.ask("weather in Paris")
        await paris.ask("and tomorrow?")
        await (await app.conversation("app:assistant")).ask("a bread recipe")
        await (await app.conversation("app:researcher")).ask("sources on Paris bridges")

    assert firsts(wippy("conversations", "list", "--root", example_app)) == [
        "sources on Paris bridges", "a bread recipe", "weather in Paris"]
    assert firsts(wippy("conversations", "search", "PARIS", "--root", example_app)) == [
        "sources on Paris bridges", "weather in Paris"]
    shown = json.loads(wippy("conversations", "search", "paris tomorrow", "--agent", "app:assistant", "--json",
                             "--root", example_app).stdout)  # every word, the later turn's included
    assert [(c["agent"], c["turns"], c["first"]) for c in shown] == [("app:assistant", 2, "weather in Paris")]

    async with App(root=example_app, control=ControlServer(example_app)) as running:
        await (await running.conversation("app:assistant")).ask("more bread")
        found = await asyncio.to_thread(wippy, "conversations", "search", "bread", "--limit", "1", "--root",
                                        example_app)
        assert firsts(found) == ["more bread"] and "(the latest 1; --limit shows more)" in found.stderr
        async with connect(example_app) as node:
            assert len(await node.request("conversations.list", since="1h")) == 4
            assert await node.request("conversations.list", until="2020-01-01") == []
            with pytest.raises(ControlError, match="bad since: 'last week' is neither an ISO date or time"):
                await node.request("conversations.list", since="last week")
            with pytest.raises(ControlError, match="text: String should have at most 500 characters"):
                await node.request("conversations.list", text="a" * 501)
            with pytest.raises(ControlError, match="at most 20 words, not 21"):
                await node.request("conversations.list", text=" ".join(["word"] * 21))
            assert await node.request("conversations.list", text="%_\\ ' ;--") == []  # SQL's wildcards, quotes
