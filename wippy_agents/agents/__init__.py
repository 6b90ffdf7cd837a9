"""Agents: supervised conversation processes that load their prompt, model and tools every turn.

```python
conv = await node.conversation("app:assistant")      # starts or reattaches (id=...)
answer = await conv.ask("What is 2 + 3?")           # answer.text, answer.usage, answer.cost_usd
async for event in conv.stream("And times 4?"):     # text deltas, tool calls and results, usage, the answer
    ...
```
"""

from ..llm import TextDelta
from ._budget import BudgetExceeded, PricingMissing
from ._builtin import register_builtins
from ._embeddings import Embeddings
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
from ._governance import Governance
from ._history import TURN_WORKFLOW, StepSpan, TurnArgs, TurnSteps, turns
from ._mcp import PIN_ACTION, McpServers, McpToolError
from ._memory import Memory, Recalled, note_json
from ._restricted import RestrictedTools
from ._service import AgentService, Conversation, answer_of, new_conversation_id
from ._toolset import offered_name

__all__ = [
    "TURN_WORKFLOW",
    "AgentError",
    "AgentEvent",
    "AgentService",
    "Answer",
    "ApprovalRequested",
    "BudgetExceeded",
    "Conversation",
    "Delegated",
    "Embeddings",
    "Governance",
    "McpServers",
    "McpToolError",
    "PIN_ACTION",
    "PricingMissing",
    "Memory",
    "Recalled",
    "RestrictedTools",
    "StepSpan",
    "TextDelta",
    "ToolFinished",
    "ToolStarted",
    "TurnArgs",
    "TurnDone",
    "TurnFailed",
    "TurnStarted",
    "TurnSteps",
    "UsageReport",
    "answer_of",
    "new_conversation_id",
    "note_json",
    "offered_name",
    "register_builtins",
    "turns",
]
