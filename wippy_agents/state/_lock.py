"""One app at a time on a state folder, and the folder its owner's alone.

The state holds every conversation, so the folder is made (or tightened to) 0700
and the files in it 0600.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from pathlib import Path

from ..errors import UsageError

log = logging.getLogger("wippy_agents.state")


class StateFileBusy(UsageError):
    """Another process holds the app's state file."""


class StateLock:
    """The app's state folder, held for as long as this object is: one app at a time, in any process.

    DuckDB refuses a second process, but not a second connection in the same one,
    and two apps on one journal would replay each other's tasks. So the folder's
    `lock` file is held with `flock` (released when the process dies, however it dies),
    and it names the holder's pid for the message a second app gets.
    """

    def __init__(self, folder: Path) -> None:
        private_folder(folder)
        self.path = folder / "lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "another"
            self.release()
            raise StateFileBusy(
                f"the app's state in {folder} is in use by process {holder} (a wippy node or command, or another "
                "app in this process); wait for it or stop it") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def private_folder(folder: Path) -> None:
    """Create `folder` 0700 (any missing folder above it too), or take group and other access away from one that
    exists (with a warning)."""
    for missing in reversed([path for path in (folder, *folder.parents) if not path.exists()]):
        missing.mkdir(mode=0o700, exist_ok=True)
    if not folder.is_dir():
        return  # a file in the way: whoever uses the folder says so (a file's mode is not ours to change)
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by other users (mode %o); made it 0700", folder, mode)
        folder.chmod(0o700)


def private_files(folder: Path) -> None:
    """Make every file in `folder` 0600: DuckDB creates its files with the process's umask."""
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
