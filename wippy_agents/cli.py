"""The `wippy` command."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from ._runtime.node import Node
from ._runtime.tree import format_tree
from .supervisor import Supervisor

ROOT_SUPERVISOR = "wippy:root"


async def _run(root: Path, once: bool) -> int:
    async with Node() as node:
        node.spawn(Supervisor(), name=ROOT_SUPERVISOR)
        await asyncio.sleep(0)
        print(f"wippy {__version__}: node {node.name!r} running the app in {root}")
        print(format_tree(node.processes()), flush=True)
        if once:
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        print("press Ctrl+C to stop", flush=True)
        await stop.wait()
        print("stopping: shutting processes down", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wippy", description="AI agents as supervised actors.")
    parser.add_argument("--version", action="version", version=f"wippy-agents {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="boot the app and keep it running until Ctrl+C")
    run.add_argument("--root", type=Path, default=Path("."), help="the app folder (default: the current folder)")
    run.add_argument("--once", action="store_true", help="print the process tree and exit")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if not args.root.is_dir():
        print(f"wippy: --root {args.root} is not a folder", file=sys.stderr)
        return 2
    return asyncio.run(_run(args.root.resolve(), args.once))


if __name__ == "__main__":
    sys.exit(main())
