"""Durable tasks: long work that survives crashes, `kill -9` and restarts, step by step.

```python
from wippy_agents import durable

@durable.workflow("app:report")
async def report(ctx, topic):
    outline = await ctx.step("outline", make_outline, topic)   # journaled: never runs twice
    await ctx.sleep(3600)                                      # a durable timer
    ok = await ctx.wait_signal("approve")                      # a durable wait
    return await ctx.step("write", write_report, outline, ok)

task_id = await node.tasks.start("app:report", "actors")       # or task_id=... to attach
result = await node.tasks.result(task_id)
```
"""

from ..state import JournalDamaged, StateUnavailable, StepRecord, TaskStatus
from ._codec import JournalTypeError, dumps, loads, register_journal_types
from ._engine import (
    NondeterminismError,
    StepError,
    TaskCancelled,
    TaskContext,
    TaskFailed,
    TaskInfo,
    TaskManager,
    TaskNotFound,
    UpgradeRefused,
    idempotency_key,
    workflow,
)

__all__ = [
    "JournalDamaged",
    "JournalTypeError",
    "NondeterminismError",
    "StateUnavailable",
    "StepError",
    "StepRecord",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskInfo",
    "TaskManager",
    "TaskNotFound",
    "TaskStatus",
    "UpgradeRefused",
    "dumps",
    "idempotency_key",
    "loads",
    "register_journal_types",
    "workflow",
]
