"""The `wippy` command: boot an app, and inspect or change its registry."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from . import __version__
from ._app import App
from ._runtime.node import Node
from ._runtime.tree import format_tree
from ._state import StateFileBusy
from .agents import AgentError, ToolFinished, ToolStarted, TurnDone, TurnFailed
from .llm import ModelError
from .registry import Entry, EntryNotFound, RegistryError


class CommandError(Exception):
    """A user-facing failure: printed as `wippy: <message>`, exit status 1 (2 for usage)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# -- wippy run ----------------------------------------------------------------------


async def _run(root: Path, once: bool) -> None:
    async with Node(root=root) as node:
        await asyncio.sleep(0)
        app = node.app
        assert app is not None
        print(f"wippy {__version__}: node {node.name!r} running the app in {root} "
              f"(registry version {app.registry.version}, {len(app.registry)} entries)")
        for problems in app.registry.problems.values():
            for problem in problems:
                print(f"  refused: {problem}")
        print(format_tree(node.processes()), flush=True)
        if once:
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        print("press Ctrl+C to stop", flush=True)
        await stop.wait()
        print("stopping: shutting processes down", flush=True)


def cmd_run(args: argparse.Namespace) -> None:
    asyncio.run(_run(args.root.resolve(), args.once))


# -- wippy ask ---------------------------------------------------------------------------


async def _ask(args: argparse.Namespace) -> None:
    async with Node(root=args.root) as node:
        conversation = await node.conversation(args.agent, id=args.conversation)
        answer = None
        async for event in conversation.stream(args.message):
            if isinstance(event, ToolStarted):
                print(f"-> {event.tool} {json.dumps(event.arguments)}", file=sys.stderr)
            elif isinstance(event, ToolFinished):
                status = "failed" if event.is_error else "returned"
                print(f"<- {event.tool} {status} in {event.seconds:.2f}s: {_short(event.result)}", file=sys.stderr)
            elif isinstance(event, TurnFailed):
                raise CommandError(f"{args.agent}: {event.error}")
            elif isinstance(event, TurnDone):
                answer = event.answer
        assert answer is not None
        if args.json:
            print(answer.model_dump_json(indent=2))
        else:
            print(answer.text)
        print(f"conversation {answer.conversation}, turn {answer.turn}: {answer.usage.input_tokens} tokens in, "
              f"{answer.usage.output_tokens} out, ${answer.cost_usd:.6f}", file=sys.stderr)


def _short(text: str, limit: int = 200) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cmd_ask(args: argparse.Namespace) -> None:
    asyncio.run(_ask(args))


# -- wippy registry ...----------------------------------------------------------------------


def cmd_registry_list(args: argparse.Namespace) -> None:
    with App(args.root, files_only=True) as app:
        entries = app.registry.find(kind=args.kind, namespace=args.ns)
        width = max((len(e.id) for e in entries), default=2)
        for entry in entries:
            origin = app.registry.origin(entry.id)
            title = entry.meta.get("title", "")
            print(f"{entry.id:<{width}}  {entry.kind:<10}  {origin.file if origin else '':<32}  {title}".rstrip())


def cmd_registry_show(args: argparse.Namespace) -> None:
    with App(args.root, files_only=True) as app:
        entry = app.registry.get(args.id)
        origin = app.registry.origin(entry.id)
        if args.json:
            out = entry.to_json() | {"file": origin.file if origin else None, "line": origin.line if origin else None}
            print(json.dumps(out, indent=2, default=str))
        else:
            where = f"{origin.file}:{origin.line}" if origin and origin.line else (origin.file if origin else "?")
            print(f"# {entry.id} ({where})")
            print(_yaml(entry), end="")


def cmd_registry_lint(args: argparse.Namespace) -> None:
    with App(args.root, files_only=True) as app:
        problems = [p for file_problems in app.registry.problems.values() for p in file_problems]
        if problems:
            raise CommandError(f"{len(problems)} problem(s) in {args.root}:\n" + "\n".join(f"  {p}" for p in problems))
        print(f"ok: {len(app.registry)} entries in {args.root}, no problems")


def cmd_registry_history(args: argparse.Namespace) -> None:
    with App(args.root, files_only=False) as app:
        for v in app.registry.history(args.id):
            task = f" task={v.task}" if v.task else ""
            print(f"v{v.version}  {v.time:%Y-%m-%d %H:%M:%S}  {v.author}{task}  {v.reason}  ({', '.join(v.entries)})")


def cmd_registry_diff(args: argparse.Namespace) -> None:
    with App(args.root, files_only=False) as app:
        for change in app.registry.diff(args.v1, args.v2):
            before = _yaml(change.before).splitlines(keepends=True) if change.before else []
            after = _yaml(change.after).splitlines(keepends=True) if change.after else []
            print(f"{change.op} {change.id}")
            sys.stdout.writelines(difflib.unified_diff(before, after, f"v{args.v1}", f"v{args.v2}", n=2))


def cmd_registry_rollback(args: argparse.Namespace) -> None:
    with App(args.root, files_only=False) as app:
        before = app.registry.version
        version = app.registry.rollback(args.version)
        if version == before:
            print(f"nothing to do: the registry already matches version {args.version}")
        else:
            print(f"rolled back to version {args.version} as version {version}; the files show the result")


def _yaml(entry: Entry) -> str:
    return yaml.safe_dump(entry.to_mapping() | {"name": entry.id}, sort_keys=False, allow_unicode=True)


# -- parsing -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(add_help=False)
    root.add_argument("--root", type=Path, default=Path("."), help="the app folder (default: the current folder)")

    parser = argparse.ArgumentParser(prog="wippy", description="AI agents as supervised actors.")
    parser.add_argument("--version", action="version", version=f"wippy-agents {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Callable[..., None],
                help: str) -> argparse.ArgumentParser:
        sub = group.add_parser(name, parents=[root], help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    run = command(commands, "run", cmd_run, "boot the app and keep it running until Ctrl+C")
    run.add_argument("--once", action="store_true", help="print the process tree and exit")

    ask = command(commands, "ask", cmd_ask, "run one turn of an agent and print its answer")
    ask.add_argument("agent", help="the agent's id, such as app:assistant")
    ask.add_argument("message")
    ask.add_argument("--conversation", help="continue this conversation (its id is printed after each answer)")
    ask.add_argument("--json", action="store_true", help="print the whole answer as JSON")

    registry = commands.add_parser("registry", help="inspect and change the app's registry")
    reg = registry.add_subparsers(dest="registry_command", metavar="SUBCOMMAND", required=True)
    listing = command(reg, "list", cmd_registry_list, "list entries")
    listing.add_argument("--kind", help="only entries of this kind")
    listing.add_argument("--ns", help="only entries in this namespace")
    show = command(reg, "show", cmd_registry_show, "show one entry")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    history = command(reg, "history", cmd_registry_history, "list committed versions, oldest first")
    history.add_argument("id", nargs="?", help="only versions that changed this entry")
    diff = command(reg, "diff", cmd_registry_diff, "what changed between two versions")
    diff.add_argument("v1", type=int)
    diff.add_argument("v2", type=int)
    rollback = command(reg, "rollback", cmd_registry_rollback, "restore the registry as of a version")
    rollback.add_argument("version", type=int)
    command(reg, "lint", cmd_registry_lint, "validate the whole app; exit 1 listing every problem")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if not args.root.is_dir():
            raise CommandError(f"--root {args.root} is not a folder", status=2)
        args.handler(args)
    except EntryNotFound as error:
        print(f"wippy: {error}", file=sys.stderr)
        return 1
    except (CommandError, RegistryError, StateFileBusy, AgentError, ModelError) as error:
        print(f"wippy: {error}", file=sys.stderr)
        return getattr(error, "status", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
