"""`kill -9` a node over and over while it runs agent turns; every turn still ends right and nothing done runs twice.

A driver script (a subprocess) boots a node on a small app whose model is an
OpenAI-compatible server on 127.0.0.1 (here, in the test process) and whose one
tool appends a line to a file. The driver asks CONVERSATIONS conversations for
TURNS turns each, every turn under a fixed task id, so a driver started again
after a kill attaches to the turns that exist instead of starting them over.
Each turn is: model call 1 (the model answers with a call to the tool; in even
turns with two calls at once, which run as parallel steps), the tool calls, model
call 2 (the model answers with text that quotes the tools' results).

The test kills the driver with SIGKILL at a point chosen by a seeded RNG: a
while after it starts (boot, recovery, early work), in the server just before or
just after it answers the n-th request of the run, a moment after the server
finished an answer, after the tool's side effect, or after a turn finished. After
every kill the state file must open cleanly, and the test reads which steps the
journal holds. Then it starts the driver again; after MIN_KILLS kills one last
run must finish everything.

What "completed" means. A model request or a tool call is completed once its
step is in the journal. The node may die after the server answered (or after the
tool wrote its line) but before the step committed: then doing it again is
right, as nobody recorded it. So the assertions are:

- in each run, a step runs at most once (one request per model step, one line per tool step);
- a step already in the journal when a run starts is never run in that run;
- a step that ran in a run but is not in the journal after it: that run was killed;
- the journal holds each step once, in order, and every turn completed with the answer the server's
  script implies; every answer the driver printed, in any run, is that answer;
- every model request carried exactly the conversation's earlier turns (nothing lost or doubled).

The test runs on both stores: the DuckDB state file, and a Postgres database on a real
server (`WIPPY_STATE`), killed half as often there to keep the suite short.

`WIPPY_KILL9_SEED=<n>` draws another sequence of kill points (the seed is in every failure message; the
points are drawn from it, the timing around them is real, so a seed is a scenario, not an exact replay).

A turn parked as `needs_attention` after repeated kills (the engine cannot tell a
poison task from a node killed from outside) is retried when the driver asks for
it again by its task id, so every turn completes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

import wippy_agents.agents  # noqa: F401  (it registers the journal types of the turns the test reads back)
from wippy_agents.durable import loads
from wippy_agents.testing import write_file

CONVERSATIONS = 3
TURNS = 8
MIN_KILLS = 20
MAX_ROUNDS = 40  # rounds whose driver finished before its kill point do not count as kills
RUN_TIMEOUT = 30.0  # one driver run; far above what a run takes (a hang is a bug, reported with its stderr)
SEED = int(os.environ.get("WIPPY_KILL9_SEED", "7"))
TOOL = "tools_side_record"  # how the registry offers tools/side.py's `record` to the model

APP = """
namespace: app
entries:
  - name: m
    kind: model
    provider: openai-compatible
    base_url: {base_url}
    model: m
    max_retries: 0
    timeout: 20
  - name: agent
    kind: agent
    model: app:m
    tools: ["tools.*:*"]
    max_steps: 6
"""

SIDE_TOOL = '''
import os
import time

LOG = {log!r}


def record(turn: str, part: str) -> str:
    """Record that a turn happened, by appending a line to a log file (the side effect under test).

    Args:
        turn: The turn's id.
        part: Which of the turn's calls this is.
    """
    line = f"{{turn}} {{part}} {{os.environ.get('KILL9_RUN', '?')}}\\n".encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write(2) on an O_APPEND file: the line is all there or not at all
    finally:
        os.close(fd)
    time.sleep(0.01)  # like a real tool, it takes a moment; the node may die after the write, before the journal
    return f"recorded {{turn}} {{part}}"
'''

DRIVER = '''
import asyncio
import sys

from wippy_agents import App
from wippy_agents.agents import AgentError

APP, CONVERSATIONS, TURNS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


async def conversation(app, c):
    conv = await app.conversation("app:agent", id=f"c{c}")
    for t in range(1, TURNS + 1):
        turn = f"c{c}-t{t}"
        try:
            answer = await conv.ask(f"{turn}: record it", task_id=turn)  # attaches to the turn if it exists
        except AgentError as error:  # the test decides what a failed turn means; the other conversations go on
            say(f"FAILED {turn} {error}")
            return
        say(f"DONE {turn} {answer.text}")


def say(line):
    """One line in one write: print() writes each piece apart when unbuffered, and a kill between them would leave
    half a line that looks like a whole one."""
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()


async def main():
    async with App(root=APP) as app:
        say("BOOTED")
        await asyncio.gather(*(conversation(app, c) for c in range(1, CONVERSATIONS + 1)))
    say("ALL DONE")


asyncio.run(main())
'''


def turn_ids() -> list[str]:
    return [f"c{c}-t{t}" for c in range(1, CONVERSATIONS + 1) for t in range(1, TURNS + 1)]


def question(turn: str) -> str:
    return f"{turn}: record it"


def parts(turn: str) -> tuple[str, ...]:
    """The tool calls the model makes in a turn: two at once (run together, as parallel steps) in even turns."""
    return ("a", "b") if int(turn.split("-t")[1]) % 2 == 0 else ("a",)


def call_id(turn: str, part: str) -> str:
    return f"call_{turn}_{part}"  # stable for the call, so its step is always `tool:call_<turn>_<part>`


def tool_result(turn: str, part: str) -> str:
    return f"recorded {turn} {part}"


def expected_answer(turn: str) -> str:
    return f"{turn} answered: " + "; ".join(tool_result(turn, part) for part in parts(turn))


def expected_steps(turn: str) -> list[tuple[int, str]]:
    """The turn's steps in the journal: model call 1, its tool calls (numbered in call order), model call 2."""
    names = ["model:1", *(f"tool:{call_id(turn, part)}" for part in parts(turn)), "model:2"]
    return list(enumerate(names))


# -- the model: an OpenAI-compatible server on 127.0.0.1 -----------------------------------------


@dataclass
class Request:
    """One request the server received."""

    run: int
    turn: str
    call: int  # the turn's n-th model call: its step is `model:<n>`
    users: tuple[str, ...]  # the user messages it carried: the conversation's earlier turns, then this one
    tool_results: tuple[str, ...]  # the tool results after the turn's last assistant message
    streamed: bool
    answered: bool = False  # the server wrote its whole response (whether the client read it is unknowable)

    @property
    def step(self) -> tuple[str, str]:
        return self.turn, f"model:{self.call}"


@dataclass
class KillPlan:
    """Where one run is killed."""

    kind: str  # after | server-before | server-after | answered | tool | done
    n: int = 0  # the n-th request / answer / tool line / finished turn of the run
    delay: float = 0.0  # seconds after that (or after the start, for `after`)

    def __str__(self) -> str:
        return f"{self.kind}(n={self.n}, delay={self.delay * 1000:.0f}ms)"


class ModelServer:
    """Chat Completions, scripted from the request: a user's question gets a call to the tool, a tool result gets
    the final answer. It records every request and can SIGKILL the driver right before or after answering one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.run = -1
        self.proc: subprocess.Popen[str] | None = None
        self.plan: KillPlan | None = None
        self.errors: list[str] = []
        self._http = _Server(("127.0.0.1", 0), self._handler())
        self._http.errors = self.errors
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def begin(self, run: int, plan: KillPlan | None) -> None:
        with self.lock:
            self.run, self.plan, self.proc = run, plan, None

    def serve(self, proc: subprocess.Popen[str]) -> None:
        with self.lock:
            self.proc = proc

    def of_run(self, run: int) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.run == run]

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def _kill(self) -> None:
        with self.lock:
            proc = self.proc
        if proc is not None:
            proc.send_signal(signal.SIGKILL)  # Popen's own check: never a pid it has already reaped

    def _received(self, body: dict[str, Any]) -> tuple[Request, str | None]:
        """Record the request; whether to kill the driver before or after answering it."""
        messages = body["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        users = tuple(m["content"] for m in messages if m["role"] == "user")
        turn = messages[last_user]["content"].split(":")[0]
        call = 1 + sum(m["role"] == "assistant" for m in messages[last_user + 1:])
        results: list[str] = []
        for message in reversed(messages):
            if message["role"] != "tool":
                break
            results.insert(0, message["content"])
        with self.lock:
            request = Request(self.run, turn, call, users, tuple(results), bool(body.get("stream")))
            self.requests.append(request)
            number = sum(r.run == self.run for r in self.requests)
            plan = self.plan
        kill = None
        if plan is not None and plan.kind in ("server-before", "server-after") and plan.n == number:
            kill = plan.kind.removeprefix("server-")
        return request, kill

    @staticmethod
    def _answer(body: dict[str, Any], request: Request) -> list[dict[str, Any]]:
        """The chunks of the answer (a non-streamed reply is built from the same chunks)."""
        if request.call == 1:
            offered = [t["function"]["name"] for t in body.get("tools") or []]
            assert TOOL in offered, f"the model was not offered {TOOL}: {offered}"
            wires = [{"index": i, "id": call_id(request.turn, part), "type": "function",
                      "function": {"name": TOOL, "arguments": json.dumps({"turn": request.turn, "part": part})}}
                     for i, part in enumerate(parts(request.turn))]
            return [_chunk({"role": "assistant", "content": None, "tool_calls": [wire]}) for wire in wires] + [
                _chunk({}, finish="tool_calls")]
        assert request.call == 2 and request.tool_results, f"a request the script has no answer for: {request}"
        text = f"{request.turn} answered: " + "; ".join(request.tool_results)
        return [_chunk({"role": "assistant", "content": ""}), _chunk({"content": text[:10]}),
                _chunk({"content": text[10:]}), _chunk({}, finish="stop")]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's client expects

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or -1)
                raw = self.rfile.read(length) if length >= 0 else b""
                if length < 0 or len(raw) < length:  # the driver died while sending it: the model never saw it
                    self.close_connection = True
                    return
                body = json.loads(raw)
                if self.path != "/v1/chat/completions":
                    server.errors.append(f"a request to {self.path}")
                    self._send(404, "application/json", b'{"error": {"message": "no such route"}}')
                    return
                try:
                    request, kill = server._received(body)
                    chunks = server._answer(body, request)
                except Exception as error:  # a request this script cannot answer: fail the test, loudly
                    server.errors.append(f"{type(error).__name__}: {error} in {body}")
                    self._send(400, "application/json", json.dumps(
                        {"error": {"message": f"unexpected request: {error}"}}).encode())
                    return
                if kill == "before":
                    server._kill()
                    self.close_connection = True
                    return
                usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
                if body.get("stream"):
                    if (body.get("stream_options") or {}).get("include_usage"):
                        chunks.append({**_chunk(None), "usage": usage})
                    payload = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
                    sent = self._send(200, "text/event-stream", payload + b"data: [DONE]\n\n")
                else:
                    sent = self._send(200, "application/json", json.dumps(_completion(chunks, usage)).encode())
                request.answered = sent
                if kill == "after":
                    server._kill()

            def _send(self, status: int, content_type: str, payload: bytes) -> bool:
                try:
                    self.send_response(status)
                    self.send_header("content-type", content_type)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                    return True
                except OSError:
                    self.close_connection = True  # the driver died mid-answer: that is the point
                    return False

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    errors: list[str]

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            return  # a killed driver's connection: expected
        self.errors.append(f"{type(error).__name__}: {error}")  # anything else fails the test


def _chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-k9", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": choices, "usage": None}


def _completion(chunks: list[dict[str, Any]], usage: dict[str, Any]) -> dict[str, Any]:
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    content = "".join(d.get("content") or "" for d in deltas) or None
    message: dict[str, Any] = {"role": "assistant", "content": content}
    calls = [{"id": t["id"], "type": "function", "function": t["function"]}
             for d in deltas for t in d.get("tool_calls") or []]
    if calls:
        message["tool_calls"] = calls
    return {"id": "chatcmpl-k9", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": usage}


@pytest.fixture
def server() -> Iterator[ModelServer]:
    model_server = ModelServer()
    try:
        yield model_server
    finally:
        model_server.close()


# -- the driver and its runs ---------------------------------------------------------------------


@dataclass
@dataclass
class Journal:
    """What the state file holds, read with a connection of its own."""

    steps: list[tuple[str, int, str, bool]]  # task, seq, name, ok
    tasks: list[str]
    status: dict[str, str]  # task -> its latest status
    details: dict[str, Any]  # task -> the detail of its latest status (the result, or the error)
    schema: bool = True  # False: the file holds no tables yet

    @property
    def step_keys(self) -> set[tuple[str, str]]:
        return {(task, name) for task, _, name, _ in self.steps}

    def answer(self, task: str) -> str | None:
        detail = self.details.get(task)
        return detail["result"]["answer"].text if self.status.get(task) == "completed" else None

    def error(self, task: str) -> str | None:
        detail = self.details.get(task)
        return detail.get("error") if isinstance(detail, dict) else None


def read_journal(path: Path) -> Journal:
    """Open the state file the way the next process will find it after a kill, and read every table.

    Read-only, so that the file (and its WAL) stays exactly as the killed node left it for the next run.
    """
    db = duckdb.connect(str(path), read_only=True)
    try:
        tables = {row[0] for row in db.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in sorted(tables):
            db.execute(f'SELECT * FROM "{table}"').fetchall()
        if "task_steps" not in tables:  # killed before its schema committed (one transaction: all or nothing)
            assert not tables, f"the state file has only some of its tables: {sorted(tables)}"
            return Journal([], [], {}, {}, schema=False)
        steps = [(t, int(s), n, bool(ok)) for t, s, n, ok in
                 db.execute("SELECT task, seq, name, ok FROM task_steps ORDER BY task, seq, rowid").fetchall()]
        tasks = [row[0] for row in db.execute("SELECT id FROM tasks ORDER BY rowid").fetchall()]
        latest = db.execute("""
            SELECT task, status, detail FROM (
                SELECT task, status, detail,
                       row_number() OVER (PARTITION BY task ORDER BY time DESC, rowid DESC) AS n
                FROM task_events WHERE status NOT IN ('cancel_requested', 'upgraded', 'step_started', 'resumed'))
            WHERE n = 1""").fetchall()
    finally:
        db.close()
    return Journal(steps, tasks, {task: status for task, status, _ in latest},
                   {task: loads(detail) for task, _, detail in latest})


def read_postgres_journal(url: str) -> Journal:
    """The same, from a Postgres state (a killed node leaves its database as its last commit left it)."""
    with psycopg.connect(url) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()}
        if "task_steps" not in tables:  # the schema is made in one transaction too
            assert not tables, f"the database has only some of its tables: {sorted(tables)}"
            return Journal([], [], {}, {}, schema=False)
        steps = [(t, int(s), n, bool(ok)) for t, s, n, ok in
                 conn.execute("SELECT task, seq, name, ok FROM task_steps ORDER BY task, seq, n").fetchall()]
        tasks = [row[0] for row in conn.execute("SELECT id FROM tasks ORDER BY n").fetchall()]
        latest = conn.execute("""
            SELECT DISTINCT ON (task) task, status, detail FROM task_events
            WHERE status NOT IN ('cancel_requested', 'upgraded', 'step_started', 'resumed')
            ORDER BY task, time DESC, n DESC""").fetchall()
    return Journal(steps, tasks, {task: status for task, status, _ in latest},
                   {task: loads(detail) for task, _, detail in latest})


@dataclass
class Run:
    number: int
    plan: KillPlan | None
    returncode: int = 0
    seconds: float = 0.0
    stdout: list[str] = field(default_factory=list)
    stderr: str = ""
    journal: Journal | None = None  # what the state file held once the run had ended

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def finished(self) -> bool:
        return self.returncode == 0 and bool(self.stdout) and self.stdout[-1] == "ALL DONE"

    def printed(self, what: str) -> dict[str, str]:
        """turn -> text of the driver's `DONE` (or `FAILED`) lines."""
        return {turn: text for _, turn, text in (line.split(" ", 2) for line in self.stdout
                                                 if line.startswith(what + " "))}


class Driver:
    """Starts the driver script, kills it where the plan says, and reads the state file after each run."""

    def __init__(self, tmp_path: Path, app: Path, server: ModelServer, side_log: Path,
                 database: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.app = app
        self.server = server
        self.side_log = side_log
        self.script = tmp_path / "driver.py"
        self.script.write_text(DRIVER, encoding="utf-8")
        self.state = app / ".wippy" / "state.duckdb"
        self.database = database  # a Postgres state instead of the state file
        self.runs: list[Run] = []
        env = {k: v for k, v in os.environ.items()
               if not k.lower().endswith("_proxy") and not k.startswith(("OPENAI_", "WIPPY_"))}
        self.env = env | {"NO_PROXY": "127.0.0.1", "PYTHONUNBUFFERED": "1"} | (
            {} if database is None else {"WIPPY_STATE": database})

    def side_lines(self, run: int | None = None) -> list[tuple[str, str, int]]:
        """(turn, part, run) of every line the tool wrote (of one run, if given)."""
        if not self.side_log.exists():
            return []
        lines = []
        for line in self.side_log.read_text(encoding="utf-8").splitlines():
            turn, part, number = line.split(" ")  # a torn line would fail here: one write(2) never tears
            lines.append((turn, part, int(number)))
        return [entry for entry in lines if run is None or entry[2] == run]

    def run(self, plan: KillPlan | None) -> Run:
        number = len(self.runs)
        result = Run(number, plan)
        self.runs.append(result)
        self.server.begin(number, plan)
        stderr_path = self.tmp_path / f"run-{number}.stderr"
        started = time.monotonic()
        with open(stderr_path, "w", encoding="utf-8") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(self.script), str(self.app), str(CONVERSATIONS), str(TURNS)],
                stdout=subprocess.PIPE, stderr=stderr, text=True, env=self.env | {"KILL9_RUN": str(number)},
                cwd=self.tmp_path,
            )
        self.server.serve(proc)
        assert proc.stdout is not None
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, result.stdout), daemon=True)
        reader.start()
        try:
            self._watch(proc, result, started)
        finally:
            if proc.poll() is None:
                proc.kill()
            result.returncode = proc.wait()
            reader.join(10)
            assert not reader.is_alive(), f"seed {SEED}: something the killed node started still holds its stdout"
            proc.stdout.close()
        result.seconds = time.monotonic() - started
        result.stderr = stderr_path.read_text(encoding="utf-8")
        if self.database is None and not self.state.exists():  # killed before the node made its state file
            result.journal = Journal([], [], {}, {}, schema=False)
        else:
            try:
                result.journal = (read_journal(self.state) if self.database is None
                                  else read_postgres_journal(self.database))
            except (duckdb.Error, psycopg.Error, AssertionError) as error:
                pytest.fail(f"seed {SEED}, run {number} ({plan}): the state file does not open after the run: "
                            f"{type(error).__name__}: {error}\n{self.summary()}")
        assert result.journal.schema or "BOOTED" not in result.stdout, f"seed {SEED}: a node booted without a schema"
        return result

    def _watch(self, proc: subprocess.Popen[str], result: Run, started: float) -> None:
        """Wait for the run to end, killing it when the plan's moment comes."""
        plan = result.plan
        kill_at = started + plan.delay if plan is not None and plan.kind == "after" else None
        while proc.poll() is None:
            now = time.monotonic()
            if now - started > RUN_TIMEOUT:
                proc.kill()
                proc.wait()
                pytest.fail(f"seed {SEED}, run {result.number} ({plan}): the driver did not finish within "
                            f"{RUN_TIMEOUT}s\n{self.tail(result)}")
            if kill_at is None and plan is not None and self._reached(plan, result):
                kill_at = now + plan.delay
            if kill_at is not None and now >= kill_at:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
            time.sleep(0.001)

    def _reached(self, plan: KillPlan, result: Run) -> bool:
        if plan.kind == "answered":
            return sum(r.answered for r in self.server.of_run(result.number)) >= plan.n
        if plan.kind == "tool":
            return len(self.side_lines(result.number)) >= plan.n
        if plan.kind == "done":
            return sum(line.startswith("DONE ") for line in list(result.stdout)) >= plan.n
        return False

    def tail(self, result: Run) -> str:
        stderr = (self.tmp_path / f"run-{result.number}.stderr").read_text(encoding="utf-8")
        return "stdout:\n" + "\n".join(result.stdout[-20:]) + "\nstderr:\n" + stderr[-4000:] + "\n" + self.summary()

    def summary(self) -> str:
        lines = [f"seed {SEED}: {len(self.runs)} runs ({sum(r.killed for r in self.runs)} killed)"]
        for run in self.runs:
            steps = len(run.journal.steps) if run.journal else "?"
            lines.append(f"  run {run.number:2d} {str(run.plan):34s} exit {run.returncode:3d} {run.seconds:5.2f}s "
                         f"requests {len(self.server.of_run(run.number)):2d} tool lines "
                         f"{len(self.side_lines(run.number))} journaled steps after it {steps}")
        return "\n".join(lines)


def _read_lines(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


def kill_plan(rng: random.Random, work_left: bool) -> KillPlan:
    """A random kill point: anywhere from the start to the middle of the work, weighted to the risky windows."""
    if not work_left:  # everything is done: only a kill early in the run is sure to land
        return KillPlan("after", delay=rng.uniform(0.05, 0.6))
    kind = rng.choice(["after", "after", "server-before", "server-after", "server-after", "answered", "tool", "tool",
                       "done"])
    if kind == "after":  # from the start: imports, boot, recovery, the first requests
        return KillPlan(kind, delay=rng.uniform(0.05, 1.0))
    if kind.startswith("server-"):  # exactly before, or exactly after, the server answers the n-th request of the run
        return KillPlan(kind, n=rng.randint(1, 3))
    if kind == "answered":  # a moment after the n-th answer was sent: reading it, journaling it, or just after
        return KillPlan(kind, n=rng.randint(1, 3), delay=rng.uniform(0.0, 0.02))
    if kind == "tool":  # the tool wrote its line: its step may or may not be journaled yet
        return KillPlan(kind, n=rng.randint(1, 2), delay=rng.uniform(0.0, 0.015))
    return KillPlan(kind, n=rng.randint(1, 2), delay=rng.uniform(0.0, 0.01))  # a turn was just answered


# -- the test ------------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path, server: ModelServer) -> Path:
    root = tmp_path / "app"
    write_file(root, "wippy.yaml", "watch: false\n")
    write_file(root, "registry/app/_index.yaml", APP.format(base_url=server.base_url))
    write_file(root, "tools/side.py", SIDE_TOOL.format(log=str(tmp_path / "side.log")))
    return root


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("store", "kills"), [("duckdb", MIN_KILLS), ("postgres", MIN_KILLS // 2)])
def test_kill_9_at_random_points_loses_nothing_and_repeats_nothing_completed(
    tmp_path: Path, app: Path, server: ModelServer, store: str, kills: int, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(SEED)
    database = request.getfixturevalue("postgres").database() if store == "postgres" else None
    driver = Driver(tmp_path, app, server, tmp_path / "side.log", database)
    work_left = True
    while sum(run.killed for run in driver.runs) < kills and len(driver.runs) < MAX_ROUNDS:
        run = driver.run(kill_plan(rng, work_left))
        assert server.errors == [], f"seed {SEED}: the model server failed: {server.errors}\n{driver.summary()}"
        if not run.killed:  # it ended before its kill point came
            assert run.finished, f"seed {SEED}, run {run.number}: the driver failed\n{driver.tail(run)}"
            work_left = False
    final = driver.run(None)
    assert server.errors == [], f"seed {SEED}: the model server failed: {server.errors}\n{driver.summary()}"
    assert final.finished, f"seed {SEED}: the last run failed\n{driver.tail(final)}"
    assert sum(run.killed for run in driver.runs) >= kills, driver.summary()

    check_nothing_completed_ran_twice(driver)
    check_requests_carried_the_history(driver)
    check_every_turn_completed(driver, final)
    print(driver.summary())


def check_nothing_completed_ran_twice(driver: Driver) -> None:
    """A step runs at most once per run, never in a run that starts with it journaled, and a run that ran it
    without journaling it was killed; the journal never loses a step."""
    problems = []
    journaled_before: set[tuple[str, str]] = set()
    repeats = Counter[str]()
    seen: set[tuple[str, str]] = set()
    for run in driver.runs:
        assert run.journal is not None
        ran = [("model request", r.step) for r in driver.server.of_run(run.number)]
        ran += [("tool side effect", (turn, f"tool:{call_id(turn, part)}"))
                for turn, part, _ in driver.side_lines(run.number)]
        for (what, step), count in Counter(ran).items():
            if count > 1:
                problems.append(f"run {run.number}: the {what} of {step} happened {count} times in one run")
            if step in journaled_before:
                problems.append(f"run {run.number} ({run.plan}): the {what} of {step} happened again, though the "
                                "journal held that step when the run started")
            if step not in run.journal.step_keys and not run.killed:
                problems.append(f"run {run.number}: the {what} of {step} happened but is not in the journal, and "
                                f"the run was not killed (exit {run.returncode})")
            if step in seen:
                repeats[what] += 1  # allowed: the node died before the step was journaled
            seen.add(step)
        if lost := journaled_before - run.journal.step_keys:
            problems.append(f"run {run.number}: journaled steps disappeared: {sorted(lost)}")
        journaled_before = run.journal.step_keys
    assert not problems, f"seed {SEED}:\n" + "\n".join(problems) + "\n" + driver.summary()
    print(f"repeats of steps interrupted before they were journaled: {dict(repeats)}")


def check_requests_carried_the_history(driver: Driver) -> None:
    """Every request carried the conversation's earlier turns once each, then this turn's question; the second
    model call of a turn carried the tool's result."""
    for request in driver.server.requests:
        conversation, number = request.turn.split("-t")
        history = tuple(question(f"{conversation}-t{t}") for t in range(1, int(number) + 1))
        assert request.users == history, f"seed {SEED}, run {request.run}: {request}"
        assert request.streamed, request
        if request.call == 2:
            expected = tuple(tool_result(request.turn, part) for part in parts(request.turn))
            assert request.tool_results == expected, f"seed {SEED}: {request}"
        else:
            assert (request.call, request.tool_results) == (1, ()), f"seed {SEED}: {request}"


def check_every_turn_completed(driver: Driver, final: Run) -> None:
    journal = final.journal
    assert journal is not None
    turns = turn_ids()
    for run in driver.runs:  # whatever a run printed before its kill is the answer the turn ends with
        for turn, text in run.printed("DONE").items():
            assert text == expected_answer(turn), f"seed {SEED}, run {run.number}: {turn} answered {text!r}"
    assert sorted(journal.tasks) == sorted(set(journal.tasks)), f"seed {SEED}: a task row is doubled: {journal.tasks}"
    by_task: dict[str, list[tuple[int, str]]] = {}
    for task, seq, name, ok in journal.steps:
        assert ok, f"seed {SEED}: step {name} of {task} failed"
        by_task.setdefault(task, []).append((seq, name))
    for task, steps in by_task.items():  # one row per step: a step journaled twice ran (and was recorded) twice
        # (of an unfinished turn, any of them: its parallel tool steps may commit in either order)
        assert len(set(steps)) == len(steps) and set(steps) <= set(expected_steps(task)), (
            f"seed {SEED}: the steps of {task}: {steps}")

    unfinished = [turn for turn in turns if journal.status.get(turn) != "completed"]
    assert not unfinished, (f"seed {SEED}: turns did not complete: "
                            f"{ {t: (journal.status.get(t), journal.error(t)) for t in unfinished} }\n{driver.summary()}")
    assert {turn: journal.answer(turn) for turn in turns} == {turn: expected_answer(turn) for turn in turns}
    assert final.printed("DONE") == {turn: expected_answer(turn) for turn in turns}, f"seed {SEED}: {final.stdout}"
    assert sorted(journal.tasks) == sorted(turns), f"seed {SEED}: {journal.tasks}"
    assert by_task == {turn: expected_steps(turn) for turn in turns}, f"seed {SEED}: {by_task}"
