"""The supervision tree as nested rows, shared by `wippy run` and the TUI's process view."""

from __future__ import annotations

from collections.abc import Iterator

from .node import ProcessInfo
from .types import Pid


def walk_tree(infos: list[ProcessInfo]) -> Iterator[tuple[int, ProcessInfo]]:
    """Yield `(depth, info)` depth-first: each process after its supervisor, siblings oldest first."""
    children: dict[Pid | None, list[ProcessInfo]] = {}
    known = {info.pid for info in infos}
    for info in infos:
        parent = info.supervisor if info.supervisor in known else None
        children.setdefault(parent, []).append(info)

    def visit(parent: Pid | None, depth: int) -> Iterator[tuple[int, ProcessInfo]]:
        for info in sorted(children.get(parent, ()), key=lambda i: i.pid.id):
            yield depth, info
            yield from visit(info.pid, depth + 1)

    return visit(None, 0)


def format_tree(infos: list[ProcessInfo]) -> str:
    """A plain-text tree: pid, name, function, status, mailbox length and restarts."""
    lines = []
    for depth, info in walk_tree(infos):
        name = f" {info.name}" if info.name else ""
        restarts = f" restarts={info.restarts}" if info.restarts else ""
        lines.append(
            f"{'  ' * depth}{info.pid}{name} [{info.function}] {info.status} mailbox={info.mailbox}{restarts}"
        )
    return "\n".join(lines)
