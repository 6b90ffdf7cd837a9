"""Following the registry versions other nodes commit: one thread per node LISTENs on the state database.

`PostgresVersions.record` NOTIFYs `CHANNEL` in the transaction of each version,
so a listener hears of it once it is committed. A listener that loses its
connection reconnects with backoff and then reports once anyway (it may have
missed a notification meanwhile): the callback reads what is new, so an extra
call costs one query.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from ._location import shown_url

__all__ = ["CHANNEL", "VersionListener"]

log = logging.getLogger("wippy_agents.state")

CHANNEL = "wippy_registry"
RETRY_SECONDS = (0.2, 5.0)


class VersionListener:
    """Calls `callback()` on its own thread after each version committed at `url` (and after each reconnect)."""

    def __init__(self, url: str, callback: Callable[[], None]) -> None:
        self._url = url
        self._callback = callback
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self.listening = threading.Event()
        """Set while LISTEN is in force (tests wait for it before committing elsewhere)."""
        self._thread = threading.Thread(target=self._listen, name="wippy-registry-listener", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _listen(self) -> None:
        delay = RETRY_SECONDS[0]
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    delay = RETRY_SECONDS[0]
                    self._report()  # what was committed before LISTEN took effect
                    while not self._stop.is_set():
                        if any(True for _ in conn.notifies(timeout=0.5)):
                            self._report()
            except psycopg.Error as error:
                self.listening.clear()
                log.warning("the registry listener lost the state database %s (%s); retrying in %gs",
                            shown_url(self._url), error, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_SECONDS[1])

    def _report(self) -> None:
        try:
            self._callback()
        except Exception:  # the node's follower logs its own problems; a bug here must not end the thread
            log.exception("following a registry version failed")
