"""The Textual app of `wippy chat`: it hosts the node it shows, or attaches to one `wippy run` serves.

Hosting, `run_chat` boots the app on the TUI's own asyncio loop and shuts it
down when the person quits. Attached (a node already runs the app, on this
machine or as a cluster's driver), the TUI talks to it through its control
socket, and quitting leaves it running. Either way every screen reads the node
through the same control ops (`NodeLink`), so both look and behave the same.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.signal import Signal

from ..app import App as WippyApplication
from ..app import AppConfig, load_config
from ..control import Attached, Backend, ControlError, ControlServer, Hosted, ping, socket_path
from ..errors import UsageError
from ..policy import Approval
from ._chat_screen import ChatScreen
from ._commands import AgentCommands, ConversationCommands, ModelCommands
from ._format import refused_file, version_line
from ._link import NodeLink, parse
from ._screens import ActivityScreen, ApprovalsScreen, HelpScreen, MemoryScreen, ProcessesScreen

ACTIVITY_KEPT = 1000
"""Lines of registry activity kept for the activity pane."""
RECENT_VERSIONS = 50
"""Registry versions from before the TUI started shown in the activity pane."""
RECONNECT_DELAY = (0.5, 5.0)
"""Seconds before watching an attached node again after it stopped answering: the first wait, and the longest."""

log = logging.getLogger("wippy_agents.tui")


class WippyApp(App[None]):
    """Chat with an app's agents, and watch its registry, tasks, processes and approvals.

    `node` is the running app to show (the TUI hosts it) or a `Backend` of a node
    that runs elsewhere (`Attached`), with that app's `config`.
    """

    TITLE = "wippy"
    DEFAULT_MODE = "chat"
    COMMANDS = App.COMMANDS | {AgentCommands, ConversationCommands, ModelCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("f2", "switch_mode('chat')", "Chat"),
        Binding("f3", "switch_mode('activity')", "Activity"),
        Binding("f4", "switch_mode('processes')", "Processes"),
        Binding("f5", "switch_mode('approvals')", "Approvals"),
        Binding("f6", "switch_mode('memory')", "Memory", priority=True),  # over the chat input's select-line
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, node: WippyApplication | Backend, agent: str | None = None,
                 conversation: str | None = None, *, config: AppConfig | None = None) -> None:
        """Show `node`, chatting with `agent` (default: the app's `default_agent`, else its first agent)."""
        super().__init__()
        if isinstance(node, WippyApplication):
            self.application: WippyApplication | None = node
            """The app the TUI hosts (`self.app`, as in every Textual widget, is this Textual app); None attached."""
            self.config = node.config
            self.link = NodeLink(Hosted(node))
            agents = node.registry.find(kind="agent")
            first_agent = agents[0].id if agents else None
        else:
            if config is None:
                raise TypeError("WippyApp(backend) needs the app's config=")
            self.application, self.config, self.link, first_agent = None, config, NodeLink(node), None
        self.attached = self.application is None
        self.activity: deque[Text] = deque(maxlen=ACTIVITY_KEPT)
        self.activity_added: Signal[Text] = Signal(self, "activity_added")
        self.agents_changed: Signal[None] = Signal(self, "agents_changed")
        self.approvals_changed: Signal[Approval] = Signal(self, "approvals_changed")
        self.chat = ChatScreen(agent or self.config.default_agent or first_agent or "app:assistant", conversation)
        self.add_mode("chat", lambda: self.chat)
        self.add_mode("activity", ActivityScreen)
        self.add_mode("processes", ProcessesScreen)
        self.add_mode("approvals", ApprovalsScreen)
        self.add_mode("memory", MemoryScreen)
        self._pending = 0

    async def on_mount(self) -> None:
        self.title = f"wippy · {self.config.name}" if self.config.name else "wippy"
        # What exists now (the node, its registry, Textual) lives as long as the app: keep it out of the cyclic
        # garbage collector, whose full passes over it would otherwise stall a streaming answer for ~50 ms each.
        gc.freeze()
        self.watch_node()
        for version in await self.link.history(RECENT_VERSIONS):
            self.log_activity(version_line(version.version, version.author, version.reason, version.task,
                                           version.entries))
        for file, problems in (await self.link.refused()).items():
            self.log_activity(refused_file(file, problems))
        await self.show_pending()

    def on_unmount(self) -> None:
        gc.unfreeze()

    # -- what the node tells ----------------------------------------------------------------

    @work(group="watch", exit_on_error=False)
    async def watch_node(self) -> None:
        """Follow the node's events for as long as the TUI runs; an attached node that stops is watched again."""
        delay = RECONNECT_DELAY[0]
        while True:
            try:
                async for event in self.link.watch():
                    delay = RECONNECT_DELAY[0]
                    await self.node_event(event)
            except (ControlError, OSError, TimeoutError) as error:
                if not self.attached:
                    raise
                self.notify(f"{error}; trying again", title="The node stopped answering", severity="error",
                            timeout=10)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_DELAY[1])

    async def node_event(self, event: dict[str, Any]) -> None:
        topic = event.get("topic")
        if topic == "registry.commit":
            self.log_activity(version_line(event["version"], event["author"], event["reason"], event["task"],
                                           event["ids"]))
            if event["agents"]:
                self.agents_changed.publish(None)
        elif topic == "registry.error":
            file = event["author"].removeprefix("file:")
            self.log_activity(refused_file(file, event["problems"]))
            problem = event["problems"][0] if event["problems"] else "refused"
            self.notify(str(problem), title=f"{file} was refused", severity="error", timeout=10)
        elif topic == "approval":
            approval: Approval = parse(Approval, event["approval"])
            await self.show_pending()
            if approval.status == "pending":
                self.notify(f"{approval.agent}: {approval.summary} (f5 to review)", title="Approval needed",
                            severity="warning", timeout=15)
            self.approvals_changed.publish(approval)
        elif topic == "log":
            error = event["level"] in ("error", "critical")
            self.log_activity(Text(f"{event['level']}: {event['message']}", "red" if error else "yellow"))
            self.notify(event["message"], title=event["name"], severity="error" if error else "warning", timeout=10)
        elif topic == "lost":
            self.log_activity(Text(f"{event['count']} events were dropped: the TUI fell behind the node", "yellow"))

    def log_activity(self, line: Text) -> None:
        self.activity.append(line)
        self.activity_added.publish(line)

    async def show_pending(self) -> None:
        count = len(await self.link.approvals("pending"))
        self.sub_title = f"{count} approval{'s' if count != 1 else ''} waiting (f5)" if count else ""

    # -- actions ----------------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def open_chat(self, agent: str, conversation: str | None) -> None:
        """Show `agent`'s conversation (None: a new one) on the chat screen."""
        await self.switch_mode("chat")
        await self.chat.open(agent, conversation)

    async def use_model(self, model: str) -> None:
        """Point the current agent's entry at `model`: a registry change in the person's name, from the next turn."""
        agent = await self.link.entry(self.chat.agent)
        if agent is None:
            self.notify(f"{self.chat.agent} is no longer in the registry", title="Model not changed", severity="error")
            return
        try:
            version = await self.link.use_model(agent, model)
        except ControlError as error:
            self.notify(str(error), title="Model not changed", severity="error", timeout=10)
            return
        self.notify(f"{agent.id} uses {model} from its next turn (registry version {version})")

    def get_system_commands(self, screen: Screen[Any]) -> Any:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New conversation", "Start a new conversation with the current agent",
                            lambda: self.open_chat(self.chat.agent, None))
        if screen is self.chat:
            yield SystemCommand("Waterfall", "The steps of the turn in focus (else the last one): time, tokens, cost",
                                self.chat.action_waterfall)
        for mode, what in (("activity", "Registry changes and tasks"), ("processes", "The supervision tree"),
                           ("approvals", "Changes waiting for your decision"),
                           ("memory", "The notes agents keep across conversations")):
            yield SystemCommand(mode.capitalize(), what, lambda mode=mode: self.switch_mode(mode))
        yield SystemCommand("Help", "Keys and what each screen shows", self.action_help)


async def run_chat(root: Path, agent: str | None = None) -> None:
    """Show the app in `root` until the person quits: attached to the node that runs it, else hosting one.

    Hosting, the node shuts down when the TUI quits; attached, it keeps running.
    Raises `RegistryError` when the config is broken, `AgentError` for an
    unknown `agent` and `UsageError` without a terminal, before the UI starts.
    """
    root = root.resolve()
    info = await ping(socket_path(root))
    if info is not None:
        backend = Attached(socket_path(root), info)
        config, link = load_config(root), NodeLink(backend)
        if agent is not None:
            await link.request("registry.show", id=agent)  # names the missing agent
        else:
            agent = config.default_agent or next((entry.id for entry in await link.entries("agent")), None)
        require_terminal()
        await WippyApp(backend, agent, config=config).run_async()
        return
    async with WippyApplication(root, control=ControlServer(root)) as application:
        conversation = None
        if agent is not None:
            conversation = (await application.conversation(agent)).id  # checks the agent, naming close matches
        require_terminal()
        await WippyApp(application, agent, conversation).run_async()


def require_terminal() -> None:
    """Refuse to draw the UI where nobody sees it (a script, a pipe): it would wait for keys that never come."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("wippy chat draws its UI in a terminal, and this one has no terminal for input or output; "
                         "run it in a terminal (scripts use `wippy ask`)")
