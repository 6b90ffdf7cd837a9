"""The Textual app of `wippy chat`, running on the same asyncio loop as the node it shows.

`run_chat` boots the node, runs the app, and shuts the node down when the app
exits: quitting stops every process of the node before the command returns.
"""

from __future__ import annotations

import gc
import logging
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.signal import Signal

from .._runtime.types import KILL, Pid
from ..app import App as WippyApplication
from ..control import ControlServer
from ..policy import Approval, person
from ..registry import Entry, RegistryError
from ._bridge import LogForwarder, NodeEvent, NodeLog, listen
from ._chat_screen import ChatScreen
from ._commands import AgentCommands, ConversationCommands, ModelCommands
from ._format import refused_file, registry_change, version_line
from ._screens import ActivityScreen, ApprovalsScreen, HelpScreen, ProcessesScreen

ACTIVITY_KEPT = 1000
"""Lines of registry activity kept for the activity pane."""
RECENT_VERSIONS = 50
"""Registry versions from before the TUI started shown in the activity pane."""

AGENT_CHANGES = ("registry.create", "registry.update", "registry.delete")


class WippyApp(App[None]):
    """Chat with an app's agents, and watch its registry, tasks, processes and approvals."""

    TITLE = "wippy"
    DEFAULT_MODE = "chat"
    COMMANDS = App.COMMANDS | {AgentCommands, ConversationCommands, ModelCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("f2", "switch_mode('chat')", "Chat"),
        Binding("f3", "switch_mode('activity')", "Activity"),
        Binding("f4", "switch_mode('processes')", "Processes"),
        Binding("f5", "switch_mode('approvals')", "Approvals"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, application: WippyApplication, agent: str | None = None,
                 conversation: str | None = None) -> None:
        """Show a running app, chatting with `agent` (default: the app's `default_agent`, else the first agent)."""
        super().__init__()
        self.application = application
        """The wippy app shown (`self.app`, as in every Textual widget, is this Textual app)."""
        self.config = application.config
        self.activity: deque[Text] = deque(maxlen=ACTIVITY_KEPT)
        self.activity_added: Signal[Text] = Signal(self, "activity_added")
        self.agents_changed: Signal[None] = Signal(self, "agents_changed")
        self.approvals_changed: Signal[Approval] = Signal(self, "approvals_changed")
        self.chat = ChatScreen(agent or self.default_agent(), conversation)
        self.add_mode("chat", lambda: self.chat)
        self.add_mode("activity", ActivityScreen)
        self.add_mode("processes", ProcessesScreen)
        self.add_mode("approvals", ApprovalsScreen)
        self._listener: Pid | None = None
        self._log_forwarder: LogForwarder | None = None
        self._agents_touched = False

    def default_agent(self) -> str:
        if self.config.default_agent:
            return self.config.default_agent
        agents = self.application.registry.find(kind="agent")
        return agents[0].id if agents else "app:assistant"

    def on_mount(self) -> None:
        self.title = f"wippy · {self.config.name}" if self.config.name else "wippy"
        # What exists now (the node, its registry, Textual) lives as long as the app: keep it out of the cyclic
        # garbage collector, whose full passes over it would otherwise stall a streaming answer for ~50 ms each.
        gc.freeze()
        self._listener = self.application.node.spawn(listen, self, self.application, name="wippy:tui")
        self._log_forwarder = LogForwarder(self, self.application.node.loop)
        logging.getLogger("wippy_agents").addHandler(self._log_forwarder)
        registry = self.application.registry
        for version in registry.history()[-RECENT_VERSIONS:]:
            self.log_activity(version_line(version.version, version.author, version.reason, version.task,
                                           version.entries))
        for file, problems in registry.problems.items():
            self.log_activity(refused_file(file, problems))
        self.show_pending()

    def on_unmount(self) -> None:
        gc.unfreeze()
        if self._log_forwarder is not None:
            logging.getLogger("wippy_agents").removeHandler(self._log_forwarder)
        if self._listener is not None:
            self.application.node.exit(None, self._listener, KILL)

    # -- what the node tells ----------------------------------------------------------------

    def on_node_event(self, event: NodeEvent) -> None:
        topic, payload = event.topic, event.payload
        if topic in AGENT_CHANGES:
            self._agents_touched = self._agents_touched or payload.kind == "agent"
        elif topic == "registry.commit":
            self.log_activity(registry_change(payload))
            if self._agents_touched:
                self._agents_touched = False
                self.agents_changed.publish(None)
        elif topic == "registry.error":
            self.log_activity(registry_change(payload))
            problem = payload.problems[0] if payload.problems else "refused"
            self.notify(str(problem), title=f"{payload.author.removeprefix('file:')} was refused",
                        severity="error", timeout=10)
        elif topic.startswith("approval."):
            approval: Approval = payload
            if approval.status == "pending":
                self.notify(f"{approval.agent}: {approval.summary} (f5 to review)", title="Approval needed",
                            severity="warning", timeout=15)
            self.approvals_changed.publish(approval)
            self.show_pending()

    def on_node_log(self, event: NodeLog) -> None:
        record = event.record
        error = record.levelno >= logging.ERROR
        message = record.getMessage()
        self.log_activity(Text(f"{record.levelname.lower()}: {message}", "red" if error else "yellow"))
        self.notify(message, title=record.name, severity="error" if error else "warning", timeout=10)

    def log_activity(self, line: Text) -> None:
        self.activity.append(line)
        self.activity_added.publish(line)

    def show_pending(self) -> None:
        count = len(self.application.approvals.pending())
        self.sub_title = f"{count} approval{'s' if count != 1 else ''} waiting (f5)" if count else ""

    # -- actions ----------------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def open_chat(self, agent: str, conversation: str | None) -> None:
        """Show `agent`'s conversation (None: a new one) on the chat screen."""
        await self.switch_mode("chat")
        await self.chat.open(agent, conversation)

    def use_model(self, model: str) -> None:
        """Point the current agent's entry at `model`: a registry change in the person's name, from the next turn."""
        registry = self.application.registry
        if self.chat.agent not in registry:
            self.notify(f"{self.chat.agent} is no longer in the registry", title="Model not changed", severity="error")
            return
        agent = registry.get(self.chat.agent)
        changed = Entry(agent.id, agent.kind, agent.meta, {**agent.data, "model": model})
        try:
            version = registry.apply([changed], author=person(), reason=f"model set to {model} in wippy chat")
        except RegistryError as error:
            self.notify(str(error), title="Model not changed", severity="error", timeout=10)
            return
        self.notify(f"{agent.id} uses {model} from its next turn (registry version {version})")

    def get_system_commands(self, screen: Screen[Any]) -> Any:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New conversation", "Start a new conversation with the current agent",
                            lambda: self.open_chat(self.chat.agent, None))
        for mode, what in (("activity", "Registry changes and tasks"), ("processes", "The supervision tree"),
                           ("approvals", "Changes waiting for your decision")):
            yield SystemCommand(mode.capitalize(), what, lambda mode=mode: self.switch_mode(mode))
        yield SystemCommand("Help", "Keys and what each screen shows", self.action_help)


async def run_chat(root: Path, agent: str | None = None) -> None:
    """Boot the app in `root`, run the TUI until the person quits, then shut the node down.

    Raises `StateFileBusy` when another node runs the app, `RegistryError` when its
    config is broken and `AgentError` for an unknown `agent`, before the UI starts.
    """
    async with WippyApplication(root, control=ControlServer(root)) as application:
        conversation = None
        if agent is not None:
            conversation = (await application.conversation(agent)).id  # checks the agent, naming close matches
        await WippyApp(application, agent, conversation).run_async()
