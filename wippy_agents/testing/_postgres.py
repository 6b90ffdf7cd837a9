"""A real, private PostgreSQL server for tests: `initdb` into a temporary folder, started on a free loopback port.

Postgres refuses to run as root, so under root the server's folder belongs to the
`postgres` user and the server runs as that user. It trusts local connections
(nothing but this machine reaches 127.0.0.1) and writes no WAL to disk on commit,
which is what a test wants from it; restarting it keeps its data.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from ..errors import UsageError

__all__ = ["TemporaryPostgres"]

_SERVER_USER = "postgres"


class TemporaryPostgres:
    """`with TemporaryPostgres() as pg:` a running server; `pg.url` its `postgres` database, `pg.database()` a new one."""

    def __init__(self) -> None:
        missing = [name for name in ("initdb", "pg_ctl") if shutil.which(name) is None]
        if missing:
            raise UsageError(f"{' and '.join(missing)} not found on PATH: install PostgreSQL's server programs "
                             "(Debian: `apt install postgresql-15`, with its bin folder on PATH)")
        self._folder = Path(tempfile.mkdtemp(prefix="wippy-pg-"))
        self._data = self._folder / "data"
        self._user = _SERVER_USER if os.geteuid() == 0 else None
        self.port = _free_port()
        self._databases = 0
        if self._user is not None:
            shutil.chown(self._folder, self._user)
        self._run("initdb", "--auth=trust", "--username=wippy", "--encoding=UTF8", "--no-sync", "-D", str(self._data))

    @property
    def url(self) -> str:
        return f"postgresql://wippy@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        """A new empty database on the server; its URL."""
        import psycopg

        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rpartition("/")[0] + f"/{name}"

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self._folder} -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "start", "-w", "-t", "30", "-D", str(self._data), "-l", str(self._folder / "log"),
                  "-o", options)

    def stop(self) -> None:
        """Stop the server at once (its clients' connections break, as when a database machine goes away)."""
        self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self._data))

    def close(self) -> None:
        try:
            if (self._data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> TemporaryPostgres:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _run(self, *command: str) -> None:
        done = subprocess.run(command, user=self._user, cwd=self._folder, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self._folder / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise UsageError(f"`{' '.join(command[:2])}` failed ({done.returncode}): {done.stderr.strip()}\n{tail}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
