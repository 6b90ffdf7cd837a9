"""Agents' memory: notes an agent keeps across its conversations (`wippy:remember`, `wippy:recall`).

A note is text plus tags, kept in the state's `MemoryStore`: every write is a new
version of the agent's memory, attributed to the agent (or person) and the turn that
made it, and forgetting is a version too, so the history shows what was known when.
Writing is the action `memory.write` under policy (resource: the agent whose memory
it is; by default an agent writes its own memory and no other's), and every decision
is audited. Recall keeps only the notes that carry every tag asked for, then ranks
them by keywords with BM25 over their text and tags; with an embedding model
(`Embeddings`, when the app sets `memory.embedding_model`) it mixes in how close in
meaning each note is to the query, so a note that shares no word with it can be found.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._runtime.text import clean_text
from ..policy._rules import MEMORY_WRITE
from ..state import MemoryStore, MemoryVersion
from ..tools import ToolContext
from ._embeddings import Embeddings

if TYPE_CHECKING:
    from ._service import AgentService

MAX_TEXT = 4000
"""The longest note, in characters: a note is a fact to recall, not a document."""
MAX_TAGS = 16
MAX_TAG = 64
MAX_RECALL = 50
_WORD = re.compile(r"\w+")
_K1, _B = 1.2, 0.75  # BM25's usual term-saturation and length-normalisation constants
KEYWORD_SHARE = 0.5
"""With an embedding model, a note's score is this share of its BM25 score (over the best one's) plus the rest of
its cosine similarity to the query."""
MIN_SIMILARITY = 0.5
"""A note that shares no keyword with the query is recalled when it is at least this similar in meaning."""


@dataclass(frozen=True)
class Recalled:
    """A note found by `Memory.recall`, with its score (0 when no keywords were given; 0 to 1 when meaning counts)."""

    note: MemoryVersion
    score: float


class Memory:
    """The app's agents' notes: written as versions of each agent's memory, recalled ranked (also by meaning once
    `embeddings`, if any, are loaded: `load_embeddings`)."""

    def __init__(self, store: MemoryStore, embeddings: Embeddings | None = None) -> None:
        self.store = store
        self.embeddings = embeddings

    async def load_embeddings(self) -> None:
        """Load the embedding model, if the app has one, so recall ranks by meaning too (once; a failure is logged)."""
        if self.embeddings is not None:
            await self.embeddings.load()

    def remember(self, agent: str, text: str, tags: Sequence[str] = (), *, author: str, task: str | None,
                 note: int | None = None) -> tuple[MemoryVersion, bool]:
        """Keep `text` as a new note of `agent` (or as note `note`, rewritten); the version, and whether it is new.

        A note the agent already has with the same text and tags is not written again
        (a turn re-run after a crash remembers once).
        """
        text, tags = _checked_text(text), _checked_tags(tags)
        notes = self.store.notes(agent)
        if note is not None and note not in {n.note for n in notes}:
            raise LookupError(_no_note(agent, note, notes))
        for known in notes:
            if known.text == text and set(known.tags) == set(tags) and note in (None, known.note):
                return known, False
        return self.store.write(agent, note, text, tags, author=author, task=task), True

    def forget(self, agent: str, note: int, *, author: str, task: str | None = None) -> MemoryVersion:
        """Forget note `note` of `agent`: a new version that leaves it out of the notes (its history stays)."""
        notes = self.store.notes(agent)
        if note not in {n.note for n in notes}:
            raise LookupError(_no_note(agent, note, notes))
        return self.store.write(agent, note, None, (), author=author, task=task)

    def notes(self, agent: str) -> list[MemoryVersion]:
        return self.store.notes(agent)

    def agents(self) -> dict[str, int]:
        """The agents that have notes, with how many each."""
        return self.store.agents()

    def history(self, agent: str, note: int | None = None) -> list[MemoryVersion]:
        return self.store.history(agent, note)

    def recall(self, agent: str, query: str = "", tags: Sequence[str] = (), limit: int = 5) -> list[Recalled]:
        """`agent`'s notes carrying every tag in `tags`, best match for `query`'s keywords first (no keywords:
        newest first); a note that shares no keyword with the query is left out unless it is close in meaning."""
        wanted = {tag.casefold() for tag in _checked_tags(tags)}
        current = self.store.notes(agent)
        notes = [n for n in current if wanted <= {tag.casefold() for tag in n.tags}]
        scored = rank(notes, query)
        if _words(query):
            if self.embeddings is not None and self.embeddings.ready:
                meaning = self.embeddings.similarities(agent, query, {n.version: _document(n) for n in current})
                scored = _blend(scored, meaning)
            scored = [found for found in scored if found.score > 0]
        return scored[:max(1, min(limit, MAX_RECALL))]


def rank(notes: Sequence[MemoryVersion], query: str) -> list[Recalled]:
    """`notes` by their BM25 score for `query`'s words over each note's text and tags, ties newest first."""
    documents = [Counter(_words(_document(n))) for n in notes]
    terms = set(_words(query))
    average = sum(sum(d.values()) for d in documents) / len(documents) if documents else 0.0
    frequency = {term: sum(1 for d in documents if term in d) for term in terms}
    scored = []
    for note, document in zip(notes, documents, strict=True):
        length = sum(document.values())
        score = 0.0
        for term in terms:
            count = document[term]
            if count:
                idf = math.log(1 + (len(documents) - frequency[term] + 0.5) / (frequency[term] + 0.5))
                score += idf * count * (_K1 + 1) / (count + _K1 * (1 - _B + _B * length / (average or 1)))
        scored.append(Recalled(note, score))
    return _best_first(scored)


def _blend(scored: Sequence[Recalled], meaning: dict[int, float]) -> list[Recalled]:
    """`scored` (BM25) mixed with each note's similarity in `meaning` (by version), both on 0 to 1; a note that
    matches no keyword and is not similar enough scores 0."""
    best = max((found.score for found in scored), default=0.0)
    blended = []
    for found in scored:
        keywords = found.score / best if best else 0.0
        similarity = max(meaning[found.note.version], 0.0)
        found_at_all = keywords > 0 or similarity >= MIN_SIMILARITY
        score = KEYWORD_SHARE * keywords + (1 - KEYWORD_SHARE) * similarity if found_at_all else 0.0
        blended.append(Recalled(found.note, score))
    return _best_first(blended)


def _best_first(scored: list[Recalled]) -> list[Recalled]:
    return sorted(scored, key=lambda found: (-found.score, -found.note.version))


def _document(note: MemoryVersion) -> str:
    """What a note is recalled by: its text and tags."""
    return " ".join((note.text or "", *note.tags))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _checked_text(text: str) -> str:
    text = clean_text(text).strip()
    if not text:
        raise ValueError("a note needs some text")
    if len(text) > MAX_TEXT:
        raise ValueError(f"a note holds at most {MAX_TEXT} characters and this one has {len(text)}; keep the fact "
                         "itself, or split it into notes")
    return text


def _checked_tags(tags: Sequence[str]) -> tuple[str, ...]:
    if len(tags) > MAX_TAGS:
        raise ValueError(f"a note takes at most {MAX_TAGS} tags, not {len(tags)}")
    cleaned = tuple(dict.fromkeys(clean_text(tag).strip() for tag in tags))
    for tag in cleaned:
        if not tag or len(tag) > MAX_TAG:
            raise ValueError(f"a tag is 1 to {MAX_TAG} characters, not {tag[:MAX_TAG]!r}"
                             f"{'...' if len(tag) > MAX_TAG else ''}")
    return cleaned


def _no_note(agent: str, note: int, notes: Sequence[MemoryVersion]) -> str:
    known = ", ".join(str(n.note) for n in notes) or "none"
    return f"{agent} has no note {note} (its notes: {known})"


def note_json(version: MemoryVersion) -> dict[str, Any]:
    """A version as the tools, the control ops and the CLI's --json show it."""
    return {"agent": version.agent, "version": version.version, "note": version.note, "text": version.text,
            "tags": list(version.tags), "author": version.author, "task": version.task, "time": version.time}


# -- the built-in tools --------------------------------------------------------------------------


def _memory(service: AgentService) -> Memory:
    if service.memory is None:
        raise RuntimeError("this app keeps no memory for its agents")
    return service.memory


async def remember(service: AgentService, text: str, ctx: ToolContext, tags: list[str] | None = None,
                   replaces: int | None = None, agent: str | None = None) -> str:
    """Keep a note in your memory, for this conversation and your later ones.

    Args:
        text: The fact to remember, in a sentence or a few.
        tags: Words to find it by later, such as `preferences` or `project-x`.
        replaces: The number of one of your notes that this one rewrites (its older text stays in the history).
        agent: Whose memory to write: your own unless a policy lets you write another agent's.
    """
    writer = ctx.agent_id
    if writer is None:
        raise RuntimeError("wippy:remember acts for an agent; this call names none")
    owner = agent or writer
    governance = service.governance
    if owner != writer and not governance.policies.is_agent(owner):
        raise ValueError(f"{owner} is not an agent of this app, so it has no memory to write")
    decision = governance.policies.decide(writer, MEMORY_WRITE, owner)
    by = decision.policy or "default"
    if decision.effect != "allow":
        reason = decision.reason if decision.effect == "deny" else (
            f"{decision.reason}, but memory writes cannot wait for a person: a policy may allow or deny them")
        governance.audit.record(writer, ctx.task_id, MEMORY_WRITE, owner, None, "denied", by, reason)
        raise PermissionError(f"refused: {reason}. Nothing was remembered.")
    version, new = _memory(service).remember(owner, service.redactor.redact(text), tags or (), author=writer,
                                             task=ctx.task_id, note=replaces)
    governance.audit.record(writer, ctx.task_id, MEMORY_WRITE, owner, None, "allowed", by, decision.reason)
    if not new:
        return f"already remembered as note {version.note}"
    return f"remembered as note {version.note} (memory version {version.version})"


async def recall(service: AgentService, ctx: ToolContext, query: str = "", tags: list[str] | None = None,
                 limit: int = 5) -> list[dict[str, Any]]:
    """Find notes in your memory: the best matches for some keywords, and only those with every tag given.

    Args:
        query: Keywords to look for in the notes' text and tags; empty: your newest notes.
        tags: Only notes carrying all of these tags.
        limit: How many notes at most (1 to 50).
    """
    if ctx.agent_id is None:
        raise RuntimeError("wippy:recall acts for an agent; this call names none")
    memory = _memory(service)
    await memory.load_embeddings()
    return [{"note": found.note.note, "text": found.note.text, "tags": list(found.note.tags),
             "written": found.note.time.isoformat(timespec="seconds")}
            for found in memory.recall(ctx.agent_id, query, tags or (), limit)]


MEMORY_TOOLS = (remember, recall)
