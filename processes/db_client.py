"""A supervised worker that follows its settings in the registry (`app.db:postgres`).

It subscribes to its config entry; when someone edits `registry/db/_index.yaml`
the registry commits a new version and this process gets a `registry.update`
message, so it reconnects with the new settings without a restart. The app hands
it the registry: a process function's parameter annotated `Registry` gets it.
"""

import logging
from typing import Any

from wippy_agents import process
from wippy_agents.registry import Registry

log = logging.getLogger("app.workers.db_client")
SETTING = "app.db:postgres"


def connection_settings(data: Any) -> dict[str, Any]:
    return {key: data[key] for key in ("host", "port", "database")}


async def run(registry: Registry) -> None:
    registry.subscribe(SETTING)
    settings = connection_settings(registry.get(SETTING).data)
    log.info("connected to %(host)s:%(port)s/%(database)s", settings)
    while True:
        msg = await process.receive()
        if msg.topic == "registry.update":
            settings = connection_settings(msg.payload.entry.data)
            log.info("settings changed in version %s: reconnecting to %s", msg.payload.version, settings)
        elif msg.topic == "settings":
            process.reply(msg, settings)
