"""An app folder opened without its services: settings, the registry as the files say, and the state file.

What the CLI reads when no node runs (lint, list, history, tasks), and what an
`App` boots on.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._runtime.node import Node
from .._runtime.secrets import Redactor
from .._runtime.telemetry import OFF, Telemetry
from ..agents import register_builtins
from ..registry import Folders, Registry, RegistryError
from ..state import State, open_state
from ._config import AppConfig, load_config, state_location

__all__ = ["AppFolder"]


LOCAL_NODE = "local"
"""The name of an app's node when it runs on one machine (and of the CLI's, when no node runs)."""


class AppFolder:
    """Open an app folder: `files_only` reads the sources without the state file (lint, list, show).

    With a `node`, processes on it can subscribe to the registry's changes; the
    `redactor`'s secrets never reach the state; `state` overrides where it lives
    (see `state_location`); without `owns_files` the entries come from the state and
    the files only hold code (a cluster's node, whose folder is a copy). `config` is
    wippy.yaml's settings if the caller read them already; `telemetry` traces the registry's commits.
    """

    def __init__(self, root: str | os.PathLike[str], *, files_only: bool = False, node: Node | None = None,
                 redactor: Redactor | None = None, state: str | os.PathLike[str] | None = None,
                 owns_files: bool = True, config: AppConfig | None = None, telemetry: Telemetry = OFF) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise RegistryError(f"the app folder {root} does not exist")
        self.config: AppConfig = config or load_config(self.root)
        sources = self.config.sources
        self.folders = Folders(sources.registry, sources.prompts, sources.tools)
        location = None if files_only else state_location(self.config, self.root, state)
        self.state: State = open_state(location, node=LOCAL_NODE if node is None else node.name, redactor=redactor)
        """Every store of the app's state (held by this folder alone until it closes)."""
        try:
            self.registry = Registry(self.root, self.state.versions, folders=self.folders, node=node,
                                     owns_files=owns_files, telemetry=telemetry)
            register_builtins(self.registry)  # their entries; an agent service binds their functions
            self.registry.load()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.state.close()

    def __enter__(self) -> AppFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
