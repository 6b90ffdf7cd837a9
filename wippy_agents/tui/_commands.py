"""Command palette (ctrl+p) providers: switch agent, conversation and model (themes are Textual's own)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from .._display import short
from ._format import AgentCard

if TYPE_CHECKING:
    from ._app import WippyApp

Command = tuple[str, Callable[[], Any], str]
"""What the palette shows (and matches), what choosing it does, and a line of help."""


class ListProvider(Provider):
    """A provider whose commands are a list worked out (from the node) when the palette opens."""

    @property
    def wippy(self) -> WippyApp:
        return cast("WippyApp", self.app)

    async def commands(self) -> list[Command]:
        raise NotImplementedError

    async def discover(self) -> Hits:
        for name, callback, help in await self.commands():
            yield DiscoveryHit(name, callback, help=help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help in await self.commands():
            if (score := matcher.match(name)) > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help)


class AgentCommands(ListProvider):
    async def commands(self) -> list[Command]:
        return [(f"Chat with {card.title} ({card.id})", partial(self.wippy.open_chat, card.id, None),
                 card.description or "start a new conversation")
                for card in map(AgentCard.of, await self.wippy.link.entries("agent"))]


class ConversationCommands(ListProvider):
    async def commands(self) -> list[Command]:
        return [(f"Open conversation {row.id} with {row.agent}", partial(self.wippy.open_chat, row.agent, row.id),
                 f"started {row.started.astimezone():%Y-%m-%d %H:%M}")
                for row in await self.wippy.link.conversations()]


class ModelCommands(ListProvider):
    async def commands(self) -> list[Command]:
        agent = self.wippy.chat.agent
        return [(f"Use model {entry.id} for {agent}", partial(self.wippy.use_model, entry.id),
                 short(f"{entry.data.get('provider')} {entry.data.get('model')} · a registry change in your name", 80))
                for entry in await self.wippy.link.entries("model")]
