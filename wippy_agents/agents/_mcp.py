"""MCP servers as registry tools: each `mcp_server` entry is a process that keeps a client of the server.

The process connects (over stdio, or streamable HTTP for a `url`), lists the
server's tools and provides each as a built-in `tool` entry `mcp.<entry
name>:<tool>` (runtime `mcp`), which agents list like any tool. It checks the
server is there (listing its tools), and reconnects with backoff when it stops answering; after
`max_restarts` failures in a row it gives the server up and says so in the log.
While a server is down its tools stay listed, marked `unavailable` (with why),
and are not offered to agents. A call goes through the same `ToolSet` path as any
tool, so it is a journaled step under the `tool.call` policy: a replayed turn
does not call the server again. A server that asks for input during a call (an
elicitation) waits for a person's answer as an `mcp.elicit` approval. The `mcp`
SDK is imported only when an app has a server.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fnmatch
import functools
import hashlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Collection, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

from .. import process
from .._runtime.node import Node
from .._runtime.secrets import RedactedStream, Redactor
from .._runtime.text import clean_text
from .._runtime.types import KILL, Pid
from ..errors import RunError, UsageError
from ..policy import Approval, Approvals
from ..registry import Entry, McpServerSpec, Registry, ToolSpec
from ..state import private_folder
from ..tools import ToolContext

__all__ = ["McpServers", "McpToolError", "resolve_variables"]

log = logging.getLogger("wippy_agents.mcp")

PING_SECONDS = 5.0
"""How often a connected server is checked; one that does not answer within its timeout is reconnected."""
BACKOFF = (0.5, 30.0)
"""Seconds before reconnecting a server that failed: the first wait, and the longest."""
FIRST_LISTING_SECONDS = 10.0
"""How long a turn whose agent lists a server's tools waits for that server's first listing (a server still
starting when the app boots: `wippy ask` boots the app for its one turn)."""
ANSWER_SECONDS = 3600.0
"""How long a call waits for a person to answer what its server asked (an elicitation); the call's own timeout
is paused meanwhile."""
NAMESPACE = "mcp"
PIN_ACTION = "mcp.tool.pin"
ELICIT_ACTION = "mcp.elicit"
MAX_SCHEMA_CHARS = 20_000
"""The largest form (its JSON schema) a server may ask a person to fill in: the approval shows it whole."""
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class McpToolError(RunError):
    """An MCP server answered a call with an error, or cannot be reached: the model reads it and goes on."""


def resolve_variables(values: Mapping[str, str], where: str, environ: Mapping[str, str] = os.environ
                      ) -> dict[str, str]:
    """`values` with each `${NAME}` replaced from the environment; `UsageError` naming a variable that is not set."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise UsageError(f"{where} names ${{{name}}}, which is not set in the environment; set it and the server "
                             "starts again")
        return environ[name]

    return {key: _VARIABLE.sub(lookup, value) for key, value in values.items()}


def definition_of(tool: Any) -> dict[str, Any]:
    """What trust on first use pins of a tool: what the model is told, and what the server says it does."""
    annotations = tool.annotations.model_dump(mode="json", exclude_none=True) if tool.annotations else None
    return {"name": tool.name, "description": tool.description or "", "input_schema": tool.input_schema or {},
            "annotations": annotations}


@dataclass(eq=False)
class _Call:
    """A call in flight: whom it is for, its deadline (paused while a person answers), and why it must fail."""

    tool_id: str
    caller: ToolContext
    timeout: float
    deadline: asyncio.Timeout | None = None
    questions: int = 0
    refused: str | None = None
    """Set when the server asked for input that cannot be answered: the error the call then fails with."""


_calling: ContextVar[_Call | None] = ContextVar("wippy_mcp_call", default=None)


def _digest(definition: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def tool_entry(server: Entry, spec: McpServerSpec, tool: Any) -> Entry:
    """The registry entry of one of a server's tools."""
    return Entry(f"{NAMESPACE}.{server.name}:{tool.name}", "tool",
                 {"title": tool.title or tool.name, "mcp_server": server.id},
                 {"runtime": "mcp", "server": server.id, "tool": tool.name, "description": tool.description or "",
                  "parameters": tool.input_schema or {"type": "object", "properties": {}}, "timeout": spec.timeout})


class McpServers:
    """The app's MCP servers: `run` is the process that starts one process per `mcp_server` entry.

    Trust on first use: each tool's definition (name, description, input schema,
    annotations) is pinned by its digest in the audit trail when first seen. A
    definition that differs from its pin is not offered until a person approves it
    (an `mcp.tool.change` approval, with both definitions as its diff); the change,
    the decision and the new pin are each audited.
    """

    def __init__(self, node: Node, registry: Registry, root: Path, approvals: Approvals | None = None, *,
                 redactor: Redactor | None = None) -> None:
        self.node = node
        self.registry = registry
        self.approvals = approvals
        """Where a changed definition waits for a person (None: definitions are not pinned)."""
        self.redactor = redactor if redactor is not None else Redactor()
        """Secrets a server may print (it may be handed one in its `env`), replaced in its log."""
        self.root = root
        """The app folder: a stdio server runs there, as the app's own tools do."""
        self.log_folder = root / ".wippy" / "mcp"
        """Where each server's stderr goes (`<entry>.log`), not onto the terminal the node or the TUI uses."""
        self.clients: dict[str, Any] = {}
        """Each connected server's `mcp.Client`, by entry id."""
        self._processes: dict[str, Pid] = {}
        self._withheld: dict[str, tuple[Entry, str, dict[str, Any]]] = {}
        """Tools whose definition changed since it was pinned, by approval id: the entry, its digest, its definition."""
        self._broken: dict[str, asyncio.Event] = {}
        """Set by a call that failed on its connection, so the server's process checks it at once."""
        self._calls: dict[str, list[_Call]] = {}
        """The calls in flight on each server, by entry id (to find whom a server's question is for)."""
        self._answers: dict[str, asyncio.Future[Approval]] = {}
        """What a server asked, waiting for a person's decision, by approval id."""
        self._first_listing: dict[str, asyncio.Event] = {}
        """Set, per server entry, once its first attempt to connect and list its tools is over (either way)."""

    async def run(self) -> None:
        """Start a process per server entry, and again for each one that changes; stop those that go."""
        self.registry.subscribe("*", kinds=["mcp_server"])
        if self.approvals is not None:
            self.approvals.subscribe()
        for entry in self.registry.find(kind="mcp_server"):
            self._start(entry.id)
        try:
            while True:
                msg = await process.receive()
                if msg.topic == "approval.decided":
                    self._decided(msg.payload)
                elif msg.topic in ("registry.create", "registry.update", "registry.delete") and msg.payload.id:
                    self._stop(msg.payload.id)
                    if msg.topic != "registry.delete":
                        self._start(msg.payload.id)
        finally:
            for entry_id in list(self._processes):
                self._stop(entry_id)

    def _start(self, entry_id: str) -> None:
        self._first_listing.setdefault(entry_id, asyncio.Event())
        self._processes[entry_id] = self.node.spawn(self.serve, entry_id, name=f"mcp:{entry_id}")

    def _stop(self, entry_id: str) -> None:
        pid = self._processes.pop(entry_id, None)
        if pid is not None:
            self.node.exit(None, pid, KILL)
        if (first := self._first_listing.pop(entry_id, None)) is not None:  # a new start lists anew
            first.set()
        self._withdraw(entry_id)

    async def serve(self, entry_id: str) -> None:
        """The process of one server: connect, offer its tools, check on it; reconnect with backoff; give up in the end."""
        first = self._first_listing.setdefault(entry_id, asyncio.Event())
        try:
            from mcp import Client
        except ImportError:
            log.error("MCP server %s needs the mcp SDK: pip install 'wippy-agents[mcp]'", entry_id)
            first.set()
            return
        entry = self.registry.get(entry_id)
        spec = self.registry.spec(entry_id)
        assert isinstance(spec, McpServerSpec)
        failures, delay = 0, BACKOFF[0]
        try:
            while True:
                try:
                    async with Client(self._transport(entry, spec), read_timeout_seconds=spec.timeout,
                                      elicitation_callback=functools.partial(self._elicit, entry_id)) as client:
                        listed = await asyncio.wait_for(client.list_tools(), spec.timeout)
                        self._offer(entry, spec, listed.tools)
                        self.clients[entry_id] = client
                        first.set()
                        broken = self._broken[entry_id] = asyncio.Event()
                        changed = asyncio.Event()
                        failures, delay = 0, BACKOFF[0]
                        listening = asyncio.create_task(_follow_tool_list(client, changed))
                        try:
                            while True:
                                wake = asyncio.create_task(_first(broken, changed))
                                with contextlib.suppress(TimeoutError):
                                    await asyncio.wait_for(wake, PING_SECONDS)
                                broken.clear()
                                if changed.is_set():  # the server says its tools changed: offer what it lists now
                                    changed.clear()
                                    listed = await asyncio.wait_for(client.list_tools(), spec.timeout)
                                    self._offer(entry, spec, listed.tools)
                                    continue
                                # still there? (2026-07-28 has no ping: a fresh list of its tools asks it)
                                await asyncio.wait_for(client.list_tools(cache_mode="refresh"), spec.timeout)
                        finally:
                            listening.cancel()
                            with contextlib.suppress(BaseException):
                                await listening
                except UsageError as error:
                    log.error("MCP server %s cannot start: %s", entry_id, error)
                    return
                except Exception as error:  # it crashed, hung or answered garbage: try again, but not for ever
                    self.clients.pop(entry_id, None)
                    first.set()
                    failures += 1
                    if failures > spec.max_restarts:
                        self._suspend(entry_id, f"the MCP server failed {failures} times in a row ({_reason(error)}) "
                                                "and was given up on; change its entry to try again")
                        log.error("MCP server %s failed %d times in a row (last: %s); its tools are unavailable until "
                                  "its entry changes", entry_id, failures, _reason(error))
                        return
                    self._suspend(entry_id, f"the MCP server is reconnecting ({_reason(error)})")
                    log.warning("MCP server %s failed (%s); reconnecting in %gs", entry_id, _reason(error), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF[1])
        finally:
            self.clients.pop(entry_id, None)
            first.set()

    async def listed(self, patterns: Collection[str], timeout: float = FIRST_LISTING_SECONDS) -> None:
        """Wait, at most `timeout`, until the servers whose tools `patterns` name have tried to list them once.

        A turn that starts while such a server is still starting (the app just
        booted) is then offered its tools; a server that is down by then is not
        waited for again.
        """
        names = [pattern.partition(":")[0] for pattern in patterns if pattern.startswith(f"{NAMESPACE}.")]
        waiting = [self._first_listing.setdefault(entry.id, asyncio.Event()).wait()
                   for entry in self.registry.find(kind="mcp_server")
                   if any(fnmatch.fnmatchcase(f"{NAMESPACE}.{entry.name}", name) for name in names)]
        if waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waiting), timeout)

    def _transport(self, entry: Entry, spec: McpServerSpec) -> Any:
        if spec.url is not None:
            return spec.url if not spec.headers else _http_transport(
                spec.url, resolve_variables(spec.headers, f"{entry.id} headers"))
        from mcp.client.stdio import StdioServerParameters, get_default_environment, stdio_client

        assert spec.command is not None
        environment = get_default_environment() | resolve_variables(spec.env, f"{entry.id} env")
        private_folder(self.log_folder)
        errlog = _RedactedLog(self.log_folder / f"{entry.id.replace(':', '.')}.log", self.redactor)
        command = sys.executable if spec.command in ("python", "python3") else spec.command  # the app's own Python
        return _closing(stdio_client(StdioServerParameters(command=command, args=spec.args, env=environment,
                                                           cwd=self.root),
                                     errlog=cast(TextIO, errlog)), errlog)  # the process gets its fileno() alone

    def _offer(self, server: Entry, spec: McpServerSpec, tools: list[Any]) -> None:
        """Provide the server's tools (those `spec.tools` allows, as pinned) as entries; take back the others."""
        offered: dict[str, Entry] = {}
        for tool in tools:
            if spec.tools is None or tool.name in spec.tools:
                entry = tool_entry(server, spec, tool)
                if self._trusted(server, entry, definition_of(tool)):
                    offered[entry.id] = entry
        self._withdraw(server.id, keep=set(offered))
        for entry in offered.values():
            self.registry.add_builtin(entry)

    def _trusted(self, server: Entry, entry: Entry, definition: dict[str, Any]) -> bool:
        """Whether the tool's definition is the pinned one (pinning it if it is new); else it waits for a person."""
        if self.approvals is None:
            return True
        digest = _digest(definition)
        pinned = self._pin(entry.id)
        if pinned is None:
            self._record_pin(server.id, entry.id, digest, definition, "first seen")
            return True
        if pinned["sha256"] == digest:
            return True
        approval = self.approvals.request(
            agent=server.id, task_id=None, call_id=digest, action="mcp.tool.change", resource=entry.id, kind="tool",
            summary=f"the MCP server {server.id} changed the definition of {entry.id}",
            arguments={"before": pinned["definition"], "after": definition})
        if approval.status == "approved":
            self._record_pin(server.id, entry.id, digest, definition, f"approved by {approval.decided_by}")
            return True
        if approval.status == "pending":
            self._withheld[approval.id] = (entry, digest, definition)
        return False

    def _decided(self, approval: Approval) -> None:
        """A person answered a server's question, or approved a changed definition: pin it and offer the tool
        (denied: it stays withheld)."""
        answer = self._answers.pop(approval.id, None)
        if answer is not None:
            if not answer.done():
                answer.set_result(approval)
            return
        withheld = self._withheld.pop(approval.id, None)
        if withheld is None or approval.status != "approved":
            return
        entry, digest, definition = withheld
        self._record_pin(approval.agent, entry.id, digest, definition, f"approved by {approval.decided_by}")
        if approval.agent in self.clients:
            self.registry.add_builtin(entry)

    def _pin(self, tool_id: str) -> dict[str, Any] | None:
        assert self.approvals is not None
        pins = [record for record in self.approvals.audit.list(resource=tool_id, limit=1000)
                if record.action == PIN_ACTION]
        if not pins:
            return None
        pin: dict[str, Any] = json.loads(pins[-1].reason.partition("\n")[2])
        return pin

    def _record_pin(self, server_id: str, tool_id: str, digest: str, definition: dict[str, Any], why: str) -> None:
        """The pin is an audit record: its reason says why, then holds the digest and the definition as JSON."""
        assert self.approvals is not None
        self.approvals.audit.record(server_id, None, PIN_ACTION, tool_id, "tool", "pinned", "wippy:mcp",
                                    f"{why}\n" + json.dumps({"sha256": digest, "definition": definition},
                                                            sort_keys=True, ensure_ascii=False))

    def _withdraw(self, server_id: str, keep: Collection[str] = ()) -> None:
        for entry in self._provided(server_id):
            if entry.id not in keep:
                self.registry.remove_builtin(entry.id)

    def _suspend(self, server_id: str, why: str) -> None:
        """Keep listing the server's tools, marked `unavailable` with why: agents are not offered them meanwhile."""
        for entry in self._provided(server_id):
            self.registry.add_builtin(Entry(entry.id, entry.kind, {**entry.meta, "unavailable": why}, entry.data))

    def _provided(self, server_id: str) -> list[Entry]:
        return [entry for entry in self.registry.find(kind="tool", namespace=f"{NAMESPACE}.{server_id.partition(':')[2]}")
                if entry.meta.get("mcp_server") == server_id]

    async def call(self, entry: Entry, spec: ToolSpec, arguments: dict[str, Any], timeout: float,
                   caller: ToolContext | None = None) -> str:
        """Call the tool on its server: its text (or structured) result; `McpToolError` for an error it reports."""
        assert spec.server is not None and spec.tool is not None
        client = self.clients.get(spec.server)
        if client is None:
            raise McpToolError(f"the MCP server {spec.server} is not connected now (see `wippy registry list`); try "
                               "again later or do without it")
        call = _Call(entry.id, caller or ToolContext(), timeout)
        in_flight = self._calls.setdefault(spec.server, [])
        in_flight.append(call)
        token = _calling.set(call)
        try:
            async with asyncio.timeout(timeout) as call.deadline:
                result = await client.call_tool(spec.tool, arguments)
        except Exception as error:
            if call.refused is not None:
                raise McpToolError(call.refused) from None
            if spec.server in self._broken:
                self._broken[spec.server].set()
            if isinstance(error, TimeoutError):
                raise
            raise McpToolError(f"the MCP server {spec.server} failed the call ({_reason(error)}); it is being "
                               "reconnected") from None
        finally:
            _calling.reset(token)
            in_flight.remove(call)
        if call.refused is not None:
            raise McpToolError(call.refused)
        text = "\n".join(block.text for block in result.content if getattr(block, "type", None) == "text")
        if not text and result.structured_content is not None:
            text = json.dumps(result.structured_content, ensure_ascii=False)
        if result.is_error:
            raise McpToolError(text or f"{entry.id} failed without saying why")
        return text

    async def _elicit(self, server_id: str, context: Any, params: Any) -> Any:
        """The server asks for input during a call: a person answers it as an `mcp.elicit` approval.

        Approving with a JSON object as the reason accepts with that object (checked
        against the schema the server sent); denying declines. A question that cannot be
        answered here (a URL to open, no call to tie it to, no approvals) fails the call
        with an error that says why.
        """
        from mcp import types

        in_flight = self._calls.get(server_id, [])
        call = _calling.get() or (in_flight[0] if len(in_flight) == 1 else None)
        question = clean_text(str(params.message))[:2000]
        why = None
        if call is None:
            why = "it asked outside any one call of its tools"
        elif self.approvals is None:
            why = "this app has no approvals through which a person could answer"
        elif getattr(params, "mode", "form") != "form":
            why = f"it asked to send the user to a web page ({clean_text(str(params.url))[:500]}), which wippy does " \
                  "not open"
        elif (size := len(json.dumps(params.requested_schema, default=str))) > MAX_SCHEMA_CHARS:
            why = f"its form is {size:,} characters of schema, over the {MAX_SCHEMA_CHARS:,} a person is shown"
        if why is not None or call is None or self.approvals is None:
            refused = f"the MCP server {server_id} asked for input that cannot be answered here ({why}): {question}"
            if call is not None:
                call.refused = refused
            return types.ErrorData(code=types.INVALID_REQUEST, message=refused)
        schema = params.requested_schema
        call.questions += 1
        approval = self.approvals.request(
            agent=call.caller.agent_id or server_id, task_id=call.caller.task_id,
            call_id=f"{call.caller.call_id}:ask:{call.questions}", action=ELICIT_ACTION, resource=call.tool_id,
            kind="tool", summary=f"{server_id} asks: {question}",
            arguments={"question": question, "schema": schema,
                       "how to answer": "approve with the answer as a JSON object as the reason; deny to decline"})
        if approval.status == "pending":
            approval = await self._answer(approval, call)
        if approval.status != "approved":
            return types.ElicitResult(action="decline")
        answer, problem = _answer_of(approval.decision_reason, schema)
        if problem is not None:
            call.refused = f"the answer to {server_id}'s question ({question}) does not fit what it asked: {problem}"
            return types.ErrorData(code=types.INVALID_PARAMS, message=call.refused)
        return types.ElicitResult(action="accept", content=answer)

    async def _answer(self, approval: Approval, call: _Call) -> Approval:
        """Wait for a person's decision, the call's own deadline paused meanwhile; denied if nobody answers."""
        assert self.approvals is not None and call.deadline is not None
        loop = asyncio.get_running_loop()
        waiting = self._answers[approval.id] = loop.create_future()
        call.deadline.reschedule(None)
        try:
            return await asyncio.wait_for(waiting, ANSWER_SECONDS)
        except TimeoutError:
            return await self.approvals.deny(approval.id, by="wippy:mcp",
                                             reason=f"nobody answered within {ANSWER_SECONDS:g}s")
        finally:
            self._answers.pop(approval.id, None)
            call.deadline.reschedule(loop.time() + call.timeout)


def _answer_of(reason: str | None, schema: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The answer a person gave as the approval's reason (a JSON object; empty for a yes/no question), or why not."""
    import jsonschema

    text = (reason or "").strip()
    try:
        answer = json.loads(text) if text else {}
    except json.JSONDecodeError as error:
        return {}, f"the reason is not a JSON object ({error.msg}); approve again with, e.g., {_example(schema)}"
    if not isinstance(answer, dict):
        return {}, f"the reason must be a JSON object, e.g. {_example(schema)}"
    try:
        jsonschema.validate(answer, schema)
    except jsonschema.ValidationError as error:
        return {}, f"{error.message} (the server asked for {_example(schema)})"
    except jsonschema.SchemaError as error:
        return {}, f"the server's schema is not valid: {error.message}"
    return answer, None


def _example(schema: dict[str, Any]) -> str:
    """An answer's shape for a person, from the server's schema (whatever that holds: it is the server's)."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return "{}"
    return json.dumps({str(name)[:64]: f"<{spec.get('type', 'value') if isinstance(spec, dict) else 'value'}>"
                       for name, spec in list(properties.items())[:20]}, ensure_ascii=False, default=str)


async def _follow_tool_list(client: Any, changed: asyncio.Event) -> None:
    """Set `changed` whenever the server says its tool list changed (2026-07-28 `subscriptions/listen`; an older
    server, which cannot, is read again only when it reconnects)."""
    from mcp.client.subscriptions import ListenNotSupportedError

    try:
        async with client.listen(tools_list_changed=True) as subscription:
            async for _ in subscription:
                changed.set()
    except ListenNotSupportedError:
        return


async def _first(*events: asyncio.Event) -> None:
    """Return once any of `events` is set."""
    waiting = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiting:
            task.cancel()


class _RedactedLog:
    """A server's stderr: a pipe whose far end a thread copies into the log file (the owner's alone), with the
    secrets replaced, a secret split between two reads too. The thread ends when the server and we have closed it."""

    def __init__(self, path: Path, redactor: Redactor) -> None:
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        read_end, self._write_end = os.pipe()
        threading.Thread(target=self._copy, args=(read_end, log_fd, redactor.stream()), daemon=True,
                         name=f"wippy-mcp-log-{path.stem}").start()

    def fileno(self) -> int:
        """The pipe's end the server writes to (its stderr)."""
        return self._write_end

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._write_end)

    @staticmethod
    def _copy(read_end: int, log_fd: int, text: RedactedStream) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        with open(read_end, "rb", buffering=0, closefd=True) as pipe, open(log_fd, "wb", closefd=True) as log:
            while chunk := pipe.read(65536):
                log.write(text.feed(decoder.decode(chunk)).encode("utf-8", "surrogateescape"))
            log.write(text.end().encode("utf-8", "surrogateescape"))


@contextlib.asynccontextmanager
async def _closing(transport: Any, file: Any) -> Any:
    """A transport that closes the server's log file when it ends."""
    try:
        async with transport as streams:
            yield streams
    finally:
        file.close()


@contextlib.asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str]) -> Any:
    """Streamable HTTP with the entry's headers (resolved), on an HTTP client closed with the transport."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers=headers, follow_redirects=True, timeout=httpx2.Timeout(30.0, read=300.0))
    async with http, streamable_http_client(url, http_client=http) as streams:
        yield streams


def _reason(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup) and error.exceptions:
        return _reason(error.exceptions[0])
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
