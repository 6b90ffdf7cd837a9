"""What the `kill -9` tests share: a driver script's runs, each killed at a planned point; a loopback Chat Completions
server that can kill the driver right before or after it answers; reading the journal a killed node left behind.

A test subclasses `ModelServer` with its script (`request`: what a request is; `answer`: its chunks), writes a
driver script that prints a line for each thing worth killing around, and asserts over `Driver.runs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import duckdb
import psycopg
import pytest

import wippy_agents.agents  # noqa: F401  (it registers the journal types of the turns the tests read back)
from wippy_agents.durable import loads

RUN_TIMEOUT = 30.0  # one driver run; far above what a run takes (a hang is a bug, reported with its stderr)
SEED = int(os.environ.get("WIPPY_KILL9_SEED", "7"))


SIDE_TOOL = '''
import os
import time

LOG = {log!r}


def record(key: str, part: str) -> str:
    """Record a part of a task by appending a line to a log file (the side effect under test).

    Args:
        key: The task's id.
        part: Which part of it this is.
    """
    line = f"{{key}} {{part}} {{os.environ.get('KILL9_RUN', '?')}}\\n".encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write(2) on an O_APPEND file: the line is all there or not at all
    finally:
        os.close(fd)
    time.sleep(0.01)  # like a real tool, it takes a moment; the node may die after the write, before the journal
    return f"recorded {{key}} {{part}}"
'''
"""`tools/side.py` of every kill -9 test: `record(key, part)` appends `<key> <part> <run>` to a log file in one
write(2) (`Driver.side_lines` reads it) and returns `recorded <key> <part>`. Format it with the log's path."""


@dataclass
class KillPlan:
    """Where one run is killed: `after` a delay from its start; `server-before`/`server-after` the n-th request's
    answer; `delay` after the n-th `answered` request or `tool` line; or, for any other kind, after the n-th line the
    driver printed that starts with the kind in capitals (`done`: the n-th `DONE ...` line)."""

    kind: str
    n: int = 0
    delay: float = 0.0

    def __str__(self) -> str:
        return f"{self.kind}(n={self.n}, delay={self.delay * 1000:.0f}ms)"


class ServedRequest(Protocol):
    run: int
    answered: bool  # the server wrote its whole response (whether the client read it is unknowable)


RequestT = TypeVar("RequestT", bound=ServedRequest)


class ModelServer(Generic[RequestT]):
    """Chat Completions on 127.0.0.1, scripted by a subclass. It records every request and can SIGKILL the driver
    right before or after answering the n-th request of a run (`server-before`, `server-after` plans)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[RequestT] = []
        self.run = -1
        self.proc: subprocess.Popen[str] | None = None
        self.plan: KillPlan | None = None
        self.killed_workers: list[int] = []  # the sandbox workers the driver had when this server killed it
        self.errors: list[str] = []
        self._http = _Server(("127.0.0.1", 0), self._handler())
        self._http.errors = self.errors
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    def request(self, run: int, body: dict[str, Any]) -> RequestT:
        """What the request is, for the test (an exception fails the test: a request the script did not expect)."""
        raise NotImplementedError

    def answer(self, body: dict[str, Any], request: RequestT) -> list[dict[str, Any]]:
        """The chunks of the answer (a non-streamed reply is built from the same chunks)."""
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def begin(self, run: int, plan: KillPlan | None) -> None:
        with self.lock:
            self.run, self.plan, self.proc, self.killed_workers = run, plan, None, []

    def serve(self, proc: subprocess.Popen[str]) -> None:
        with self.lock:
            self.proc = proc

    def of_run(self, run: int) -> list[RequestT]:
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
            self.killed_workers = sandbox_workers(proc.pid)
            proc.send_signal(signal.SIGKILL)  # Popen's own check: never a pid it has already reaped

    def _received(self, body: dict[str, Any]) -> tuple[RequestT, str | None]:
        """Record the request; whether to kill the driver before or after answering it."""
        with self.lock:
            request = self.request(self.run, body)
            self.requests.append(request)
            number = sum(r.run == self.run for r in self.requests)
            plan = self.plan
        kill = None
        if plan is not None and plan.kind in ("server-before", "server-after") and plan.n == number:
            kill = plan.kind.removeprefix("server-")
        return request, kill

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
                    chunks = server.answer(body, request)
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
                        chunks.append({**chunk(None), "usage": usage})
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


def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
    """A streamed Chat Completions chunk: `delta` in choice 0 (None: no choice, as the usage chunk has)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-k9", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": choices, "usage": None}


def text_chunks(text: str) -> list[dict[str, Any]]:
    """A text answer in a few chunks, as a streaming model sends it."""
    return [chunk({"role": "assistant", "content": ""}), chunk({"content": text[:10]}), chunk({"content": text[10:]}),
            chunk({}, finish="stop")]


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


# -- the journal a killed node left ---------------------------------------------------------------


@dataclass
class Journal:
    """What the state holds, read with a connection of its own."""

    steps: list[tuple[str, int, str, bool]]  # task, seq, name, ok
    tasks: list[str]
    status: dict[str, str]  # task -> its latest status
    details: dict[str, Any]  # task -> the detail of its latest status (the result, or the error)
    schema: bool = True  # False: the file holds no tables yet

    @property
    def step_keys(self) -> set[tuple[str, str]]:
        return {(task, name) for task, _, name, _ in self.steps}

    def result(self, task: str) -> Any:
        return self.details[task]["result"] if self.status.get(task) == "completed" else None

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


# -- the driver and its runs ---------------------------------------------------------------------


@dataclass
class Run:
    number: int
    plan: KillPlan | None
    returncode: int = 0
    seconds: float = 0.0
    stdout: list[str] = field(default_factory=list)
    stderr: str = ""
    journal: Journal | None = None  # what the state file held once the run had ended
    workers: list[int] = field(default_factory=list)  # the sandbox workers the driver had when it was killed

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def finished(self) -> bool:
        return self.returncode == 0 and bool(self.stdout) and self.stdout[-1] == "ALL DONE"

    def printed(self, what: str) -> dict[str, str]:
        """task -> text of the driver's `<what> <task> <text>` lines (`DONE`, `FAILED`)."""
        return {task: text for _, task, text in (line.split(" ", 2) for line in self.stdout
                                                 if line.startswith(what + " "))}


class Driver:
    """Starts the driver script (`script`, given `arguments` after the app's folder), kills it where the plan says,
    and reads the state after each run. The app's one side effect appends `<a> <b> <run>` lines to `side_log`."""

    def __init__(self, tmp_path: Path, app: Path, server: ModelServer[Any], side_log: Path, script: str,
                 arguments: list[str], database: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.app = app
        self.server = server
        self.side_log = side_log
        self.script = tmp_path / "driver.py"
        self.script.write_text(script, encoding="utf-8")
        self.arguments = arguments
        self.state = app / ".wippy" / "state.duckdb"
        self.database = database  # a Postgres state instead of the state file
        self.runs: list[Run] = []
        env = {k: v for k, v in os.environ.items()
               if not k.lower().endswith("_proxy") and not k.startswith(("OPENAI_", "WIPPY_"))}
        self.env = env | {"NO_PROXY": "127.0.0.1", "PYTHONUNBUFFERED": "1"} | (
            {} if database is None else {"WIPPY_STATE": database})

    def side_lines(self, run: int | None = None) -> list[tuple[str, str, int]]:
        """(a, b, run) of every line the side effect wrote (of one run, if given)."""
        if not self.side_log.exists():
            return []
        lines = []
        for line in self.side_log.read_text(encoding="utf-8").splitlines():
            a, b, number = line.split(" ")  # a torn line would fail here: one write(2) never tears
            lines.append((a, b, int(number)))
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
                [sys.executable, str(self.script), str(self.app), *self.arguments],
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
            result.workers = result.workers or self.server.killed_workers
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
        self._check_workers_ended(result)
        return result

    def _check_workers_ended(self, result: Run) -> None:
        """A killed node's sandbox workers end with it (their stdin closes): a node that crashes over and over does
        not pile up processes."""
        deadline = time.monotonic() + 5.0
        while alive := [pid for pid in result.workers if _alive(pid)]:
            if time.monotonic() > deadline:
                pytest.fail(f"seed {SEED}, run {result.number} ({result.plan}): the killed node's sandbox workers "
                            f"{alive} were still running 5 s after it died\n{self.summary()}")
            time.sleep(0.01)

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
                result.workers = sandbox_workers(proc.pid)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
            time.sleep(0.001)

    def _reached(self, plan: KillPlan, result: Run) -> bool:
        if plan.kind in ("after", "server-before", "server-after"):
            return False  # timed from the start, or killed by the server itself
        if plan.kind == "answered":
            return sum(r.answered for r in self.server.of_run(result.number)) >= plan.n
        if plan.kind == "tool":
            return len(self.side_lines(result.number)) >= plan.n
        return sum(line.startswith(plan.kind.upper() + " ") for line in list(result.stdout)) >= plan.n

    def tail(self, result: Run) -> str:
        stderr = (self.tmp_path / f"run-{result.number}.stderr").read_text(encoding="utf-8")
        return "stdout:\n" + "\n".join(result.stdout[-20:]) + "\nstderr:\n" + stderr[-4000:] + "\n" + self.summary()

    def summary(self) -> str:
        lines = [f"seed {SEED}: {len(self.runs)} runs ({sum(r.killed for r in self.runs)} killed)"]
        for run in self.runs:
            steps = len(run.journal.steps) if run.journal else "?"
            lines.append(f"  run {run.number:2d} {str(run.plan):34s} exit {run.returncode:3d} {run.seconds:5.2f}s "
                         f"requests {len(self.server.of_run(run.number)):2d} side lines "
                         f"{len(self.side_lines(run.number))} journaled steps after it {steps} sandbox workers "
                         f"{len(run.workers)}")
        return "\n".join(lines)


def sandbox_workers(pid: int) -> list[int]:
    """The pids of the process's children that are sandbox workers (read in a few files: it runs right before a
    kill)."""
    children = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += listing.read_text().split()
    workers = []
    for child in children:
        with contextlib.suppress(OSError):
            if b"wippy_agents.sandbox._worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(int(child))
    return workers


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie has ended: whoever adopted it has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _read_lines(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


def check_nothing_completed_ran_twice(driver: Driver, ran_in: Callable[[Run], list[tuple[str, Hashable]]],
                                      journaled: Callable[[Journal], set[Hashable]]) -> Counter[str]:
    """A step runs at most once per run, never in a run that starts with it journaled, and a run that ran it
    without journaling it was killed; the journal never loses a step. `ran_in(run)`: (what, step) of each side
    effect the run caused; `journaled(journal)`: the steps the journal holds, named alike. Returns how often a step
    interrupted before it was journaled ran again, by what it is."""
    problems = []
    journaled_before: set[Hashable] = set()
    repeats = Counter[str]()
    seen: set[Hashable] = set()
    for run in driver.runs:
        assert run.journal is not None
        after = journaled(run.journal)
        for (what, step), count in Counter(ran_in(run)).items():
            if count > 1:
                problems.append(f"run {run.number}: the {what} of {step} happened {count} times in one run")
            if step in journaled_before:
                problems.append(f"run {run.number} ({run.plan}): the {what} of {step} happened again, though the "
                                "journal held that step when the run started")
            if step not in after and not run.killed:
                problems.append(f"run {run.number}: the {what} of {step} happened but is not in the journal, and "
                                f"the run was not killed (exit {run.returncode})")
            if step in seen:
                repeats[what] += 1  # allowed: the node died before the step was journaled
            seen.add(step)
        if lost := journaled_before - after:
            problems.append(f"run {run.number}: journaled steps disappeared: {sorted(map(str, lost))}")
        journaled_before = after
    assert not problems, f"seed {SEED}:\n" + "\n".join(problems) + "\n" + driver.summary()
    return repeats
