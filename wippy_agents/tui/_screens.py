"""The TUI's other screens: activity (registry changes, tasks), processes, approvals, memory, help, a reason prompt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Label, Markdown, RichLog, Static

from .._display import short
from .._runtime.tree import walk_tree
from ..control import ControlError
from ..policy import Approval
from ..state import TERMINAL
from ._format import status_text, task_detail, unavailable_tools
from ._link import NodeLink

if TYPE_CHECKING:
    from ._app import WippyApp


class WippyScreen(Screen[None]):
    """A screen of the TUI, with the wippy app it shows at hand."""

    @property
    def wippy(self) -> WippyApp:
        return cast("WippyApp", self.app)

    @property
    def link(self) -> NodeLink:
        return self.wippy.link


Row = tuple[str, Sequence[RenderableType]]


def sync_table(table: DataTable[Any], rows: list[Row]) -> None:
    """Show `rows` (key, cells) in `table`: cells change in place, and the highlighted row stays highlighted."""
    keys = [key for key, _ in rows]
    if [key.value for key in table.rows] != keys:
        current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value if table.row_count else None
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if current in keys:
            table.move_cursor(row=keys.index(current))
        return
    for key, cells in rows:
        if table.get_row(key) != list(cells):
            for column, cell in zip(table.columns, cells, strict=True):
                table.update_cell(key, column, cell)


def highlighted_key(table: DataTable[Any]) -> str | None:
    if not table.row_count:
        return None
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value


class RefreshingScreen(WippyScreen):
    """A screen that redraws from the node every `INTERVAL` seconds while it is shown (and not while hidden)."""

    INTERVAL = 1.0
    _timer: Timer | None = None

    async def refresh_view(self) -> None:
        raise NotImplementedError

    async def on_screen_resume(self) -> None:
        await self.refresh_view()
        if self._timer is None:
            self._timer = self.set_interval(self.INTERVAL, self.refresh_view)
        else:
            self._timer.resume()

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()


class ActivityScreen(RefreshingScreen):
    """Who changed what in the registry (and which files it refused), and the durable tasks, with resume and cancel."""

    BINDINGS = [
        Binding("r", "resume", "Resume task"),
        Binding("c", "cancel_task", "Cancel task"),
    ]
    DEFAULT_CSS = """
    ActivityScreen .heading { text-style: bold; padding: 0 1; background: $boost; width: 100%; }
    ActivityScreen #registry-log { height: 1fr; }
    ActivityScreen #unavailable { height: auto; max-height: 8; padding: 0 1; color: $warning; }
    ActivityScreen #tasks { height: 1fr; }
    ActivityScreen #task-detail { height: auto; max-height: 12; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Registry changes", classes="heading")
        yield RichLog(id="registry-log", wrap=True, markup=False)
        yield Static(id="unavailable")
        yield Label("Tasks", classes="heading")
        table: DataTable[Any] = DataTable(id="tasks", cursor_type="row")
        table.add_column("task", key="id")
        table.add_column("workflow", key="workflow")
        table.add_column("status", key="status")
        table.add_column("created", key="created")
        yield table
        yield VerticalScroll(Static(id="task-detail"), id="task-detail-scroll")
        yield Footer()

    def on_mount(self) -> None:
        log = self.query_one(RichLog)
        for line in self.wippy.activity:
            log.write(line)
        self.wippy.activity_added.subscribe(self, log.write)

    async def refresh_view(self) -> None:
        rows: list[Row] = [
            (info["id"], (info["id"], info["workflow"], status_text(info["status"]),
                          f"{datetime.fromisoformat(info['created']).astimezone():%m-%d %H:%M:%S}"))
            for info in reversed(await self.link.tasks())
        ]
        sync_table(self.query_one("#tasks", DataTable), rows)
        await self.show_detail()
        unavailable = self.query_one("#unavailable", Static)
        lines = unavailable_tools(await self.link.entries("tool"))
        unavailable.display = bool(lines)
        unavailable.update(lines)

    @on(DataTable.RowHighlighted, "#tasks")
    async def show_detail(self) -> None:
        task_id = highlighted_key(self.query_one("#tasks", DataTable))
        detail = self.query_one("#task-detail", Static)
        if task_id is None:
            detail.update("No tasks yet: every agent turn and workflow run is one.")
            return
        detail.update(task_detail(await self.link.task(task_id)))

    async def action_resume(self) -> None:
        task_id = highlighted_key(self.query_one("#tasks", DataTable))
        if task_id is None:
            return
        status = (await self.link.task(task_id))["status"]
        if status in TERMINAL and status != "needs_attention":
            self.notify(f"task {task_id} is {status}; there is nothing to resume")
            return
        try:
            resumed = await self.link.resume(task_id)
        except ControlError as error:  # its workflow's code is not loaded on the node
            self.notify(str(error), severity="error", title="Resume")
            return
        self.notify(f"task {task_id} resumed: it is {resumed['status']}")
        await self.refresh_view()

    async def action_cancel_task(self) -> None:
        task_id = highlighted_key(self.query_one("#tasks", DataTable))
        if task_id is None:
            return
        cancelled = await self.link.cancel(task_id)
        if not cancelled["requested"]:
            self.notify(f"task {task_id} is already {cancelled['before']}; nothing to cancel")
            return
        self.notify(f"task {task_id}: cancel requested; it stops at its next step or wait")
        await self.refresh_view()


class ProcessesScreen(RefreshingScreen):
    """The live supervision tree: every process with its status, mailbox and restarts."""

    INTERVAL = 0.5
    DEFAULT_CSS = """
    ProcessesScreen #processes { height: 1fr; }
    ProcessesScreen .legend { color: $text-muted; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield Header()
        table: DataTable[Any] = DataTable(id="processes", cursor_type="row")
        for label, key in (("process", "name"), ("pid", "pid"), ("status", "status"), ("mailbox", "mailbox"),
                           ("restarts", "restarts"), ("function", "function")):
            table.add_column(label, key=key)
        yield table
        yield Static("Each process under its supervisor; ↻ marks one that crashed and was restarted. "
                     f"Refreshed every {self.INTERVAL:g}s.", classes="legend")
        yield Footer()

    async def refresh_view(self) -> None:
        """The tree of each node; with more than one (a cluster), each under a row naming its node."""
        processes = await self.link.processes()
        nodes = sorted({info.pid.node for info in processes})
        rows: list[Row] = []
        for node in nodes:
            if len(nodes) > 1:
                rows.append((f"node {node}", (Text(node, "bold"), "", "", "", "", "")))
            for depth, info in walk_tree([info for info in processes if info.pid.node == node]):
                restarts = Text(f"↻ {info.restarts}", "bold yellow") if info.restarts else Text("0", "dim")
                mailbox = Text(str(info.mailbox), "bold" if info.mailbox else "dim")
                indent = "  " * (depth + (len(nodes) > 1))
                name = indent + (info.name or info.function.rpartition(".")[2])
                rows.append((repr(info.pid), (name, repr(info.pid), info.status, mailbox, restarts,
                                              short(info.function, 60))))
        sync_table(self.query_one(DataTable), rows)


class ReasonScreen(ModalScreen[str | None]):
    """Asks for the reason of a decision: enter confirms (the reason may be empty), escape cancels."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    DEFAULT_CSS = """
    ReasonScreen { align: center middle; }
    ReasonScreen > Vertical { width: 70; max-width: 100%; height: auto; border: thick $accent; padding: 1 2;
                              background: $surface; }
    ReasonScreen .hint { color: $text-muted; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.question))
            yield Input(placeholder="reason (optional)")
            yield Label("enter confirms · esc cancels", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())


class ApprovalsScreen(WippyScreen):
    """Changes agents asked for under an `ask` policy: read the diff, approve or deny with a reason."""

    BINDINGS = [
        Binding("a", "decide('approve')", "Approve"),
        Binding("d", "decide('deny')", "Deny"),
    ]
    DEFAULT_CSS = """
    ApprovalsScreen #approvals { height: auto; max-height: 40%; }
    ApprovalsScreen #approval-detail { height: 1fr; padding: 0 1; }
    """
    DECIDED_SHOWN = 50

    def __init__(self) -> None:
        super().__init__()
        self.shown: dict[str, Approval] = {}
        """The approvals in the table, by id."""

    def compose(self) -> ComposeResult:
        yield Header()
        table: DataTable[Any] = DataTable(id="approvals", cursor_type="row")
        for label, key in (("status", "status"), ("agent", "agent"), ("action", "action"),
                           ("resource", "resource"), ("summary", "summary")):
            table.add_column(label, key=key)
        yield table
        yield VerticalScroll(Static(id="approval-text"), id="approval-detail")
        yield Footer()

    async def on_mount(self) -> None:
        self.wippy.approvals_changed.subscribe(self, lambda _: self.refresh_view())
        await self.refresh_view()

    async def approvals(self) -> list[Approval]:
        """Pending ones first (oldest first, as they wait), then the latest decisions."""
        every = await self.link.approvals()
        decided = [a for a in every if a.status != "pending"]
        return [a for a in every if a.status == "pending"] + decided[::-1][: self.DECIDED_SHOWN]

    async def refresh_view(self) -> None:
        self.shown = {approval.id: approval for approval in await self.approvals()}
        rows: list[Row] = [
            (a.id, (status_text(a.status), a.agent, a.action, a.resource, short(a.summary, 50)))
            for a in self.shown.values()
        ]
        sync_table(self.query_one(DataTable), rows)
        self.show_detail()

    def selected(self) -> Approval | None:
        approval_id = highlighted_key(self.query_one(DataTable))
        return None if approval_id is None else self.shown.get(approval_id)

    @on(DataTable.RowHighlighted)
    def show_detail(self) -> None:
        approval = self.selected()
        text = self.query_one("#approval-text", Static)
        if approval is None:
            text.update("Nothing waits for a decision. When a policy says `ask`, an agent's change waits here.")
            return
        head = Text.assemble((approval.summary, "bold"), "\n", f"{approval.agent} asks to {approval.action} ",
                             (approval.resource, "bold"), f" (task {approval.task_id or '-'}, "
                             f"asked {approval.created:%Y-%m-%d %H:%M:%S})\n")
        if approval.status != "pending":
            head.append(f"{approval.status} by {approval.decided_by}", "bold")
            head.append(f": {approval.decision_reason}\n" if approval.decision_reason else "\n")
        parts: list[RenderableType] = [head]
        if approval.diff:
            parts.append(Syntax(approval.diff, "diff", word_wrap=True, background_color="default"))
        text.update(Group(*parts))

    @work(exit_on_error=False)
    async def action_decide(self, verdict: str) -> None:
        approval = self.selected()
        if approval is None or approval.status != "pending":
            self.notify("Pick a pending approval first.")
            return
        reason = await self.app.push_screen_wait(ReasonScreen(f"{verdict.capitalize()} {approval.summary}?"))
        if reason is None:
            return
        try:
            decided = await self.link.decide(approval.id, "approve" if verdict == "approve" else "deny", reason)
        except ControlError as error:
            self.notify(str(error), severity="error", title="Approval")
        else:
            self.notify(f"{decided.status}: {decided.summary}", title="Approval")
        await self.refresh_view()


class MemoryScreen(RefreshingScreen):
    """The notes agents keep across conversations: the agents that have some, an agent's notes, a note's versions."""

    INTERVAL = 2.0
    DEFAULT_CSS = """
    MemoryScreen #memory-agents { height: auto; max-height: 30%; }
    MemoryScreen #memory-notes { height: 1fr; }
    MemoryScreen #memory-detail { height: auto; max-height: 40%; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield Header()
        agents: DataTable[Any] = DataTable(id="memory-agents", cursor_type="row")
        agents.add_column("agent", key="agent")
        agents.add_column("notes", key="notes")
        yield agents
        notes: DataTable[Any] = DataTable(id="memory-notes", cursor_type="row")
        for label, key in (("note", "note"), ("tags", "tags"), ("text", "text"), ("written", "written")):
            notes.add_column(label, key=key)
        yield notes
        yield VerticalScroll(Static(id="memory-versions"), id="memory-detail")
        yield Footer()

    async def refresh_view(self) -> None:
        counts = await self.link.memory_agents()
        sync_table(self.query_one("#memory-agents", DataTable),
                   [(agent, (agent, str(count))) for agent, count in counts.items()])
        await self.show_notes()

    @on(DataTable.RowHighlighted, "#memory-agents")
    async def show_notes(self) -> None:
        agent = highlighted_key(self.query_one("#memory-agents", DataTable))
        notes = [] if agent is None else await self.link.memory(agent)
        sync_table(self.query_one("#memory-notes", DataTable), [
            (str(note["note"]), (str(note["note"]), ", ".join(note["tags"]), short(note["text"], 60),
                                 f"{_local(note['time']):%m-%d %H:%M} by {note['author']}"))
            for note in notes])
        await self.show_versions()

    @on(DataTable.RowHighlighted, "#memory-notes")
    async def show_versions(self) -> None:
        agent = highlighted_key(self.query_one("#memory-agents", DataTable))
        note = highlighted_key(self.query_one("#memory-notes", DataTable))
        detail = self.query_one("#memory-versions", Static)
        if agent is None or note is None:
            detail.update("No notes yet. An agent given the built-in tool wippy:remember keeps notes here, "
                          "across its conversations; wippy:recall finds them again.")
            return
        lines = Text()
        for version in await self.link.memory_history(agent, int(note)):
            lines.append(f"v{version['version']} {_local(version['time']):%Y-%m-%d %H:%M:%S} {version['author']}"
                         f"{' in ' + version['task'] if version['task'] else ''}: ", "bold")
            lines.append(f"{version['text']}\n" if version["text"] is not None else "forgotten\n")
        detail.update(lines)


def _local(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone()


HELP = """\
# wippy chat

Chat with the app's agents, watch what they do, and decide on the changes they ask for.

| key | what it does |
|---|---|
| **enter** | send the message |
| **ctrl+j** / **shift+enter** | new line in the message |
| **up** / **down** | earlier messages (from the first / last line of the input) |
| **esc** | cancel the running turn |
| **ctrl+n** | new conversation with the current agent |
| **ctrl+s** | show or hide the sidebar (agents and conversations) |
| **ctrl+f** | search past conversations: every agent's whose messages hold each word typed |
| **tab** / **shift+tab** | move between the sidebar, the conversation and the input |
| **w** | in the conversation: the turn's steps as a waterfall |
| **f1** | this help |
| **f2** / **f3** / **f4** / **f5** / **f6** | chat / activity / processes / approvals / memory |
| **ctrl+p** | command palette: switch agent, conversation, model or theme |
| **ctrl+q** | quit (the node shuts its processes down first) |

**Chat.** Answers stream as Markdown. Each tool call is a block: select it (or click) to see the
arguments, the result and how long it took; work handed to another agent shows inside the block of
the call that asked for it. The line under each answer gives its tokens and cost.
Cancelling stops the agent at its next step; a model call already under way finishes in the
background, and reopening the conversation shows what it completed.

**Waterfall.** Focus a turn (click it, or tab into the conversation) and press **w**, or pick
*Waterfall* in the palette: each step of the turn (model calls, tool calls, a delegate's steps
under the call that asked it) as a bar placed by when it started and as long as it took, with its
tokens and cost, failed steps marked ✗, totals at the bottom. It reads the journal, so it works
for turns of earlier sessions too.

**Conversations** are kept in the app's state file: quit, come back, pick one in the sidebar or in
the palette, and go on.

**Models.** *Use model…* in the palette points the current agent's entry at another model entry:
a registry change in your name, written to the agent's file, shown in Activity, and undone with
`wippy registry rollback`. It applies from the agent's next turn.

**Activity** lists registry versions (who, why, which entries; files that were refused, with the
reason) and the durable tasks: **r** resumes the highlighted task, **c** cancels it.

**Processes** is the live supervision tree: status, mailbox length and restarts (↻).

**Approvals** lists the changes agents asked for under an `ask` policy, with their diff:
**a** approves, **d** denies; both ask for a reason.

**Memory** lists the agents that keep notes (`wippy:remember`), the highlighted agent's notes, and
every version of the highlighted note: who wrote it, in which turn, and when it was forgotten
(`wippy memory forget AGENT NOTE`).
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss(None)", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; max-width: 100%; height: 90%; border: thick $accent;
                                  background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
