"""Activity, processes, approvals and help screens, and quitting from each.

The screens and widgets are the TUI's own (`tui._screens`, `tui._chat`): the tests find them by
class, as a person finds them by sight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, RichLog

from wippy_agents import durable
from wippy_agents.durable import TaskContext
from wippy_agents.llm import Response, ToolCall
from wippy_agents.registry import Entry, EntryChange
from wippy_agents.testing import ScriptedModel, wait_until, write_file
from wippy_agents.tui._chat import ChatInput, ToolBlock, TurnView
from wippy_agents.tui._screens import ActivityScreen, ApprovalsScreen, HelpScreen, ProcessesScreen, ReasonScreen


@durable.workflow("test.tui:wait")
async def wait_for_go(ctx: TaskContext) -> str:
    return str(await ctx.wait_signal("go"))


def log_text(app: Any) -> str:
    return "\n".join(line.text for line in app.screen.query_one(RichLog).lines)


def column(table: DataTable[Any], key: str) -> list[str]:
    return [str(table.get_cell(row, key)) for row in table.rows]


async def test_the_activity_pane_shows_who_changed_what_and_files_it_refused(open_tui: Any) -> None:
    async with open_tui() as (app, pilot):
        await pilot.press("f3")
        assert isinstance(app.screen, ActivityScreen)
        assert "v1 files · loaded from files" in log_text(app)
        app.application.registry.apply([Entry("app.notes:todo", "config", {}, {"text": "write tests"})],
                                author="user:ada", reason="a note to self", task="turn:abc:1")
        await wait_until(lambda: "v2 user:ada task turn:abc:1 · a note to self" in log_text(app))
        write_file(app.application.registry.root, "registry/app/agents/_index.yaml", "namespace: app\nentries: [oops\n")
        await wait_until(lambda: "✗ refused registry/app/agents/_index.yaml" in log_text(app))
        assert any("registry/app/agents/_index.yaml was refused" in (n.title or "") for n in app._notifications)
        assert app.application.registry.get("app:assistant")  # the last good version stays


async def test_files_refused_at_boot_show_in_the_activity_pane(open_tui: Any, example_app: Any) -> None:
    write_file(example_app, "registry/broken/_index.yaml", """
        namespace: app.broken
        entries:
          - name: agent
            kind: agent
            max_steps: lots
    """)
    async with open_tui() as (app, pilot):
        await pilot.press("f3")
        text = log_text(app)
        assert "✗ refused registry/broken/_index.yaml" in text and "max_steps" in text


async def test_tasks_can_be_cancelled_and_resumed_from_the_activity_pane(open_tui: Any) -> None:
    async with open_tui() as (app, pilot):
        tasks = app.application.tasks
        await tasks.start("test.tui:wait", task_id="waiting")
        await pilot.press("f3")
        table = app.screen.query_one("#tasks", DataTable)
        await wait_until(lambda: "waiting" in column(table, "id"))
        table.move_cursor(row=column(table, "id").index("waiting"))
        table.focus()
        await pilot.press("r")  # it runs: resuming attaches to it
        assert tasks.status("waiting") == "running"
        await pilot.press("c")
        await wait_until(lambda: tasks.status("waiting") == "cancelled")
        await wait_until(lambda: "cancelled" in column(table, "status"))
        assert "test.tui:wait" in str(app.screen.query_one("#task-detail").render())
        await pilot.press("r")
        assert any("nothing to resume" in n.message for n in app._notifications)


async def test_a_crashed_agent_is_announced_and_the_process_view_shows_it_restarted(open_tui: Any) -> None:
    async with open_tui() as (app, pilot):
        node = app.application.node
        await app.application.conversation("app:assistant", id="doomed")
        await pilot.press("f4")
        assert isinstance(app.screen, ProcessesScreen)
        table = app.screen.query_one(DataTable)
        await wait_until(lambda: "    conversation:doomed" in column(table, "name"))
        before = node.whereis("conversation:doomed")
        assert before is not None
        node.send(before, "agent.ask", "not a request")  # the conversation process crashes on it
        await wait_until(lambda: node.whereis("conversation:doomed") not in (None, before))
        await wait_until(lambda: "↻ 1" in column(table, "restarts"))
        row = column(table, "name").index("    conversation:doomed")
        assert column(table, "pid")[row] == repr(node.whereis("conversation:doomed"))
        assert any("conversation:doomed" in n.message and "crashed" in n.message for n in app._notifications)
        await pilot.press("f3")
        assert "conversation:doomed" in log_text(app)


ASK_FOR_NOTES = """
    namespace: app.policies
    entries:
      - name: toolsmith_asks_for_notes
        kind: policy
        subjects: [app:toolsmith]
        actions: [registry.create]
        resources: ["prompts.notes:*"]
        effect: ask
"""


@pytest.fixture
def notes_need_approval(example_app: Path) -> Path:
    """The example app with a policy that makes the toolsmith ask before it writes a prompt in `prompts.notes`."""
    write_file(example_app, "registry/app/notes_policy/_index.yaml", ASK_FOR_NOTES)
    return example_app


def request_note(app: Any, name: str) -> str:
    """The toolsmith's pending change (as its write tool records it under the `ask` policy); the approval's id."""
    entry = Entry(f"prompts.notes:{name}", "prompt", {}, {"template": f"Remember the {name}."})
    return app.application.approvals.request(
        agent="app:toolsmith", task_id=None, call_id=name, action="registry.create", resource=entry.id,
        kind="prompt", summary=f"create the note {name}", changes=[EntryChange(entry.id, None, entry)]).id


@pytest.mark.parametrize(("key", "status"), [("a", "approved"), ("d", "denied")])
async def test_an_approval_is_decided_with_a_reason(open_tui: Any, notes_need_approval: Path, visible: Any,
                                                     key: str, status: str) -> None:
    async with open_tui() as (app, pilot):
        approval = request_note(app, "groceries")
        await wait_until(lambda: any(n.title == "Approval needed" for n in app._notifications))
        assert app.sub_title == "1 approval waiting (f5)"
        await pilot.press("f5")
        assert isinstance(app.screen, ApprovalsScreen)
        table = app.screen.query_one(DataTable)
        assert column(table, "resource") == ["prompts.notes:groceries"]
        assert "app:toolsmith asks to registry.create prompts.notes:groceries" in visible(app)
        assert "+template: Remember the groceries." in visible(app)  # the diff
        await pilot.press(key)
        await wait_until(lambda: isinstance(app.screen, ReasonScreen))
        app.screen.query_one(Input).value = "my reason"
        await pilot.press("enter")
        await wait_until(lambda: app.application.approvals.get(approval).status == status)
        decided = app.application.approvals.get(approval)
        assert decided.decision_reason == "my reason" and decided.decided_by is not None
        assert ("prompts.notes:groceries" in app.application.registry) == (status == "approved")
        await wait_until(lambda: column(table, "status") == [status])
        assert app.sub_title == ""


async def test_escape_in_the_reason_prompt_decides_nothing(open_tui: Any, notes_need_approval: Path) -> None:
    async with open_tui() as (app, pilot):
        approval = request_note(app, "maybe")
        await pilot.press("f5", "d")
        await wait_until(lambda: isinstance(app.screen, ReasonScreen))
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ApprovalsScreen)
        assert app.application.approvals.get(approval).status == "pending"


async def test_help_opens_and_closes(open_tui: Any) -> None:
    async with open_tui() as (app, pilot):
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


@pytest.mark.parametrize("keys", [(), ("f3",), ("f4",), ("f5",), ("f1",)])
async def test_ctrl_q_quits_from_any_screen(open_tui: Any, keys: tuple[str, ...]) -> None:
    async with open_tui() as (app, pilot):
        await pilot.press(*keys)
        await pilot.press("ctrl+q")
        await wait_until(lambda: not app.is_running)
        assert app.return_code == 0


GENERATED = """
    namespace: generated
    entries:
      - name: double
        kind: tool
        runtime: restricted
        function: main
        description: Doubles a number.
        source: |
          def main(x: int) -> int:
              \"\"\"Double a number.

              Args:
                  x: The number.
              \"\"\"
              return 2 * x
"""


async def test_an_agents_change_waits_in_its_tool_block_until_approved(open_tui: Any, example_app: Path) -> None:
    write_file(example_app, "registry/generated/_index.yaml", GENERATED)
    model = ScriptedModel([
        Response(tool_calls=(ToolCall(id="del1", name="wippy_delete_entry", arguments={"id": "generated:double"}),)),
        "deleted it",
    ])
    async with open_tui(model, agent="app:toolsmith") as (app, pilot):
        app.screen.query_one(ChatInput).insert("delete the double tool")
        await pilot.press("enter")  # the example app's policy: deleting a generated tool waits for a person
        await wait_until(lambda: app.screen.query(ToolBlock) and "waiting for your approval" in
                         app.screen.query_one(ToolBlock).title)
        assert any(n.title == "Approval needed" for n in app._notifications)
        await pilot.press("f5", "a")
        await wait_until(lambda: isinstance(app.screen, ReasonScreen))
        await pilot.press("enter")
        await wait_until(lambda: "generated:double" not in app.application.registry)
        await pilot.press("f2")
        view = app.screen.query_one(TurnView)
        await wait_until(lambda: view.done)
        assert view.query_one(ToolBlock).title.startswith("✓ wippy:delete_entry · done")


SHORT_LIVED_SERVER = """
import sys
from mcp.server import MCPServer

server = MCPServer("brittle")


@server.tool()
def crash() -> str:
    \"\"\"Ends the server.\"\"\"
    sys.exit(3)


server.run("stdio")
"""


async def test_an_mcp_server_given_up_on_shows_its_tools_as_unavailable_in_the_activity_pane(
        open_tui: Any, tmp_path: Path, send: Any, visible: Any) -> None:
    root = tmp_path / "app"
    write_file(root, "brittle.py", SHORT_LIVED_SERVER)
    write_file(root, "registry/_index.yaml", """\
namespace: app
entries:
  - {name: offline, kind: model, provider: offline, model: wippy-offline}
  - {name: helper, kind: agent, model: app:offline, tools: ["mcp.brittle:*"]}
  - {name: brittle, kind: mcp_server, command: python, args: [brittle.py], max_restarts: 0}
""")
    async with open_tui(root=root, agent="app:helper") as (app, pilot):
        await wait_until(lambda: "mcp.brittle:crash" in app.application.registry, timeout=30)
        await send(pilot, "/call mcp.brittle:crash {}")
        await pilot.press("f3")
        await wait_until(lambda: "⚠ unavailable mcp.brittle:crash: the MCP server failed 1 times in a row"
                         in visible(app).replace("\n", " "), timeout=30, poll=0.05)
