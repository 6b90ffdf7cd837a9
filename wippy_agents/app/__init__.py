"""The application: an app folder (`wippy.yaml`, `registry/`, `prompts/`, `tools/`) booted on its own node.

```python
async with App(root=".") as app:
    conv = await app.conversation("app:assistant")
    answer = await conv.ask("What is 2 + 3?")
    app.registry.get("app.db:postgres"); await app.tasks.start("app:report", "actors")
```
"""

from ._app import App, ControlPort
from ._config import STATE_VARIABLE, AppConfig, ClusterSettings, load_config, state_location
from ._folder import LOCAL_NODE, AppFolder
from ._watch import Watcher

__all__ = ["LOCAL_NODE", "STATE_VARIABLE", "App", "AppConfig", "AppFolder", "ClusterSettings", "ControlPort", "Watcher", "load_config", "state_location"]
