"""The outer layer: a pool of warm, isolated worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from .._runtime.text import clean_data, clean_text
from ..errors import ArgumentError
from ._errors import CompileError, ReplayMismatch, ResourceLimit, SandboxError
from ._flow import MAX_NAME

log = logging.getLogger("wippy_agents.sandbox")

_HEADER = struct.Struct(">I")
_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Limits:
    """Per-call limits. `memory_bytes` is applied per worker process (set when the pool starts)."""

    cpu_seconds: float = 2.0
    wall_seconds: float = 5.0
    memory_bytes: int = 512 * 1024 * 1024
    result_bytes: int = 1024 * 1024
    output_bytes: int = 64 * 1024


@dataclass(frozen=True)
class RunResult:
    """What `Sandbox.run_with_output` returns: the value and the printed text."""

    value: Any
    output: str


@dataclass(frozen=True)
class Operation:
    """A durable operation a restricted workflow's code asks for: `name` is `tool:<id>`, `ask:<agent>`, `sleep`,
    `signal:<name>`, `now`, `random` or `log`; `position` counts the operations of the task from 0."""

    position: int
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """The answer to an operation: its value, or the error the code sees (`TimeoutError` if `timeout`)."""

    value: Any = None
    error: str | None = None
    timeout: bool = False

    def record(self, name: str) -> dict[str, Any]:
        """As the worker reads it (an answer, or a recorded result sent with a later request)."""
        if self.error is None:
            return {"name": name, "ok": True, "value": self.value}
        return {"name": name, "ok": False, "error": self.error, "timeout": self.timeout}


SUSPEND = Outcome(error="suspended")
"""Answer an operation with this to take the worker back: the code stops there and runs again from the top later."""

OnOperation = Callable[[Operation], Awaitable[Outcome]]


@dataclass(frozen=True)
class WorkflowRun:
    """How one run of a restricted workflow ended: with a value, or suspended at an operation."""

    value: Any
    suspended: Operation | None
    output: str


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process, workdir: str) -> None:
        self.proc = proc
        self.workdir = workdir

    @property
    def stdin(self) -> asyncio.StreamWriter:
        assert self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stdout(self) -> asyncio.StreamReader:
        assert self.proc.stdout is not None
        return self.proc.stdout

    async def read_frame(self, max_size: int) -> dict[str, Any]:
        (size,) = _HEADER.unpack(await self.stdout.readexactly(_HEADER.size))
        if size > max_size:
            raise _TooLarge(size)
        data = await self.stdout.readexactly(size)
        reply = json.loads(data)
        if not isinstance(reply, dict):
            raise SandboxError("worker sent a malformed reply")
        return reply

    async def destroy(self, kill: bool = True) -> None:
        """Stop the worker: kill it (or, with kill=False, close its stdin and let it exit)."""
        # Popen.send_signal polls first and may reap a dead child behind asyncio's child
        # watcher, losing its exit status; so only kill when it has not been seen to exit.
        with contextlib.suppress(Exception):
            self.stdin.close()
        if kill and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def _real_timeout(seconds: float) -> AsyncIterator[None]:
    """`asyncio.timeout` in real seconds: a worker's time is real work, which a loop whose clock jumps ahead when
    all waits (a test's `VirtualClock`) must not cut short. Checked against the monotonic clock when the loop's
    timer fires, and set again for what is left."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + seconds
    async with asyncio.timeout(None) as scope:
        timer: asyncio.TimerHandle

        def check() -> None:
            nonlocal timer
            left = deadline - time.monotonic()
            if left > 0:
                timer = loop.call_later(left, check)
            else:
                scope.reschedule(loop.time())

        timer = loop.call_later(seconds, check)
        try:
            yield
        finally:
            timer.cancel()


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


async def _spawn(memory_bytes: int) -> _Worker:
    workdir = tempfile.mkdtemp(prefix="wippy-sandbox-")
    try:
        # Isolated as by -I (no user site, no script folder on the path), and the environment is ours alone:
        # one hash seed for every worker, so code that loops over a set of strings takes the same path in each
        # (a restricted workflow's resumptions run in whichever worker is free, before and after a restart).
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-s",
            "-P",
            "-m",
            "wippy_agents.sandbox._worker",
            str(memory_bytes),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={"PYTHONHASHSEED": "0"},
            cwd=workdir,
            start_new_session=True,
            limit=2**16,
        )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    worker = _Worker(proc, workdir)
    try:
        async with _real_timeout(_START_TIMEOUT):
            ready = await worker.read_frame(1024)
        if ready.get("status") != "ready":
            raise SandboxError("sandbox worker failed to start")
    except BaseException:
        await worker.destroy()
        raise
    return worker


class Sandbox:
    """A pool of warm sandbox workers; use as `async with Sandbox() as sb: await sb.run(...)`.

    `run` returns the value; `run_with_output` returns a `RunResult` with the value and
    the printed text. Printed text is also logged on the `wippy_agents.sandbox` logger
    (DEBUG) with the call; it never reaches the host's stdout. Errors carry it as
    `exc.output`.
    """

    def __init__(self, workers: int = 2, limits: Limits | None = None) -> None:
        if workers < 1:
            raise ArgumentError("workers must be at least 1")
        self.size = workers
        self.limits = limits or Limits()
        self._idle: asyncio.Queue[_Worker | None] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._started = False
        self._busy = 0

    @property
    def busy(self) -> int:
        """How many workers are running a call now (a workflow holds one until it ends or waits)."""
        return self._busy

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        results = await asyncio.gather(*(_spawn(self.limits.memory_bytes) for _ in range(self.size)),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, _Worker):
                self._all.add(r)
                self._idle.put_nowait(r)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            raise SandboxError(f"could not start sandbox workers: {errors[0]!r}")

    async def close(self) -> None:
        self._closed = True
        # Let replacements finish (they see `_closed` and stop their fresh worker): cancelling
        # one mid-`destroy` would leave a killed child unreaped.
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        workers = list(self._all)
        self._all.clear()
        await asyncio.gather(*(w.destroy(kill=False) for w in workers), return_exceptions=True)

    # --- calls -----------------------------------------------------------------

    async def run(
        self, source: str, function: str | None = None, args: dict[str, Any] | None = None,
        *, limits: Limits | None = None,
    ) -> Any:
        """The JSON-compatible value of `function(**args)`, or of the global `result`."""
        return (await self.run_with_output(source, function, args, limits=limits)).value

    async def run_with_output(
        self, source: str, function: str | None = None, args: dict[str, Any] | None = None,
        *, limits: Limits | None = None,
    ) -> RunResult:
        """Like `run`, also returning what the code printed (capped at `output_bytes`)."""
        if not isinstance(source, str):
            raise SandboxError("source must be a str")
        if function is not None and not isinstance(function, str):
            raise SandboxError("function must be a str or None")
        return await self._request({"source": source, "function": function, "args": args or {}}, limits,
                                   function or "<module>")

    async def render(self, template: str, variables: dict[str, Any], *, limits: Limits | None = None) -> str:
        """A Jinja2 template rendered in Jinja's immutable sandbox inside a worker, under the call limits.

        The rendered text counts against `result_bytes` (as characters). Template errors
        are `SandboxError`s saying what and on which line.
        """
        if not isinstance(template, str):
            raise SandboxError("template must be a str")
        result = await self._request({"template": template, "variables": variables}, limits, "<template>")
        return str(result.value)

    async def run_workflow(self, source: str, args: dict[str, Any], records: list[dict[str, Any]],
                           on_operation: OnOperation, *, function: str = "main", max_operations: int = 1000,
                           limits: Limits | None = None) -> WorkflowRun:
        """Run a restricted workflow's `function(ctx, **args)` from the top.

        `records` (`Outcome.record`s, in order) answer the operations the journal
        already holds, inside the worker; each new one is awaited from `on_operation`
        while the worker waits. Answering `SUSPEND` ends the run there, the worker free.
        `limits.result_bytes` caps each operation's arguments and result and the
        workflow's result. `ReplayMismatch` if the code asks for other operations than
        the recorded ones; the wall clock counts the code's time between operations.
        """
        suspended: list[Operation] = []

        async def operation(frame: dict[str, Any]) -> Outcome:
            asked = _operation(frame)
            outcome = await on_operation(asked)
            if outcome is SUSPEND:
                suspended.append(asked)
            return outcome

        payload = {"workflow": True, "source": source, "function": function, "args": args, "records": records,
                   "max_operations": max_operations}
        result = await self._request(payload, limits, function, operation)
        return WorkflowRun(result.value, suspended[0] if suspended else None, result.output)

    async def _request(self, payload: dict[str, Any], limits: Limits | None, what: str,
                       on_operation: Callable[[dict[str, Any]], Awaitable[Outcome]] | None = None) -> RunResult:
        lim = replace(limits or self.limits, memory_bytes=self.limits.memory_bytes)
        try:
            request = json.dumps(
                {**payload, "cpu": lim.cpu_seconds, "output": lim.output_bytes, "result": lim.result_bytes},
                allow_nan=False,
            ).encode()
        except (TypeError, ValueError) as exc:
            raise SandboxError(f"arguments are not JSON-compatible: {exc}") from None
        except UnicodeEncodeError as exc:
            raise SandboxError(f"arguments hold invalid text: {exc}") from None
        if not self._started or self._closed:
            raise SandboxError("the sandbox is not running (use `async with Sandbox()`)")
        worker = await self._acquire()
        self._busy += 1
        try:
            reply = await self._call(worker, request, lim, on_operation)
        finally:
            self._busy -= 1
        output = clean_text(str(reply.get("output", "")))
        if output:
            log.debug("sandbox call %s printed:\n%s", what, output)
        status = reply.get("status")
        message = clean_text(str(reply.get("message", "")))
        if status == "ok":
            return RunResult(clean_data(reply.get("value")), output)
        if status == "suspended":
            return RunResult(None, output)
        if status == "diverged":
            raise ReplayMismatch(int(reply.get("position", -1)), clean_text(str(reply.get("recorded"))),
                                 clean_text(str(reply.get("asked"))), output=output)
        if status == "compile":
            raise CompileError(message, output=output)
        if status == "limit":
            self._replace(worker)
            limit = str(reply.get("limit", "unknown"))
            raise ResourceLimit(limit, f"{limit} limit: {message}", output=output)
        raise SandboxError(message or "sandbox call failed", output=output)

    async def _call(self, worker: _Worker, request: bytes, lim: Limits,
                    on_operation: Callable[[dict[str, Any]], Awaitable[Outcome]] | None = None) -> dict[str, Any]:
        max_reply = lim.result_bytes * 2 + lim.output_bytes * 6 + 64 * 1024
        try:
            while True:
                worker.stdin.write(_HEADER.pack(len(request)) + request)
                async with _real_timeout(lim.wall_seconds):
                    await worker.stdin.drain()
                    reply = await worker.read_frame(max_reply)
                if reply.get("status") != "op" or on_operation is None:
                    break
                answer = await on_operation(reply)  # the host's time, not the code's: no wall clock on it
                request = json.dumps({"suspend": True} if answer is SUSPEND else answer.record(""),
                                     allow_nan=False).encode()
        except TimeoutError:
            self._replace(worker)
            raise ResourceLimit("wall clock", f"wall clock limit: call ran over {lim.wall_seconds} s") from None
        except _TooLarge as exc:
            self._replace(worker)
            raise ResourceLimit("result size", f"result size limit: reply of {exc.size} bytes") from None
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError, json.JSONDecodeError):
            # The worker died (or spoke garbage): give it a moment to exit before killing it,
            # so that its exit status (SIGXCPU = CPU backstop) is not lost.
            try:
                code = await asyncio.wait_for(asyncio.shield(worker.proc.wait()), 1.0)
            except TimeoutError:
                code = None
            self._replace(worker)
            if code in (-signal.SIGXCPU, -signal.SIGKILL):
                raise ResourceLimit("cpu", "cpu limit: the worker was killed for using too much CPU") from None
            raise SandboxError(f"sandbox worker died (exit code {code})") from None
        except asyncio.CancelledError:
            self._replace(worker)
            raise
        except BaseException:
            self._replace(worker)
            raise
        if reply.get("status") != "limit":
            self._idle.put_nowait(worker)
        return reply

    async def _acquire(self) -> _Worker:
        while True:
            worker = await self._idle.get()
            if worker is not None and worker.proc.returncode is None:
                return worker
            if worker is not None:
                self._replace(worker)
                continue
            # A replacement failed to start: try once more here, reporting failure to this call.
            try:
                fresh = await _spawn(self.limits.memory_bytes)
            except Exception as exc:
                self._idle.put_nowait(None)
                raise SandboxError(f"could not start a sandbox worker: {exc!r}") from None
            self._all.add(fresh)
            return fresh

    def _replace(self, worker: _Worker) -> None:
        """Kill `worker` and start a fresh one in the background; never blocks the caller."""
        if worker not in self._all:
            return
        self._all.discard(worker)

        async def renew() -> None:
            await worker.destroy()
            if self._closed:
                return
            try:
                fresh = await _spawn(self.limits.memory_bytes)
            except Exception:
                log.exception("could not start a replacement sandbox worker")
                self._idle.put_nowait(None)
                return
            if self._closed:
                await fresh.destroy()
                return
            self._all.add(fresh)
            self._idle.put_nowait(fresh)

        task = asyncio.get_running_loop().create_task(renew())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _operation(frame: dict[str, Any]) -> Operation:
    """An `op` frame checked: the worker runs hostile code, so its frames are as hostile as the code."""
    position, name, args = frame.get("position"), frame.get("name"), frame.get("args")
    if (not isinstance(position, int) or not isinstance(name, str) or len(name) > MAX_NAME + 10
            or not isinstance(args, dict)):
        raise SandboxError("the workflow's worker sent a malformed operation")
    return Operation(position, clean_text(name), clean_data(args))
