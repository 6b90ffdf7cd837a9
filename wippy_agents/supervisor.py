"""Supervisors: processes that start children, watch them and restart them by a strategy (OTP).

```python
sup = Supervisor([ChildSpec("db", db_worker), ChildSpec("web", web_worker, restart="transient")],
                 strategy="rest_for_one", max_restarts=3, max_seconds=5)
pid = process.spawn(sup)
```

A supervisor traps exits. A child's exit is handled by its restart type and the
strategy; more than `max_restarts` restarts within `max_seconds` makes the
supervisor stop its children (in reverse order) and exit with `SupervisorError`,
which its own supervisor sees as a crash: the failure escalates up the tree.
An abnormal exit signal from anyone but a child (its parent's `"shutdown"`,
`node.stop()`) makes it stop its children in reverse order and exit with that reason.
Calls `which_children`, `start_child` and `terminate_child` manage a running one.
"""

from ._runtime.supervisor import (
    Backoff,
    ChildInfo,
    ChildSpec,
    Supervisor,
    SupervisorError,
    start_child,
    terminate_child,
    which_children,
)

__all__ = ["Backoff", "ChildInfo", "ChildSpec", "Supervisor", "SupervisorError", "start_child", "terminate_child",
           "which_children"]
