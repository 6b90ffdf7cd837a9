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
from textual.widgets import Footer, Header, Input, Label, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker

from .._display import short
from ..agents import TurnFailed, TurnStarted
from ._chat import ChatInput, ChatView, TurnView
from ._format import AgentCard
from ._link import ConversationRow
from ._screens import WippyScreen
from ._waterfall import WaterfallScreen

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
        Binding("ctrl+f", "search", "Search", show=False),
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
    ChatScreen #search { display: none; }
    ChatScreen #search.-shown { display: block; }
    ChatScreen #title { padding: 0 1; background: $boost; width: 100%; text-style: bold; }
    ChatScreen #chat { height: 1fr; }
    """

    def __init__(self, agent: str, conversation: str | None = None) -> None:
        super().__init__()
        self.agent = agent
        self.conversation = conversation
        """The conversation shown; None for a new one, started when the first message is sent."""
        self.started = False
        """Whether the conversation shown has a turn (a new one starts with the first message)."""
        self.cards: dict[str, AgentCard] = {}
        """The agent entries in the sidebar, by id."""
        self.turn: Worker[None] | None = None
        self.turn_task: str | None = None
        """The durable task of the turn being watched, once it started."""
        self.agents_of: dict[str, str] = {}
        """The agent of each conversation listed (a search lists every agent's)."""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Label("Agents", classes="heading")
                yield OptionList(id="agents", compact=True)
                yield Label("Conversations", classes="heading")
                yield Input(placeholder="Search: words in their messages", id="search", compact=True)
                yield OptionList(id="conversations", compact=True)
            with Vertical(id="main"):
                yield Static(id="title")
                yield ChatView(id="chat")
                yield ChatInput(id="input")
        yield Footer()

    async def on_mount(self) -> None:
        self.wippy.agents_changed.subscribe(self, lambda _: self.show_agents())
        await self.show_agents()
        await self.show_conversation()
        self.query_one(ChatInput).focus()

    # -- the sidebar ---------------------------------------------------------------------------

    async def show_agents(self) -> None:
        """List the agent entries (again, after a registry change), keeping the current one highlighted."""
        agents = self.query_one("#agents", OptionList)
        self.cards = {card.id: card for card in map(AgentCard.of, await self.link.entries("agent"))}
        agents.set_options(with_dividers(Option(card.render(), id=card.id) for card in self.cards.values()))
        if self.agent in self.cards:
            agents.highlighted = agents.get_option_index(self.agent)
        self.show_title()

    async def show_conversations(self) -> None:
        """The current agent's past conversations, latest first, after a "new conversation" option; while a search
        is typed, every agent's conversations whose messages hold its words."""
        search = self.query_one("#search", Input)
        text = search.value.strip() if search.has_class("-shown") else ""
        rows = await self.link.conversations(None if text else self.agent, text or None)
        self.agents_of = {row.id: row.agent for row in rows}
        options = [Option(Text("+ new conversation", "bold"), id=NEW)]
        options += [Option(describe(row, self.agent), id=row.id) for row in rows]
        listing = self.query_one("#conversations", OptionList)
        listing.set_options(with_dividers(options))
        current = self.conversation
        shown = current is not None and any(option.id == current for option in options)
        listing.highlighted = listing.get_option_index(current) if current is not None and shown else 0

    def show_title(self) -> None:
        card = self.cards.get(self.agent)
        name = card.title if card is not None else f"{self.agent} (no longer in the registry)"
        which = f"conversation {self.conversation}" if self.started else "new conversation"
        self.query_one("#title", Static).update(Text(f"{name} · {which}"))
        self.query_one(ChatInput).placeholder = f"Message {card.title if card is not None else self.agent}"

    @on(OptionList.OptionSelected, "#agents")
    async def agent_picked(self, event: OptionList.OptionSelected) -> None:
        if event.option_id is not None:
            await self.open(event.option_id, None)

    @on(OptionList.OptionSelected, "#conversations")
    async def conversation_picked(self, event: OptionList.OptionSelected) -> None:
        if event.option_id == NEW or event.option_id is None:
            await self.open(self.agent, None)
        else:
            await self.open(self.agents_of.get(event.option_id, self.agent), event.option_id)

    def action_search(self) -> None:
        """Show the search box over the conversation list (and the sidebar, when narrow) and type into it."""
        if self.has_class("-narrow"):
            self.query_one("#sidebar").add_class("-toggled")
        search = self.query_one("#search", Input)
        search.add_class("-shown")
        search.focus()

    @on(Input.Changed, "#search")
    async def search_changed(self) -> None:
        await self.show_conversations()

    @on(Input.Submitted, "#search")
    async def search_submitted(self) -> None:
        """Enter: an empty search closes the box; else the list takes the keys, to pick a conversation."""
        search = self.query_one("#search", Input)
        if not search.value.strip():
            search.remove_class("-shown")
            await self.show_conversations()
            self.query_one(ChatInput).focus()
        else:
            self.query_one("#conversations", OptionList).focus()

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
        await self.show_agents()
        await self.show_conversation()
        self.query_one(ChatInput).focus()

    async def show_conversation(self) -> None:
        past = [] if self.conversation is None else await self.link.turns(self.agent, self.conversation)
        self.started = bool(past)
        hint = ("Type a message; enter sends, ctrl+j adds a line, f1 shows every key." if not past else
                f"{len(past)} earlier turn{'s' if len(past) != 1 else ''}; type to go on.")
        await self.query_one(ChatView).show(hint, past, self.link.events)
        self.query_one(ChatInput).remember(turn.text for turn in past)
        self.show_title()
        await self.show_conversations()

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
        failed = False
        try:
            async for event in self.link.ask(self.agent, text, self.conversation):
                if isinstance(event, TurnStarted):
                    self.turn_task = event.task
                    if self.conversation != event.conversation or not self.started:
                        self.conversation, self.started = event.conversation, True
                        self.show_title()
                elif isinstance(event, TurnFailed):
                    failed = True
                    self.notify(event.error, title=f"{self.agent}: the turn failed", severity="error", timeout=10)
                await view.handle(event)
        except asyncio.CancelledError:
            view.interrupted()
            raise
        except Exception as error:
            if not failed:  # a turn that failed was shown by its event; the request's error says it again
                await self.fail(view, error)
        finally:
            self.turn_task = None
            self.show_title()
            await self.show_conversations()

    async def fail(self, view: TurnView, error: Exception) -> None:
        failed = TurnFailed(error=str(error), kind=getattr(error, "kind", None) or type(error).__name__)
        self.notify(failed.error, title=f"{self.agent}: the turn failed", severity="error", timeout=10)
        await view.handle(failed)

    def action_waterfall(self) -> None:
        """The waterfall of the turn in focus, else of the newest turn (the palette's entry)."""
        self.query_one(ChatView).action_waterfall()

    @on(ChatView.WaterfallAsked)
    def show_waterfall(self, event: ChatView.WaterfallAsked) -> None:
        self.app.push_screen(WaterfallScreen(self.link, event.task))

    async def action_cancel_turn(self) -> None:
        """Stop watching the running turn and cancel its task (the step it is in stops too)."""
        if self.turn is None or not self.turn.is_running:
            return
        running = self.turn_task
        self.turn.cancel()
        if running is not None:
            await self.link.cancel(running)


def describe(row: ConversationRow, agent: str) -> Text:
    """A conversation's first message and turn count (and its agent, if not the one shown)."""
    count = f"{row.turns} turn{'s' if row.turns != 1 else ''}" + (f" · {row.agent}" if row.agent != agent else "")
    return Text.assemble(short(row.first, 60) if row.turns else "(empty)", "\n", (count, "dim"))


def with_dividers(options: Iterable[Option]) -> list[Option | None]:
    """Options separated by a line (None, to an OptionList): a multi-line option is then easy to tell apart."""
    spaced: list[Option | None] = []
    for option in options:
        spaced += [None, option] if spaced else [option]
    return spaced
