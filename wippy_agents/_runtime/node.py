"""The node: hosts processes on one asyncio loop and carries out every signal between them.

Exit handling follows Erlang. A process ends normally (its function returned),
with an exception (it raised), or because it was doomed by an exit signal; the
reason then flows to its links (killing non-trapping ones for abnormal reasons,
an `EXIT` message for trapping ones) and to its monitors (a `DOWN` message).
"""

from __future__ import annotations

import asyncio
import contextvars
import difflib
import functools
import itertools
import logging
from collections.abc import Callable, Coroutine
from types import CoroutineType
from typing import Any, NamedTuple

from ..errors import ArgumentError
from .proc import DEAD, EXITING, Process, ProcessFn
from .remote import Peers, Remote
from .types import (
    DOWN,
    EXIT,
    KILL,
    KILLED,
    NOPROC,
    NORMAL,
    SHUTDOWN,
    Down,
    Exit,
    ExitReason,
    Message,
    Pid,
    ProcessError,
    Ref,
    describe,
)

log = logging.getLogger("wippy_agents.process")

_new_tuple = tuple.__new__  # builds a Pid or Message without NamedTuple's Python-level __new__

current_process: contextvars.ContextVar[Process] = contextvars.ContextVar("wippy_current_process")

Dest = Pid | str
ProcessResolver = Callable[[str], ProcessFn]
"""Turns a registry id such as `app.workers:handler` into a process function (the app hands one in)."""
HostResolver = Callable[[str], "str | None"]
"""Where the entry behind a registry id says it runs, if it says (the app hands one in)."""


class ProcessInfo(NamedTuple):
    """A snapshot of one live process, for `node.processes()` (the TUI's process view)."""

    pid: Pid
    name: str | None
    supervisor: Pid | None
    status: str  # "running", "waiting" (blocked in receive) or "exiting"
    mailbox: int
    restarts: int
    function: str


class Node:
    """Hosts many processes on one asyncio event loop.

    Use it as an async context manager (`async with Node() as node:`): leaving
    the block shuts every process down, supervisors first asked politely.
    """

    def __init__(self, name: str = "local", *, shutdown_timeout: float = 5.0,
                 process_resolver: ProcessResolver | None = None, host_resolver: HostResolver | None = None,
                 peers: Peers | None = None, first_id: int = 1) -> None:
        self.name = name
        self.shutdown_timeout = shutdown_timeout
        self.table: dict[Pid, Process] = {}
        self.names: dict[str, Process] = {}
        self.process_resolver = process_resolver
        """Turns a registry id such as `app.workers:handler` into a process function."""
        self.host_resolver = host_resolver
        self.remote = None if peers is None else Remote(self, peers)
        """The other nodes of a cluster, reached through `peers` (None: this node is on its own)."""
        if peers is not None and self.remote is not None:
            peers.bind(self.remote)
        self._ids = itertools.count(first_id)  # a node that starts again under its name starts past its old pids
        self._refs = itertools.count(1)
        self._calls: dict[Ref, asyncio.Future[Any]] = {}
        self._deadlines: dict[Ref, tuple[float, Pid, str, float]] = {}  # call ref -> deadline, callee, topic, timeout
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"Node({self.name!r}, processes={len(self.table)})"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def __aenter__(self) -> Node:
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def new_ref(self) -> Ref:
        """A reference unique on this node (for monitors, calls and subscriptions)."""
        return next(self._refs)

    def current(self) -> Process | None:
        """The process of this node whose code is running, if any."""
        proc = current_process.get(None)
        return proc if proc is not None and proc.node is self else None

    def call_future(self, ref: Ref) -> asyncio.Future[Any] | None:
        """The future a `call` with `ref` waits on (a reply from another node resolves it)."""
        return self._calls.get(ref)

    def _elsewhere(self, dest: Dest) -> Pid | None:
        """`dest`'s pid when it is a process on another node of the cluster (a pid, or a name only a peer has)."""
        remote = self.remote
        if remote is None:
            return None
        if isinstance(dest, Pid):
            return dest if dest.node != self.name else None
        return remote.whereis(dest) if isinstance(dest, str) and dest not in self.names else None

    # -- starting processes ---------------------------------------------------

    def host(self, host: str | None) -> str | None:
        """The other node `host` names (`"any"`: this one or a peer, at random); None for this node."""
        if host is None or host == self.name:
            return None
        peers = [] if self.remote is None else self.remote.peers.nodes()
        if host == "any":
            chosen = self.name if self.remote is None else self.remote.pick()
            return None if chosen == self.name else chosen
        if host not in peers:
            hosts = ", ".join(repr(name) for name in [self.name, *peers, "any"])
            raise ProcessError(f"cannot spawn on host {host!r}: the hosts are {hosts}")
        return host

    def spawn_from(self, parent: Process | None, target: ProcessFn | str, args: tuple[Any, ...], *,
                   name: str | None = None, host: str | None = None, link: bool = False) -> Pid:
        """Start `target(*args)` on `host` (see `host`; an entry's own `host` by default), linked to `parent` when
        `link`; its pid."""
        if host is None and isinstance(target, str) and self.host_resolver is not None:
            host = self.host_resolver(target)
        elsewhere = self.host(host)
        if elsewhere is None:
            return self.start(self.resolve(target), args, parent=parent, link=link, name=name).pid
        assert self.remote is not None
        linked = parent if link else None
        pid = self.remote.spawn(elsewhere, target, args, name=name, link_to=None if linked is None else linked.pid)
        if linked is not None:
            linked.add_link(pid)
        return pid

    def resolve(self, target: ProcessFn | str) -> ProcessFn:
        """The function to run: `target` itself, or what the registry id `target` names."""
        if not isinstance(target, str):
            return target
        if self.process_resolver is None:
            raise ProcessError(
                f"cannot spawn {target!r}: this node has no registry to look process entries up in; "
                "run it in an App or pass a function instead"
            )
        return self.process_resolver(target)

    def start(
        self,
        fn: ProcessFn,
        args: tuple[Any, ...] = (),
        *,
        parent: Process | None = None,
        link: bool = False,
        name: str | None = None,
        supervisor: Pid | None = None,
        restarts: int = 0,
        pid: Pid | None = None,
    ) -> Process:
        """Create a process running `fn(*args)`; linked to `parent` when `link`; `pid` as another node chose it."""
        if name is not None:
            self._check_name_free(name)
        coro = fn(*args)
        if coro.__class__ is not CoroutineType and not asyncio.iscoroutine(coro):
            raise ArgumentError(f"a process runs an async function; {_qualname(fn)} returned {type(coro).__name__}")
        if pid is None:
            pid = _new_tuple(Pid, (self.name, next(self._ids)))
        proc = Process(self, pid, fn)
        proc.supervisor = supervisor
        proc.restarts = restarts
        if name is not None:
            proc.name = name
            self.names[name] = proc
            if self.remote is not None:
                self.remote.names_changed()
        self.table[pid] = proc
        if link and parent is not None:
            proc.add_link(parent.pid)
            parent.add_link(pid)
        proc.task = self.loop.create_task(self._main(proc, coro))
        return proc

    async def _main(self, proc: Process, coro: Coroutine[Any, Any, Any]) -> None:
        """A process's task: run its function, then carry its exit out (links, monitors, names)."""
        current_process.set(proc)
        proc.started = True
        reason: ExitReason = KILLED
        try:
            if proc.exit_reason is None:
                proc.result = await coro
                reason = NORMAL
            else:
                coro.close()  # doomed before it ever ran
        except asyncio.CancelledError:
            pass
        except Exception as error:
            reason = error
            if proc.exit_reason is None:
                self._log_crash(proc, error)
        except BaseException as error:  # KeyboardInterrupt, SystemExit: record, then let them through
            reason = error
            raise
        finally:
            self._finalize(proc, reason if proc.exit_reason is None else proc.exit_reason)

    def spawn(self, target: ProcessFn | str, *args: Any, name: str | None = None, host: str | None = None) -> Pid:
        """Start a process from outside any process (the CLI, the TUI, tests)."""
        return self.spawn_from(None, target, args, name=name, host=host)

    async def run(self, target: ProcessFn | str, *args: Any, name: str | None = None) -> Any:
        """Run `target` as a process on this node and return its result, or raise what it raised."""
        proc = self.start(self.resolve(target), args, name=name)
        try:
            reason = await proc.wait_exit()
        except asyncio.CancelledError:
            self.doom(proc, KILLED)
            raise
        if reason == NORMAL:
            return proc.result
        if isinstance(reason, BaseException):
            raise reason
        raise ProcessError(f"process {proc.pid} exited with reason {reason!r}")

    # -- names ------------------------------------------------------------------

    def _check_name_free(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ProcessError(f"a registered name must be a non-empty string, not {name!r}")
        holder = self.names.get(name)
        if holder is not None:
            raise ProcessError(f"cannot register {name!r}: the name is already registered to {holder.pid}")

    def register(self, proc: Process, name: str) -> None:
        if proc.name is not None:
            raise ProcessError(f"{proc.pid} is already registered as {proc.name!r}; a process has one name")
        self._check_name_free(name)
        proc.name = name
        self.names[name] = proc
        if self.remote is not None:
            self.remote.names_changed()

    def whereis(self, name: str) -> Pid | None:
        """The pid registered as `name` here, else on another node; None if no node has it."""
        proc = self.names.get(name)
        if proc is not None:
            return proc.pid
        return None if self.remote is None else self.remote.whereis(name)

    def lookup(self, dest: Dest) -> Process | None:
        """The process behind a pid (None when it has exited) or a registered name."""
        if isinstance(dest, Pid):
            return self.table.get(dest)
        if isinstance(dest, str):
            proc = self.names.get(dest)
            if proc is None:
                close = difflib.get_close_matches(dest, list(self.names), n=3)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                raise ProcessError(f"no process is registered as {dest!r}{hint}")
            return proc
        raise ArgumentError(f"a destination is a Pid or a registered name, not {type(dest).__name__}")

    # -- messages ----------------------------------------------------------------

    def send(self, dest: Dest, topic: str, payload: Any = None, *, sender: Pid | None = None) -> None:
        if (elsewhere := self._elsewhere(dest)) is not None:
            assert self.remote is not None
            self.remote.send(elsewhere, Message(topic, payload, sender, None))
            return
        target = self.lookup(dest)
        if target is not None:
            target.deliver(Message(topic, payload, sender, None))

    async def call(
        self, dest: Dest, topic: str, payload: Any = None, timeout: float | None = 5.0, *, caller: Process | None = None
    ) -> Any:
        ref = next(self._refs)
        loop = self.loop
        future: asyncio.Future[Any] = loop.create_future()
        target = None
        if (elsewhere := self._elsewhere(dest)) is not None:
            assert self.remote is not None
            self._calls[ref] = future
            sender = caller.pid if caller is not None else Pid(self.name, 0)  # the node's address for the reply
            self.remote.call(elsewhere, Message(topic, payload, sender, ref))
            callee = elsewhere
        else:
            target = self.lookup(dest)
            if target is None or target.exit_reason is not None:
                raise ProcessError(f"call {topic!r} to {dest} failed: the process is not alive")
            if target is caller:
                raise ProcessError(f"{target.pid} called itself with {topic!r}; that would wait forever")
            self._calls[ref] = future
            if target.calls is None:
                target.calls = set()
            target.calls.add(ref)
            target.deliver(_new_tuple(Message, (topic, payload, None if caller is None else caller.pid, ref)))
            callee = target.pid
        if timeout is not None:
            deadline = loop.time() + timeout
            self._deadlines[ref] = (deadline, callee, topic, timeout)
            if self._sweeper is None or deadline < self._sweeper.when():
                self._arm_sweeper(deadline)
        try:
            return await future
        finally:
            del self._calls[ref]
            if target is None:
                assert self.remote is not None
                self.remote.calls.pop(ref, None)
            elif target.calls is not None:
                target.calls.discard(ref)
            if timeout is not None:
                del self._deadlines[ref]
                if not self._deadlines and self._sweeper is not None:
                    self._sweeper.cancel()
                    self._sweeper = None

    def _arm_sweeper(self, when: float) -> None:
        """One timer for every call's timeout, set for the earliest deadline (a timer per call costs a third)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweeper = self.loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        for ref, (deadline, pid, topic, timeout) in self._deadlines.items():
            future = self._calls[ref]
            if deadline <= now and not future.done():
                future.set_exception(TimeoutError(f"call {topic!r} to {pid} got no reply within {timeout:g}s"))
        pending = [deadline for ref, (deadline, *_) in self._deadlines.items() if not self._calls[ref].done()]
        if pending:
            self._arm_sweeper(min(pending))

    def reply(self, msg: Message, value: Any) -> None:
        if msg.ref is None:
            raise ProcessError(
                f"cannot reply to the {msg.topic!r} message: it was sent with send(), not call(), so nobody waits"
            )
        if self.remote is not None and msg.sender is not None and msg.sender.node != self.name:
            self.remote.reply(msg, value)
            return
        future = self._calls.get(msg.ref)
        if future is not None and not future.done():
            future.set_result(value)

    # -- links, monitors, exit signals ---------------------------------------------

    def link(self, proc: Process, pid: Pid) -> None:
        if pid == proc.pid:
            return
        if self.remote is not None and pid.node != self.name:
            self.remote.link(proc, pid)
            return
        target = self.table.get(pid)
        if target is None or target.status == DEAD:
            self.signal(proc, pid, NOPROC)
            return
        proc.add_link(pid)
        target.add_link(proc.pid)

    def unlink(self, proc: Process, pid: Pid) -> None:
        if proc.links is not None:
            proc.links.discard(pid)
        if self.remote is not None and pid.node != self.name:
            self.remote.unlink(proc, pid)
            return
        target = self.table.get(pid)
        if target is not None and target.links is not None:
            target.links.discard(proc.pid)

    def monitor(self, proc: Process, dest: Dest) -> Ref:
        ref = next(self._refs)
        if (elsewhere := self._elsewhere(dest)) is not None:
            assert self.remote is not None
            self.remote.monitor(proc, elsewhere, ref)
            return ref
        target = self.lookup(dest)
        if target is None:
            assert isinstance(dest, Pid)
            proc.deliver(Message(DOWN, Down(ref, dest, NOPROC), dest))
        else:
            target.add_watcher(ref, proc.pid)
            proc.add_monitor(ref, target.pid)
        return ref

    def demonitor(self, proc: Process, ref: Ref, flush: bool = False) -> None:
        pid = proc.monitors.pop(ref, None) if proc.monitors is not None else None
        if self.remote is not None and pid is not None and pid.node != self.name:
            self.remote.demonitor(ref, pid)
        target = None if pid is None else self.table.get(pid)
        if target is not None and target.watchers is not None:
            target.watchers.pop(ref, None)
        if flush:
            proc.drop(lambda m: m.topic == DOWN and m.payload.ref == ref)

    def exit(self, sender: Pid | None, dest: Dest, reason: ExitReason) -> None:
        """Send an exit signal: `"kill"` cannot be trapped; others follow the link rules."""
        if (elsewhere := self._elsewhere(dest)) is not None:
            assert self.remote is not None
            self.remote.exit(sender, elsewhere, reason)
            return
        target = self.lookup(dest)
        if target is None:
            return
        if reason == KILL:
            self.doom(target, KILLED)
        else:
            self.signal(target, sender, reason)

    def signal(self, target: Process, sender: Pid | None, reason: ExitReason) -> None:
        if target.trap_exits:
            target.deliver(Message(EXIT, Exit(sender, reason), sender))
        elif reason != NORMAL:
            self.doom(target, reason)

    def doom(self, proc: Process, reason: ExitReason) -> None:
        """Make `proc` exit with `reason`: its task is cancelled and the reason stands.

        A process that swallows the cancellation is cancelled again by a later
        kill, which then becomes its reason: `"kill"` always wins.
        """
        if proc.exit_reason is not None and (reason != KILLED or proc.status == DEAD):
            return
        proc.exit_reason = reason
        proc.status = EXITING
        if proc.task is not None and proc.started:  # one not yet started sees its reason when it starts
            proc.task.cancel()

    def _finalize(self, proc: Process, reason: ExitReason) -> None:
        """Tell everyone the process is gone: callers, monitors, links, waiters."""
        if proc.status == DEAD:
            return  # abandoned earlier by `kill`
        proc.exit_reason = reason
        proc.status = DEAD
        proc.mailbox = None
        pid = proc.pid
        del self.table[pid]
        remote = self.remote
        if proc.name is not None and self.names.get(proc.name) is proc:
            del self.names[proc.name]
            if remote is not None:
                remote.names_changed()
        if proc.calls:
            for ref in proc.calls:
                if isinstance(ref, tuple):  # a call from another node
                    assert remote is not None
                    remote.failed_call(ref, pid, reason)
                    continue
                future = self._calls.get(ref)
                if future is not None and not future.done():
                    future.set_exception(
                        ProcessError(f"{pid} exited with reason {describe(reason)!r} before it replied")
                    )
        if proc.monitors:
            for ref, watched in proc.monitors.items():
                if remote is not None and watched.node != self.name:
                    remote.demonitor(ref, watched)
                    continue
                target = self.table.get(watched)
                if target is not None and target.watchers is not None:
                    target.watchers.pop(ref, None)
        if proc.links:
            for linked in proc.links:
                if remote is not None and linked.node != self.name:
                    remote.exit(pid, linked, reason, linked=True)
                    continue
                target = self.table.get(linked)
                if target is not None:
                    if target.links is not None:
                        target.links.discard(pid)
                    self.signal(target, pid, reason)
        if proc.watchers:
            for key, watcher in proc.watchers.items():
                if isinstance(key, tuple):  # a monitor from another node
                    assert remote is not None
                    remote.down(key, pid, watcher, reason)
                    continue
                target = self.table.get(watcher)
                if target is not None:
                    if target.monitors is not None:
                        target.monitors.pop(key, None)
                    target.deliver(Message(DOWN, Down(key, pid, reason), pid))
        if proc.exit_waiters:
            for future in proc.exit_waiters:
                if not future.done():
                    future.set_result(reason)

    @staticmethod
    def _log_crash(proc: Process, error: BaseException) -> None:
        named = f" ({proc.name})" if proc.name else ""
        log.error(
            "process %s%s running %s crashed: %s",
            proc.pid,
            named,
            _qualname(proc.fn),
            describe(error),
            exc_info=(type(error), error, error.__traceback__),
        )

    # -- introspection and shutdown --------------------------------------------------

    def processes(self) -> list[ProcessInfo]:
        """Every live process, oldest first."""
        return [
            ProcessInfo(
                pid=proc.pid,
                name=proc.name,
                supervisor=proc.supervisor,
                status=proc.status,
                mailbox=len(proc.mailbox) if proc.mailbox else 0,
                restarts=proc.restarts,
                function=_qualname(proc.fn),
            )
            for proc in self.table.values()
        ]

    async def kill(self, procs: list[Process], grace: float = 1.0) -> None:
        """Kill processes and wait for them to end.

        asyncio cannot force a task to stop: one that swallows `CancelledError`
        for `grace` seconds is abandoned (its links and monitors are told it was
        killed) and logged as an error, so shutdown never hangs on it.
        """
        procs = [proc for proc in procs if proc.status != DEAD]
        if not procs:
            return
        waits = [proc.wait_exit() for proc in procs]
        for proc in procs:
            self.doom(proc, KILLED)
        await asyncio.wait(waits, timeout=grace)
        for proc in procs:
            if proc.status != DEAD:
                log.error("process %s ignored its kill for %gs (it swallows CancelledError); abandoning it",
                          proc.pid, grace)
                self._finalize(proc, KILLED)

    async def stop(self) -> None:
        """Ask every top-level process to shut down; kill what is left after `shutdown_timeout`."""
        if not self.table:
            return
        roots = [proc for proc in reversed(self.table.values()) if proc.supervisor is None]
        waits = [proc.wait_exit() for proc in self.table.values()]
        for proc in roots:
            self.signal(proc, None, SHUTDOWN)
        await asyncio.wait(waits, timeout=self.shutdown_timeout)
        if self.table:
            for proc in self.table.values():
                log.warning("process %s did not shut down within %gs; killing it", proc.pid, self.shutdown_timeout)
            await self.kill(list(self.table.values()))


def _qualname(fn: object) -> str:
    while isinstance(fn, functools.partial):  # a process body with its arguments bound: name the function
        fn = fn.func
    if hasattr(fn, "__qualname__"):
        return f"{getattr(fn, '__module__', '?')}.{fn.__qualname__}"
    return f"{type(fn).__module__}.{type(fn).__qualname__}"
