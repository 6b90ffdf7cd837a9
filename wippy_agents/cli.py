"""The `wippy` command: boot an app, ask its agents, inspect and change its registry and tasks.

Only one process may write an app's state file, so every command but `run` is a
request to the node that runs the app, through its control socket (see
`_control`); when no node runs, the same request is served in this process by an
embedded node, or just the app's files or state file when that is all it needs.
The heavy modules load only then, so a command that talks to a node starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from . import __version__
from ._control import ControlError, connect, socket_path


class CommandError(Exception):
    """A user-facing failure: printed as `wippy: <message>`, exit status 1 (2 for usage)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _request(args: argparse.Namespace, op: str, on_event: Callable[[Any], None] | None = None,
             **params: Any) -> Any:
    """Send one request to the node that runs the app at `--root`, or serve it here when none runs."""

    async def send() -> Any:
        async with connect(args.root) as backend:
            return await backend.request(op, on_event, **params)

    return asyncio.run(send())


# -- wippy run ----------------------------------------------------------------------


async def _run(root: Path, once: bool) -> None:
    from ._runtime.node import Node
    from ._runtime.tree import format_tree

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
        print(f"the CLI reaches this node through {socket_path(root)}")
        print("press Ctrl+C to stop", flush=True)
        await stop.wait()
        print("stopping: shutting processes down", flush=True)


def cmd_run(args: argparse.Namespace) -> None:
    from ._state import StateFileBusy
    from .registry import RegistryError

    try:
        asyncio.run(_run(args.root.resolve(), args.once))
    except (StateFileBusy, RegistryError) as error:
        raise CommandError(str(error)) from None


# -- wippy chat ---------------------------------------------------------------------------


def cmd_chat(args: argparse.Namespace) -> None:
    """The TUI runs its own node (it needs the app in process), so a node already running the app is an error."""
    from ._state import StateFileBusy
    from .agents import AgentError
    from .registry import RegistryError
    from .tui import run_chat

    try:
        asyncio.run(run_chat(args.root.resolve(), args.agent))
    except (StateFileBusy, RegistryError, AgentError) as error:
        raise CommandError(str(error)) from None


# -- wippy ask ---------------------------------------------------------------------------


def cmd_ask(args: argparse.Namespace) -> None:
    answer = _request(args, "ask", _show_progress, agent=args.agent, message=args.message,
                      conversation=args.conversation, task_id=args.task_id)
    _print_answer(answer, args.json)


def _show_progress(event: Any) -> None:
    """Tool activity of a turn, on stderr (stdout is the answer)."""
    kind = event.get("type") if isinstance(event, dict) else None
    if kind == "approval_requested":
        print(f"-- {event['summary']}\n   `wippy approvals show {event['approval']}` shows the change; approve or "
              f"deny it with `wippy approvals approve|deny {event['approval']}`", file=sys.stderr, flush=True)
    elif kind == "tool_started":
        print(f"-> {event['tool']} {json.dumps(event['arguments'])}", file=sys.stderr)
    elif kind == "tool_finished":
        status = "failed" if event["is_error"] else "returned"
        print(f"<- {event['tool']} {status} in {event['seconds']:.2f}s: {_short(event['result'])}", file=sys.stderr)


def _print_answer(answer: dict[str, Any], as_json: bool) -> None:
    print(_dumps(answer) if as_json else answer["text"])
    usage = answer["usage"]
    print(f"conversation {answer['conversation']}, turn {answer['turn']}: {usage['input_tokens']} tokens in, "
          f"{usage['output_tokens']} out, ${answer['cost_usd']:.6f}", file=sys.stderr)


def _short(text: str, limit: int = 200) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _when(iso: str) -> str:
    return f"{datetime.fromisoformat(iso).astimezone():%Y-%m-%d %H:%M:%S}"


# -- wippy registry ...----------------------------------------------------------------------


def cmd_registry_list(args: argparse.Namespace) -> None:
    entries = _request(args, "registry.list", kind=args.kind, ns=args.ns)
    width = max((len(e["id"]) for e in entries), default=2)
    for entry in entries:
        title = entry["meta"].get("title", "")
        print(f"{entry['id']:<{width}}  {entry['kind']:<10}  {entry['file'] or '':<32}  {title}".rstrip())


def cmd_registry_show(args: argparse.Namespace) -> None:
    from .registry import Entry, entry_yaml

    entry = _request(args, "registry.show", id=args.id)
    if args.json:
        print(json.dumps(entry, indent=2))
    else:
        where = f"{entry['file']}:{entry['line']}" if entry["line"] else (entry["file"] or "?")
        print(f"# {entry['id']} ({where})")
        print(entry_yaml(Entry.from_json(entry)), end="")


def cmd_registry_lint(args: argparse.Namespace) -> None:
    report = _request(args, "registry.lint")
    problems = report["problems"]
    if problems:
        raise CommandError(f"{len(problems)} problem(s) in {args.root}:\n" + "\n".join(f"  {p}" for p in problems))
    print(f"ok: {report['entries']} entries in {args.root}, no problems")


def cmd_registry_history(args: argparse.Namespace) -> None:
    for v in _request(args, "registry.history", id=args.id):
        task = f" task={v['task']}" if v["task"] else ""
        print(f"v{v['version']}  {_when(v['time'])}  {v['author']}{task}  {v['reason']}  ({', '.join(v['entries'])})")


def cmd_registry_diff(args: argparse.Namespace) -> None:
    from .registry import Entry, EntryChange, change_diff

    for change in _request(args, "registry.diff", v1=args.v1, v2=args.v2):
        before, after = (Entry.from_json(change[k]) if change[k] else None for k in ("before", "after"))
        print(change_diff(EntryChange(change["id"], before, after), f"v{args.v1}", f"v{args.v2}"), end="")


def cmd_registry_rollback(args: argparse.Namespace) -> None:
    done = _request(args, "registry.rollback", version=args.version, author=f"user:{getpass.getuser()}")
    if done["version"] == done["before"]:
        print(f"nothing to do: the registry already matches version {args.version}")
    else:
        print(f"rolled back to version {args.version} as version {done['version']}; the files show the result")


# -- wippy tasks ...-----------------------------------------------------------------------------


def cmd_tasks_list(args: argparse.Namespace) -> None:
    tasks = _request(args, "tasks.list", status=args.status)
    if args.json:
        print(_dumps(tasks))
        return
    if not tasks:
        print("no tasks" + (f" with status {args.status}" if args.status else ""))
        return
    rows = [("ID", "WORKFLOW", "STATUS", "CREATED", "STEPS")] + [
        (t["id"], t["workflow"], t["status"], _when(t["created"]), str(t["step_count"])) for t in tasks]
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_tasks_show(args: argparse.Namespace) -> None:
    task = _request(args, "tasks.show", id=args.id)
    if args.json:
        print(_dumps(task))
        return
    print(f"task {task['id']}  {task['workflow']}  {task['status']}")
    print(f"created {_when(task['created'])}, registry version {task['registry_version']}, "
          f"args {json.dumps(task['args'], ensure_ascii=False)}")
    steps = task["steps"]
    width = max((len(step["name"]) for step in steps), default=4)
    print(f"{len(steps)} step(s):" if steps else "no steps yet")
    for step in steps:
        line = f"  {step['seq']:>3}  {step['name']:<{width}}  {'ok' if step['ok'] else 'FAILED':<6}  " \
               f"{step['seconds']:8.3f}s"
        if step["usage"] is not None:
            line += f"  {_tokens(step['usage'])}, ${step['cost_usd']:.6f}"
        if step["error"]:
            line += f"  {_short(step['error'])}"
        print(line)
    if task["usage"] is not None:
        print(f"model calls: {_tokens(task['usage'])}, ${task['cost_usd']:.6f}")
    if task["error"]:
        print(f"error: {task['error']}")
    elif task["status"] == "completed":
        answer = _answer_of(task["result"])
        shown = answer["text"] if answer else json.dumps(task["result"], ensure_ascii=False)
        print(f"{'answer' if answer else 'result'}: {_short(shown, 1000)}")


def _tokens(usage: dict[str, Any]) -> str:
    cached = f" ({usage['cached_tokens']} cached)" if usage.get("cached_tokens") else ""
    return f"{usage['input_tokens']} tokens in{cached}, {usage['output_tokens']} out"


def cmd_tasks_resume(args: argparse.Namespace) -> None:
    def started(event: Any) -> None:
        print(f"task {event['task']} ({event['workflow']}): {event['status']}", file=sys.stderr)

    result = _request(args, "tasks.resume", started, id=args.id)
    answer = _answer_of(result)
    if answer is not None:  # an agent's turn: print it as `wippy ask` does
        _print_answer(answer, args.json)
    elif isinstance(result, str) and not args.json:
        print(result)
    else:
        print(_dumps(result))


def _answer_of(result: Any) -> dict[str, Any] | None:
    """The agent's answer in the result of an agent-turn task."""
    answer = result.get("answer") if isinstance(result, dict) else None
    return answer if isinstance(answer, dict) and "text" in answer else None


def cmd_tasks_cancel(args: argparse.Namespace) -> None:
    done = _request(args, "tasks.cancel", id=args.id)
    if done["requested"]:
        print(f"task {args.id}: cancel requested; it stops at its next step or wait")
    else:
        print(f"task {args.id} is already {done['before']}; nothing to cancel")


def cmd_tasks_signal(args: argparse.Namespace) -> None:
    done = _request(args, "tasks.signal", id=args.id, name=args.name, payload=args.payload)
    print(f"task {args.id} ({done['status']}): signal {args.name!r} delivered")


def cmd_tasks_upgrade(args: argparse.Namespace) -> None:
    version = _request(args, "tasks.upgrade", id=args.id)
    print(f"task {args.id} now uses registry version {version}")


def _json_payload(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None


# -- wippy approvals ...---------------------------------------------------------------------------


def cmd_approvals_list(args: argparse.Namespace) -> None:
    approvals = _request(args, "approvals.list", status=None if args.all else "pending")
    if args.json:
        print(_dumps(approvals))
        return
    if not approvals:
        print("no pending approvals" if not args.all else "no approvals yet")
    for a in approvals:
        decided = "" if a["status"] == "pending" else f"  {a['status']} by {a['decided_by']}"
        print(f"{a['id']}  {_when(a['created'])}  {a['agent']}  {a['action']} {a['resource']}: {a['summary']}{decided}")


def cmd_approvals_show(args: argparse.Namespace) -> None:
    a = _request(args, "approvals.show", id=args.id)
    print(f"approval {a['id']}: {a['status']}")
    print(f"  {a['agent']} (task {a['task_id']}) asks to {a['action']} {a['resource']}: {a['summary']}")
    print(f"  asked {_when(a['created'])}; policy {a['policy']}")
    if a["status"] != "pending":
        print(f"  {a['status']} by {a['decided_by']} {_when(a['decided_at'])}: {a['decision_reason'] or '-'}"
              + (f" (registry version {a['version']})" if a["version"] else ""))
    print(a["diff"])


def cmd_approvals_decide(args: argparse.Namespace) -> None:
    verb = args.approvals_command
    a = _request(args, f"approvals.{verb}", id=args.id, by=f"user:{getpass.getuser()}", reason=args.reason or "")
    if a["status"] == "approved":
        applied = f"; committed as registry version {a['version']}" if a["version"] else ""
        print(f"approved {a['id']} ({a['action']} {a['resource']}){applied}; {a['agent']} goes on")
    else:
        print(f"denied {a['id']} ({a['action']} {a['resource']}); {a['agent']} is told why")


def cmd_approvals_audit(args: argparse.Namespace) -> None:
    records = _request(args, "approvals.audit", subject=args.agent, resource=args.entry, limit=args.limit)
    if args.json:
        print(_dumps(records))
        return
    for r in records:
        task = f" task={r['task']}" if r["task"] else ""
        version = f" v{r['version']}" if r["version"] else ""
        print(f"{_when(r['time'])}  {r['subject']}{task}  {r['action']} {r['resource']}: {r['decision']} "
              f"[{r['decided_by']}]{version} ({r['reason']})")


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

    def group(name: str, help: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        return commands.add_parser(name, help=help).add_subparsers(
            dest=f"{name}_command", metavar="SUBCOMMAND", required=True)

    run = command(commands, "run", cmd_run, "boot the app and keep it running until Ctrl+C")
    run.add_argument("--once", action="store_true", help="print the process tree and exit")

    chat = command(commands, "chat", cmd_chat, "open the terminal UI: chat with the agents, watch the app")
    chat.add_argument("agent", nargs="?", help="the agent to chat with (default: the app's default_agent)")

    ask = command(commands, "ask", cmd_ask, "run one turn of an agent and print its answer")
    ask.add_argument("agent", help="the agent's id, such as app:assistant")
    ask.add_argument("message")
    ask.add_argument("--conversation", help="continue this conversation (its id is printed after each answer)")
    ask.add_argument("--task-id", help="run the turn as this task; after a crash, the same id resumes it")
    ask.add_argument("--json", action="store_true", help="print the whole answer as JSON")

    reg = group("registry", "inspect and change the app's registry")
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

    tasks = group("tasks", "inspect, signal, cancel and resume durable tasks")
    tasks_list = command(tasks, "list", cmd_tasks_list, "list tasks, oldest first")
    tasks_list.add_argument("--status", help="only tasks with this status, such as running or failed")
    tasks_list.add_argument("--json", action="store_true", help="print JSON")
    tasks_show = command(tasks, "show", cmd_tasks_show, "show a task's steps, timings, tokens and cost")
    tasks_show.add_argument("id")
    tasks_show.add_argument("--json", action="store_true", help="print JSON, step results included")
    resume = command(tasks, "resume", cmd_tasks_resume, "run a task to its end here and print its result")
    resume.add_argument("id")
    resume.add_argument("--json", action="store_true", help="print the result as JSON")
    command(tasks, "cancel", cmd_tasks_cancel, "cancel a task: it stops at its next step or wait").add_argument("id")
    send = command(tasks, "signal", cmd_tasks_signal, "send a task a signal, with an optional JSON payload")
    send.add_argument("id")
    send.add_argument("name")
    send.add_argument("payload", nargs="?", type=_json_payload, help="JSON, such as '{\"ok\": true}'")
    command(tasks, "upgrade", cmd_tasks_upgrade, "move a task to the current registry version").add_argument("id")

    approvals = group("approvals", "changes agents asked for that wait for a person, and the audit trail")
    approvals_list = command(approvals, "list", cmd_approvals_list, "list pending approvals")
    approvals_list.add_argument("--all", action="store_true", help="decided ones too")
    approvals_list.add_argument("--json", action="store_true", help="print JSON, diffs included")
    command(approvals, "show", cmd_approvals_show, "show an approval with the diff of its change").add_argument("id")
    for verb, help in (("approve", "approve a pending change: it is applied in the agent's name"),
                       ("deny", "deny a pending change: nothing changes and the agent is told why")):
        decide = command(approvals, verb, cmd_approvals_decide, help)
        decide.add_argument("id")
        decide.add_argument("--reason", help="why (the agent reads it)")
    audit = command(approvals, "audit", cmd_approvals_audit, "every policy decision: who, what, when, why")
    audit.add_argument("--agent", help="only decisions about this agent")
    audit.add_argument("--entry", help="only decisions about this entry")
    audit.add_argument("--limit", type=int, default=100, help="the latest N (default 100)")
    audit.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if not args.root.is_dir():
            raise CommandError(f"--root {args.root} is not a folder", status=2)
        args.handler(args)
    except (CommandError, ControlError) as error:
        print(f"wippy: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
