"""Beyond one machine: an app's nodes on a Ray cluster, sharing their state in Postgres.

```python
async with ClusterDriver(root) as driver:      # wippy.yaml: state: postgresql://..., cluster: {nodes: 3}
    conv = await driver.conversation("app:assistant")   # runs on its node, wherever that is
    answer = await conv.ask("hi")
```

`_driver` places the nodes and forwards requests to them; `_node` is the body of
each node's Ray actor (an `App` on the actor's event loop). Ray is imported only
when a driver starts: `pip install 'wippy-agents[cluster]'`.
"""

from ._driver import FAILOVER_TIMEOUT, ClusterConversation, ClusterDriver

__all__ = ["FAILOVER_TIMEOUT", "ClusterConversation", "ClusterDriver"]
