"""Keeping every request of a turn inside its model's window: the oldest turns folded into a summary, or dropped.

An agent's `history:` settings say how. Before each model step the request is
estimated (`llm.estimate_tokens`, corrected by the usage the provider reported
for the turn's previous call); when the history no longer fits its budget, the
oldest turns (never the `keep_recent_turns` latest) are folded by compaction
steps, `compact:N`, each journaled with its `Compaction`: a replayed or resumed
turn gets the same summary back and pays nothing again. Whole turns are folded,
so a tool call and its result always go together. Whether to compact rests on
estimates that can shift between runs (the prompt holds the time), so a replay
follows the journal (`TaskContext.replaying`) instead of deciding again.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from ..durable import StepError
from ..llm import (
    AssistantMessage,
    ChatMessage,
    ContextTooLongError,
    Model,
    Response,
    SystemMessage,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
    estimate_tokens,
)
from ..llm._context import estimate_text
from ..registry import HistorySettings
from ._history import Compaction, ConversationHistory

if TYPE_CHECKING:
    from ..durable import TaskContext

SUMMARY_PROMPT = (
    "You keep the memory of a long conversation between a user and an AI assistant that uses tools. You are given "
    "the summary so far (if any) and the next turns. Write the new summary: facts, decisions, names, numbers, "
    "open questions and what the user wants, so the assistant can go on without the turns themselves. Be concise; "
    "write only the summary."
)

SUMMARY_SHARE = 4
"""A summary may take at most 1/SUMMARY_SHARE of the history's budget."""

MAX_SUMMARY_TOKENS = 2_000

DEFAULT_OUTPUT_RESERVE = 4_096
GUARD = "compact"
"""A summary call's label in the spend limits' checks (`budget:compact<N>:<asked>` steps)."""
"""Tokens kept for the answer when neither the agent nor its model entry sets `max_tokens` (at most a quarter of
the window)."""


def output_reserve(window: int, *max_tokens: int | None) -> int:
    """Tokens of the window kept for the model's answer: the first `max_tokens` set, else the default."""
    return next((tokens for tokens in max_tokens if tokens is not None), min(DEFAULT_OUTPUT_RESERVE, window // 4))


def context_too_long(error: StepError) -> bool:
    """Whether a model step failed because the request did not fit (also when replayed: then only the text says)."""
    return isinstance(error.__cause__, ContextTooLongError) or error.error.startswith(ContextTooLongError.__name__)


class Compactor:
    """A turn's view of its conversation's history, compacted (durably) whenever a request would not fit."""

    def __init__(self, ctx: TaskContext, settings: HistorySettings, history: ConversationHistory, *, window: int,
                 reserve: int, summarizer: Model, summarizer_window: int,
                 guard: Callable[[str, int, int], Awaitable[None]] | None = None) -> None:
        self.ctx = ctx
        self.guard = guard
        """Asked before each summary call (a label, its most tokens in and out): the turn's spend limits."""
        self.settings = settings
        self.history = history
        self.window = window
        self.reserve = reserve
        self.summarizer = summarizer
        self.summarizer_window = summarizer_window
        self.compaction: Compaction | None = None
        """The turn's latest compaction (its result keeps it: the next turns' history starts from it)."""
        self.compactions: list[tuple[str, Compaction]] = []
        """The turn's compaction steps, by step name, in order."""
        self.scale = 1.0  # reported tokens / estimated, from the turn's last call: the estimate corrected
        self.used = 0
        """Tokens of the window the turn's last call took (its request and answer): reported, else estimated."""
        self._count = 0

    def request(self, head: list[ChatMessage], new: list[ChatMessage]) -> list[ChatMessage]:
        """The messages a model step sends: the system prompt, the history, the turn so far."""
        return head + self.history.messages() + new

    def estimate(self, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition] = ()) -> int:
        return round(estimate_tokens(messages, tools) * self.scale)

    def observe(self, messages: list[ChatMessage], tools: list[ToolDefinition], response: Response) -> None:
        """A call answered: count what it took of the window, and correct the estimate by the provider's count."""
        reported = response.usage.input_tokens
        if reported <= 0:
            self.used = self.estimate([*messages, response.message()], tools)
            return
        self.used = reported + response.usage.output_tokens
        if self.settings.strategy != "off":
            self.scale = max(1.0, reported / max(1, estimate_tokens(messages, tools)))

    def summaries(self, since: int) -> list[tuple[str, Response]]:
        """The summarizing calls of the compaction steps after the first `since`, by step (what they used, cost)."""
        return [(step, compaction.response) for step, compaction in self.compactions[since:]
                if compaction.response is not None]

    async def fitted(self, head: list[ChatMessage], new: list[ChatMessage],
                     tools: list[ToolDefinition]) -> list[ChatMessage]:
        """The request of the next model step, compacted first if it would not fit."""
        await self.fit(head, new, tools)
        return self.request(head, new)

    async def fit(self, head: list[ChatMessage], new: list[ChatMessage], tools: list[ToolDefinition]) -> None:
        """Before a model step: compact until the request fits (a replay takes the journal's compactions instead)."""
        await self._replayed()
        if self.ctx.replaying() is not None or self.settings.strategy == "off":  # the step was recorded: it fit
            return
        budget = self._budget(head, new, tools)
        while self.estimate(self.history.messages()) > budget and self._foldable():
            await self._fold(budget // 2)  # down to half: the next compaction is many turns away

    async def recover(self, head: list[ChatMessage], new: list[ChatMessage], tools: list[ToolDefinition]) -> bool:
        """After the provider said the request was too long: compact once, as far as it goes; False if it cannot."""
        if await self._replayed():
            return True
        if self.settings.strategy == "off" or not self._foldable():
            return False
        await self._fold(0)
        return True

    def _budget(self, head: list[ChatMessage], new: list[ChatMessage], tools: list[ToolDefinition]) -> int:
        room = self.window - self.reserve - self.estimate(head + new, tools)
        return min(room, self.settings.max_tokens) if self.settings.max_tokens is not None else room

    def _foldable(self) -> int:
        return max(0, len(self.history.turns) - self.settings.keep_recent_turns)

    async def _replayed(self) -> bool:
        """Replay the compactions the journal holds at this point of the turn; whether there were any."""
        replayed = False
        while (name := self.ctx.replaying()) is not None and name.startswith(("compact:", f"budget:{GUARD}")):
            if name.startswith("budget:"):  # a spend limit's approval asked before a summary call: asked again
                await self._guarded()
                continue
            await self._step([])  # recorded: its function is not called
            replayed = True
        return replayed

    async def _guarded(self) -> None:
        """Before a summary call: the spend limits, for the most it can send and receive (the same on replay)."""
        if self.guard is not None and self.settings.strategy == "summary":
            await self.guard(f"{GUARD}{self._count + 1}", self._transcript_room() + estimate_text(SUMMARY_PROMPT)
                             + self._summary_limit(), self._summary_limit())

    async def _fold(self, target: int) -> None:
        """Fold the fewest oldest turns that bring the history to `target` estimated tokens (all it may, for 0)."""
        foldable = self.history.turns[: self._foldable()]
        kept = self.history.turns[len(foldable):]
        sizes = [self.estimate(messages) for _, messages in foldable]
        left = sum(sizes) + self.estimate([message for _, messages in kept for message in messages])
        left += self._summary_limit() if self.settings.strategy == "summary" else 0
        count = 1  # at least one turn, even when the estimate says none is needed: each call makes progress
        left -= sizes[0]
        while count < len(foldable) and left > target:
            left -= sizes[count]
            count += 1
        pending = list(foldable[:count])
        while pending:
            chunk = self._chunk(pending)
            await self._guarded()
            await self._step(chunk)
            pending = pending[len(chunk):]

    def _chunk(self, turns: list[tuple[int, tuple[ChatMessage, ...]]]) -> list[tuple[int, tuple[ChatMessage, ...]]]:
        """The oldest of `turns` whose transcript fits one summarizing call (at least one turn)."""
        if self.settings.strategy == "truncate":
            return turns
        room = self._transcript_room()
        chunk: list[tuple[int, tuple[ChatMessage, ...]]] = []
        used = 0
        for turn in turns:
            size = estimate_text(transcript([turn], room))
            if chunk and used + size > room:
                break
            chunk.append(turn)
            used += size
        return chunk

    def _transcript_room(self) -> int:
        summary_limit = self._summary_limit()
        prompt = estimate_text(SUMMARY_PROMPT) + summary_limit  # the summary so far is at most that long too
        return max(256, self.summarizer_window - prompt - summary_limit - 64)

    def _summary_limit(self) -> int:
        return max(64, min(MAX_SUMMARY_TOKENS, (self.window - self.reserve) // SUMMARY_SHARE))

    async def _step(self, turns: list[tuple[int, tuple[ChatMessage, ...]]]) -> None:
        """One compaction step: fold `turns` (the oldest) into the summary, or drop them; on replay, as recorded."""
        self._count += 1

        async def compact() -> Compaction:
            through = turns[-1][0]
            before = self.estimate(self.history.messages())
            summary, response = None, None
            if self.settings.strategy == "summary":
                response = await self.summarizer.complete(
                    [SystemMessage(content=SUMMARY_PROMPT),
                     UserMessage(content=transcript(turns, self._transcript_room(), self.history.summary))],
                    max_tokens=self._summary_limit())
                limit = self._summary_limit() * 3  # characters: a summarizer that ignores max_tokens is cut short
                summary = response.text.strip()[:limit] or "(nothing to keep)"
            rest = tuple(turn for turn in self.history.turns if turn[0] > through)
            after = self.estimate(ConversationHistory(summary, through, rest).messages())
            return Compaction(strategy="truncate" if response is None else "summary", summary=summary,
                              through=through, turns=len(turns), tokens_before=before, tokens_after=after,
                              response=response)

        name = f"compact:{self._count}"
        compaction: Compaction = await self.ctx.step(name, compact)
        self.history = self.history.folded(compaction)
        self.compaction = compaction
        self.compactions.append((name, compaction))


def transcript(turns: Sequence[tuple[int, tuple[ChatMessage, ...]]], room: int, summary: str | None = None) -> str:
    """Turns as text for the summarizer: each call beside its result; a message too long for `room` is clipped."""
    limit = max(200, room * 3 // 2)  # characters of one message (room is in tokens, ~3 bytes each)
    lines = [f"Summary so far:\n{summary}\n"] if summary else []
    for number, messages in turns:
        lines.append(f"Turn {number}:")
        for message in messages:
            if isinstance(message, AssistantMessage):
                if message.content:
                    lines.append(f"assistant: {_clip(message.content, limit)}")
                lines += [f"assistant called {call.name}({_clip(json.dumps(call.arguments), limit)})"
                          for call in message.tool_calls]
            elif isinstance(message, ToolResultMessage):
                lines.append(f"{message.name} returned{' an error' if message.is_error else ''}: "
                             f"{_clip(message.content, limit)}")
            else:
                lines.append(f"{message.role}: {_clip(message.content, limit)}")
    return "\n".join(lines)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit // 2]} […] {text[-limit // 2:]}"
