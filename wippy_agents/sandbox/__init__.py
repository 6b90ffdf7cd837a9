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

Language limits (RestrictedPython): no names or attributes starting with "_" (so no
dunder methods other than `__init__` and comparisons, no `super().__init__`), no
`nonlocal`, no `async`, no `type`/`eval`/`exec`/`open`/`format`; `d[k] += v` and
`obj.attr += v` are supported through guarded helpers.
"""

from ._errors import CompileError, ResourceLimit, SandboxError
from ._pool import Limits, RunResult, Sandbox
from ._restrictions import compile_source

__all__ = ["CompileError", "Limits", "ResourceLimit", "RunResult", "Sandbox", "SandboxError", "compile_source"]
