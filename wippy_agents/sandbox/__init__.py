"""Run untrusted, agent-written tool code: RestrictedPython inside warm, limited worker processes.

```python
from wippy_agents.sandbox import Sandbox, SandboxError, CompileError, ResourceLimit
async with Sandbox() as sb:
    value = await sb.run(source, function="main", args={"x": 1})
    res = await sb.run_with_output(source, function="main")   # res.value, res.output
```

Sandboxed code sees restricted builtins plus three namespaces of plain functions:
`json` (dumps, loads), `math` (the usual float/int functions and constants) and
`regex` (match, search, fullmatch, findall, sub, split, escape and flag ints; matches are
returned as dicts with "match", "groups", "named", "start", "end"). There is no import.

Printed text is returned by `run_with_output` (`RunResult.output`), attached to every
error as `exc.output`, and logged at DEBUG on the `wippy_agents.sandbox` logger; it never
reaches the host's stdout. `Limits` sets per-call limits (`Sandbox(limits=...)` or
`run(..., limits=...)`); `memory_bytes` is fixed per worker when the pool starts. The wall
clock covers the call itself, not the wait for a free worker.

`run_workflow` runs a restricted workflow's `main(ctx, **args)`: each `ctx` method
is an `Operation` the host answers (or the journal's records answer inside the
worker); answering `SUSPEND` gives the worker back until the workflow runs again.

Language limits (RestrictedPython): no names or attributes starting with "_" (so no
dunder methods other than `__init__` and comparisons, no `super().__init__`), no
`nonlocal`, no `async`, no `type`/`eval`/`exec`/`open`/`format`; `d[k] += v` and
`obj.attr += v` are supported through guarded helpers.
"""

from ._errors import CompileError, ReplayMismatch, ResourceLimit, SandboxError
from ._flow import ANY_OPERATION
from ._pool import SUSPEND, Limits, Operation, Outcome, RunResult, Sandbox, WorkflowRun
from ._restrictions import compile_source

__all__ = ["ANY_OPERATION", "SUSPEND", "CompileError", "Limits", "Operation", "Outcome", "ReplayMismatch", "ResourceLimit",
           "RunResult", "Sandbox", "SandboxError", "WorkflowRun", "compile_source"]
