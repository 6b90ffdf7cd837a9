"""The app's state behind interfaces: durable tasks, registry versions, approvals, audit, conversations, tokens,
agents' memory, model calls.

```python
from wippy_agents.state import open_state

with open_state(Path(".wippy/state.duckdb")) as state:     # None: in memory
    state.versions.history()                              # a `VersionStore`
    await state.journal.append([TaskEvent(...)])          # a `JournalStore`: durable once it returns
```

Everything above this package reaches the state through the protocols here
(`JournalStore`, `VersionStore`, `ApprovalStore`, `AuditStore`, `ConversationStore`,
`TokenStore`, `MemoryStore`, `UsageStore`)
and the records they exchange; `open_state` gives the first implementation, one
DuckDB file with a journal log beside it (its durability contract is in `_journal`).
"""

from ._duckdb import check_journal
from ._journal import Damage, JournalDamaged, JournalReport, LeaseLost, StaleVersion, StateUnavailable
from ._location import is_database_url, open_state, shown_url
from ._lock import StateFileBusy, StateLock, private_folder
from ._records import (
    FINISHED,
    TERMINAL,
    Approval,
    AuditRecord,
    ChangeRecord,
    ConversationInfo,
    ConversationMessage,
    ConversationRow,
    ConversationStart,
    DailyUsage,
    JournalRow,
    Lease,
    McpToken,
    MemoryVersion,
    ModelCall,
    Note,
    Recovery,
    SignalRecord,
    StartedStep,
    StepRecord,
    TaskEvent,
    TaskRow,
    TaskStatus,
    TaskSummary,
    Version,
)
from ._stores import (
    ApprovalStore,
    AuditStore,
    ConversationStore,
    JournalStore,
    MemoryStore,
    State,
    TokenStore,
    UsageStore,
    VersionStore,
)

__all__ = [
    "FINISHED",
    "TERMINAL",
    "Approval",
    "ApprovalStore",
    "AuditRecord",
    "AuditStore",
    "ChangeRecord",
    "ConversationInfo",
    "ConversationMessage",
    "ConversationRow",
    "ConversationStart",
    "ConversationStore",
    "DailyUsage",
    "Damage",
    "JournalDamaged",
    "JournalReport",
    "JournalRow",
    "JournalStore",
    "Lease",
    "LeaseLost",
    "McpToken",
    "MemoryStore",
    "MemoryVersion",
    "ModelCall",
    "Note",
    "Recovery",
    "SignalRecord",
    "StartedStep",
    "State",
    "StateFileBusy",
    "StateLock",
    "StaleVersion",
    "StateUnavailable",
    "StepRecord",
    "TaskEvent",
    "TaskRow",
    "TaskStatus",
    "TaskSummary",
    "TokenStore",
    "UsageStore",
    "Version",
    "VersionStore",
    "check_journal",
    "is_database_url",
    "open_state",
    "private_folder",
    "shown_url",
]
