"""The process tree that `wippy run` prints and the TUI draws.

`walk_tree` and `format_tree` are internal (`_runtime.tree`), the one view of the tree
that the CLI and the TUI share; they are tested here, beside the runtime's other tests,
so that neither front end has to be driven to check the tree's shape.
"""

from wippy_agents import ChildSpec, Node, Supervisor, process
from wippy_agents._runtime.tree import format_tree, walk_tree
from wippy_agents.testing import wait_until


async def worker() -> None:
    await process.receive("never")


async def test_children_appear_under_their_supervisor_in_start_order() -> None:
    inner = Supervisor([ChildSpec("c", worker, name="c")])
    outer = Supervisor([ChildSpec("a", worker, name="a"), ChildSpec("inner", inner, name="inner")])
    async with Node() as node:
        node.spawn(outer, name="top")
        node.spawn(worker, name="loose")
        await wait_until(lambda: node.whereis("c") is not None)  # the last to start, at the bottom of the tree
        rows = [(depth, info.name) for depth, info in walk_tree(node.processes())]
        text = format_tree(node.processes())
    assert rows == [(0, "top"), (1, "a"), (1, "inner"), (2, "c"), (0, "loose")]
    assert text.splitlines()[3].startswith("    <local.") and " c [" in text.splitlines()[3]
