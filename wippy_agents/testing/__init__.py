"""Test tooling shipped to users: test doubles for models, a no-network guard, virtual time, app folders, a private Postgres server,
nodes of a cluster in one process.

```python
model = ScriptedModel(["Hello!", Response(tool_calls=(ToolCall(id="1", name="add", arguments={"a": 1}),))])
with model:                      # leaving the block fails if a scripted response was never used
    ...                          # run the agent; model.requests records what it was asked
```
"""

from .._runtime.clock import VirtualClock
from ._files import write_file
from ._models import FunctionModel, ModelRequest, ScriptedModel, ScriptExhausted, forbid_model_requests
from ._peers import LoopbackCluster
from ._postgres import TemporaryPostgres
from ._waiting import wait_until

__all__ = [
    "FunctionModel",
    "LoopbackCluster",
    "ModelRequest",
    "ScriptedModel",
    "ScriptExhausted",
    "TemporaryPostgres",
    "VirtualClock",
    "forbid_model_requests",
    "wait_until",
    "write_file",
]
