"""What the TUI reads from and asks of the node it shows, as the package's types, over the control ops.

The TUI never touches an app directly: hosting its own node (`Hosted`) or
attached to one that `wippy run` serves (`Attached`, one machine or a cluster's
driver), it sends the same requests and gets the same JSON back, so both show
exactly the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from functools import cache
from typing import Any, Literal, NamedTuple

from pydantic import TypeAdapter

from .._runtime.node import ProcessInfo
from ..agents import AgentEvent, TurnSteps
from ..control import Backend, ControlError
from ..policy import Approval, person
from ..registry import Entry
from ..state import Version

__all__ = ["ConversationRow", "NodeLink", "PastTurn"]

SIDEBAR_CONVERSATIONS = 200
"""The most conversations the sidebar (and a search in it) lists, latest activity first."""


class ConversationRow(NamedTuple):
    """A conversation in the sidebar and the palette."""

    id: str
    agent: str
    started: datetime
    last_active: datetime
    turns: int
    first: str  # its first message


class PastTurn(NamedTuple):
    """A turn of the conversation shown: `chat.events` rebuilds what it streamed."""

    task: str
    turn: int
    agent: str
    text: str
    status: str


@cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def parse(kind: Any, data: Any) -> Any:
    """Wire JSON back into `kind` (a model, dataclass or named tuple, or a list of them)."""
    return _adapter(kind).validate_python(data)


class NodeLink:
    """The node the TUI shows, reached through `backend` (a `Hosted` app or an `Attached` socket)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def request(self, op: str, **params: Any) -> Any:
        return await self.backend.request(op, **params)

    async def stream(self, op: str, **params: Any) -> AsyncIterator[Any]:
        """The events of a streaming op as they come; its failure raises at the end, and leaving early cancels it."""
        events: asyncio.Queue[Any] = asyncio.Queue()
        done = object()
        job = asyncio.create_task(self.backend.request(op, events.put_nowait, **params))
        job.add_done_callback(lambda _: events.put_nowait(done))
        try:
            while (event := await events.get()) is not done:
                yield event
            job.result()
        finally:
            if not job.done():
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job

    # -- the registry ------------------------------------------------------------------------------

    async def entries(self, kind: str) -> list[Entry]:
        return [Entry.from_json(entry) for entry in await self.request("registry.list", kind=kind)]

    async def entry(self, id: str) -> Entry | None:
        try:
            return Entry.from_json(await self.request("registry.show", id=id))
        except ControlError as error:
            if error.kind == "EntryNotFound":
                return None
            raise

    async def history(self, last: int) -> list[Version]:
        result: list[Version] = parse(list[Version], await self.request("registry.history", last=last))
        return result

    async def refused(self) -> dict[str, list[str]]:
        """The files the registry refused, with their problems (their last good entries stay in force)."""
        by_file: dict[str, list[str]] = (await self.request("registry.lint"))["by_file"]
        return by_file

    async def use_model(self, agent: Entry, model: str) -> int:
        """Point `agent` at `model`: a registry change in the person's name, from its next turn."""
        changed = Entry(agent.id, agent.kind, agent.meta, {**agent.data, "model": model})
        reply = await self.request("registry.apply", entries=[changed.to_json()], author=person(),
                                   reason=f"model set to {model} in wippy chat")
        version: int = reply["version"]
        return version

    # -- conversations -------------------------------------------------------------------------------

    async def conversations(self, agent: str | None = None, text: str | None = None) -> list[ConversationRow]:
        """Past conversations (of `agent`, holding every word of `text`), latest activity first."""
        result: list[ConversationRow] = parse(list[ConversationRow],
                                              await self.request("conversations.list", agent=agent, text=text,
                                                                 limit=SIDEBAR_CONVERSATIONS))
        return result

    async def turns(self, agent: str, conversation: str) -> list[PastTurn]:
        result: list[PastTurn] = parse(list[PastTurn], await self.request("chat.turns", agent=agent,
                                                                           conversation=conversation))
        return result

    async def events(self, task: str) -> list[AgentEvent]:
        result: list[AgentEvent] = parse(list[AgentEvent], await self.request("chat.events", task=task))
        return result

    async def steps(self, task: str) -> TurnSteps:
        """Turn `task`'s steps on its time line, from the journal (the waterfall)."""
        result: TurnSteps = parse(TurnSteps, await self.request("chat.steps", task=task))
        return result

    async def ask(self, agent: str, message: str, conversation: str | None) -> AsyncIterator[AgentEvent]:
        """One turn, streamed; the turn goes on if the TUI stops watching it (it shows another conversation)."""
        async for event in self.stream("ask", agent=agent, message=message, conversation=conversation,
                                       cancel_on_disconnect=False):
            yield parse(AgentEvent, event)

    # -- tasks, processes, approvals -----------------------------------------------------------------

    async def tasks(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = await self.request("tasks.list")
        return listed

    async def task(self, id: str) -> dict[str, Any]:
        shown: dict[str, Any] = await self.request("tasks.show", id=id)
        return shown

    async def cancel(self, id: str) -> dict[str, Any]:
        reply: dict[str, Any] = await self.request("tasks.cancel", id=id)
        return reply

    async def resume(self, id: str) -> dict[str, Any]:
        reply: dict[str, Any] = await self.request("tasks.resume", id=id, wait=False)
        return reply

    async def processes(self) -> list[ProcessInfo]:
        result: list[ProcessInfo] = parse(list[ProcessInfo], await self.request("processes"))
        return result

    async def approvals(self, status: str | None = None) -> list[Approval]:
        result: list[Approval] = parse(list[Approval], await self.request("approvals.list", status=status))
        return result

    async def decide(self, id: str, verdict: Literal["approve", "deny"], reason: str) -> Approval:
        decided: Approval = parse(Approval, await self.request(f"approvals.{verdict}", id=id, by=person(),
                                                               reason=reason))
        return decided

    # -- agents' memory -------------------------------------------------------------------------------

    async def memory_agents(self) -> dict[str, int]:
        """The agents that keep notes, with how many each."""
        counts: dict[str, int] = await self.request("memory.list")
        return counts

    async def memory(self, agent: str) -> list[dict[str, Any]]:
        """`agent`'s notes, oldest first."""
        notes: list[dict[str, Any]] = await self.request("memory.list", agent=agent)
        return notes

    async def memory_history(self, agent: str, note: int) -> list[dict[str, Any]]:
        """Every version of `agent`'s note `note`, oldest first."""
        versions: list[dict[str, Any]] = await self.request("memory.show", agent=agent, note=note)
        return versions

    def watch(self) -> AsyncIterator[dict[str, Any]]:
        """What happens on the node as it happens (see the `watch` op), until the TUI stops watching."""
        return self.stream("watch")
