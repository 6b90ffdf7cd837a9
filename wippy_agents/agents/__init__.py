"""Agents: supervised conversation processes that load their prompt, model and tools every turn.

```python
conv = await node.conversation("app:assistant")      # starts or reattaches (id=...)
answer = await conv.ask("What is 2 + 3?")           # answer.text, answer.usage, answer.cost_usd
async for event in conv.stream("And times 4?"):     # text deltas, tool calls and results, usage, the answer
    ...
```
"""

from ..llm import TextDelta
from ._errors import AgentError
from ._events import (
    AgentEvent,
    Answer,
    ApprovalRequested,
    Delegated,
    ToolFinished,
    ToolStarted,
    TurnDone,
    TurnFailed,
    TurnStarted,
    UsageReport,
)
from ._service import AgentService, Conversation
from ._toolset import offered_name

__all__ = [
    "AgentError",
    "AgentEvent",
    "AgentService",
    "Answer",
    "ApprovalRequested",
    "Conversation",
    "Delegated",
    "TextDelta",
    "ToolFinished",
    "ToolStarted",
    "TurnDone",
    "TurnFailed",
    "TurnStarted",
    "UsageReport",
    "offered_name",
]
