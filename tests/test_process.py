"""The process API, one Erlang rule per test."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from wippy_agents import Node, Pid, ProcessError, UsageError, process
from wippy_agents.process import DOWN, EXIT, Message
from wippy_agents.testing import wait_until


async def echo() -> str:
    while True:
        msg = await process.receive()
        if msg.topic == "stop":
            return "done"
        process.reply(msg, msg.payload)


async def idle() -> None:
    await process.receive(topic="never")


async def crash(error: BaseException) -> None:
    raise error


async def returns(value: Any) -> Any:
    return value


async def test_design_example_runs() -> None:
    async def main() -> Any:
        pid = process.spawn(echo)
        assert await process.call(pid, "ping", 42, timeout=1.0) == 42
        process.monitor(pid)
        process.send(pid, "stop")
        down = await process.receive(topic=process.DOWN, timeout=1.0)
        return down.payload.reason

    async with Node() as node:
        assert await node.run(main) == "normal"


async def test_run_returns_result_and_raises_the_process_exception() -> None:
    async with Node() as node:
        assert await node.run(returns, 7) == 7
        with pytest.raises(KeyError, match="missing"):
            await node.run(crash, KeyError("missing"))


# -- messages -------------------------------------------------------------------


async def test_messages_between_one_pair_arrive_in_order() -> None:
    async def consumer(parent: Pid, n: int) -> None:
        process.send(parent, "got", [(await process.receive()).payload for _ in range(n)])

    async def main() -> list[int]:
        pid = process.spawn(consumer, process.self(), 1000)
        for i in range(1000):
            process.send(pid, "n", i)
        return (await process.receive("got")).payload

    async with Node() as node:
        assert await node.run(main) == list(range(1000))


async def test_message_carries_topic_payload_and_sender() -> None:
    async def main() -> Message:
        me = process.self()
        process.spawn(lambda: _send_to(me))
        return await process.receive()

    async with Node() as node:
        msg = await node.run(main)
    assert msg.topic == "hello" and msg.payload == {"x": 1} and isinstance(msg.sender, Pid) and msg.ref is None


async def _send_to(dest: Pid) -> None:
    process.send(dest, "hello", {"x": 1})


async def test_selective_receive_leaves_other_messages_in_order() -> None:
    async def main() -> list[str]:
        me = process.self()
        for topic in ("a", "b", "c", "b"):
            process.send(me, topic, topic)
        first_c = await process.receive("c")
        rest = [(await process.receive()).topic for _ in range(3)]
        return [first_c.topic, *rest]

    async with Node() as node:
        assert await node.run(main) == ["c", "a", "b", "b"]


async def test_selective_receive_waits_past_non_matching_messages() -> None:
    async def main() -> tuple[str, int]:
        me = process.self()

        async def sender() -> None:
            process.send(me, "noise")
            await asyncio.sleep(0)
            process.send(me, "wanted", 1)

        process.spawn(sender)
        wanted = await process.receive("wanted")
        noise = await process.receive(timeout=0)
        return noise.topic, wanted.payload

    async with Node() as node:
        assert await node.run(main) == ("noise", 1)


@pytest.mark.virtual_clock
async def test_receive_timeout_raises_timeout_error_naming_the_topic(clock: Any) -> None:
    async def main() -> None:
        await process.receive("reply", timeout=2.5)

    async with Node() as node:
        with pytest.raises(TimeoutError, match="2.5s.*'reply'"):
            await node.run(main)
    assert clock.now == pytest.approx(2.5)


async def test_receive_with_zero_timeout_polls() -> None:
    async def main() -> str:
        process.send(process.self(), "ready")
        assert (await process.receive(timeout=0)).topic == "ready"
        try:
            await process.receive(timeout=0)
        except TimeoutError:
            return "empty"
        return "unexpected"

    async with Node() as node:
        assert await node.run(main) == "empty"


async def test_message_handed_to_a_cancelled_receive_is_not_lost() -> None:
    async def main() -> str:
        me = process.self()
        waiting = asyncio.ensure_future(process.receive())
        await asyncio.sleep(0)
        process.send(me, "kept")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return (await process.receive(timeout=0)).topic

    async with Node() as node:
        assert await node.run(main) == "kept"


async def test_send_to_a_dead_pid_is_a_no_op_and_to_an_unknown_name_an_error() -> None:
    async def main() -> None:
        pid, _ = process.spawn_monitor(returns, None)
        await process.receive(DOWN)
        process.send(pid, "anyone?")
        with pytest.raises(ProcessError, match="no process is registered as 'ghost'"):
            process.send("ghost", "boo")

    async with Node() as node:
        await node.run(main)


# -- call / reply -----------------------------------------------------------------


async def test_call_to_a_dead_pid_raises_process_error_naming_it() -> None:
    async def main() -> None:
        pid, _ = process.spawn_monitor(returns, None)
        await process.receive(DOWN)
        with pytest.raises(ProcessError, match=f"to {pid!r}.*not alive"):
            await process.call(pid, "ping")

    async with Node() as node:
        await node.run(main)


async def test_call_fails_when_the_callee_dies_before_replying() -> None:
    async def dies_on_request() -> None:
        await process.receive()
        raise RuntimeError("boom")

    async def main() -> None:
        pid = process.spawn(dies_on_request)
        with pytest.raises(ProcessError, match=f"{pid!r} exited with reason 'RuntimeError: boom'"):
            await process.call(pid, "ping")

    async with Node() as node:
        await node.run(main)


@pytest.mark.virtual_clock
async def test_call_times_out_and_a_late_reply_is_ignored(clock: Any) -> None:
    async def slow() -> None:
        msg = await process.receive()
        await asyncio.sleep(10)
        process.reply(msg, "late")
        await process.receive()

    async def main() -> str:
        pid = process.spawn(slow, name="slow")
        with pytest.raises(TimeoutError, match="'ask' to .* no reply within 3s"):
            await process.call("slow", "ask", timeout=3)
        assert clock.now == pytest.approx(3)
        await asyncio.sleep(10)
        process.send(pid, "stop")
        with pytest.raises(TimeoutError):
            await process.receive(timeout=0)
        return "ok"

    async with Node() as node:
        assert await node.run(main) == "ok"


async def test_reply_to_a_plain_send_is_a_clear_error() -> None:
    async def main() -> None:
        process.send(process.self(), "note")
        msg = await process.receive()
        with pytest.raises(ProcessError, match="sent with send"):
            process.reply(msg, 1)

    async with Node() as node:
        await node.run(main)


async def test_call_from_outside_a_process_via_the_node() -> None:
    async with Node() as node:
        pid = node.spawn(echo)
        assert await node.call(pid, "ping", "pong") == "pong"


# -- monitors ---------------------------------------------------------------------


async def test_down_reasons_normal_exception_and_killed() -> None:
    async def main() -> list[Any]:
        reasons = []
        for fn, args in ((returns, (1,)), (crash, (ValueError("bad"),)), (idle, ())):
            pid, ref = process.spawn_monitor(fn, *args)
            if fn is idle:
                process.exit(pid, "kill")
            down = await process.receive(DOWN)
            assert down.payload.ref == ref and down.payload.pid == pid
            reasons.append(down.payload.reason)
        return reasons

    async with Node() as node:
        normal, error, killed = await node.run(main)
    assert normal == "normal"
    assert isinstance(error, ValueError) and str(error) == "bad"
    assert killed == "killed"


async def test_monitor_of_a_dead_pid_fires_at_once_with_noproc() -> None:
    async def main() -> Any:
        pid, _ = process.spawn_monitor(returns, None)
        await process.receive(DOWN)
        ref = process.monitor(pid)
        down = await process.receive(DOWN, timeout=0)
        assert down.payload.ref == ref
        return down.payload.reason

    async with Node() as node:
        assert await node.run(main) == "noproc"


async def test_demonitor_stops_the_down_message_and_flush_drops_one_already_queued() -> None:
    async def main() -> None:
        pid = process.spawn(idle)
        stopped = process.monitor(pid)
        process.demonitor(stopped)
        witness = process.monitor(pid)
        process.exit(pid, "kill")
        assert (await process.receive(DOWN)).payload.ref == witness  # pid is gone: any DOWN for `stopped` is queued

        flushed, first = process.spawn_monitor(returns, None)
        queued = process.monitor(flushed)
        assert (await process.receive(DOWN)).payload.ref == first  # the DOWN for `queued` is in the mailbox now
        process.demonitor(queued, flush=True)
        with pytest.raises(TimeoutError):
            await process.receive(DOWN, timeout=0)

    async with Node() as node:
        await node.run(main)


# -- links -------------------------------------------------------------------------


async def test_abnormal_exit_kills_linked_processes_both_ways() -> None:
    async def linked_waiter(parent: Pid, peer: Pid) -> None:
        process.link(peer)
        process.send(parent, "linked")
        await process.receive("never")

    async def main() -> list[Any]:
        crasher = process.spawn(idle)
        a, _ = process.spawn_monitor(linked_waiter, process.self(), crasher)
        await process.receive("linked")
        process.exit(crasher, ValueError("link test"))  # crasher dies with this reason
        down = await process.receive(DOWN)
        assert down.payload.pid == a
        # the other direction: the linker dies and takes the linked one along
        b = process.spawn(idle)
        c, _ = process.spawn_monitor(linked_waiter, process.self(), b)
        process.monitor(b)
        await process.receive("linked")
        process.exit(c, "boom")
        downs = {(await process.receive(DOWN)).payload.pid for _ in range(2)}
        assert downs == {b, c}
        return [down.payload.reason]

    async with Node() as node:
        [reason] = await node.run(main)
    assert isinstance(reason, ValueError)


async def test_normal_exit_does_not_kill_linked_processes() -> None:
    async def main() -> str:
        pid = process.spawn_link(returns, None)
        process.monitor(pid)
        await process.receive(DOWN)  # its exit signal was carried out before this DOWN was sent
        return "alive"

    async with Node() as node:
        assert await node.run(main) == "alive"


async def test_trapping_process_gets_exit_messages_instead_of_dying() -> None:
    async def main() -> list[Any]:
        process.trap_exits()
        crashing = process.spawn_link(crash, RuntimeError("child failed"))
        normal = process.spawn_link(returns, 1)
        got = {}
        for _ in range(2):
            msg = await process.receive(EXIT)
            got[msg.payload.pid] = msg.payload.reason
        return [got[crashing], got[normal]]

    async with Node() as node:
        error, normal = await node.run(main)
    assert isinstance(error, RuntimeError) and normal == "normal"


async def test_kill_cannot_be_trapped_but_linked_trappers_see_killed() -> None:
    async def trapper(parent: Pid) -> None:
        process.trap_exits()
        process.send(parent, "trapping")
        await process.receive("never")

    async def main() -> Any:
        process.trap_exits()
        pid, _ = process.spawn_monitor(trapper, process.self())
        process.link(pid)
        await process.receive("trapping")
        process.exit(pid, "kill")
        down = await process.receive(DOWN)
        exit_msg = await process.receive(EXIT)
        return down.payload.reason, exit_msg.payload.reason

    async with Node() as node:
        assert await node.run(main) == ("killed", "killed")


async def test_exit_signal_to_a_trapping_process_is_a_message() -> None:
    async def trapper(parent: Pid) -> None:
        process.trap_exits()
        process.send(parent, "trapping")
        msg = await process.receive(EXIT)
        process.send(parent, "got", msg.payload)

    async def main() -> Any:
        pid = process.spawn(trapper, process.self())
        await process.receive("trapping")
        process.exit(pid, "please stop")
        return (await process.receive("got")).payload

    async with Node() as node:
        signal = await node.run(main)
    assert signal.reason == "please stop" and isinstance(signal.pid, Pid)


async def test_exit_normal_is_ignored_by_a_non_trapping_process() -> None:
    async def main() -> Any:
        pid = process.spawn(echo)
        process.exit(pid, "normal")
        return await process.call(pid, "ping", "still here")  # answered: the signal was ignored when it was sent

    async with Node() as node:
        assert await node.run(main) == "still here"


async def test_exit_self_ends_the_caller_at_once_with_that_reason() -> None:
    reached = []

    async def quitter() -> None:
        process.exit(process.self(), "done here")
        reached.append(True)

    async def main() -> Any:
        _, _ = process.spawn_monitor(quitter)
        return (await process.receive(DOWN)).payload.reason

    async with Node() as node:
        assert await node.run(main) == "done here"
    assert reached == []


async def test_linking_a_dead_pid_delivers_noproc() -> None:
    async def main() -> Any:
        pid, _ = process.spawn_monitor(returns, None)
        await process.receive(DOWN)
        process.trap_exits()
        process.link(pid)
        return (await process.receive(EXIT, timeout=0)).payload.reason

    async with Node() as node:
        assert await node.run(main) == "noproc"


async def test_unlink_stops_exit_propagation() -> None:
    async def main() -> str:
        pid = process.spawn_link(idle)
        process.unlink(pid)
        process.monitor(pid)
        process.exit(pid, "boom")
        await process.receive(DOWN)  # had the link stayed, its exit signal would have come before this DOWN
        return "survived"

    async with Node() as node:
        assert await node.run(main) == "survived"


# -- isolation and logging ------------------------------------------------------------


async def test_a_crash_never_disturbs_an_unrelated_process(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> Any:
        survivor = process.spawn(echo)
        for _ in range(3):
            process.spawn_monitor(crash, ZeroDivisionError("division by zero"))
        for _ in range(3):
            await process.receive(DOWN)
        return await process.call(survivor, "ping", "still here")

    async with Node() as node:
        assert await node.run(main) == "still here"


async def test_a_crash_is_logged_with_traceback_and_pid(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> Pid:
        pid, _ = process.spawn_monitor(crash, ZeroDivisionError("division by zero"))
        await process.receive(DOWN)
        return pid

    caplog.set_level(logging.ERROR, logger="wippy_agents.process")
    async with Node() as node:
        pid = await node.run(main)
    [record] = [r for r in caplog.records if r.name == "wippy_agents.process"]
    assert str(pid) in record.getMessage() and "ZeroDivisionError: division by zero" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[2] is not None
    assert "crash" in caplog.text and "Traceback" in caplog.text


# -- names --------------------------------------------------------------------------------


async def test_register_whereis_and_name_freed_on_exit() -> None:
    async def named(parent: Pid) -> None:
        process.register("svc")
        process.send(parent, "registered")
        await echo()

    async def main() -> None:
        assert process.whereis("svc") is None
        pid, _ = process.spawn_monitor(named, process.self())
        await process.receive("registered")
        assert process.whereis("svc") == pid
        assert await process.call("svc", "ping", 1) == 1
        process.send("svc", "stop")
        await process.receive(DOWN)
        assert process.whereis("svc") is None

    async with Node() as node:
        await node.run(main)


async def test_duplicate_names_are_refused_naming_the_holder() -> None:
    async def main() -> None:
        holder = process.spawn(idle, name="only")
        with pytest.raises(ProcessError, match=f"'only'.*already registered to {holder!r}"):
            process.spawn(idle, name="only")
        process.register("me")
        with pytest.raises(ProcessError, match="already registered as 'me'"):
            process.register("again")

    async with Node() as node:
        await node.run(main)


async def test_unknown_name_error_suggests_close_matches() -> None:
    async with Node() as node:
        node.spawn(idle, name="app:worker")
        with pytest.raises(ProcessError, match="did you mean 'app:worker'"):
            await node.call("app:wroker", "ping")


# -- spawning, errors, introspection -------------------------------------------------


async def test_api_outside_a_process_says_how_to_start_one() -> None:
    with pytest.raises(UsageError, match=r"process.receive\(\) must run inside a process.*Node.run"):
        await process.receive()
    with pytest.raises(UsageError, match="process.spawn"):
        process.send(Pid("local", 1), "x")


async def test_spawn_of_a_sync_function_is_refused_clearly() -> None:
    def not_async() -> None:
        return None

    async with Node() as node:
        with pytest.raises(TypeError, match="async function.*not_async"):
            node.spawn(not_async)


async def test_spawn_by_registry_id_passes_every_argument_and_checks_the_host() -> None:
    seen: list[str] = []
    got: list[Any] = []

    async def handler(*args: Any) -> None:
        got.extend(args)

    def resolver(entry_id: str) -> Any:
        seen.append(entry_id)
        return handler

    async with Node() as node:
        with pytest.raises(ProcessError, match="'app.workers:handler'.*no registry"):
            node.spawn("app.workers:handler", 42)
        node.process_resolver = resolver

        async def main() -> Any:
            pid, _ = process.spawn_monitor("app.workers:handler", 42, "arg")
            with pytest.raises(ProcessError, match="cannot spawn on host 'far': the hosts are 'local'"):
                process.spawn("app.workers:handler", host="far")
            process.spawn("app.workers:handler", host="local")
            return (await process.receive(DOWN)).payload.reason

        assert await node.run(main) == "normal"
    assert seen == ["app.workers:handler", "app.workers:handler"] and got[:2] == [42, "arg"]  # nothing lost


async def test_processes_lists_name_status_mailbox_and_supervisor() -> None:
    async def main(node: Node) -> None:
        waiting = process.spawn(idle, name="waiter")
        process.send(waiting, "pending-1")
        process.send(waiting, "pending-2")
        await wait_until(lambda: any(p.pid == waiting and p.status == "waiting" for p in node.processes()))
        info = {p.pid: p for p in node.processes()}
        me = info[process.self()]
        assert me.status == "running" and me.name is None
        waiter = info[waiting]
        assert (waiter.name, waiter.status, waiter.mailbox, waiter.restarts) == ("waiter", "waiting", 2, 0)
        assert waiter.supervisor is None and waiter.function.endswith("idle")

    async with Node() as node:
        await node.run(main, node)
    assert node.processes() == []


async def test_cancelling_node_run_kills_the_process() -> None:
    async with Node() as node:
        task = asyncio.ensure_future(node.run(idle, name="cancel-me"))
        await wait_until(lambda: node.whereis("cancel-me") is not None)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: node.whereis("cancel-me") is None)


@pytest.mark.virtual_clock
async def test_node_stop_shuts_processes_down_and_kills_stragglers(clock: Any) -> None:
    stopped = []

    trapping = asyncio.Semaphore(0)

    async def polite() -> None:
        process.trap_exits()
        trapping.release()
        msg = await process.receive(EXIT)
        stopped.append(msg.payload.reason)

    async def stubborn() -> None:
        process.trap_exits()
        trapping.release()
        while True:
            await process.receive()

    node = Node(shutdown_timeout=2.0)
    async with node:
        node.spawn(polite)
        node.spawn(stubborn)
        node.spawn(idle)
        for _ in range(2):
            await trapping.acquire()
    assert node.processes() == []
    assert stopped == ["shutdown"]
    assert clock.now == pytest.approx(2.0)


@pytest.mark.virtual_clock
async def test_a_process_that_swallows_a_shutdown_is_still_killed(clock: Any) -> None:
    async def cleans_up_slowly(parent: Pid) -> None:
        process.send(parent, "working")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # a cleanup that takes far too long

    async def main() -> Any:
        pid, _ = process.spawn_monitor(cleans_up_slowly, process.self())
        await process.receive("working")
        process.exit(pid, "shutdown")
        with pytest.raises(TimeoutError):
            await process.receive(DOWN, timeout=1)
        process.exit(pid, "kill")
        return (await process.receive(DOWN, timeout=1)).payload.reason

    async with Node() as node:
        assert await node.run(main) == "killed"


@pytest.mark.virtual_clock
async def test_node_stop_abandons_a_process_that_ignores_every_kill(
    clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    running, stop, stopped = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def unkillable() -> None:
        running.set()
        while not stop.is_set():
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                pass
        stopped.set()

    node = Node(shutdown_timeout=2)
    async with node:
        watcher_pid = node.spawn(unkillable)
        await running.wait()
    assert node.processes() == []
    assert f"process {watcher_pid} ignored its kill" in caplog.text
    assert clock.now == pytest.approx(3)  # 2 s to shut down, 1 s of grace after the kill
    stop.set()
    await stopped.wait()  # the abandoned task ends before the test's loop closes


async def test_a_process_killed_before_it_ever_ran_never_runs_and_reports_killed() -> None:
    ran = []

    async def body() -> None:
        ran.append(True)

    async def main() -> Any:
        pid, _ = process.spawn_monitor(body)
        process.exit(pid, "kill")
        return (await process.receive(DOWN)).payload.reason

    async with Node() as node:
        assert await node.run(main) == "killed"
    assert ran == []
