"""Where a node's control files are: the socket, the pid file, and the private folder a long path needs.

The socket is `<root>/.wippy/node.sock` and the owner's pid is in
`<root>/.wippy/node.pid`. A socket path must fit in about 100 bytes
(`sockaddr_un`), so for a deeper root the socket is
`/tmp/wippy-<uid>/<hash of the root>.sock` instead (a folder only its user may
enter); both sides derive the path from the root, so nothing records it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path

from ._wire import ControlError

__all__ = ["MAX_SOCKET_PATH", "alive", "pid_path", "read_pid", "socket_folder", "remove", "socket_path"]

MAX_SOCKET_PATH = 100
"""Bytes; `sockaddr_un` holds 108 on Linux and 104 on macOS, with the final NUL."""


def socket_path(root: Path) -> Path:
    """The app's control socket: in `.wippy/`, or under /tmp when that path is too long for a socket."""
    root = root.resolve()
    path = root / ".wippy" / "node.sock"
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:24]
    return Path("/tmp") / f"wippy-{os.getuid()}" / f"{digest}.sock"


def pid_path(root: Path) -> Path:
    return root.resolve() / ".wippy" / "node.pid"


def socket_folder(folder: Path) -> None:
    """Make the folder for a socket under /tmp, refusing one that another user made or could enter."""
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ControlError(f"{folder} must be a folder of yours that nobody else may enter; remove it or fix it")


def read_pid(path: Path) -> int | None:
    """The pid in a pid file; None unless it holds one (0, -1 or a huge number would mean other processes)."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if 0 < pid < 2**31 else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
