"""Where the state lives: a DuckDB file (the embedded default), in memory, or a Postgres database URL."""

from __future__ import annotations

import re
from pathlib import Path

from .._runtime.secrets import Redactor
from ..errors import UsageError
from ._duckdb import open_duckdb_state
from ._stores import State

DATABASE_SCHEMES = ("postgresql://", "postgres://")
_PASSWORD = re.compile(r"(://[^:/@]*):.*@")  # from the colon after the user to the last @: rather too much than too little


def is_database_url(location: object) -> bool:
    """Whether `location` names a Postgres database rather than a file."""
    return isinstance(location, str) and location.startswith(DATABASE_SCHEMES)


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs (also when the rest of it does not parse)."""
    return _PASSWORD.sub(r"\1:***@", url)


def open_state(location: Path | str | None, *, node: str = "local", redactor: Redactor | None = None) -> State:
    """Open the state at `location`: a DuckDB file's path, None (in memory), or a `postgresql://` URL.

    `node` names this node to a shared database (its leases on tasks carry the name);
    the `redactor`'s secrets never reach the journal.
    """
    if not is_database_url(location):
        return open_duckdb_state(None if location is None else Path(location), redactor=redactor)
    try:
        from ._postgres import open_postgres_state
    except ImportError as error:
        raise UsageError(f"the state is a Postgres database ({shown_url(str(location))}) but {error.name} is not "
                         "installed: `pip install 'wippy-agents[cluster]'`") from None
    return open_postgres_state(str(location), node=node, redactor=redactor)
