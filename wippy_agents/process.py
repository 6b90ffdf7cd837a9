"""The process API: what code running inside a process uses to talk to other processes.

Every function acts on the calling process, found through a context variable,
so there is no handle to pass around (Erlang's `self()`).

```python
async def echo():
    while True:
        msg = await process.receive()
        if msg.topic == "stop":
            return "done"
        process.reply(msg, msg.payload)
```
"""

from ._runtime.api import (
    DOWN,
    EXIT,
    Down,
    Exit,
    ExitReason,
    Message,
    Pid,
    ProcessError,
    ProcessInfo,
    Ref,
    call,
    demonitor,
    exit,
    link,
    monitor,
    node,
    receive,
    register,
    reply,
    self,
    send,
    spawn,
    spawn_link,
    spawn_monitor,
    trap_exits,
    unlink,
    whereis,
)

__all__ = [
    "DOWN",
    "EXIT",
    "Down",
    "Exit",
    "ExitReason",
    "Message",
    "Pid",
    "ProcessError",
    "ProcessInfo",
    "Ref",
    "call",
    "demonitor",
    "exit",
    "link",
    "monitor",
    "node",
    "receive",
    "register",
    "reply",
    "self",
    "send",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "trap_exits",
    "unlink",
    "whereis",
]
