"""The terminal UI of `wippy chat`: chat with an app's agents and watch its registry, tasks, processes and approvals.

```python
async with App(root=".") as app:
    await WippyApp(app).run_async()       # or: await run_chat(Path("."))
```
"""

from ._app import WippyApp, run_chat

__all__ = ["WippyApp", "run_chat"]
