"""The TUI as a process on its node: it hears registry and approval events and hands them to the UI.

The node and Textual share one asyncio loop, so the process posts Textual
messages to the app directly. Log records of the node (a crashed process, a
refused file) reach the UI the same way, from whichever thread logs them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from textual.app import App
from textual.message import Message

from .. import process
from ..app import App as WippyApplication

FORWARDED = ("registry.create", "registry.update", "registry.delete", "registry.commit", "registry.error",
             "approval.pending", "approval.decided")


class NodeEvent(Message):
    """A message the TUI's process received: `topic` and `payload` as the node sent them."""

    def __init__(self, topic: str, payload: Any) -> None:
        super().__init__()
        self.topic = topic
        self.payload = payload


async def listen(app: App[Any], application: WippyApplication) -> None:
    """The body of the TUI's process: subscribe to every registry change and approval, forward them to `app`."""
    application.registry.subscribe("*")
    application.approvals.subscribe()
    while True:
        msg = await process.receive()
        if msg.topic in FORWARDED:
            app.post_message(NodeEvent(msg.topic, msg.payload))


class NodeLog(Message):
    """A warning or error the node logged (a process crashed, a supervisor gave up)."""

    def __init__(self, record: logging.LogRecord) -> None:
        super().__init__()
        self.record = record


class LogForwarder(logging.Handler):
    """Hands the node's warnings and errors to the app instead of the terminal the UI is drawn on."""

    def __init__(self, app: App[Any], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.WARNING)
        self.app = app
        self.loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        self.loop.call_soon_threadsafe(self.app.post_message, NodeLog(record))
