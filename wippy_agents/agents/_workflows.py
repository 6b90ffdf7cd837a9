"""Registry `workflow` entries as durable tasks: python ones from the app's code, restricted ones in the sandbox.

A restricted workflow's task runs `main(ctx, **args)` in a worker of the workflows'
sandbox pool. Each `ctx` call is an operation that this module runs as a step of
the task (journaled once, replayed after) and answers while the worker waits. A
wait (a sleep, a signal not yet sent, a person's approval) gives the worker back;
once the task can go on, its code runs again from the top and every operation it
already took is answered inside the worker from the journal, so a workflow waiting
for a week holds no worker, and a resumption costs little more than its new work.

Operations and their steps: `tool:<id>`, `ask:<agent>`, `now`, `random` and `log`
are one step each, of that name; `sleep` is the engine's `sleep` step; `signal:<name>`
is its `wait:<name>` and `signal:<name>` steps. An operation a policy made wait for a
person has the `wait:approval:<id>` and `signal:approval:<id>` steps of that wait first.

Policy: the subject of a workflow's operations is the workflow entry, which calls a
tool or asks an agent only where a policy allows it (`tool.call`, `agent.delegate`);
a task an agent started also needs that agent to be allowed (the tool listed in its
entry, or a policy), so a workflow never does more than the agent that started it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pydantic_core

from ..durable import (
    NondeterminismError,
    StepError,
    StepRecord,
    TaskContext,
    TaskInfo,
    UpgradeRefused,
    dumps,
    loads,
)
from ..durable._engine import Workflow
from ..errors import ArgumentError
from ..llm import ToolCall
from ..registry import (
    AgentSpec,
    Entry,
    Registry,
    RegistryError,
    RegistryView,
    ToolSpec,
    WorkflowExample,
    WorkflowSpec,
)
from ..sandbox import (
    ANY_OPERATION,
    SUSPEND,
    Limits,
    Operation,
    Outcome,
    ReplayMismatch,
    ResourceLimit,
    Sandbox,
    SandboxError,
)
from ..tools import ToolContext
from ._restricted import json_view, schema_errors
from ._toolset import expand, run_tool

if TYPE_CHECKING:
    from ._service import AgentService

__all__ = ["CALLABLE_BUILTINS", "TASK_TOOLS", "RestrictedWorkflow", "Workflows", "recorded_operations",
           "start_workflow", "workflow_status"]

log = logging.getLogger("wippy_agents.workflows")

APPROVAL = "approval:"
"""The signals approvals send (`approval:<id>`): a workflow's own waits may not use the prefix."""
CALLABLE_BUILTINS = ("wippy:registry_get", "wippy:registry_find", "wippy:workflow_status")
"""The built-in tools a workflow may call; the others act for an agent (its memory, its registry changes)."""


def recorded_operations(steps: list[StepRecord], max_value_bytes: int) -> tuple[list[dict[str, Any]], int]:
    """The operations a restricted workflow's journal holds finished, as the worker reads them, and how many
    steps they span. A wait still in progress (a sleep, a signal, a person's approval) is not among them: the
    code asks for it again, and the host replays what the journal holds of it and waits for the rest.
    `max_value_bytes`: the workflow's, which a signal's payload must keep to (see `_signal_outcome`)."""
    records: list[dict[str, Any]] = []
    consumed = index = 0
    while index < len(steps):
        while _pair(steps, index) and steps[index].name.startswith("wait:" + APPROVAL):
            index += 2  # a person's decision: part of the operation that follows
        if index >= len(steps):
            break
        step = steps[index]
        if step.name.startswith("wait:"):
            if not _pair(steps, index):
                break
            signal, target = steps[index + 1], step.name.removeprefix("wait:")
            outcome = (_signal_outcome(target, loads(signal.result)["payload"], max_value_bytes) if signal.ok
                       else Outcome(error=signal.error or "", timeout=True))
            name, index = "signal:" + target, index + 2
        else:
            name, index = step.name, index + 1
            outcome = Outcome(None if name == "sleep" else loads(step.result)) if step.ok else Outcome(
                error=step.error or "failed")
        records.append(outcome.record(name))
        consumed = index
    if records and records[-1]["name"] == "sleep":  # its time may not be up: the host sleeps what is left
        records.pop()
        consumed -= 1
    return records, consumed


def _signal_outcome(name: str, payload: Any, max_value_bytes: int) -> Outcome:
    """What the code's wait for the signal `name` returns: its payload, or an error if the payload is over the
    workflow's max_value_bytes (it would be sent again with every resumption). Decided alike when the signal
    comes and on every replay."""
    size = len(dumps(payload).encode())
    if size > max_value_bytes:
        return Outcome(error=f"the {name!r} signal's payload is {size:,} bytes as JSON, over the workflow's "
                             f"max_value_bytes ({max_value_bytes:,})")
    return Outcome(payload)


def _pair(steps: list[StepRecord], index: int) -> bool:
    """Whether the step at `index` is a `wait:<name>` whose `signal:<name>` follows it."""
    return (index + 1 < len(steps) and steps[index].name.startswith("wait:")
            and steps[index + 1].name == "signal:" + steps[index].name.removeprefix("wait:"))


@dataclass(frozen=True)
class _Decision:
    effect: Literal["allow", "deny", "ask"]
    policy: str | None
    reason: str


class Workflows:
    """Finds the function behind a registry `workflow` entry (the task manager's `resolve`) and tests restricted
    ones against their examples."""

    def __init__(self, service: AgentService) -> None:
        self.service = service
        self._restricted: dict[str, RestrictedWorkflow] = {}

    def resolve(self, workflow_id: str) -> Workflow | None:
        registry = self.service.registry
        if workflow_id in registry:
            entry = registry.get(workflow_id)
            if entry.kind != "workflow":
                return None
            spec = registry.spec(workflow_id)
            if isinstance(spec, WorkflowSpec) and spec.runtime == "python":
                return _python_workflow(registry, workflow_id)
        elif not registry.history(workflow_id):
            return None  # never an entry; one deleted since still runs the tasks that started on it
        return self._restricted.setdefault(workflow_id, RestrictedWorkflow(self.service, workflow_id))

    async def failed_examples(self, workflow_id: str, spec: WorkflowSpec) -> list[str]:
        """What went wrong with each of a restricted workflow's examples (empty when they all give their `expect`)."""
        sandbox = await self.service.restricted.workflow_sandbox()
        failures = [await _failed_example(sandbox, workflow_id, spec, example) for example in spec.examples]
        return [f"example {number}: {failure}" for number, failure in enumerate(failures, 1) if failure]


async def _failed_example(sandbox: Sandbox, workflow_id: str, spec: WorkflowSpec, example: WorkflowExample
                          ) -> str | None:
    """What went wrong running the example, its operations answered from its script (None: it gives `expect`)."""
    records = [Outcome(op.result, op.error, op.timeout).record(op.op or ANY_OPERATION) for op in example.operations]
    beyond: list[Operation] = []

    async def unscripted(operation: Operation) -> Outcome:
        beyond.append(operation)
        return SUSPEND

    try:
        run = await sandbox.run_workflow(spec.source or "", example.args, records, unscripted,
                                         function=spec.function or "main", max_operations=spec.max_operations,
                                         limits=_limits(spec))
    except ReplayMismatch as error:
        if error.recorded == ANY_OPERATION:  # matches any operation: the code returned before reaching it
            return (f"the workflow returned after {error.position} operation(s), but the example scripts "
                    f"{len(records)}")
        return _mismatch(error, "the script has")
    except SandboxError as error:
        return f"the workflow failed: {error}"
    if beyond:
        return (f"the workflow asked for operation {beyond[0].position} ({beyond[0].name}), beyond the "
                f"{len(records)} the example scripts")
    if json_view(run.value) != json_view(example.expect):
        return f"{workflow_id} returned {json.dumps(run.value)[:200]}, expected {json.dumps(example.expect)[:200]}"
    return None


def _python_workflow(registry: Registry, workflow_id: str) -> Workflow:
    """A python workflow entry's function, loaded when each task runs (an edited file applies to the next task)."""

    async def run(ctx: TaskContext, *args: Any) -> Any:
        return await registry.workflow_function(workflow_id)(ctx, *args)

    return run


class RestrictedWorkflow:
    """The tasks of one restricted workflow entry: `(ctx, arguments, started_by)`, the task's arguments as a dict
    and the agent that started it (None: a person or a program)."""

    def __init__(self, service: AgentService, workflow_id: str) -> None:
        self.service = service
        self.id = workflow_id
        self.in_worker: set[str] = set()
        """The tasks whose code runs in a worker now: the journal does not yet hold how far they will get."""

    async def __call__(self, ctx: TaskContext, arguments: Any = None, started_by: str | None = None) -> Any:
        return await _Run(self.service, self.id, ctx, arguments or {}, started_by, self.in_worker).run()

    async def check_upgrade(self, task: TaskInfo, version: int) -> None:
        """Replay the task's journal on the code as of `version`: refused unless the code asks for the same
        operations, in the same order, as far as the task has come."""
        prefix = f"task {task.id} stays on registry version {task.registry_version}"
        self._check_waiting(task, prefix)
        spec = _spec(self.service.registry.at(version), self.id)
        records, consumed = recorded_operations(task.steps, spec.max_value_bytes)
        unfinished = self._unfinished(task.steps[consumed:])
        asked: list[Operation] = []

        async def extend(operation: Operation) -> Outcome:
            asked.append(operation)
            return SUSPEND  # the new code goes on past what was taken: what it does next is its own

        sandbox = await self.service.restricted.workflow_sandbox()
        try:
            await sandbox.run_workflow(spec.source or "", _arguments(task.args), records, extend,
                                       function=spec.function or "main", max_operations=spec.max_operations,
                                       limits=_limits(spec))
        except ReplayMismatch as error:
            raise UpgradeRefused(f"{prefix}: on version {version}, {_mismatch(error, 'the task took')}; let it finish "
                                 "where it is") from None
        except SandboxError as error:
            raise UpgradeRefused(f"{prefix}: the code of version {version} fails replaying the {len(records)} "
                                 f"operation(s) the task took: {error}") from None
        if unfinished is not None and (not asked or asked[0].name != unfinished):
            raise UpgradeRefused(f"{prefix}: on version {version}, at operation {len(records)} the task is in "
                                 f"{unfinished!r} where the code asks for "
                                 f"{repr(asked[0].name) if asked else 'the end of the workflow'}; let it finish "
                                 "where it is")
        self._check_waiting(task, prefix)  # it may have gone on while its journal was replayed

    def _check_waiting(self, task: TaskInfo, prefix: str) -> None:
        """Refuse while the task's code runs: the operations it takes next, on its old code, are not checked."""
        if task.id in self.in_worker or len(self.service.tasks.get(task.id).steps) != len(task.steps):
            raise UpgradeRefused(f"{prefix}: its code is running (an operation is under way), so how far it gets on "
                                 "that version is not known yet; upgrade it while it waits (a sleep, a signal, an "
                                 "approval)")

    def _unfinished(self, steps: list[StepRecord]) -> str | None:
        """The operation the journal holds begun past the finished ones (`steps` are those): a sleep, a wait for a
        signal, or a tool call or question waiting for (or just given) a person's approval; the new code must ask
        for it next, as the task will go on with it."""
        name = steps[0].name if steps else ""
        if name.startswith("wait:" + APPROVAL):
            approval = self.service.governance.approvals.get(name.removeprefix("wait:" + APPROVAL))
            return ("tool:" if approval.action == "tool.call" else "ask:") + approval.resource
        if name.startswith("wait:"):
            return "signal:" + name.removeprefix("wait:")
        return "sleep" if name == "sleep" else None


def _arguments(args: list[Any]) -> dict[str, Any]:
    return args[0] if args and isinstance(args[0], dict) else {}


def _spec(registry: Registry | RegistryView, workflow_id: str) -> WorkflowSpec:
    spec = registry.spec(workflow_id)
    if not isinstance(spec, WorkflowSpec) or spec.runtime != "restricted" or spec.source is None:
        raise RegistryError(f"{workflow_id} is not a restricted workflow as of registry version {registry.version}")
    return spec


def _limits(spec: WorkflowSpec) -> Limits:
    """A resumption's limits: its CPU, the code's time between operations, and the size of what crosses."""
    return Limits(cpu_seconds=spec.cpu_seconds, wall_seconds=max(5.0, spec.cpu_seconds * 2),
                  result_bytes=spec.max_value_bytes)


def _mismatch(error: ReplayMismatch, recorded: str) -> str:
    return (f"at operation {error.position} {recorded} {error.recorded!r} where the code asks for "
            f"{error.asked!r}")



class _Run:
    """One run of a restricted workflow's task on this node: resumption after resumption until it ends."""

    def __init__(self, service: AgentService, workflow_id: str, ctx: TaskContext, arguments: Any,
                 started_by: str | None, in_worker: set[str]) -> None:
        self.service = service
        self.workflow_id = workflow_id
        self.ctx = ctx
        self.arguments = arguments
        self.started_by = started_by
        self.in_worker = in_worker
        self.records: list[dict[str, Any]] = []
        self.spec: WorkflowSpec | None = None
        self._decisions: dict[tuple[str, str, str, int], _Decision] = {}

    @property
    def registry(self) -> Registry | RegistryView:
        return self.ctx.registry  # as of the task's version: it keeps the code it started on until upgraded

    async def run(self) -> Any:
        self.records, consumed = recorded_operations(self.ctx.recorded(),
                                                     _spec(self.registry, self.workflow_id).max_value_bytes)
        self.ctx.skip(consumed)  # the worker replays those itself
        while True:
            entry, self.spec = self.registry.get(self.workflow_id), _spec(self.registry, self.workflow_id)
            self._check_arguments(self.spec)
            sandbox = await self.service.restricted.workflow_sandbox()
            self.in_worker.add(self.ctx.task_id)
            try:
                run = await sandbox.run_workflow(self.spec.source or "", self.arguments, self.records,
                                                 self._operation, function=self.spec.function or "main",
                                                 max_operations=self.spec.max_operations, limits=_limits(self.spec))
            except ReplayMismatch as error:
                self.service.restricted.outcome(entry, False)
                raise NondeterminismError(f"task {self.ctx.task_id}: {_mismatch(error, 'the journal has')}; the "
                                          "workflow's code changed under a running task") from None
            except SandboxError:
                self.service.restricted.outcome(entry, False)
                raise
            finally:
                self.in_worker.discard(self.ctx.task_id)
            if run.suspended is None:
                self.service.restricted.outcome(entry, True)
                return run.value
            operation = run.suspended
            self.records.append((await self._waited(operation)).record(operation.name))

    def _check_arguments(self, spec: WorkflowSpec) -> None:
        errors = argument_errors(spec, self.arguments)
        if errors:
            raise ArgumentError(f"{self.workflow_id}: bad arguments: {'; '.join(errors)}")

    # -- operations -----------------------------------------------------------------------

    async def _operation(self, operation: Operation) -> Outcome:
        """An operation the code asks for while it holds its worker: run it now, or `SUSPEND` if it must wait."""
        if operation.position != len(self.records):
            raise SandboxError(f"the workflow's worker asked for operation {operation.position} where the task is "
                               f"at {len(self.records)}")
        assert self.spec is not None
        if operation.position >= self.spec.max_operations:
            raise ResourceLimit("operations", f"the workflow took more than {self.spec.max_operations} operations")
        if self._must_wait(operation):
            return SUSPEND
        outcome = await self._run(operation)
        self.records.append(outcome.record(operation.name))
        return outcome

    def _must_wait(self, operation: Operation) -> bool:
        kind, _, target = operation.name.partition(":")
        if kind == "sleep":
            return True
        if kind == "signal":
            return not target.startswith(APPROVAL) and not self.ctx.signal_ready(target)
        if kind in ("tool", "ask"):
            approval = self._approval_waiting(operation)
            return approval is not None and not self.ctx.signal_ready(APPROVAL + approval)
        return False

    async def _waited(self, operation: Operation) -> Outcome:
        """An operation that had to wait, the worker given back: wait (durably), then run it."""
        if operation.name == "sleep":
            await self.ctx.sleep(float(operation.args.get("seconds") or 0))
            return Outcome(None)
        return await self._run(operation)

    async def _run(self, operation: Operation) -> Outcome:
        kind, _, target = operation.name.partition(":")
        if kind == "signal":
            return await self._signal(operation, target)
        if kind in ("tool", "ask"):
            return await self._act(operation, kind, target)
        if operation.name == "now":
            return await self._step("now", self.service.tasks.clock)
        if operation.name == "random":
            return await self._step("random", random.random)
        if operation.name == "log":
            text = str(operation.args.get("text", ""))[:2000]
            return await self._step("log", lambda: log.info("workflow %s, task %s: %s", self.workflow_id,
                                                            self.ctx.task_id, text))
        return await self._refused(operation.name, "there is no such operation")

    async def _signal(self, operation: Operation, name: str) -> Outcome:
        timeout = operation.args.get("timeout")
        if name.startswith(APPROVAL):
            return await self._refused(operation.name, f"signal names starting with {APPROVAL!r} are the app's "
                                                       "own (a person's approvals)")
        if timeout is not None and (not isinstance(timeout, int | float) or isinstance(timeout, bool)
                                    or not timeout > 0):
            return await self._refused(operation.name, "the timeout is a number of seconds over 0, or None")
        try:
            payload = await self.ctx.wait_signal(name, timeout)
        except TimeoutError as error:
            return Outcome(error=str(error), timeout=True)
        assert self.spec is not None
        return _signal_outcome(name, payload, self.spec.max_value_bytes)

    async def _act(self, operation: Operation, kind: str, target: str) -> Outcome:
        """A tool call or a delegate's turn, as policy allows it: refused, or after a person's approval, or now."""
        action, resource_kind = ("tool.call", "tool") if kind == "tool" else ("agent.delegate", "agent")
        approval = self._approval_waiting(operation)
        if approval is not None:
            decided = await self.ctx.wait_signal(APPROVAL + approval)
            if decided.get("status") != "approved":
                reason = decided.get("reason") or ""
                return await self._refused(operation.name, f"denied by {decided.get('by', 'a person')}"
                                                           f"{': ' + reason if reason else ''}")
        else:
            decision = self._decide(action, target, resource_kind)
            if decision.effect == "deny":
                self._audit(action, target, resource_kind, "denied", decision)
                return await self._refused(operation.name, f"refused: {decision.reason}")
            if decision.policy is not None:
                self._audit(action, target, resource_kind, "allowed", decision)
        if kind == "tool":
            tool_id, arguments = target, operation.args.get("args")
            if not isinstance(arguments, dict):
                return await self._refused(operation.name, "the tool's arguments are not an object")
            return await self._step(operation.name, self._tool_call, tool_id, arguments, operation.position,
                                    mark_start=self._runs_in_node(tool_id))
        message = operation.args.get("message")
        if not isinstance(message, str) or not message.strip():
            return await self._refused(operation.name, "ctx.ask takes a non-empty message")
        return await self._step(operation.name, self._ask, target, message, operation.position)

    def _approval_waiting(self, operation: Operation) -> str | None:
        """The approval the operation waits for (asked now, if a policy says `ask`), or None."""
        replayed = self.ctx.replaying()
        if replayed is not None and replayed.startswith("wait:" + APPROVAL):
            return replayed.removeprefix("wait:" + APPROVAL)  # asked before: whatever the policies say now
        kind, _, target = operation.name.partition(":")
        action, resource_kind = ("tool.call", "tool") if kind == "tool" else ("agent.delegate", "agent")
        decision = self._decide(action, target, resource_kind)
        if decision.effect != "ask":
            return None
        starter = f" (started by {self.started_by})" if self.started_by else ""
        return self.service.governance.approvals.request(
            agent=self.workflow_id, task_id=self.ctx.task_id, call_id=f"op{operation.position}", action=action,
            resource=target, kind=resource_kind, summary=f"workflow {self.workflow_id}{starter} wants to "
                                                         f"{'call' if kind == 'tool' else 'ask'} {target}",
            arguments=operation.args, policy=decision.policy).id

    def _decide(self, action: str, resource: str, kind: str) -> _Decision:
        """Deny wins, then ask, then allow, over the workflow's decision and its starting agent's (worked out once
        per registry version: a task asks for the same few things over and over)."""
        key = (action, resource, kind, self.service.registry.version)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decisions[key] = self._decision(action, resource, kind)
        return decision

    def _decision(self, action: str, resource: str, kind: str) -> _Decision:
        verb = "call" if action == "tool.call" else "ask"
        if action == "tool.call" and resource.startswith("wippy:") and resource not in CALLABLE_BUILTINS:
            return _Decision("deny", None, f"workflows cannot call {resource}, which acts for an agent; they may "
                                           f"call {', '.join(CALLABLE_BUILTINS)} and the app's tools")
        policies = self.service.governance.policies
        found = policies.decide(self.workflow_id, action, resource, kind)
        decisions = [_Decision(found.effect, found.policy, found.reason) if found.policy is not None else _Decision(
            "deny", None, f"no policy lets the workflow {self.workflow_id} {verb} {resource}: a restricted workflow "
                          f"may {verb} only what a policy entry allows it (subjects: [{self.workflow_id}], "
                          f"actions: [{action}])")]
        if self.started_by is not None:
            found = policies.decide(self.started_by, action, resource, kind)
            if found.policy is not None:
                decisions.append(_Decision(found.effect, found.policy, found.reason))
            elif not self._granted(self.started_by, action, resource):
                decisions.append(_Decision("deny", None, f"{self.started_by} started this task and may not {verb} "
                                                         f"{resource} itself"))
        for effect in ("deny", "ask", "allow"):
            for decision in decisions:
                if decision.effect == effect:
                    return decision
        raise AssertionError("a decision is always made")

    def _granted(self, agent: str, action: str, resource: str) -> bool:
        """Whether the agent's entry lists the tool (or delegate): what lets it call one with no policy naming it.
        Its entry as it is now, as policies are: what the agent may no longer do, a task it started does not do."""
        registry = self.service.registry
        spec = registry.spec(agent) if agent in registry else None
        if not isinstance(spec, AgentSpec):
            return False
        patterns, kind = (spec.tools, "tool") if action == "tool.call" else (spec.delegates, "agent")
        return any(entry.id == resource for entry in expand(patterns, registry.view(), kind))

    def _audit(self, action: str, resource: str, kind: str, verdict: str, decision: _Decision) -> None:
        self.service.governance.audit.record(self.workflow_id, self.ctx.task_id, action, resource, kind, verdict,
                                             decision.policy or "default", decision.reason)

    def _runs_in_node(self, tool_id: str) -> bool:
        """A trusted tool runs in the node and could take it down: its step is marked started (see `ctx.step`)."""
        spec = self.registry.spec(tool_id) if tool_id in self.registry else None
        return isinstance(spec, ToolSpec) and spec.runtime == "python" and not tool_id.startswith("wippy:")

    # -- what the steps run ----------------------------------------------------------------

    async def _tool_call(self, tool_id: str, arguments: dict[str, Any], position: int) -> Any:
        registry = self.registry
        entry: Entry = registry.get(tool_id)
        spec = registry.spec(tool_id)
        if not isinstance(spec, ToolSpec):
            raise LookupError(f"{tool_id} is a {entry.kind}, not a tool")
        context = ToolContext(agent_id=self.started_by, task_id=self.ctx.task_id, call_id=f"op{position}", logger=log)
        value = await run_tool(entry, spec, registry.tools.get(tool_id), arguments, context,
                               restricted=self.service.restricted, mcp=self.service.mcp)
        return self._value(f"tool {tool_id}", pydantic_core.to_jsonable_python(value))

    async def _ask(self, agent: str, message: str, position: int) -> str:
        call = ToolCall(id=f"op{position}", name=agent, arguments={"message": message})
        answer = await self.service.delegate(agent, message, self.ctx.task_id, call, (), {}, lambda event: None)
        return str(self._value(f"the answer of {agent}", answer.text))

    def _value(self, what: str, value: Any) -> Any:
        """A result as the workflow may see it: no secret in it, and no bigger than its limit."""
        assert self.spec is not None
        text = self.service.redactor.redact(json.dumps(value, ensure_ascii=False))
        if len(text.encode()) > self.spec.max_value_bytes:
            raise ValueError(f"{what} gave {len(text.encode()):,} bytes, over the workflow's max_value_bytes "
                             f"({self.spec.max_value_bytes:,})")
        return json.loads(text)

    async def _step(self, name: str, fn: Callable[..., Any], *args: Any, mark_start: bool = False) -> Outcome:
        try:
            return Outcome(await self.ctx.step(name, fn, *args, mark_start=mark_start))
        except StepError as error:
            return Outcome(error=error.error)

    async def _refused(self, name: str, reason: str) -> Outcome:
        """The operation fails, as a step of its own: a replay meets the same failure."""

        def refuse() -> None:
            raise PermissionError(reason)

        return await self._step(name, refuse)


def argument_errors(spec: WorkflowSpec, arguments: Any) -> list[str]:
    """What is wrong with a restricted workflow's arguments: not an object, too big, or not what `main` takes."""
    if not isinstance(arguments, dict):
        return [f"arguments: a JSON object of them by name, not {type(arguments).__name__}"]
    size = len(json.dumps(arguments, ensure_ascii=False, default=str).encode())
    if size > spec.max_value_bytes:  # they cross to the worker with every resumption
        return [f"arguments: {size:,} bytes as JSON, over the workflow's max_value_bytes ({spec.max_value_bytes:,})"]
    _, schema = spec.restricted_schema()
    return schema_errors(schema, arguments)


# -- the built-in tools with which an agent starts a workflow and follows it --------------------------------------


async def start_workflow(service: AgentService, workflow: str, ctx: ToolContext,
                         args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start a task of a restricted workflow entry; it runs on its own (use wippy_workflow_status to follow it).

    The workflow does only what it and you are both allowed to do.

    Args:
        workflow: The workflow entry's id, such as `generated:research`.
        args: The workflow's arguments, by name.
    """
    agent = ctx.agent_id
    if agent is None:
        raise RuntimeError("start_workflow acts for an agent; this call names none")
    registry = service.registry
    if workflow not in registry or registry.get(workflow).kind != "workflow":
        known = ", ".join(entry.id for entry in registry.find(kind="workflow")) or "none"
        raise ValueError(f"there is no workflow {workflow!r} (the workflows are: {known})")
    spec = registry.spec(workflow)
    assert isinstance(spec, WorkflowSpec)
    if spec.runtime != "restricted":
        raise PermissionError(f"{workflow} is the app's own code (runtime: python), which agents do not start: it "
                              "would run with more than your permissions")
    errors = argument_errors(spec, args or {})
    if errors:
        raise ValueError(f"bad arguments for {workflow}: {'; '.join(errors)}")
    task_id = None
    if ctx.task_id and ctx.call_id:  # the same call, replayed or retried, starts the same task once
        task_id = "wf-" + hashlib.sha256(f"{ctx.task_id}:{ctx.call_id}".encode()).hexdigest()[:16]
    started = await service.tasks.start(workflow, args or {}, agent, task_id=task_id)
    return {"task_id": started, "workflow": workflow, "status": service.tasks.status(started)}


def workflow_status(service: AgentService, task_id: str, ctx: ToolContext) -> dict[str, Any]:
    """Read the status of a workflow task you started, and its result or error once it has ended.

    Args:
        task_id: The id wippy_start_workflow returned.
    """
    info = service.tasks.get(task_id)
    registry = service.registry
    if not (info.workflow in registry and registry.get(info.workflow).kind == "workflow"
            or registry.history(info.workflow)):
        raise ValueError(f"task {task_id} is not a workflow entry's task")
    if len(info.args) < 2 or info.args[1] != ctx.agent_id:  # another's task may hold what is not yours to read
        raise PermissionError(f"task {task_id} was not started by you ({ctx.agent_id}); you may follow only the "
                              "workflow tasks you started")
    return {"task_id": task_id, "workflow": info.workflow, "status": info.status, "result": info.result,
            "error": info.error, "steps": len(info.steps), "registry_version": info.registry_version}


TASK_TOOLS = (start_workflow, workflow_status)
