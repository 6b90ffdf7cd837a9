"""Supervisors: strategies, restart types, restart intensity, backoff, ordered start and shutdown.

Every test runs on the virtual clock: restart windows, backoff delays and
shutdown timeouts are measured in virtual seconds, and a test that deadlocks
fails at its first receive timeout instead of hanging.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from wippy_agents import Node, Pid, process
from wippy_agents.process import DOWN, EXIT
from wippy_agents.supervisor import (
    Backoff,
    ChildSpec,
    Supervisor,
    SupervisorError,
    start_child,
    terminate_child,
    which_children,
)
from wippy_agents.testing import VirtualClock

pytestmark = pytest.mark.virtual_clock

WAIT = 60.0
"""Virtual seconds any receive waits: a lost message fails the test at once instead of hanging it."""


# -- child bodies -------------------------------------------------------------------


async def worker(collector: Pid, tag: str) -> None:
    """Reports `("started", (tag, pid))`; crashes on "crash", returns on "return", answers calls."""
    process.send(collector, "started", (tag, process.self()))
    while True:
        msg = await process.receive()
        if msg.topic == "crash":
            raise RuntimeError(f"{tag} was told to crash")
        if msg.topic == "return":
            return
        if msg.ref is not None:
            process.reply(msg, (tag, msg.payload))


async def trapper(collector: Pid, tag: str, obey: bool = True) -> None:
    """Traps exits and reports each `EXIT` it gets as `("exit", (tag, sender, reason))`; ignores them unless `obey`."""
    process.trap_exits()
    process.send(collector, "started", (tag, process.self()))
    while True:
        signal = (await process.receive(EXIT)).payload
        process.send(collector, "exit", (tag, signal.pid, signal.reason))
        if obey:
            return


class StartsOnce:
    """A process function that works the first time and is not async afterwards (a broken redeploy)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, collector: Pid) -> Coroutine[Any, Any, None] | None:
        self.calls += 1
        return worker(collector, "once") if self.calls == 1 else None


def child(tag: str, collector: Pid, **options: Any) -> ChildSpec:
    return ChildSpec(tag, worker, (collector, tag), **options)


# -- helpers for the test process ------------------------------------------------------


async def started(n: int = 1) -> list[tuple[str, Pid]]:
    """The next `n` children to start, as `(tag, pid)` in the order they started."""
    return [(await process.receive("started", timeout=WAIT)).payload for _ in range(n)]


async def down() -> Any:
    """The reason in the next DOWN message."""
    return (await process.receive(DOWN, timeout=WAIT)).payload.reason


async def pids(sup: Pid) -> dict[str, Pid | None]:
    return {info.id: info.pid for info in await which_children(sup)}


async def nothing_waiting(topic: str) -> bool:
    """True when no message with `topic` is in the mailbox (a receive with timeout 0 never waits)."""
    try:
        await process.receive(topic, timeout=0)
    except TimeoutError:
        return True
    return False


async def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    async with Node() as node:
        return await node.run(main)


# -- strategies --------------------------------------------------------------------------


async def test_one_for_one_restarts_only_the_crashed_child() -> None:
    async def main() -> None:
        me = process.self()
        sup = process.spawn(Supervisor([child("a", me), child("b", me)], strategy="one_for_one"))
        (_, a1), (_, b1) = await started(2)
        process.send(a1, "crash")
        [(tag, a2)] = await started()
        assert tag == "a" and a2 != a1
        assert await pids(sup) == {"a": a2, "b": b1}
        assert await process.call(b1, "ping") == ("b", None)

    await run(main)


async def test_one_for_all_restarts_every_child_in_start_order() -> None:
    async def main() -> None:
        me = process.self()
        sup = process.spawn(Supervisor([child(t, me) for t in "abc"], strategy="one_for_all"))
        before = dict(await started(3))
        process.monitor(before["a"])
        process.monitor(before["c"])
        process.send(before["b"], "crash")
        after = await started(3)
        assert [tag for tag, _ in after] == ["a", "b", "c"]
        assert all(pid != before[tag] for tag, pid in after)
        assert await pids(sup) == dict(after)
        stopped = [(await process.receive(DOWN, timeout=WAIT)).payload for _ in range(2)]
        assert [(d.pid, d.reason) for d in stopped] == [(before["c"], "shutdown"), (before["a"], "shutdown")]

    await run(main)


async def test_rest_for_one_restarts_the_crashed_child_and_those_started_after_it() -> None:
    async def main() -> None:
        me = process.self()
        sup = process.spawn(Supervisor([child(t, me) for t in "abc"], strategy="rest_for_one"))
        before = dict(await started(3))
        process.monitor(before["c"])
        process.send(before["b"], "crash")
        after = await started(2)
        assert [tag for tag, _ in after] == ["b", "c"]
        assert all(pid != before[tag] for tag, pid in after)
        assert await pids(sup) == {"a": before["a"], **dict(after)}
        assert await down() == "shutdown"  # the old c was stopped to be restarted after b

    await run(main)


async def test_rest_for_one_with_backoff_never_restarts_later_children_before_earlier_ones(
    clock: VirtualClock,
) -> None:
    async def main() -> None:
        me = process.self()
        backoff = Backoff(initial=1, multiplier=10, jitter=0)
        specs = [child(t, me) for t in "abc"]
        process.spawn(Supervisor(specs, strategy="rest_for_one", backoff=backoff, max_restarts=10))
        before = dict(await started(3))
        process.send(before["b"], "crash")  # b and c are due back after 1 s ...
        await asyncio.sleep(0.5)
        process.send(before["a"], "crash")  # ... but a's crash puts them behind a, due after 10 s
        after = await started(3)
        assert [tag for tag, _ in after] == ["a", "b", "c"]
        assert clock.now == pytest.approx(10.5)

    await run(main)


async def test_rest_for_one_leaves_a_temporary_child_started_before_the_crash_alone() -> None:
    async def main() -> None:
        me = process.self()
        specs = [child("tmp", me, restart="temporary"), child("a", me), child("b", me)]
        sup = process.spawn(Supervisor(specs, strategy="rest_for_one"))
        before = dict(await started(3))
        process.send(before["a"], "crash")
        await started(2)
        assert (await pids(sup))["tmp"] == before["tmp"]
        # It is still supervised: its own crash removes it and nothing else happens.
        process.monitor(sup)
        process.send(before["tmp"], "crash")
        await asyncio.sleep(1)
        assert list(await pids(sup)) == ["a", "b"]
        assert await nothing_waiting(DOWN) and await nothing_waiting("started")

    await run(main)


# -- restart types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "how", "restarted"),
    [
        ("permanent", "crash", True),
        ("permanent", "return", True),
        ("permanent", "shutdown", True),
        ("transient", "crash", True),
        ("transient", "return", False),
        ("transient", "shutdown", False),
        ("temporary", "crash", False),
        ("temporary", "return", False),
    ],
)
async def test_restart_type_decides_which_exits_are_restarted(restart: str, how: str, restarted: bool) -> None:
    async def main() -> None:
        me = process.self()
        sup = process.spawn(Supervisor([child("c", me, restart=restart)]))
        [(_, first)] = await started()
        process.monitor(first)
        if how == "shutdown":
            process.exit(first, "shutdown")
        else:
            process.send(first, how)
        await down()  # the supervisor got the EXIT before this DOWN, so the call below sees its effect
        children = await pids(sup)
        if restarted:
            [(_, second)] = await started()
            assert children == {"c": second} and second != first
        elif restart == "temporary":
            assert children == {}  # a temporary child is forgotten once it exits
        else:
            assert children == {"c": None}  # a transient child keeps its spec, with no process

    await run(main)


# -- restart intensity -----------------------------------------------------------------------


async def test_fourth_crash_within_max_seconds_stops_the_children_and_fails_the_supervisor() -> None:
    async def main() -> None:
        me = process.self()
        sup = process.spawn(Supervisor([child("a", me), child("b", me)], max_restarts=3, max_seconds=5))
        (_, a), (_, b) = await started(2)
        process.monitor(b)
        process.monitor(sup)
        for _ in range(3):
            process.send(a, "crash")
            [(_, a)] = await started()
            await asyncio.sleep(1)
        assert [info.restarts for info in await which_children(sup)] == [3, 0]
        process.send(a, "crash")  # the fourth crash within 5 s: one too many
        assert await down() == "shutdown"  # b is stopped first ...
        reason = await down()  # ... then the supervisor fails
        assert isinstance(reason, SupervisorError)
        assert "'a'" in str(reason) and "max_restarts=3" in str(reason)
        assert [info.pid for info in node.processes()] == [me]

    async with Node() as node:
        await node.run(main)


async def test_crashes_spread_over_more_than_max_seconds_do_not_escalate(clock: VirtualClock) -> None:
    async def main() -> None:
        me = process.self()
        sup = process.spawn(Supervisor([child("a", me)], max_restarts=3, max_seconds=5))
        process.monitor(sup)
        [(_, a)] = await started()
        for _ in range(6):  # at t = 0, 2, 4, ..., 10: never four within 5 s
            process.send(a, "crash")
            [(_, a)] = await started()
            await asyncio.sleep(2)
        assert clock.now == pytest.approx(12)
        assert [info.restarts for info in await which_children(sup)] == [6]
        assert await nothing_waiting(DOWN)

    await run(main)


async def test_a_nested_supervisor_that_gives_up_is_restarted_by_its_parent() -> None:
    async def main() -> None:
        me = process.self()
        inner = Supervisor([child("w", me)], max_restarts=1, max_seconds=5)
        outer = process.spawn(Supervisor([ChildSpec("inner", inner)], max_restarts=3, max_seconds=5))
        [(_, w)] = await started()
        [inner1] = (await pids(outer)).values()
        process.send(w, "crash")
        [(_, w)] = await started()  # the inner supervisor restarts it once ...
        process.send(w, "crash")  # ... and gives up on the second crash
        [(_, w)] = await started()  # the outer supervisor restarted the inner one, which started w again
        [info] = await which_children(outer)
        assert info.pid not in (None, inner1) and info.restarts == 1
        [w_info] = await which_children(info.pid)
        assert w_info.pid == w and w_info.restarts == 0  # a fresh inner supervisor with a fresh count

    await run(main)


async def test_a_supervisor_counting_per_child_gives_up_on_a_crashing_child_and_keeps_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        me = process.self()
        sup = process.spawn(Supervisor([child("poison", me), child("healthy", me)], max_restarts=2, max_seconds=5,
                                       give_up_on_children=True))
        ((_, poison), (_, healthy)) = await started(2)
        for _ in range(2):  # within its intensity: restarted each time
            process.send(poison, "crash")
            [(_, poison)] = await started()
        process.monitor(poison)
        process.send(poison, "crash")  # the third crash in 5 s: given up on
        await down()
        assert [(info.id, info.pid) for info in await which_children(sup)] == [("healthy", healthy)]
        assert await process.call(healthy, "ping", "still up?") == ("healthy", "still up?")  # it and the supervisor live
        await start_child(sup, child("poison", me))  # a fresh start is a fresh count
        await started()

    await run(main)
    assert "gave up on child 'poison': 3 restarts within 5s exceed max_restarts=2" in caplog.text
    assert "poison was told to crash" in caplog.text


async def test_a_child_that_cannot_be_restarted_escalates_instead_of_looping() -> None:
    starts_once = StartsOnce()

    async def main() -> None:
        me = process.self()
        once = ChildSpec("once", starts_once, (me,))  # type: ignore[arg-type]
        sup = process.spawn(Supervisor([once], max_restarts=3, max_seconds=5))
        process.monitor(sup)
        [(_, pid)] = await started()
        process.send(pid, "crash")
        reason = await down()
        assert isinstance(reason, SupervisorError)
        assert "'once'" in str(reason) and "ArgumentError" in str(reason)

    await run(main)
    assert starts_once.calls == 4  # the first start, then three failed restarts; the fourth failure escalates


async def test_a_child_that_fails_to_start_fails_the_supervisor_and_stops_the_others() -> None:
    def not_async(collector: Pid) -> None:
        return None

    async def main() -> None:
        me = process.self()
        bad = ChildSpec("bad", not_async, (me,))  # type: ignore[arg-type]
        process.spawn_monitor(Supervisor([child("a", me), bad]))
        reason = await down()
        assert isinstance(reason, SupervisorError) and "'bad' failed to start" in str(reason)
        assert [info.pid for info in node.processes()] == [me]  # "a" was stopped again

    async with Node() as node:
        await node.run(main)


# -- backoff -------------------------------------------------------------------------------------


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


async def test_backoff_doubles_the_delay_between_restarts_up_to_its_maximum(clock: VirtualClock) -> None:
    async def main() -> list[float]:
        me = process.self()
        backoff = Backoff(initial=1, multiplier=2, maximum=5, jitter=0)
        sup = process.spawn(Supervisor([child("a", me)], backoff=backoff, max_restarts=10, max_seconds=100))
        times = []
        for n in range(5):
            [(_, a)] = await started()
            times.append(clock.now)
            process.send(a, "crash")
            if n == 1:  # while the child waits 2 s for its restart, the supervisor still answers calls
                await asyncio.sleep(0.5)
                assert await pids(sup) == {"a": None}
        return times

    times = await run(main)
    assert gaps(times) == pytest.approx([1, 2, 4, 5])


async def test_jittered_backoff_stays_within_bounds_and_is_reproducible_with_a_seeded_rng(
    clock: VirtualClock,
) -> None:
    backoff = Backoff(initial=1, multiplier=2, maximum=100, jitter=0.5)

    async def main() -> list[float]:
        me = process.self()
        process.spawn(
            Supervisor([child("a", me)], backoff=backoff, max_restarts=10, max_seconds=100, rng=random.Random(0))
        )
        times = []
        for _ in range(5):
            [(_, a)] = await started()
            times.append(clock.now)
            process.send(a, "crash")
        return times

    delays = gaps(await run(main))
    rng = random.Random(0)
    assert delays == pytest.approx([backoff.delay(n, rng) for n in range(1, 5)])
    for n, delay in enumerate(delays, start=1):
        base = 2 ** (n - 1)
        assert 0.5 * base <= delay <= 1.5 * base
    assert delays != pytest.approx([1, 2, 4, 8])  # the jitter is really applied


async def test_backoff_starts_over_after_a_calm_period(clock: VirtualClock) -> None:
    async def main() -> list[float]:
        me = process.self()
        backoff = Backoff(initial=1, multiplier=2, jitter=0)
        process.spawn(Supervisor([child("a", me)], backoff=backoff, max_restarts=10, max_seconds=10))
        times = []
        for n in range(4):
            [(_, a)] = await started()
            times.append(clock.now)
            if n == 2:
                await asyncio.sleep(20)  # longer than max_seconds without a crash
            process.send(a, "crash")
        return times

    times = await run(main)
    assert gaps(times)[:2] == pytest.approx([1, 2])
    assert times[3] - times[2] == pytest.approx(20 + 1)


def test_backoff_delay_stays_at_its_maximum_however_many_restarts() -> None:
    backoff = Backoff(initial=1.0, multiplier=2.0, maximum=30, jitter=0.1)  # 2.0**4999 overflows a float
    assert 27 <= backoff.delay(5000, random.Random(0)) <= 33


# -- ordered start and shutdown ---------------------------------------------------------------------


async def test_children_start_in_spec_order() -> None:
    async def main() -> None:
        me = process.self()
        sup = process.spawn(Supervisor([child(t, me) for t in "dcba"]))
        order = await started(4)
        assert [tag for tag, _ in order] == ["d", "c", "b", "a"]
        assert [info.id for info in await which_children(sup)] == ["d", "c", "b", "a"]

    await run(main)


async def test_stopping_a_supervisor_shuts_its_children_down_in_reverse_order(clock: VirtualClock) -> None:
    async def main() -> None:
        me = process.self()
        sup = process.spawn(Supervisor([ChildSpec(t, trapper, (me, t)) for t in "abc"]))
        process.monitor(sup)
        await started(3)
        process.exit(sup, "shutdown")
        assert await down() == "shutdown"
        exits = [(await process.receive("exit", timeout=WAIT)).payload for _ in range(3)]
        assert exits == [("c", sup, "shutdown"), ("b", sup, "shutdown"), ("a", sup, "shutdown")]
        assert clock.now == 0  # everyone obeyed at once: no shutdown timeout ran

    await run(main)


@pytest.mark.parametrize("timeout", [2.5, 0])
async def test_a_child_that_ignores_shutdown_is_killed_after_its_shutdown_timeout(
    clock: VirtualClock, timeout: float
) -> None:
    async def main() -> None:
        me = process.self()
        specs = [
            ChildSpec("a", trapper, (me, "a")),
            ChildSpec("stubborn", trapper, (me, "stubborn", False), shutdown=timeout),
        ]
        sup = process.spawn(Supervisor(specs))
        (_, _), (_, stubborn) = await started(2)
        process.monitor(stubborn)
        process.monitor(sup)
        begin = clock.now
        process.exit(sup, "shutdown")
        assert await down() == "killed"  # the stubborn child, stopped first
        assert clock.now - begin == pytest.approx(timeout)
        assert await down() == "shutdown"  # then the supervisor
        exits = [(await process.receive("exit", timeout=WAIT)).payload[0] for _ in range(2 if timeout else 1)]
        assert exits == (["stubborn", "a"] if timeout else ["a"])  # with 0 it is killed without an EXIT

    await run(main)


async def test_node_stop_shuts_supervised_children_down_in_reverse_order(clock: VirtualClock) -> None:
    order: list[str] = []  # written by the children: a collector process would be shut down by the node too

    async def recording(tag: str, collector: Pid) -> None:
        process.trap_exits()
        process.send(collector, "started", (tag, process.self()))
        signal = (await process.receive(EXIT)).payload
        order.append(f"{tag}:{signal.reason}")

    async def main() -> None:
        me = process.self()
        specs = [
            ChildSpec("a", recording, ("a", me)),
            child("done", me, restart="transient"),  # finishes normally and is not restarted
            ChildSpec("b", recording, ("b", me)),
        ]
        sup = process.spawn(Supervisor(specs))
        started_ = dict(await started(3))
        process.monitor(started_["done"])
        process.send(started_["done"], "return")
        await down()
        assert await pids(sup) == {"a": started_["a"], "done": None, "b": started_["b"]}

    async with Node() as node:
        await node.run(main)
        begin = clock.now
    assert order == ["b:shutdown", "a:shutdown"]
    assert clock.now == begin  # shut down on request, not killed after the node's shutdown timeout


# -- names and introspection -------------------------------------------------------------------------


async def test_a_registered_name_follows_the_restarted_child() -> None:
    async def main() -> None:
        me = process.self()
        process.spawn(Supervisor([child("w", me, name="worker")]))
        [(_, first)] = await started()
        assert process.whereis("worker") == first
        process.send("worker", "crash")
        [(_, second)] = await started()
        assert process.whereis("worker") == second != first
        assert await process.call("worker", "ping", 1) == ("w", 1)

    await run(main)


async def test_node_processes_show_the_supervisor_and_an_increasing_restart_count() -> None:
    async def main() -> None:
        me = process.self()
        sup = process.spawn(Supervisor([child("w", me, name="worker")]))
        [(_, pid)] = await started()
        for expected in (0, 1, 2):
            [info] = [p for p in node.processes() if p.pid == pid]
            assert (info.name, info.supervisor, info.restarts) == ("worker", sup, expected)
            if expected < 2:
                process.send(pid, "crash")
                [(_, pid)] = await started()
        [sup_info] = [p for p in node.processes() if p.pid == sup]
        assert sup_info.supervisor is None and sup_info.status == "waiting"

    async with Node() as node:
        await node.run(main)


# -- the supervisor's API -------------------------------------------------------------------------------


async def test_start_child_terminate_child_and_which_children() -> None:
    async def main() -> None:
        me = process.self()
        sup = process.spawn(Supervisor([child("a", me)]))
        [(_, a)] = await started()
        b = await start_child(sup, child("b", me, restart="transient"))
        assert await started() == [("b", b)]
        assert [(i.id, i.pid, i.restart, i.restarts) for i in await which_children(sup)] == [
            ("a", a, "permanent", 0),
            ("b", b, "transient", 0),
        ]
        with pytest.raises(SupervisorError, match="'a' already exists"):
            await start_child(sup, child("a", me))
        process.monitor(a)
        await terminate_child(sup, "a")
        assert await down() == "shutdown"
        assert await pids(sup) == {"b": b}  # terminated and forgotten, not restarted
        with pytest.raises(SupervisorError, match="no child with id 'a'"):
            await terminate_child(sup, "a")
        bad = ChildSpec("bad", lambda: None)  # type: ignore[arg-type,return-value]
        with pytest.raises(SupervisorError, match="child 'bad' failed to start: ArgumentError"):
            await start_child(sup, bad)
        assert list(await pids(sup)) == ["b"]

    await run(main)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ChildSpec("", worker), "id must be a non-empty string"),
        (
            lambda: ChildSpec("c", worker, restart="sometimes"),  # type: ignore[arg-type]
            "restart must be one of permanent, transient, temporary, not 'sometimes'",
        ),
        (lambda: ChildSpec("c", worker, shutdown=-1), "shutdown .* cannot be negative"),
        (
            lambda: Supervisor(strategy="one_for_some"),  # type: ignore[arg-type]
            "strategy must be one of one_for_one, one_for_all, rest_for_one, not 'one_for_some'",
        ),
        (lambda: Supervisor(max_restarts=-1), "max_restarts"),
        (lambda: Supervisor(max_seconds=0), "max_seconds"),
        (lambda: Supervisor(strategy="one_for_all", give_up_on_children=True), "only one_for_one"),
        (lambda: ChildSpec("c", 42), "fn must be an async function or a registry id"),  # type: ignore[arg-type]
        (lambda: ChildSpec("c", worker, name=""), "name must be a non-empty string"),
        (lambda: Supervisor([ChildSpec("c", worker), ChildSpec("c", worker)]), "share the id 'c'"),
        (lambda: Supervisor([worker]), "children must be ChildSpec objects"),  # type: ignore[list-item]
        (lambda: Backoff(multiplier=0.5), "multiplier must be >= 1"),
        (lambda: Backoff(jitter=1.5), "jitter is a fraction of the delay between 0 and 1"),
        (lambda: Backoff(initial=-1), "cannot be negative"),
    ],
)
def test_invalid_specs_are_rejected_with_a_clear_message(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()
