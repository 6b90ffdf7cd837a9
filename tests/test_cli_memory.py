"""`wippy memory list|show|forget`, run as real subprocesses, with and without a node running the app.

The notes are written the way an agent writes them: `wippy ask` a turn in which the
offline model calls `wippy:remember`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from wippy_agents.testing import write_file

from .test_cli import wippy

KEEPER = """
namespace: mem
entries:
  - name: keeper
    kind: agent
    model: app:offline
    tools: [wippy:remember, wippy:recall]
"""

RunningNode = Callable[[Path], AbstractContextManager[subprocess.Popen[str]]]


def remember(app: Path, text: str, *tags: str) -> None:
    asked = wippy("ask", "mem:keeper", f"/call wippy:remember {json.dumps({'text': text, 'tags': list(tags)})}",
                  "--root", app)
    assert asked.returncode == 0, asked.stderr


def test_memory_lists_shows_and_forgets_an_agents_notes_without_a_node(example_app: Path) -> None:
    write_file(example_app, "registry/mem/_index.yaml", KEEPER)
    assert wippy("memory", "list", "--root", example_app).stdout.startswith("no agent has notes yet")
    remember(example_app, "Ada drinks oolong", "prefs")
    remember(example_app, "Deploys happen on Fridays")

    assert wippy("memory", "list", "--root", example_app).stdout.split() == ["AGENT", "NOTES", "mem:keeper", "2"]
    listed = wippy("memory", "list", "mem:keeper", "--root", example_app)
    header, first, second = listed.stdout.splitlines()
    assert header.split() == ["NOTE", "VERSION", "WRITTEN", "BY", "TAGS", "TEXT"]
    assert first.startswith("1 ") and first.endswith("mem:keeper  prefs  Ada drinks oolong")
    assert second.startswith("2 ") and second.endswith("Deploys happen on Fridays")

    forgot = wippy("memory", "forget", "mem:keeper", "1", "--root", example_app)
    assert forgot.returncode == 0, forgot.stderr
    assert forgot.stdout.startswith("forgot note 1 of mem:keeper (memory version 3)")
    versions = json.loads(wippy("memory", "show", "mem:keeper", "1", "--json", "--root", example_app).stdout)
    assert [(v["version"], v["text"], v["author"][:5]) for v in versions] == [
        (1, "Ada drinks oolong", "mem:k"), (3, None, "user:")]
    assert versions[0]["task"].startswith("turn:")
    assert [n["note"] for n in json.loads(wippy("memory", "list", "mem:keeper", "--json", "--root",
                                                example_app).stdout)] == [2]

    again = wippy("memory", "forget", "mem:keeper", "1", "--root", example_app)
    assert again.returncode == 1 and again.stderr == "wippy: mem:keeper has no note 1 (its notes: 2)\n"
    nobody = wippy("memory", "show", "app:nobody", "--root", example_app)
    assert nobody.returncode == 1 and nobody.stderr == "wippy: app:nobody has no memory\n"


def test_memory_commands_go_through_the_node_that_runs_the_app(example_app: Path, running_node: RunningNode) -> None:
    write_file(example_app, "registry/mem/_index.yaml", KEEPER)
    with running_node(example_app):
        remember(example_app, "Ada drinks oolong", "prefs")
        assert wippy("memory", "forget", "mem:keeper", "1", "--root", example_app).returncode == 0
        shown = wippy("memory", "show", "mem:keeper", "--root", example_app)
        assert shown.returncode == 0, shown.stderr
        assert "(forgotten)" in shown.stdout and "written in turn:" in shown.stdout
