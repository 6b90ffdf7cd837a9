"""The worker process: runs one sandboxed call at a time.

Started by the pool as `python -s -P -m wippy_agents.sandbox._worker MEMORY_BYTES` with
no environment but `PYTHONHASHSEED=0` (every worker iterates a set alike) in a fresh
temporary directory. It speaks length-prefixed JSON
(4-byte big-endian length, then UTF-8 JSON) on the stdin/stdout it inherited; fds 0-2
are then pointed at /dev/null so nothing reaches the host's terminal.

Request: {"source", "function", "args", "cpu", "output", "result"}, or, to render a
Jinja2 template (which can loop for hours or grow without bound, so it is code like
any other), {"template", "variables", "cpu", "output", "result"}, or, to run a
restricted workflow's `function(ctx, **args)` (see `_flow`), the first form plus
{"workflow": true, "records", "max_operations"}: while it runs the worker sends
{"status": "op", "position", "name", "args"} frames and reads the host's answer
({"ok", "value"} | {"ok": false, "error", "timeout"} | {"suspend": true}) after each.
Reply: {"status": "ok", "value", "output"} | {"status": "compile", "message"} |
{"status": "limit", "limit", "message", "output"} | {"status": "error", "message", "output"} |
(a workflow) {"status": "suspended"} | {"status": "diverged", "position", "recorded", "asked"}.
"""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import signal
import struct
import sys
import types
from collections import OrderedDict
from typing import Any, BinaryIO

from ._flow import Channel, WorkflowContext, finish
from ._restrictions import FILENAME, CallState, LimitExceeded, compile_source, make_globals

_HEADER = struct.Struct(">I")
_MAX_REQUEST = 64 * 1024 * 1024
_CODE_CACHE: OrderedDict[str, tuple[types.CodeType | None, list[str]]] = OrderedDict()
_CODE_CACHE_SIZE = 64
_RECURSION_LIMIT = 400

_CAUGHT_CPU_GRACE = 0.05
"""CPU seconds code that caught the CPU limit has to unwind; then the worker kills itself (the host replaces it)."""

_current: CallState | None = None
_out_of_cpu = False


def _on_sigprof(signum: int, frame: object) -> None:
    global _out_of_cpu
    if _current is None:
        return
    if _out_of_cpu:  # the code caught the limit and went on: do not wait for the kernel's backstop
        os.kill(os.getpid(), signal.SIGKILL)
    _out_of_cpu = True
    signal.setitimer(signal.ITIMER_PROF, _CAUGHT_CPU_GRACE)
    raise _current.hit("cpu", "CPU time limit exceeded")


def _compile(source: str) -> tuple[types.CodeType | None, list[str]]:
    hit = _CODE_CACHE.get(source)
    if hit is not None:
        _CODE_CACHE.move_to_end(source)
        return hit
    compiled = compile_source(source)
    _CODE_CACHE[source] = compiled
    if len(_CODE_CACHE) > _CODE_CACHE_SIZE:
        _CODE_CACHE.popitem(last=False)
    return compiled


def _describe(exc: BaseException) -> str:
    """Exception type, message and the sandbox-only frames (no host frames)."""
    try:
        text = str(exc)
    except BaseException:  # user __str__ may fail
        text = "<unprintable>"
    name = type(exc).__name__
    lines: list[str] = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == FILENAME:
            lines.append(f"  line {tb.tb_lineno}, in {code.co_name}")
        tb = tb.tb_next
    message = f"{name}: {text}" if text else name
    if lines:
        message += "\nsandbox traceback (most recent call last):\n" + "\n".join(lines[-10:])
    return message


def _execute(req: dict[str, Any], state: CallState, context: WorkflowContext | None = None) -> dict[str, Any]:
    """Run `function(**args)` (a workflow's `main(ctx, **args)` when `context` is given), or the module's `result`."""
    source = req.get("source")
    if not isinstance(source, str):
        return {"status": "error", "message": "source must be a str"}
    code, errors = _compile(source)
    if code is None:
        return {"status": "compile", "message": "\n".join(errors)}
    function = req.get("function")
    args = req.get("args") or {}
    if function is not None and (
        not isinstance(function, str) or not function.isidentifier() or function.startswith("_")
    ):
        return {"status": "error", "message": f"bad function name {function!r}"}
    if not isinstance(args, dict):
        return {"status": "error", "message": "args must be a JSON object"}
    glb = make_globals(state)
    try:
        exec(code, glb)
        if function is None:
            if "result" not in glb:
                return {"status": "error", "message": "NameError: the code sets no global named 'result'"}
            value = glb["result"]
        else:
            fn = glb.get(function)
            if not callable(fn):
                return {"status": "error", "message": f"NameError: no function named {function!r}"}
            value = fn(**args) if context is None else fn(context, **args)
        try:
            encoded = json.dumps(value, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            return {"status": "error", "message": f"result is not JSON-compatible: {exc}"}
        if len(encoded) > req["result"]:
            raise state.hit("result size", f"result is {len(encoded)} bytes, over the {req['result']}-byte limit")
        return {"status": "ok", "value": json.loads(encoded)}
    except LimitExceeded:
        raise
    except MemoryError:
        raise state.hit("memory", "memory limit exceeded") from None
    except RecursionError:
        raise state.hit("recursion depth", f"recursion depth limit ({_RECURSION_LIMIT}) exceeded") from None
    except BaseException as exc:  # everything from inside the sandbox is reported
        return {"status": "error", "message": _describe(exc)}
    finally:
        # Drop everything the call made while the CPU timer still runs, so that finalizers
        # (generator `finally` blocks) run under the limits and not between calls.
        glb.clear()
        gc.collect()


_TEMPLATE_CACHE: OrderedDict[str, Any] = OrderedDict()
_jinja: Any = None


def _template(source: str) -> Any:
    """The compiled template (Jinja2's immutable sandbox, the same settings as the host's), cached."""
    global _jinja
    if _jinja is None:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        _jinja = ImmutableSandboxedEnvironment(undefined=jinja2.ChainableUndefined, keep_trailing_newline=True)
    hit = _TEMPLATE_CACHE.get(source)
    if hit is None:
        hit = _TEMPLATE_CACHE[source] = _jinja.from_string(source)
        if len(_TEMPLATE_CACHE) > _CODE_CACHE_SIZE:
            _TEMPLATE_CACHE.popitem(last=False)
    else:
        _TEMPLATE_CACHE.move_to_end(source)
    return hit


def _render(req: dict[str, Any], state: CallState) -> dict[str, Any]:
    source, variables = req.get("template"), req.get("variables") or {}
    if not isinstance(source, str) or not isinstance(variables, dict):
        return {"status": "error", "message": "template must be a str and variables a JSON object"}
    limit = int(req["result"])
    try:
        parts: list[str] = []
        size = 0
        for part in _template(source).generate(variables):
            size += len(part)
            if size > limit:
                raise state.hit("result size", f"the rendered text is over the {limit}-character limit")
            parts.append(part)
        return {"status": "ok", "value": "".join(parts)}
    except LimitExceeded:
        raise
    except MemoryError:
        raise state.hit("memory", "memory limit exceeded") from None
    except RecursionError:
        raise state.hit("recursion depth", "recursion depth limit exceeded") from None
    except Exception as exc:  # a template error is the template's, reported as such
        line = getattr(exc, "lineno", None)
        return {"status": "error", "message": f"{type(exc).__name__}: {exc}" + (f" (line {line})" if line else "")}


def _run_workflow(req: dict[str, Any], state: CallState, channel: Channel) -> dict[str, Any]:
    records, max_operations = req.get("records"), req.get("max_operations")
    if (not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                                 for r in records) or not isinstance(max_operations, int)):
        return {"status": "error", "message": "a workflow request needs records and max_operations"}
    context = WorkflowContext(channel, records, max_operations, int(req["result"]), state)
    return finish(context, _execute(req, state, context))


def _handle(req: dict[str, Any], channel: Channel) -> dict[str, Any]:
    global _current, _out_of_cpu
    cpu = float(req["cpu"])
    state = CallState(int(req["output"]))
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    # Backstop: the kernel kills the worker with SIGXCPU if the timer is ever defeated.
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(spent + cpu) + 1, hard))
    reply: dict[str, Any]
    try:
        _current, _out_of_cpu = state, False
        signal.setitimer(signal.ITIMER_PROF, cpu)
        try:
            if "template" in req:
                reply = _render(req, state)
            elif req.get("workflow"):
                reply = _run_workflow(req, state, channel)
            else:
                reply = _execute(req, state)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            _current = None
    except LimitExceeded as exc:
        reply = {"status": "limit", "limit": exc.limit, "message": exc.message}
    except MemoryError:
        reply = {"status": "limit", "limit": "memory", "message": "memory limit exceeded"}
    if state.limit is not None:  # hit even if the code caught it
        reply = {"status": "limit", "limit": state.limit.limit, "message": state.limit.message}
    reply["output"] = state.output()
    return reply


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    chunks: list[bytes] = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _write(stream: BinaryIO, reply: dict[str, Any]) -> None:
    try:
        data = json.dumps(reply, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        data = json.dumps({"status": "error", "message": f"reply not serializable: {exc}", "output": ""}).encode()
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _isolate_stdio() -> tuple[BinaryIO, BinaryIO]:
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return proto_in, proto_out


def main(argv: list[str]) -> int:
    memory = int(argv[1]) if len(argv) > 1 else 512 * 1024 * 1024
    proto_in, proto_out = _isolate_stdio()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    except (ValueError, OSError):
        pass
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    signal.signal(signal.SIGPROF, _on_sigprof)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.setrecursionlimit(_RECURSION_LIMIT + 50)
    # Warm up the compiler and the guards before saying we are ready.
    def channel(frame: dict[str, Any]) -> dict[str, Any]:
        """An operation of a workflow: ask the host, wait for its answer (no CPU is spent waiting)."""
        _write(proto_out, frame)
        header = _read_exact(proto_in, _HEADER.size)
        (size,) = _HEADER.unpack(header) if header is not None else (0,)
        body = _read_exact(proto_in, size) if size and size <= _MAX_REQUEST else None
        if body is None:
            os._exit(0)  # the host went away (or spoke garbage) mid-call: nobody waits for this run
        answer = json.loads(body)
        return answer if isinstance(answer, dict) else {"ok": False, "error": "the host sent a malformed answer"}

    _handle({"source": "def main():\n    return [i for i in range(3)]\n", "function": "main", "args": {},
             "cpu": 5.0, "output": 1024, "result": 1024}, channel)
    sys.setrecursionlimit(_RECURSION_LIMIT)
    gc.collect()
    gc.freeze()  # startup objects are never garbage; keeps the per-call collection cheap
    _write(proto_out, {"status": "ready", "pid": os.getpid()})
    while True:
        header = _read_exact(proto_in, _HEADER.size)
        if header is None:
            return 0
        (size,) = _HEADER.unpack(header)
        if size > _MAX_REQUEST:
            return 2
        body = _read_exact(proto_in, size)
        if body is None:
            return 0
        try:
            req = json.loads(body)
            reply = _handle(req, channel)
        except MemoryError:
            reply = {"status": "limit", "limit": "memory", "message": "memory limit exceeded", "output": ""}
        except Exception as exc:  # a malformed request must not kill the loop
            reply = {"status": "error", "message": f"worker: {type(exc).__name__}: {exc}", "output": ""}
        _write(proto_out, reply)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
