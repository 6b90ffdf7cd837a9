"""Processes on two nodes of one cluster, connected in process: the Erlang rules hold across nodes.

The Ray transport carries the same signals (tests/cluster/test_nodes.py); here each rule is checked fast.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from wippy_agents import Node, Pid, ProcessError, process
from wippy_agents.process import DOWN, EXIT
from wippy_agents.testing import LoopbackCluster, wait_until


async def echo() -> None:
    while True:
        msg = await process.receive()
        if msg.topic == "stop":
            return
        if msg.topic == "crash":
            raise RuntimeError(msg.payload)
        if msg.ref is not None:
            process.reply(msg, msg.payload)
        else:
            process.send(msg.sender, "echoed", msg.payload)


async def named(name: str) -> None:
    process.register(name)
    await echo()


@asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[LoopbackCluster, Node, Node]]:
    cluster = LoopbackCluster()
    async with Node("a", peers=cluster.peers("a")) as a, Node("b", peers=cluster.peers("b")) as b:
        yield cluster, a, b


async def test_messages_to_a_process_on_another_node_arrive_in_order_and_it_answers() -> None:
    async with two_nodes() as (_, a, b):
        far = b.spawn(echo)

        async def main() -> list[Any]:
            for n in range(500):
                process.send(far, "n", n)
            return [(await process.receive("echoed")).payload for _ in range(500)]

        assert await a.run(main) == list(range(500))


async def test_a_call_to_another_node_gets_its_reply_or_fails_when_the_callee_is_gone() -> None:
    async with two_nodes() as (_, a, b):
        far = b.spawn(echo)

        async def main() -> Any:
            assert await process.call(far, "ping", {"x": 1}) == {"x": 1}
            with pytest.raises(ProcessError, match="exited with reason 'RuntimeError: boom' before it replied"):
                await process.call(far, "crash", "boom")
            with pytest.raises(ProcessError, match="the process is not alive"):
                await process.call(far, "ping", 2)
            with pytest.raises(TimeoutError):
                await process.call(b.spawn(_silent), "hang", timeout=0.05)
            return "ok"

        assert await a.run(main) == "ok"
        assert await a.call(b.spawn(echo), "from outside", 7) == 7  # a call from no process gets its reply too


async def _silent() -> None:
    await process.receive("never")


async def test_a_monitor_on_another_node_fires_with_the_reason_or_noproc() -> None:
    async with two_nodes() as (_, a, b):
        far = b.spawn(echo)

        async def main() -> list[Any]:
            ref = process.monitor(far)
            process.send(far, "crash", "down we go")
            down = (await process.receive(DOWN)).payload
            gone = process.monitor(Pid("b", 10**9))
            never = (await process.receive(DOWN)).payload
            return [down.ref == ref, down.pid, str(down.reason), never.ref == gone, never.reason]

        assert await a.run(main) == [True, far, "down we go", True, "noproc"]


async def test_a_demonitored_process_on_another_node_sends_no_down() -> None:
    async with two_nodes() as (_, a, b):
        far = b.spawn(echo)

        async def main() -> bool:
            ref = process.monitor(far)
            process.demonitor(ref)
            process.send(far, "stop")
            await process.call(b.spawn(echo), "sync")  # b has handled both signals once this returns
            with pytest.raises(TimeoutError):
                await process.receive(DOWN, timeout=0.05)
            return True

        assert await a.run(main)


async def test_a_link_across_nodes_carries_an_abnormal_exit_both_ways() -> None:
    async with two_nodes() as (_, a, b):
        far = b.spawn(echo)

        async def trapping() -> Any:
            process.trap_exits()
            process.link(far)
            process.send(far, "crash", "linked")
            return (await process.receive(EXIT)).payload

        exit = await a.run(trapping)
        assert (exit.pid, str(exit.reason)) == (far, "linked")

        async def crashing_here(target: Pid) -> None:
            process.link(target)
            await process.call(target, "sync")  # the link is in place on b
            raise RuntimeError("from a")

        other = b.spawn(echo)
        watcher = b.spawn(_watch, other)
        with pytest.raises(RuntimeError):
            await a.run(crashing_here, other)
        assert await b.call(watcher, "reason") == "RuntimeError: from a"


async def _watch(pid: Pid) -> None:
    process.monitor(pid)
    down = (await process.receive(DOWN)).payload
    msg = await process.receive("reason")
    process.reply(msg, f"{type(down.reason).__name__}: {down.reason}")


async def test_a_link_to_a_missing_process_on_another_node_exits_with_noproc() -> None:
    async with two_nodes() as (_, a, _b):
        async def main() -> Any:
            process.trap_exits()
            process.link(Pid("b", 10**9))
            return (await process.receive(EXIT)).payload.reason

        assert await a.run(main) == "noproc"


async def test_registered_names_are_seen_and_reached_from_every_node() -> None:
    async with two_nodes() as (_, a, b):
        pid = b.spawn(named, "echo")

        async def main() -> Any:
            await wait_until(lambda: process.whereis("echo") is not None)  # b announces its names on its next turn
            assert await process.call("echo", "by name", 3) == 3
            process.send("echo", "stop")
            return process.whereis("echo")

        assert await a.run(main) == pid
        await wait_until(lambda: a.whereis("echo") is None)  # b announces the name gone with its process


async def test_spawning_on_another_node_by_name_or_any() -> None:
    async with two_nodes() as (_, a, b):
        async def main() -> Any:
            far, ref = process.spawn_monitor(_report_node, host="b")
            assert far.node == "b"
            down = (await process.receive(DOWN)).payload
            with pytest.raises(ProcessError, match="cannot spawn on host 'c': the hosts are 'a', 'b', 'any'"):
                process.spawn(_report_node, host="c")
            anywhere = {process.spawn(echo, host="any").node for _ in range(40)}
            return down.ref == ref, down.reason, anywhere

        assert await a.run(main) == (True, "normal", {"a", "b"})


async def _report_node() -> str:
    return process.node().name


async def test_a_lost_node_fires_monitors_breaks_links_and_fails_calls_with_noconnection() -> None:
    async with two_nodes() as (cluster, a, b):
        watched, linked, silent = b.spawn(echo), b.spawn(echo), b.spawn(_silent)
        results: dict[str, Any] = {}

        async def caller() -> None:
            try:
                await process.call(silent, "wait", timeout=None)
            except ProcessError as error:
                results["call"] = str(error)

        async def main() -> None:
            process.trap_exits()
            process.monitor(watched)
            process.link(linked)
            process.spawn(caller)
            await process.call(watched, "sync")
            cluster.lose("b")
            results["down"] = (await process.receive(DOWN)).payload.reason
            results["exit"] = (await process.receive(EXIT)).payload.reason
            await wait_until(lambda: "call" in results)

        await a.run(main)
        assert results == {"down": "noconnection", "exit": "noconnection",
                           "call": "the call's node b was lost (noconnection)"}


async def _collector() -> None:
    seen: list[Any] = []
    while True:
        msg = await process.receive()
        if msg.ref is None:
            seen.append(msg.payload)
        else:
            process.reply(msg, list(seen))


async def test_a_call_arrives_after_the_messages_sent_before_it() -> None:
    async with two_nodes() as (_, a, b):
        far = b.spawn(_collector)

        async def main() -> Any:
            for n in range(3):
                process.send(far, "n", n)
            return await process.call(far, "seen")

        assert await a.run(main) == [0, 1, 2]


async def test_an_entry_that_names_its_host_runs_there_when_spawned_anywhere() -> None:
    cluster = LoopbackCluster()

    def resolve(entry_id: str) -> Any:
        assert entry_id == "app:where"
        return _report_node

    def host_of(entry_id: str) -> str | None:
        return "b" if entry_id == "app:where" else None

    async with Node("a", peers=cluster.peers("a"), process_resolver=resolve, host_resolver=host_of) as a, \
            Node("b", peers=cluster.peers("b"), process_resolver=resolve, host_resolver=host_of):
        async def main() -> Any:
            pid, _ = process.spawn_monitor("app:where")
            here, _ = process.spawn_monitor("app:where", host="a")  # an explicit host wins
            return pid.node, here.node

        assert await a.run(main) == ("b", "a")
