"""The `wippy` command: boot an app, ask its agents, inspect and change its registry and tasks.

Only one process may write an app's state file, so every command but `run` is a
request to the node that runs the app, through its control socket (see
`control`); when no node runs, the same request is served in this process by an
embedded node, or just the app's files or state file when that is all it needs.
The heavy modules load only then, so a command that talks to a node starts fast.

Every command but `init` works on an existing app (a folder with a `wippy.yaml`,
or a `registry/`, `prompts/` or `tools/` folder) and refuses any other folder
rather than quietly making it one. Failures print one `wippy: <message>` line
and exit 1 (2 for a usage error), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import io
import json
import os
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from . import __version__
from ._runtime.text import is_clean, os_text
from .control import Backend, ControlClient, connect, file_problem, socket_path
from .errors import UsageError, WippyError

TEMPLATE = Path(__file__).with_name("_init_template")
"""The files `wippy init` writes."""

T = TypeVar("T")


class CommandError(UsageError):
    """A user-facing failure: printed as `wippy: <message>`, exit status 1 (2 for usage)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _request(args: argparse.Namespace, op: str, on_event: Callable[[Any], None] | None = None,
             **params: Any) -> Any:
    """Send one request to the node that runs the app at `--root`, or serve it here when none runs."""
    return _talk(args, lambda backend: backend.request(op, on_event, **params))


def _talk(args: argparse.Namespace, talk: Callable[[Backend], Awaitable[T]]) -> T:
    """`talk` to the node that runs the app at `--root`, or to an embedded one (for one request) when none runs."""

    async def send() -> T:
        async with connect(args.root) as backend:
            return await talk(backend)

    try:
        return asyncio.run(send())
    except ConnectionError as error:
        raise CommandError(f"the connection to the node broke ({error.strerror}); did it stop? Run the command "
                           f"again: with no node running, it is served here") from None


def _require_app(root: Path) -> None:
    """Refuse a folder that is not an app: booting one would quietly make it one (`.wippy/`, `registry/`)."""
    if not root.is_dir():
        raise CommandError(f"--root {root} is not a folder", status=2)
    _require_text_path(root)
    is_app = (root / "wippy.yaml").is_file() or any((root / name).is_dir() for name in ("registry", "prompts", "tools"))
    if not is_app:
        here = root.resolve() == Path.cwd().resolve()
        raise CommandError(f"{'this folder' if here else root} is not a wippy app (an app has a wippy.yaml, or a "
                           f"registry/, prompts/ or tools/ folder); "
                           f"`wippy init{'' if here else ' ' + shlex.quote(str(root))}` makes one")


def _require_text_path(root: Path) -> None:
    """Refuse an app path that is not valid UTF-8: the state file (DuckDB) cannot be opened there."""
    path = os.fsdecode(root.resolve())
    if not is_clean(path):
        raise CommandError(f"the path {os_text(path)!r} is not valid UTF-8, so the app's state file cannot be kept "
                           f"there; rename the folder")


# -- wippy init ---------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> None:
    """Write a minimal app from the template, all or nothing: an existing file is never overwritten."""
    folder: Path = args.root if args.folder is None else args.folder
    _require_text_path(folder)
    files = sorted(path.relative_to(TEMPLATE) for path in TEMPLATE.rglob("*")
                   if path.is_file() and "__pycache__" not in path.parts)
    existing = [str(name) for name in files if os.path.lexists(folder / name)]
    if existing:
        raise CommandError(f"{folder} already has {', '.join(existing)}; `wippy init` overwrites nothing (move those "
                           f"away, or pick another folder)")
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        with open(folder / name, "xb") as file:  # "x": a file that appeared meanwhile is not overwritten either
            file.write((TEMPLATE / name).read_bytes())
    print(f"wrote a wippy app in {folder}:")
    for name in files:
        print(f"  {name}")
    cd = "" if folder.resolve() == Path.cwd().resolve() else f"  cd {shlex.quote(str(folder))}\n"
    print(f"next:\n{cd}  wippy ask app:assistant \"hello\"   # one turn, answered by the offline model\n"
          f"  wippy chat                         # the terminal UI\n"
          f"  wippy registry lint                # check the app after editing it")


# -- wippy run ----------------------------------------------------------------------


async def _run(root: Path, once: bool) -> None:
    from ._runtime.tree import format_tree
    from .app import App, load_config
    from .control import ControlServer

    if load_config(root).cluster is not None:
        await _drive(root, once)
        return
    async with App(root, control=ControlServer(root)) as app:
        await asyncio.sleep(0)
        print(f"wippy {__version__}: node {app.node.name!r} running the app in {root} "
              f"(registry version {app.registry.version}, {len(app.registry)} entries)")
        for problems in app.registry.problems.values():
            for problem in problems:
                print(f"  refused: {problem}")
        print(format_tree(app.processes()), flush=True)
        if once:
            return
        await _serve_until_stopped(root, "this node", "shutting processes down")


async def _serve_until_stopped(root: Path, what: str, stopping: str) -> None:
    """Say where the CLI reaches `what`, then wait for Ctrl+C or SIGTERM (caught from before the words are out)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"the CLI reaches {what} through {socket_path(root)}")
    print("press Ctrl+C to stop", flush=True)
    await stop.wait()
    print(f"stopping: {stopping}", flush=True)


async def _drive(root: Path, once: bool) -> None:
    """`wippy run` on a cluster app: place (or reattach to) its nodes on Ray and serve the socket for them."""
    from .cluster import ClusterDriver
    from .control import ControlServer

    server = ControlServer(root)
    await server.claim()
    driver = ClusterDriver(root)
    print(f"wippy {__version__}: placing {len(driver.names)} node(s) of the app in {root} on Ray "
          f"({driver.settings.address})", flush=True)
    async with driver:
        await server.listen(driver.handle, node="cluster")
        try:
            _print_nodes(await driver.status())
            if once:
                return
            await _serve_until_stopped(root, "the cluster", "shutting the nodes down")
        finally:
            await server.close()


def cmd_run(args: argparse.Namespace) -> None:
    asyncio.run(_run(args.root.resolve(), args.once))


# -- wippy chat ---------------------------------------------------------------------------


def cmd_chat(args: argparse.Namespace) -> None:
    """The TUI attaches to the node that runs the app (`wippy run`, or a cluster's driver), else hosts one."""
    from .tui import run_chat

    asyncio.run(run_chat(args.root.resolve(), args.agent))


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
        from ._display import short

        status = "failed" if event["is_error"] else "returned"
        print(f"<- {event['tool']} {status} in {event['seconds']:.2f}s: {short(event['result'], 200)}",
              file=sys.stderr)


def _print_answer(answer: dict[str, Any], as_json: bool) -> None:
    print(_dumps(answer) if as_json else answer["text"])
    usage = answer["usage"]
    print(f"conversation {answer['conversation']}, turn {answer['turn']}: {usage['input_tokens']} tokens in, "
          f"{usage['output_tokens']} out, ${answer['cost_usd']:.6f}", file=sys.stderr)


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
        if entry["meta"].get("unavailable"):
            title = f"{title} (unavailable: {entry['meta']['unavailable']})"
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


def _print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows as columns padded to their widest cell (the first row is the header)."""
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_tasks_list(args: argparse.Namespace) -> None:
    tasks = _request(args, "tasks.list", status=args.status)
    if args.json:
        print(_dumps(tasks))
        return
    if not tasks:
        print("no tasks" + (f" with status {args.status}" if args.status else ""))
        return
    rows = [("ID", "WORKFLOW", "STATUS", "CREATED", "STEPS", "NODE")] + [
        (t["id"], t["workflow"], t["status"], _when(t["created"]), str(t["step_count"]), t["node"]) for t in tasks]
    _print_table(rows)


def cmd_tasks_show(args: argparse.Namespace) -> None:
    from ._display import compaction_summary, short

    task = _request(args, "tasks.show", id=args.id)
    if args.json:
        print(_dumps(task))
        return
    print(f"task {task['id']}  {task['workflow']}  {task['status']}")
    print(f"created {_when(task['created'])} on node {task['node']}, registry version {task['registry_version']}, "
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
            line += f"  {short(step['error'], 200)}"
        print(line)
        if step["name"].startswith("compact:") and isinstance(step["result"], dict):
            print(f"         {_when(step['started'])}: {compaction_summary(step['result'])}")
    if task["usage"] is not None:
        print(f"model calls: {_tokens(task['usage'])}, ${task['cost_usd']:.6f}")
    if task["error"]:
        print(f"error: {task['error']}")
    elif task["status"] == "completed":
        answer = _answer_of(task["result"])
        shown = answer["text"] if answer else json.dumps(task["result"], ensure_ascii=False)
        print(f"{'answer' if answer else 'result'}: {short(shown, 1000)}")


def _tokens(usage: dict[str, Any]) -> str:
    from ._display import tokens
    from .llm import Usage

    return tokens(Usage.model_validate(usage))


def cmd_tasks_start(args: argparse.Namespace) -> None:
    """Print the task's id alone on stdout (for `id=$(wippy tasks start ...)`), then, waiting, its result.

    An embedded node lives only as long as this command, so with no node running
    the task runs here to its end, as with `--wait`.
    """
    here = False

    def started(task: dict[str, Any]) -> None:
        print(task["task"], flush=True)
        _say_status(task)
        if here and task["status"] == "running":
            print("wippy: no node runs this app, so the task runs here until it ends (Ctrl+C leaves it for the next "
                  "`wippy run`)", file=sys.stderr, flush=True)

    async def start(backend: Backend) -> Any:
        nonlocal here
        here = not isinstance(backend, ControlClient)  # an embedded node, for this request only
        return await backend.request("tasks.start", started, workflow=args.workflow, args=args.arguments,
                                     task_id=args.task_id, wait=args.wait or here)

    result = _talk(args, start)
    if args.wait or here:
        _print_result(result, args.json)
    else:
        started(result)


def cmd_tasks_resume(args: argparse.Namespace) -> None:
    _print_result(_request(args, "tasks.resume", _say_status, id=args.id), args.json)


def _say_status(task: dict[str, Any]) -> None:
    print(f"task {task['task']} ({task['workflow']}): {task['status']}", file=sys.stderr, flush=True)


def _print_result(result: Any, as_json: bool) -> None:
    """A task's result: an agent turn's as `wippy ask` prints it, text as it is, anything else as JSON."""
    answer = _answer_of(result)
    if answer is not None:
        _print_answer(answer, as_json)
    elif isinstance(result, str) and not as_json:
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


# -- wippy state ...-----------------------------------------------------------------------------


def cmd_cluster_status(args: argparse.Namespace) -> None:
    nodes = _request(args, "cluster.status")
    if args.json:
        print(_dumps(nodes))
        return
    if not nodes:
        print("no node runs this app; start one with `wippy run`")
        return
    _print_nodes(nodes)


def _print_nodes(nodes: list[dict[str, Any]]) -> None:
    def cell(value: Any, unit: str = "") -> str:
        return "-" if value is None else f"{value}{unit}"

    rows = [("NODE", "HOST", "RAY NODE", "PID", "PROCESSES", "TASKS", "LEASE AGE", "STATUS")] + [
        (n["name"], cell(n["host"]), cell(n["ray_node"])[:12], cell(n["pid"]), cell(n["processes"]), cell(n["tasks"]),
         cell(n["lease_age"], "s"), n["status"]) for n in nodes]
    _print_table(rows)
    for node in nodes:
        if node["problem"]:
            print(f"{node['name']}: {node['problem']}")


def cmd_state_check(args: argparse.Namespace) -> None:
    report = _request(args, "state.check", repair=args.repair)
    if args.json:
        print(_dumps(report))
    print(f"journal {report['path']}: {report['size']:,} bytes, {report['groups']} intact group(s), "
          f"{report['to_copy']} not yet in the state file", file=sys.stderr if args.json else sys.stdout)
    damage = report["damage"]
    for stretch in damage:
        where = "before intact lines" if stretch["in_middle"] else "at the end"
        print(f"  damaged at byte {stretch['offset']} ({stretch['end'] - stretch['offset']} bytes, {where}): "
              f"{stretch['reason']}", file=sys.stderr if args.json else sys.stdout)
    if report["repaired"]:
        print(f"repaired: kept every intact line; the damaged bytes are in "
              f"{Path(report['path']).with_name('journal.damaged')}", file=sys.stderr if args.json else sys.stdout)
    elif any(stretch["in_middle"] for stretch in damage):
        raise CommandError("the journal is damaged before intact lines; `wippy state check --repair` keeps every "
                           "intact line (stop the node first)")
    elif not damage:
        print("no damage", file=sys.stderr if args.json else sys.stdout)


def _json_payload(text: str) -> Any:
    try:
        return json.loads(os_text(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None
    except RecursionError:
        raise argparse.ArgumentTypeError("nested too deeply to read") from None


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


# -- wippy usage -------------------------------------------------------------------------------------


def _since(text: str) -> str:
    """`--since`: a day (YYYY-MM-DD), `today`, or `Nd` (the last N days, today included), as a UTC day."""
    today = datetime.now(UTC).date()
    if text == "today":
        return today.isoformat()
    if text.endswith("d") and text[:-1].isdigit() and int(text[:-1]) >= 1:
        return (today - timedelta(days=int(text[:-1]) - 1)).isoformat()
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: write YYYY-MM-DD, today, or 7d for the last "
                                         "7 days") from None


def cmd_usage(args: argparse.Namespace) -> None:
    rows = _request(args, "usage", agent=args.agent, since=args.since)
    if args.json:
        print(_dumps(rows))
        return
    if not rows:
        print("no model calls" + (f" by {args.agent}" if args.agent else "") + (f" since {args.since}" if args.since
                                                                                else ""))
        return
    table = [("DAY", "AGENT", "MODEL", "CALLS", "INPUT", "OUTPUT", "COST")] + [
        (r["day"], r["agent"], r["model"], str(r["calls"]), f"{r['input_tokens']:,}", f"{r['output_tokens']:,}",
         f"${r['cost_usd']:.4f}") for r in rows]
    table.append(("total", "", "", str(sum(r["calls"] for r in rows)), f"{sum(r['input_tokens'] for r in rows):,}",
                  f"{sum(r['output_tokens'] for r in rows):,}", f"${sum(r['cost_usd'] for r in rows):.4f}"))
    _print_table(table)


# -- wippy mcp ...---------------------------------------------------------------------------------


def cmd_mcp_serve(args: argparse.Namespace) -> None:
    from .control import serve_http, serve_stdio

    root = args.root.resolve()
    if args.http is None:
        asyncio.run(serve_stdio(root, args.agents))
        return

    def listening(url: str) -> None:
        print(f"wippy mcp serve: the agents matching {args.agents!r} at {url}, for bearer tokens of `wippy mcp token "
              f"create` (no TLS: put it behind a TLS proxy for remote clients); Ctrl+C stops it", file=sys.stderr,
              flush=True)

    host, port = args.http
    asyncio.run(serve_http(root, host, port, args.agents, on_listening=listening))


def _host_port(text: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets: `[::1]:8765`)."""
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, such as 127.0.0.1:8765")
    return host, int(port)


def cmd_mcp_token_create(args: argparse.Namespace) -> None:
    from .control import new_token, token_digest

    token = new_token()
    _request(args, "mcp.token.create", name=args.name, agents=args.agents, digest=token_digest(token))
    print(token)  # the token alone on stdout: `TOKEN=$(wippy mcp token create NAME)`
    print(f"token {args.name!r} for the agents matching {args.agents!r}: shown this once (only its hash is kept); "
          f"send it as `Authorization: Bearer <token>` to `wippy mcp serve --http`", file=sys.stderr)


def cmd_mcp_token_list(args: argparse.Namespace) -> None:
    tokens = _request(args, "mcp.token.list")
    if args.json:
        print(_dumps(tokens))
    elif not tokens:
        print("no tokens; `wippy mcp token create NAME` makes one")
    else:
        _print_table([("NAME", "AGENTS", "CREATED")] + [(t["name"], t["agents"], _when(t["created"])) for t in tokens])


def cmd_mcp_token_revoke(args: argparse.Namespace) -> None:
    _request(args, "mcp.token.revoke", name=args.name)
    print(f"revoked token {args.name!r}: a server refuses it from its next request on")


# -- wippy memory ...------------------------------------------------------------------------------


def _note_line(note: dict[str, Any]) -> tuple[str, ...]:
    tags = ", ".join(note["tags"])
    return (str(note["note"]), str(note["version"]), _when(note["time"]), note["author"], tags,
            note["text"] if note["text"] is not None else "(forgotten)")


def cmd_memory_list(args: argparse.Namespace) -> None:
    found = _request(args, "memory.list", agent=args.agent)
    if args.json:
        print(_dumps(found))
    elif args.agent is None:
        if not found:
            print("no agent has notes yet; an agent keeps them with the built-in tool wippy:remember")
        else:
            _print_table([("AGENT", "NOTES")] + [(agent, str(count)) for agent, count in found.items()])
    elif not found:
        print(f"{args.agent} has no notes")
    else:
        _print_table([("NOTE", "VERSION", "WRITTEN", "BY", "TAGS", "TEXT")] + [_note_line(n) for n in found])


def cmd_memory_show(args: argparse.Namespace) -> None:
    versions = _request(args, "memory.show", agent=args.agent, note=args.note)
    if args.json:
        print(_dumps(versions))
        return
    _print_table([("NOTE", "VERSION", "WRITTEN", "BY", "TAGS", "TEXT")] + [_note_line(v) for v in versions])
    tasks = sorted({v["task"] for v in versions if v["task"]})
    if tasks:
        print(f"written in {', '.join(tasks)} (`wippy tasks show TASK`)")


def cmd_memory_forget(args: argparse.Namespace) -> None:
    version = _request(args, "memory.forget", agent=args.agent, note=args.note, by=f"user:{getpass.getuser()}")
    print(f"forgot note {version['note']} of {version['agent']} (memory version {version['version']}); "
          f"`wippy memory show {version['agent']} {version['note']}` shows its history")


# -- wippy conversations ...------------------------------------------------------------------------


def cmd_conversations(args: argparse.Namespace) -> None:
    """`wippy conversations list` and `search TEXT`: one op, from the index agents keep as turns happen."""
    from ._display import short

    text = getattr(args, "text", None)
    found = _request(args, "conversations.list", agent=args.agent, since=args.since, until=args.until, text=text,
                     limit=args.limit)
    if args.json:
        print(_dumps(found))
    elif not found:
        which = f" holding {text!r}" if text else ""
        print(f"no conversations{which}" + (f" with {args.agent}" if args.agent else "")
              + (" in that time" if args.since or args.until else ""))
    else:
        _print_table([("ID", "AGENT", "TURNS", "LAST ACTIVE", "FIRST MESSAGE")] + [
            (c["id"], c["agent"], str(c["turns"]), _when(c["last_active"]), short(c["first"] or "", 60))
            for c in found])
        if len(found) == args.limit:
            print(f"(the latest {args.limit}; --limit shows more)", file=sys.stderr)


# -- parsing -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    root_help = "the app folder (default: the current folder)"
    # `--root` goes before the command or after it; after it, the default must not hide a value given before
    root = argparse.ArgumentParser(add_help=False)
    root.add_argument("--root", type=Path, default=argparse.SUPPRESS, help=root_help)

    parser = argparse.ArgumentParser(prog="wippy", description="AI agents as supervised actors.")
    parser.add_argument("--version", action="version", version=f"wippy-agents {__version__}")
    parser.add_argument("--root", type=Path, default=Path("."), help=root_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Callable[..., None],
                help: str) -> argparse.ArgumentParser:
        sub = group.add_parser(name, parents=[root], help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    def group(name: str, help: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        return commands.add_parser(name, help=help).add_subparsers(
            dest=f"{name}_command", metavar="SUBCOMMAND", required=True)

    init = commands.add_parser("init", help="write a minimal app to start from", description=(
        "write a minimal app: wippy.yaml, an offline model, an assistant with a prompt and a tool, and a toolsmith "
        "that may write tools in the `generated` namespace; existing files are never overwritten"))
    init.add_argument("folder", nargs="?", type=Path, metavar="DIR",
                      help="where (default: --root, or the current folder)")
    init.set_defaults(handler=cmd_init)

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

    cluster = group("cluster", "the nodes that run the app")
    cluster_status = command(cluster, "status", cmd_cluster_status,
                             "each node: where it runs, its pid, processes, unfinished tasks and health")
    cluster_status.add_argument("--json", action="store_true", help="print JSON")

    state = group("state", "the app's durable state: check the journal for damage, repair it")
    check = command(state, "check", cmd_state_check, "report what the journal holds and any damage in it")
    check.add_argument("--repair", action="store_true",
                       help="keep every intact line and move the damaged bytes to .wippy/journal.damaged")
    check.add_argument("--json", action="store_true", help="print the report as JSON")

    tasks = group("tasks", "start, inspect, signal, cancel and resume durable tasks")
    tasks_list = command(tasks, "list", cmd_tasks_list, "list tasks, oldest first")
    tasks_list.add_argument("--status", help="only tasks with this status, such as running or failed")
    tasks_list.add_argument("--json", action="store_true", help="print JSON")
    tasks_show = command(tasks, "show", cmd_tasks_show, "show a task's steps, timings, tokens and cost")
    tasks_show.add_argument("id")
    tasks_show.add_argument("--json", action="store_true", help="print JSON, step results included")
    start = command(tasks, "start", cmd_tasks_start, (
        "start a task of a workflow and print its id; with no node running the app, it runs here to its end"))
    start.add_argument("workflow", help="the workflow's id, such as app:research")
    start.add_argument("arguments", nargs="?", type=_json_payload, metavar="JSON", help=(
        "the task's arguments: a JSON array is the positional arguments; any other JSON value (an object, a string, "
        "a number) is the one argument, such as '{\"topic\": \"x\"}' for a workflow main(ctx, **args); "
        "none: no arguments"))
    start.add_argument("--task-id", help="start it under this id; if a task of this workflow has it, attach to that task")
    start.add_argument("--wait", action="store_true", help="wait for the task to end and print its result")
    start.add_argument("--json", action="store_true", help="print the result as JSON")
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
        decide.add_argument("--reason", help="why (the agent reads it); to answer an MCP server's question (mcp.elicit), the answer as a JSON object")
    audit = command(approvals, "audit", cmd_approvals_audit, "every policy decision: who, what, when, why")
    audit.add_argument("--agent", help="only decisions about this agent")
    audit.add_argument("--entry", help="only decisions about this entry")
    audit.add_argument("--limit", type=int, default=100, help="the latest N (default 100)")
    audit.add_argument("--json", action="store_true", help="print JSON")

    usage = command(commands, "usage", cmd_usage, "what agents' model calls used and cost, per day, agent and model")
    usage.add_argument("--agent", help="only this agent's calls, such as app:assistant")
    usage.add_argument("--since", type=_since, metavar="DAY",
                       help="only from this UTC day on: YYYY-MM-DD, today, or 7d for the last 7 days")
    usage.add_argument("--json", action="store_true", help="print JSON")

    mcp = group("mcp", "serve the app's agents to MCP clients; the bearer tokens of its HTTP transport")
    serve = command(mcp, "serve", cmd_mcp_serve, (
        "serve the app's agents as MCP tools (one per agent: `message`, optional `conversation`), each call a "
        "durable turn, over stdio (default) or streamable HTTP; through the node that runs the app, else hosting it"))
    serve.add_argument("--agents", default="*", metavar="PATTERN",
                       help="only the agents whose id matches, such as 'app:*' (default: every agent)")
    serve.add_argument("--http", type=_host_port, metavar="HOST:PORT", help=(
        "serve streamable HTTP at http://HOST:PORT/mcp instead (port 0: any free one, printed), bound only there, "
        "bearer tokens required; it has no TLS of its own: put it behind a TLS proxy for remote clients"))
    token = mcp.add_parser("token", help="the bearer tokens of `wippy mcp serve --http`").add_subparsers(
        dest="token_command", metavar="SUBCOMMAND", required=True)
    create = command(token, "create", cmd_mcp_token_create,
                     "make a token and print it (alone on stdout) this once; only its hash is kept")
    create.add_argument("name", help="what the token is for, such as laptop")
    create.add_argument("--agents", default="*", metavar="PATTERN",
                        help="the agents it reaches, such as 'app:*' (default: every agent)")
    token_list = command(token, "list", cmd_mcp_token_list, "each token's name, agents and creation time")
    token_list.add_argument("--json", action="store_true", help="print JSON")
    command(token, "revoke", cmd_mcp_token_revoke, "revoke a token: servers refuse it from then on").add_argument(
        "name")

    conversations = group("conversations", "past conversations: list them, search their messages")
    for name, help in (("list", "conversations people had, latest activity first"),
                       ("search", "conversations whose messages (asked or answered) hold every word of TEXT, any case")):
        sub = command(conversations, name, cmd_conversations, help)
        if name == "search":
            sub.add_argument("text", metavar="TEXT")
        sub.add_argument("--agent", help="only this agent's, such as app:assistant")
        sub.add_argument("--since", metavar="WHEN", help=(
            "only those active since then: an ISO date or time (2026-12-01, 2026-12-01T09:30; local time) or a span "
            "back from now (30m, 12h, 7d, 2w)"))
        sub.add_argument("--until", metavar="WHEN", help="only those last active before then (as --since)")
        sub.add_argument("--limit", type=int, default=50, help="the latest N (default 50)")
        sub.add_argument("--json", action="store_true", help="print JSON")

    memory = group("memory", "the notes agents keep across conversations (wippy:remember), versioned")
    memory_list = command(memory, "list", cmd_memory_list,
                          "an agent's notes; without AGENT, the agents that have notes")
    memory_list.add_argument("agent", nargs="?", help="the agent, such as app:assistant")
    memory_list.add_argument("--json", action="store_true", help="print JSON")
    memory_show = command(memory, "show", cmd_memory_show,
                          "every version of an agent's memory (or of one note): what was written, by whom, when")
    memory_show.add_argument("agent")
    memory_show.add_argument("note", nargs="?", type=int, help="only this note's versions")
    memory_show.add_argument("--json", action="store_true", help="print JSON")
    forget = command(memory, "forget", cmd_memory_forget,
                     "forget one of an agent's notes (a new version in your name: its history stays)")
    forget.add_argument("agent")
    forget.add_argument("note", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):  # a terminal that cannot show a character shows its escape
        sys.stdout.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    # argv that is not UTF-8 arrives with surrogates (byte 0xff as "\udcff"): make it text before it goes further
    vars(args).update({name: os_text(value) for name, value in vars(args).items() if isinstance(value, str)})
    try:
        if args.handler is not cmd_init:
            _require_app(args.root)
        args.handler(args)
    except WippyError as error:  # every error the package raises: never a traceback
        print(f"wippy: {error}", file=sys.stderr)
        return getattr(error, "status", 1)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the app's files: read-only, a full disk, no permission
        problem = file_problem(error)
        if problem is None:
            raise
        print(f"wippy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
