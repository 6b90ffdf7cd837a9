"""The chat screen: agents and conversations in a sidebar, the conversation, and the input.

A turn is consumed in a worker (`conv.stream(...)`); cancelling it stops the
consumer and cancels the turn's durable task, interrupting the step it is in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Label, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker

from .._display import short
from ..agents import AgentEvent, TurnArgs, TurnFailed, TurnStarted, turns
from ..durable import TaskInfo
from ..state import TERMINAL, ConversationInfo
from ._chat import ChatInput, ChatView, TurnView
from ._format import AgentCard
from ._screens import WippyScreen

NEW = "new"
"""The option id of "new conversation" in the conversation list."""
NARROW = 100
"""Below this many columns the sidebar is hidden until ctrl+s shows it (over the conversation)."""


class ChatScreen(WippyScreen):
    """Pick an agent or a past conversation on the left; talk on the right."""

    BINDINGS = [
        Binding("escape", "cancel_turn", "Cancel turn"),
        Binding("ctrl+n", "new_conversation", "New chat"),
        Binding("ctrl+s", "toggle_sidebar", "Sidebar"),
    ]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW, "-wide")]
    DEFAULT_CSS = """
    ChatScreen #sidebar { width: 30; border-right: vkey $foreground 20%; }
    ChatScreen.-narrow #sidebar { display: none; }
    ChatScreen.-narrow #sidebar.-toggled { display: block; width: 100%; }
    ChatScreen.-wide #sidebar.-toggled { display: none; }
    ChatScreen #sidebar .heading { text-style: bold; padding: 0 1; background: $boost; width: 100%; }
    ChatScreen #agents { height: 1fr; }
    ChatScreen #conversations { height: 1fr; }
    ChatScreen #title { padding: 0 1; background: $boost; width: 100%; text-style: bold; }
    ChatScreen #chat { height: 1fr; }
    """

    def __init__(self, agent: str, conversation: str | None = None) -> None:
        super().__init__()
        self.agent = agent
        self.conversation = conversation
        """The conversation shown; None for a new one, started when the first message is sent."""
        self.turn: Worker[None] | None = None
        self.turn_task: tuple[str, str, int] | None = None  # agent, conversation, turn number of the running turn

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Label("Agents", classes="heading")
                yield OptionList(id="agents", compact=True)
                yield Label("Conversations", classes="heading")
                yield OptionList(id="conversations", compact=True)
            with Vertical(id="main"):
                yield Static(id="title")
                yield ChatView(id="chat")
                yield ChatInput(id="input")
        yield Footer()

    async def on_mount(self) -> None:
        self.wippy.agents_changed.subscribe(self, lambda _: self.show_agents())
        self.show_agents()
        await self.show_conversation()
        self.query_one(ChatInput).focus()

    # -- the sidebar ---------------------------------------------------------------------------

    def show_agents(self) -> None:
        """List the agent entries (again, after a registry change), keeping the current one highlighted."""
        agents = self.query_one("#agents", OptionList)
        cards = [AgentCard.of(entry) for entry in self.application.registry.find(kind="agent")]
        agents.set_options(with_dividers(Option(card.render(), id=card.id) for card in cards))
        if any(card.id == self.agent for card in cards):
            agents.highlighted = agents.get_option_index(self.agent)
        self.show_title()

    def show_conversations(self) -> None:
        """The current agent's past conversations, newest first, after a "new conversation" option."""
        options = [Option(Text("+ new conversation", "bold"), id=NEW)]
        for info in self.application.agents.conversations():
            if info.agent == self.agent:
                options.append(Option(self.describe(info), id=info.id))
        listing = self.query_one("#conversations", OptionList)
        listing.set_options(with_dividers(options))
        current = self.conversation
        shown = current is not None and any(option.id == current for option in options)
        listing.highlighted = listing.get_option_index(current) if current is not None and shown else 0

    def describe(self, info: ConversationInfo) -> Text:
        past = turns(self.application.tasks, info.agent, info.id)
        count = f"{len(past)} turn{'s' if len(past) != 1 else ''}"
        return Text.assemble(short(TurnArgs(*past[0].args).text, 60) if past else "(empty)", "\n", (count, "dim"))

    def show_title(self) -> None:
        registry = self.application.registry
        name = AgentCard.of(registry.get(self.agent)).title if self.agent in registry else \
            f"{self.agent} (no longer in the registry)"
        started = self.conversation is not None and turns(self.application.tasks, self.agent, self.conversation)
        which = f"conversation {self.conversation}" if started else "new conversation"
        self.query_one("#title", Static).update(Text(f"{name} · {which}"))
        self.query_one(ChatInput).placeholder = f"Message {name}"

    @on(OptionList.OptionSelected, "#agents")
    async def agent_picked(self, event: OptionList.OptionSelected) -> None:
        if event.option_id is not None:
            await self.open(event.option_id, None)

    @on(OptionList.OptionSelected, "#conversations")
    async def conversation_picked(self, event: OptionList.OptionSelected) -> None:
        await self.open(self.agent, None if event.option_id == NEW else event.option_id)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Cancelling shows in the footer only while a turn runs."""
        if action == "cancel_turn":
            return self.turn is not None and self.turn.is_running
        return True

    def action_toggle_sidebar(self) -> None:
        self.query_one("#sidebar").toggle_class("-toggled")

    async def action_new_conversation(self) -> None:
        await self.open(self.agent, None)

    # -- the conversation --------------------------------------------------------------------------

    async def open(self, agent: str, conversation: str | None) -> None:
        """Show `agent`'s conversation `conversation` (None: a new one); a turn being watched is left to finish."""
        if self.turn is not None and self.turn.is_running:
            self.turn.cancel()
            self.notify("The running turn goes on in the background; its answer is kept in its conversation.")
        self.agent, self.conversation = agent, conversation
        if self.has_class("-narrow"):
            self.query_one("#sidebar").remove_class("-toggled")  # it covered the conversation
        self.show_agents()
        await self.show_conversation()
        self.query_one(ChatInput).focus()

    async def show_conversation(self) -> None:
        past = [] if self.conversation is None else turns(self.application.tasks, self.agent, self.conversation)
        hint = ("Type a message; enter sends, ctrl+j adds a line, f1 shows every key." if not past else
                f"{len(past)} earlier turn{'s' if len(past) != 1 else ''}; type to go on.")
        await self.query_one(ChatView).show(hint, past, self.events_of)
        self.query_one(ChatInput).remember(TurnArgs(*info.args).text for info in past)
        self.show_title()
        self.show_conversations()

    def events_of(self, info: TaskInfo) -> list[AgentEvent]:
        return self.application.agents.turn_events(info)

    @on(ChatInput.Submitted)
    def send(self, event: ChatInput.Submitted) -> None:
        if self.turn is not None and self.turn.is_running:
            self.notify("A turn is running: wait for it, or press esc to cancel it.", severity="warning")
            return
        self.turn = self.run_turn(event.text)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is self.turn:
            self.refresh_bindings()  # esc cancels only while the turn runs

    @work(group="turn", exit_on_error=False)
    async def run_turn(self, text: str) -> None:
        """Send `text` and show the turn as it streams; an error is shown, never raised out of the app."""
        view = await self.query_one(ChatView).add_turn(text, self.agent)
        try:
            conversation = await self.application.conversation(self.agent, id=self.conversation)
            if self.conversation != conversation.id:
                self.conversation = conversation.id
                self.show_title()
            async for event in conversation.stream(text):
                if isinstance(event, TurnStarted):
                    self.turn_task = (event.agent, event.conversation, event.turn)
                elif isinstance(event, TurnFailed):
                    self.notify(event.error, title=f"{self.agent}: the turn failed", severity="error", timeout=10)
                await view.handle(event)
        except asyncio.CancelledError:
            view.interrupted()
            raise
        except Exception as error:
            await self.fail(view, error)
        finally:
            self.turn_task = None
            self.show_title()
            self.show_conversations()

    async def fail(self, view: TurnView, error: Exception) -> None:
        failed = TurnFailed(error=str(error), kind=type(error).__name__)
        self.notify(failed.error, title=f"{self.agent}: the turn failed", severity="error", timeout=10)
        await view.handle(failed)

    async def action_cancel_turn(self) -> None:
        """Stop watching the running turn and cancel its task (the step it is in stops too)."""
        if self.turn is None or not self.turn.is_running:
            return
        running = self.turn_task
        self.turn.cancel()
        if running is None:
            return
        agent, conversation, number = running
        tasks = self.application.tasks
        for info in turns(tasks, agent, conversation):
            if TurnArgs(*info.args).turn == number and info.status not in TERMINAL:
                await tasks.cancel(info.id)


def with_dividers(options: Iterable[Option]) -> list[Option | None]:
    """Options separated by a line (None, to an OptionList): a multi-line option is then easy to tell apart."""
    spaced: list[Option | None] = []
    for option in options:
        spaced += [None, option] if spaced else [option]
    return spaced
