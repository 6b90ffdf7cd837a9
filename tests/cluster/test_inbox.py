"""Ray does not order an async actor's calls: what a peer sent is carried out in the order it was sent."""

from __future__ import annotations

from wippy_agents.cluster._peers import _Inbox


def test_calls_that_arrive_early_wait_for_those_sent_before_them() -> None:
    done: list[int] = []
    inbox = _Inbox("node-1", "node-2", "start-1")
    assert inbox.put(0, lambda: done.append(0))
    assert inbox.put(2, lambda: done.append(2))
    assert inbox.put(3, lambda: done.append(3))
    assert done == [0]  # 2 and 3 wait for 1
    assert inbox.put(1, lambda: done.append(1))
    assert done == [0, 1, 2, 3]


def test_a_node_that_starts_again_takes_up_its_peers_count_and_refuses_a_call_whose_turn_has_passed() -> None:
    done: list[int] = []
    inbox = _Inbox("node-1", "node-2", "start-2")
    assert inbox.put(41, lambda: done.append(41))  # the first call this start sees sets the count
    assert not inbox.put(40, lambda: done.append(40))  # sent before it, arrived after: refused, never run
    assert done == [41]
