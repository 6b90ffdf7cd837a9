"""The shipped entry kinds: a pydantic model per kind validates an entry's fields.

Each model forbids unknown fields, so a typo is an error that names the field,
and declares the other entries it refers to so a changeset that leaves a
dangling reference is refused at commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jinja2
import jsonschema
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._entry import Entry
from ._source_schema import SignatureError, describe_function

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Reference:
    """`field` of an entry names `target` (an id, or a pattern with `*`) of one of `kinds`."""

    field: str
    target: str
    kinds: tuple[str, ...]


class KindSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def references(self) -> list[Reference]:
        return []

    def problems(self) -> list[tuple[Loc, str]]:
        """Checks beyond the model's types, each located at its field."""
        return []


class Pricing(KindSpec):
    """US dollars per million tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)
    cached: float = Field(0.0, ge=0)


class Budget(KindSpec):
    """Spend limits of an agent (on its entry, or set by a policy for the agents it names); unset: no limit.

    A turn is one ask of the agent; a task is that turn with the delegates it asked
    (what its answer's usage counts); a day is a UTC day of the agent's calls.
    """

    max_usd_per_turn: float | None = Field(None, gt=0)
    max_usd_per_task: float | None = Field(None, gt=0)
    max_usd_per_day: float | None = Field(None, gt=0)
    max_tokens_per_turn: int | None = Field(None, gt=0)
    max_tokens_per_task: int | None = Field(None, gt=0)
    max_tokens_per_day: int | None = Field(None, gt=0)
    on_exceed: Literal["fail", "ask"] = Field("fail", description=(
        "fail: the turn ends with BudgetExceeded; ask: it waits for a person's approval, which grants one more "
        "limit's worth for the rest of the turn"))


class ModelSpec(KindSpec):
    provider: Literal["openai", "anthropic", "openai-compatible", "offline"]
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str | None = None
    max_output_tokens: int | None = Field(None, gt=0, validation_alias=AliasChoices("max_output_tokens", "max_tokens"),
                                          description="tokens one answer may hold (`max_tokens` is the older name)")
    temperature: float | None = Field(None, ge=0, le=2)
    timeout: float | None = Field(None, gt=0, description=(
        "seconds one call may take in all (connecting, every retry, the whole stream), 600 when unset; "
        "when set, also the SDK's limit for each read"))
    max_retries: int = Field(2, ge=0)
    pricing: Pricing | None = None
    context_window: int | None = Field(None, gt=0, description=(
        "tokens one request may hold (prompt, history, tools and output); unset: the known window of the model's "
        "name, else a small default (see `llm.context_window`)"))


MAX_TEMPLATE_CHARS = 100_000
"""The longest prompt template: compiling Jinja2 costs about 4 ms per 1,000 characters."""


class PromptSpec(KindSpec):
    template: str
    vars: dict[str, Any] = {}

    def problems(self) -> list[tuple[Loc, str]]:
        if len(self.template) > MAX_TEMPLATE_CHARS:
            return [(("template",), f"the template is {len(self.template):,} characters, over the "
                                    f"{MAX_TEMPLATE_CHARS:,} limit; split it, or give the agent long reference "
                                    "text through a tool")]
        try:
            jinja2.Environment().parse(self.template)
        except jinja2.TemplateSyntaxError as error:
            return [(("template",), f"{INNER_LINE}{error.lineno}: {error.message}")]
        return []


class ToolExample(KindSpec):
    """Arguments and the result they must give: run in the sandbox before an agent's tool change commits."""

    args: dict[str, Any] = {}
    expect: Any = None


class ToolSpec(KindSpec):
    description: str = ""
    parameters: dict[str, Any] | None = None
    runtime: Literal["python", "restricted", "mcp"] = "python"
    file: str | None = None
    module: str | None = None
    function: str | None = None
    source: str | None = None
    server: str | None = None  # runtime mcp: the `mcp_server` entry that serves the tool
    tool: str | None = None  # runtime mcp: the tool's name on that server
    timeout: float = Field(30.0, gt=0)
    examples: list[ToolExample] = []

    @model_validator(mode="after")
    def _has_code(self) -> ToolSpec:
        if self.runtime == "mcp":
            if not self.server or not self.tool:
                raise ValueError("an mcp tool names its 'server' (an mcp_server entry) and its 'tool' there")
        elif self.runtime == "restricted":
            if not self.source:
                raise ValueError("a restricted tool needs its Python code in 'source'")
        elif not (self.file or self.module) or not self.function:
            raise ValueError("a python tool names its code with 'file' (or 'module') and 'function'")
        return self

    def problems(self) -> list[tuple[Loc, str]]:
        if self.runtime != "restricted" or self.source is None:
            return []
        try:
            description, _ = self.restricted_schema()
        except SignatureError as error:
            return [(("source",), f"{INNER_LINE}{error.line}: {error}" if error.line else str(error))]
        if not description:
            return [(("description",), "say what the tool does, here or in its function's docstring")]
        return []

    def restricted_schema(self) -> tuple[str, dict[str, Any]]:
        """A restricted tool's description and parameters: as given, else read from its function's signature."""
        assert self.source is not None
        description, parameters = describe_function(self.source, self.function or "main")
        return self.description or description, self.parameters or parameters


class McpServerSpec(KindSpec):
    """An MCP server whose tools the app offers as `mcp.<entry name>:<tool>`: a `command` run over stdio, or a `url`.

    Values in `env` and `headers` may name environment variables as `${NAME}`:
    they are resolved when the server starts, and never stored resolved.
    """

    command: str | None = None  # run over stdio; `python` is the Python wippy runs on
    args: list[str] = []
    env: dict[str, str] = {}
    url: str | None = None
    headers: dict[str, str] = {}
    tools: list[str] | None = None  # the server's tools to offer (None: all of them)
    timeout: float = Field(30.0, gt=0)  # seconds per call
    max_restarts: int = Field(5, ge=0)  # connection failures in a row before the server is given up on

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("an mcp_server has either a 'command' (stdio) or a 'url' (streamable HTTP)")
        return self


class HistorySettings(KindSpec):
    """How much of its conversation an agent's model sees, and what becomes of the turns that no longer fit."""

    max_tokens: int | None = Field(None, gt=0, description=(
        "tokens of history one request may carry; unset: what fits the window after the prompt, tools and output"))
    keep_recent_turns: int = Field(2, ge=1, description="the latest turns always sent verbatim (at least one)")
    strategy: Literal["summary", "truncate", "off"] = Field("summary", description=(
        "summary: fold the oldest turns into a running summary; truncate: drop them; off: send everything"))
    compaction_model: str | None = None  # the model entry that writes summaries (default: the agent's model)

    @field_validator("strategy", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false


class AgentSpec(KindSpec):
    prompt: str | None = None
    model: str | None = None
    tools: list[str] = []
    delegates: list[str] = []
    vars: dict[str, Any] = {}
    max_steps: int = Field(10, gt=0)
    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    max_cost_usd: float | None = Field(None, gt=0, description="the same as budget.max_usd_per_task")
    max_total_tokens: int | None = Field(None, gt=0, description="the same as budget.max_tokens_per_task")
    budget: Budget | None = None
    history: HistorySettings = HistorySettings()

    def references(self) -> list[Reference]:
        refs = [Reference(f"tools.{i}", tool, ("tool",)) for i, tool in enumerate(self.tools)]
        refs += [Reference(f"delegates.{i}", agent, ("agent",)) for i, agent in enumerate(self.delegates)]
        if self.prompt:
            refs.append(Reference("prompt", self.prompt, ("prompt",)))
        if self.model:
            refs.append(Reference("model", self.model, ("model",)))
        if self.history.compaction_model:
            refs.append(Reference("history.compaction_model", self.history.compaction_model, ("model",)))
        return refs


Action = Literal["registry.create", "registry.update", "registry.delete", "tool.call", "agent.delegate", "memory.write"]


class RollbackRule(KindSpec):
    """Roll a restricted tool back to its previous version once too many of its last calls fail."""

    window: int = Field(10, gt=0, description="how many of the tool's latest calls are counted")
    max_error_rate: float = Field(0.5, ge=0, lt=1, description="the share of failed calls that triggers it")


class PolicySpec(KindSpec):
    subjects: list[str] = Field(min_length=1)
    actions: list[Action] = []
    resources: list[str] = ["*"]
    kinds: list[str] | None = None
    effect: Literal["allow", "deny", "ask"] | None = None
    rollback: RollbackRule | None = None
    budget: Budget | None = None  # spend limits of every agent the subjects name (actions and effect optional then)

    def problems(self) -> list[tuple[Loc, str]]:
        found: list[tuple[Loc, str]] = [
            (("kinds", i), f"unknown kind {kind!r}; the kinds are {', '.join(sorted(KINDS))}")
            for i, kind in enumerate(self.kinds or []) if kind not in KINDS]
        if self.actions and self.effect is None:
            found.append((("effect",), "required field is missing"))
        elif not self.actions and (self.effect is not None or self.budget is None):
            found.append((("actions",), "required field is missing (a policy may leave it out only to set a budget)"))
        return found


class CodeSpec(KindSpec):
    """Python code named by a file under the app root or an importable module, and a function in it."""

    file: str | None = None
    module: str | None = None
    function: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> CodeSpec:
        if (self.file is None) == (self.module is None):
            raise ValueError("name the code with exactly one of 'file' (a path under the app root) or 'module'")
        return self


HOST_FIELD = Field(None, min_length=1, description="where it runs in a cluster: a node's name, or `any`; by default "
                                                   "the node that spawns it (for an auto-started supervisor: each node)")


class ProcessSpec(CodeSpec):
    args: list[Any] = []
    host: str | None = HOST_FIELD


class ScriptedOperation(KindSpec):
    """What one operation of a workflow's example returns (or the error it raises), in order."""

    op: str | None = Field(None, description="the operation expected here, such as `tool:tools.calc:add`, "
                                             "`ask:app:researcher`, `sleep` or `signal:approve` (unset: any)")
    result: Any = None
    error: str | None = None
    timeout: bool = Field(False, description="the error is a TimeoutError (a signal that did not come)")


class WorkflowExample(KindSpec):
    """A run of a restricted workflow with its operations answered from `operations`: run before an agent's
    change commits, so a workflow is tested without calling real tools or models."""

    args: dict[str, Any] = {}
    operations: list[ScriptedOperation] = []
    expect: Any = None


MAX_REPLAY_BYTES = 64 * 1024 * 1024
"""What one resumption of a restricted workflow may carry of recorded results (operations x their size)."""


class WorkflowSpec(KindSpec):
    """A durable workflow: Python code of the app (`file` or `module` and `function`, an async function
    `(ctx, *args)`), or agent-writable `runtime: restricted` code in `source` defining `main(ctx, **args)`,
    which runs in the sandbox with the limits below per resumption."""

    runtime: Literal["python", "restricted"] = "python"
    file: str | None = None
    module: str | None = None
    function: str | None = None
    source: str | None = None
    description: str = ""
    parameters: dict[str, Any] | None = None
    examples: list[WorkflowExample] = []
    max_operations: int = Field(1000, gt=0, le=100_000, description="operations one task may take in all")
    max_value_bytes: int = Field(64 * 1024, gt=0, le=1024 * 1024, description=(
        "the largest arguments or result of one operation, and the workflow's result, as JSON"))
    cpu_seconds: float = Field(2.0, gt=0, le=60, description="CPU time the code may use per resumption")

    @model_validator(mode="after")
    def _has_code(self) -> WorkflowSpec:
        if self.runtime == "restricted":
            if not self.source or self.file or self.module:
                raise ValueError("a restricted workflow has its Python code in 'source' (and no 'file' or 'module')")
        elif (self.file is None) == (self.module is None):
            raise ValueError("name the code with exactly one of 'file' (a path under the app root) or 'module'")
        return self

    def problems(self) -> list[tuple[Loc, str]]:
        if self.runtime != "restricted":
            return [] if self.function else [(("function",), "required field is missing")]
        if self.max_operations * self.max_value_bytes > MAX_REPLAY_BYTES:
            return [(("max_operations",), f"max_operations x max_value_bytes is over {MAX_REPLAY_BYTES:,} bytes, "
                                          "what one resumption may carry; lower one of them")]
        try:
            description, _ = self.restricted_schema()
        except SignatureError as error:
            return [(("source",), f"{INNER_LINE}{error.line}: {error}" if error.line else str(error))]
        if not description:
            return [(("description",), "say what the workflow does, here or in its function's docstring")]
        return []

    def restricted_schema(self) -> tuple[str, dict[str, Any]]:
        """A restricted workflow's description and the schema of its arguments (read from `main(ctx, ...)`)."""
        assert self.source is not None
        description, parameters = describe_function(self.source, self.function or "main", "ctx")
        return self.description or description, self.parameters or parameters


class BackoffSpec(KindSpec):
    initial: float = Field(0.1, gt=0)
    maximum: float = Field(30.0, gt=0)
    multiplier: float = Field(2.0, ge=1)
    jitter: float = Field(0.2, ge=0, le=1)


class ChildEntry(KindSpec):
    id: str = Field(min_length=1)
    process: str
    args: list[Any] = []
    restart: Literal["permanent", "transient", "temporary"] = "permanent"
    shutdown: float = Field(5.0, ge=0)
    name: str | None = None


class SupervisorSpec(KindSpec):
    strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = "one_for_one"
    max_restarts: int = Field(3, ge=0)
    max_seconds: float = Field(5.0, gt=0)
    backoff: BackoffSpec | None = None
    children: list[ChildEntry] = []
    auto_start: bool = True
    host: str | None = HOST_FIELD

    def references(self) -> list[Reference]:
        return [
            Reference(f"children.{i}.process", child.process, ("process", "supervisor"))
            for i, child in enumerate(self.children)
        ]


class ConfigSpec(KindSpec):
    """Free-form settings; an optional `schema` (JSON Schema) checks the other fields."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    json_schema: dict[str, Any] | None = Field(None, alias="schema")

    def problems(self) -> list[tuple[Loc, str]]:
        if self.json_schema is None:
            return []
        try:
            jsonschema.Draft202012Validator.check_schema(self.json_schema)
        except jsonschema.SchemaError as error:
            return [(("schema", *error.absolute_path), f"not a valid JSON schema: {error.message}")]
        validator = jsonschema.Draft202012Validator(self.json_schema)
        return [
            (tuple(error.absolute_path), error.message)
            for error in sorted(validator.iter_errors(dict(self.model_extra or {})), key=lambda e: list(e.path))
        ]


KINDS: Mapping[str, type[KindSpec]] = {
    "agent": AgentSpec,
    "model": ModelSpec,
    "prompt": PromptSpec,
    "tool": ToolSpec,
    "mcp_server": McpServerSpec,
    "policy": PolicySpec,
    "process": ProcessSpec,
    "supervisor": SupervisorSpec,
    "workflow": WorkflowSpec,
    "config": ConfigSpec,
}


class SpecErrors(Exception):
    """The fields of one entry that failed validation, as (location, message) pairs."""

    def __init__(self, errors: list[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in errors))
        self.errors = errors


def parse_spec(entry: Entry) -> KindSpec:
    """Validate `entry.data` with its kind's model; `SpecErrors` lists every bad field."""
    model = KINDS.get(entry.kind)
    if model is None:
        raise SpecErrors([(("kind",), f"unknown kind {entry.kind!r}; the kinds are {', '.join(sorted(KINDS))}")])
    try:
        spec = model.model_validate(dict(entry.data))
    except ValidationError as error:
        raise SpecErrors([(tuple(e["loc"]), _message(e)) for e in error.errors(include_url=False)]) from None
    problems = spec.problems()
    if problems:
        raise SpecErrors(problems)
    return spec


INNER_LINE = "inner line "


def inner_line(message: str) -> tuple[int, str] | None:
    """Split an error inside a multi-line field (a template, tool source) into that line number and the message."""
    if not message.startswith(INNER_LINE):
        return None
    number, _, rest = message.removeprefix(INNER_LINE).partition(": ")
    return int(number), rest


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field (check the spelling; the kind does not have it)"
    if error["type"] == "missing":
        return "required field is missing"
    text: str = error["msg"]
    return text.removeprefix("Value error, ")
