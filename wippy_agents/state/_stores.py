"""The interfaces of the app's state, one per kind of record, and `State`, the bundle an app opens.

Code above this package reaches its records only through these protocols; the
DuckDB file (`open_state`) is the first implementation, a shared database for a
cluster of nodes the next. Reads are synchronous: they return what was written
before them, including rows still on their way through the journal's writer.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol

from ._records import (
    Approval,
    AuditRecord,
    ChangeRecord,
    ConversationInfo,
    ConversationRow,
    DailyUsage,
    JournalRow,
    Lease,
    McpToken,
    MemoryVersion,
    ModelCall,
    Recovery,
    StepRecord,
    TaskSummary,
    Version,
)

if TYPE_CHECKING:
    from ._journal import JournalReport


class JournalStore(Protocol):
    """Durable tasks: their rows (tasks, events, steps, signals) and what a node needs to run and resume them."""

    @property
    def problem(self) -> str | None:
        """Why the journal cannot be written right now (None while it can): new durable work is refused meanwhile."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other nodes write to it too (a database a cluster shares), so what a node read may be stale."""
        ...

    @property
    def lease_age(self) -> float | None:
        """Seconds since this node last renewed its leases on its tasks (None: a store without leases)."""
        ...

    @property
    def commits(self) -> int:
        """How many groups of rows have been made durable so far (for tests and benchmarks)."""
        ...

    def on_writable(self, callback: Callable[[], None]) -> None:
        """Have `callback()` run on the event loop whenever the journal can be written again after a problem."""
        ...

    def append(self, rows: Sequence[JournalRow]) -> asyncio.Future[None]:
        """Make `rows` durable together; the future resolves once they are (or fails with `StateUnavailable`).

        The group commit: one writer takes the rows of every caller waiting at that
        moment, many tasks' at once, and makes them durable in one write; each call's
        rows land in the same group, all or none. Call it on the event loop.
        """
        ...

    def tasks(self, *, unfinished: bool = False) -> list[TaskSummary]:
        """Every task, oldest first; `unfinished`: only those a node should resume (not in `TERMINAL`)."""
        ...

    def steps(self, task: str) -> list[StepRecord]:
        """The task's finished steps, by number."""
        ...

    def recovery(self, tasks: Sequence[str]) -> dict[str, Recovery]:
        """What resuming each of `tasks` needs (steps, signals, stall and crash counts), read together."""
        ...

    def claim(self, tasks: Sequence[str], node: str) -> list[Lease]:
        """Claim `tasks` for `node` before resuming them; the leases granted (a task held elsewhere gets none).

        The single-node store grants every claim: the state file's lock already keeps
        every other node out. A store shared by a cluster guarantees that a task has at
        most one holder at a time, that each claim of a task gets a greater epoch than
        the one before, that a lease lapses unless its holder renews it, and that rows
        appended under a lapsed lease are refused (the holder is fenced off). A task's
        first lease is its creator's: the node that appends its `TaskRow`.
        """
        ...

    def prune(self, finished_before: datetime, *, keep_workflows: Collection[str] = (),
              keep_tasks: Collection[str] = ()) -> list[str]:
        """Delete every finished task whose last event is older than `finished_before`; their ids.

        Tasks of `keep_workflows` and those in `keep_tasks` stay.
        """
        ...

    def delete(self, tasks: Sequence[str]) -> None:
        """Delete `tasks` (finished ones: the caller has checked) with every row they have."""
        ...

    def check(self) -> JournalReport:
        """What the journal holds and whether any of it is damaged (it looks, it changes nothing)."""
        ...

    def close(self) -> None:
        """Make durable what is queued, then stop writing."""
        ...


class VersionStore(Protocol):
    """Registry versions: each committed change of an entry, with its version's author, reason and time."""

    def last_version(self) -> int:
        """The newest version (0 before the first)."""
        ...

    def live(self) -> dict[str, tuple[dict[str, Any], str | None]]:
        """Each entry as of the newest version (deleted ones left out), with the file it lives in."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other nodes commit versions here too (a cluster's database)."""
        ...

    def record(self, version: int, changes: Sequence[ChangeRecord], *, author: str, task: str | None,
               reason: str) -> Version:
        """Commit `version` durably, all of `changes` or none of them; `StaleVersion` if it is not the next one."""
        ...

    def on_version(self, callback: Callable[[], None]) -> None:
        """Have `callback()` run, on a thread of its own, whenever another node may have committed a version."""
        ...

    def history(self, entry_id: str | None = None) -> list[Version]:
        """Committed versions, oldest first; only those that changed `entry_id` when given."""
        ...

    def undo_after(self, version: int) -> dict[str, dict[str, Any] | None]:
        """Each entry changed after `version`, as it was before the first of those changes (None: absent)."""
        ...


class ApprovalStore(Protocol):
    """Approvals: changes agents asked for, pending until a person decides."""

    def add(self, approval: Approval, changes: list[dict[str, Any]]) -> None:
        """Keep a new approval with the changes it would apply (JSON data)."""
        ...

    def get(self, approval_id: str) -> Approval | None: ...

    def list(self, status: str | None = None) -> list[Approval]:
        """Approvals, oldest first; only those with `status` when given."""
        ...

    def changes(self, approval_id: str) -> builtins.list[dict[str, Any]]:
        """The changes the approval would apply, as given to `add`."""
        ...

    def decide(self, approval_id: str, *, status: str, by: str, at: datetime, reason: str,
               version: int | None) -> bool:
        """Record the decision on a pending approval; False if it was not pending (someone decided first)."""
        ...


class AuditStore(Protocol):
    """The audit trail of policy decisions."""

    def add(self, record: AuditRecord) -> None: ...

    def list(self, *, subject: str | None = None, resource: str | None = None,
             limit: int = 100) -> list[AuditRecord]:
        """The latest `limit` records (of `subject`, on `resource`, when given), oldest first."""
        ...

    def prune(self, before: datetime, *, keep_actions: Collection[str] = ()) -> int:
        """Delete the records older than `before`, except those of `keep_actions`; how many."""
        ...


class ConversationStore(Protocol):
    """The index of conversations that lists and searches them (their turns are tasks in the journal).

    Its rows go through the journal's group commit, so starting a conversation costs no
    write of its own; reading it is one indexed query, however many conversations there are.
    """

    def note(self, rows: Sequence[ConversationRow]) -> asyncio.Future[None]:
        """Journal `rows` in one group (a start, or a turn's `ConversationInfo` and messages: see it for how a row
        moves an indexed conversation on); the future resolves once they are durable. Call it on the event loop."""
        ...

    def list(self, *, agent: str | None = None, since: datetime | None = None, until: datetime | None = None,
             text: str | None = None, limit: int = 50) -> list[ConversationInfo]:
        """Conversations with a person's turn, latest activity first, at most `limit`: of `agent`, active at or after
        `since` and before `until`, whose messages hold every word of `text` (in any case), when given."""
        ...

    def forget(self, conversations: Sequence[str]) -> None:
        """Take `conversations` out of the index, with their messages (their turns are the journal's to delete)."""
        ...


class TokenStore(Protocol):
    """The bearer tokens of the app's MCP server, kept as digests."""

    def add(self, token: McpToken) -> bool:
        """Keep a new token; False if one of that name exists (it is left as it is)."""
        ...

    def list(self) -> list[McpToken]:
        """Every token, by name."""
        ...

    def revoke(self, name: str) -> bool:
        """Forget the token named `name`; False if there was none."""
        ...


class MemoryStore(Protocol):
    """Agents' memory: every version of every note, each attributed to its author and task."""

    def write(self, agent: str, note: int | None, text: str | None, tags: Sequence[str], *, author: str,
              task: str | None) -> MemoryVersion:
        """Record the next version of `agent`'s memory: a new note (`note` None), or note `note` rewritten
        (`text` None: forgotten); its number is the agent's last version plus one."""
        ...

    def notes(self, agent: str) -> list[MemoryVersion]:
        """Each of `agent`'s notes that is not forgotten, as its latest version, oldest note first."""
        ...

    def history(self, agent: str, note: int | None = None) -> list[MemoryVersion]:
        """Every version of `agent`'s memory (of note `note` when given), oldest first."""
        ...

    def agents(self) -> dict[str, int]:
        """The agents that have notes, with how many each (forgotten ones left out)."""
        ...


class UsageStore(Protocol):
    """What agents' model calls used and cost, by agent, model and UTC day (spend limits and `wippy usage`)."""

    def record(self, call: ModelCall) -> asyncio.Future[None]:
        """Journal one model call in the writer's next group (no write of its own); a call already kept (the same
        task and step, as on a replay) is left as it was. The future resolves once it is durable."""
        ...

    def spent(self, agent: str, day: date) -> tuple[int, float]:
        """`agent`'s tokens and US dollars on `day` (UTC): a sum over that day's calls, not a read of the tasks."""
        ...

    def daily(self, *, agent: str | None = None, since: date | None = None) -> list[DailyUsage]:
        """Calls added up per day, agent and model (of `agent`, from `since` on, when given), oldest day first."""
        ...

    def prune(self, before: datetime) -> int:
        """Delete the calls made before `before`; how many."""
        ...


@dataclass(eq=False)
class State:
    """The app's state: one store per kind of record, over one file (or database), closed together."""

    journal: JournalStore
    versions: VersionStore
    approvals: ApprovalStore
    audit: AuditStore
    conversations: ConversationStore
    tokens: TokenStore
    usage: UsageStore
    memory: MemoryStore
    closer: Callable[[], None] = field(repr=False)
    """Closes what the stores share (the journal first, so it writes what it holds); run once."""

    def close(self) -> None:
        closer, self.closer = self.closer, _closed
        closer()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _closed() -> None:
    pass
