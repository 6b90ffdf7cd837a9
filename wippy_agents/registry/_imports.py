"""Importing an app's Python files so that no file can freeze or kill the node.

Tool files (`tools/*.py`) and process files are trusted code that runs in the
node, but one that loops forever at import, raises `KeyboardInterrupt` or calls
`os._exit` must only be that file's error. So a file is first imported in a
throwaway forked child (copy-on-write, so it starts in milliseconds with every
module already loaded) that reports through a pipe whether the import finished,
raised, or ended the process, and is killed at the time limit. Only a file whose
probe finished cleanly is then imported in the node, in a worker thread, with the
same limit and everything an import can raise caught.

The probe imports from a worker thread, as the node's import does, so both see
the same world (no running event loop). The child touches nothing of the node:
its stdio is /dev/null, it holds no other file descriptor, it runs no garbage
collection (finalizers of the node's objects could close the node's files), no
logging and no signal handler of the node, dumps no core, and it leaves with
`os._exit`, so no buffer is flushed and no `atexit` handler runs. It leads its own
process group, so anything it starts dies with it, and it is always reaped.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import importlib.util
import json
import logging
import os
import re
import resource
import select
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from .._runtime.text import clean_text

IMPORT_TIME_LIMIT = 10.0
"""Seconds a file may take to import, in the probe and then in the node; a slower import is refused as stuck."""

_GRACE = 2.0
"""Seconds the node waits past the time limit for the child's own report of where it was stuck."""

_MAX_REPORT = 64 * 1024
"""Bytes of report read from a child; a report is a few hundred bytes, a traceback dump a few thousand."""

_MAX_MESSAGE = 1000
"""Characters of an exception's text kept in the file's error."""


class ImportFailed(Exception):
    """The file could not be imported: `message` says why, `line` where in the file (when known)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def import_guarded(path: Path, module_name: str, *, time_limit: float = IMPORT_TIME_LIMIT) -> ModuleType:
    """Import `path` as `module_name` after a probe in a child process; raise `ImportFailed` if either fails."""
    probed = threading.Event()
    outcome: list[ModuleType | BaseException] = []

    def probe_then_import() -> None:
        try:
            _probe(path, module_name, time_limit)
            probed.set()
            outcome.append(_import_file(path, module_name))
        except BaseException as error:  # KeyboardInterrupt and SystemExit too: they are the file's error
            outcome.append(error)
        finally:
            probed.set()

    worker = threading.Thread(target=probe_then_import, name=f"wippy-import {path.name}", daemon=True)
    worker.start()
    probed.wait()  # the probe ends by itself: its child is killed at the time limit
    worker.join(time_limit)
    if not outcome:  # the thread is left to finish; it is a daemon, so it cannot hold the node at exit
        raise _stuck(time_limit)
    result = outcome[0]
    if isinstance(result, ImportFailed):
        raise result
    if isinstance(result, BaseException):
        raise ImportFailed(*_describe(result, path))
    return result


def _import_file(path: Path, module_name: str) -> ModuleType:
    """Import a Python file as a fresh module (replacing an older import of it); what `import_guarded` runs, twice."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        raise
    return module


def _describe(error: BaseException, path: Path) -> tuple[str, int | None]:
    """What an import raised, as an error message and the line of `path` it came from."""
    if isinstance(error, SyntaxError) and error.filename == str(path):
        return clean_text(f"syntax error: {error.msg}"), error.lineno
    text = clean_text(f"importing the file raised {type(error).__name__}: {error}")
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "..."
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return text, line


# -- the probe ------------------------------------------------------------------------------------------


def _probe(path: Path, module_name: str, time_limit: float) -> None:
    """Import the file in a forked child; raise `ImportFailed` unless the import finished without raising."""
    try:
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
    except OSError as error:  # out of processes or file descriptors: not the file's fault
        raise ImportFailed(f"could not start a process to try the import in ({error.strerror}); "
                           "save the file again to retry") from None
    if pid == 0:
        _child(path, module_name, write_fd, time_limit)
    os.close(write_fd)
    try:
        with contextlib.suppress(OSError):  # the child does it too, and may have exited or moved on already
            os.setpgid(pid, pid)  # so the group exists before any kill
        report = _read_report(read_fd, time.monotonic() + time_limit + _GRACE)
    finally:
        os.close(read_fd)
        exit_code = _end(pid)
    _judge(report, exit_code, path, time_limit)


def _child(path: Path, module_name: str, report_fd: int, time_limit: float) -> NoReturn:
    """The forked child: import the file, write one JSON report, and leave without running any of the node's code."""
    try:
        os.setpgid(0, 0)
        _isolate(report_fd)
        faulthandler.disable()  # enabled, its handlers may have been replaced since (Ray's in a cluster's node do)
        faulthandler.enable(file=report_fd)  # a crash (say, in C code) dumps where it happened
        faulthandler.dump_traceback_later(time_limit, exit=True, file=report_fd)  # so does being stuck
        try:
            _import_file(path, module_name)
            report: dict[str, object] = {"ok": True}
        except BaseException as error:
            message, line = _describe(error, path)
            report = {"message": message, "line": line}
        faulthandler.cancel_dump_traceback_later()
        data = json.dumps(report).encode()
        while data:
            data = data[os.write(report_fd, data):]
    finally:
        os._exit(0)


def _isolate(report_fd: int) -> None:
    """Cut the child off from the node's files, signal handlers, log handlers and finalizers."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not leave a core file in the app folder
    signal.set_wakeup_fd(-1)  # the node's event loop would hear of this child's signals
    for signum in signal.valid_signals():
        if callable(signal.getsignal(signum)):
            signal.signal(signum, signal.SIG_DFL)
    gc.disable()
    logging.disable()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, report_fd)
    os.closerange(report_fd + 1, os.sysconf("SC_OPEN_MAX"))


def _read_report(fd: int, deadline: float) -> bytes | None:
    """What the child wrote until it closed the pipe, or None if it was still running at the deadline."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks: list[bytes] = []
    size = 0
    while (remaining := deadline - time.monotonic()) > 0 and size <= _MAX_REPORT:
        if not poller.poll(remaining * 1000):
            break
        chunk = os.read(fd, _MAX_REPORT)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    return None


def _end(pid: int) -> int:
    """Kill what is left of the child's process group and reap the child; return its exit code (-signal)."""
    with contextlib.suppress(ProcessLookupError):  # the child, its group and everything it started are gone
        os.killpg(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


_DUMPED_LINE = re.compile(r'File "(?P<file>.*)", line (?P<line>\d+)')


def _judge(report: bytes | None, exit_code: int, path: Path, time_limit: float) -> None:
    """Raise `ImportFailed` unless the child reported an import that finished cleanly."""
    if report is None:
        raise _stuck(time_limit)
    text = report.decode("utf-8", "replace")
    if text.startswith("{"):
        try:
            outcome = json.loads(text)
        except ValueError:
            outcome = None
        if outcome == {"ok": True}:
            return
        if isinstance(outcome, dict):
            raise ImportFailed(str(outcome["message"]), outcome["line"])
    line = next((int(m["line"]) for m in _DUMPED_LINE.finditer(text) if m["file"] == str(path)), None)
    if text.startswith("Timeout ("):  # faulthandler's dump of where the child was stuck
        raise _stuck(time_limit, line)
    if exit_code < 0:
        raise ImportFailed(f"importing the file crashed the process ({_signal_name(-exit_code)})", line)
    raise ImportFailed(f"importing the file ended the process (exit status {exit_code}); a file must not exit "
                       "while it is imported", line)


def _stuck(time_limit: float, line: int | None = None) -> ImportFailed:
    return ImportFailed(f"importing the file did not finish within {time_limit:g} s (an endless loop at import?)", line)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return f"signal {number}"
