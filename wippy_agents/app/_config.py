"""`wippy.yaml`: an app's settings, every one optional, checked with the file, line and field of each mistake."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..registry import Problem, RegistryError
from ..registry._sources import Unreadable, decode_text, hidden, read_bytes
from ..registry._yaml import YAMLProblem, load_yaml
from ..state import is_database_url

__all__ = ["CONFIG_FILE", "STATE_VARIABLE", "AppConfig", "ClusterSettings", "MemorySettings", "RetentionSettings", "Sources", "TelemetrySettings", "load_config", "state_location"]

CONFIG_FILE = "wippy.yaml"
STATE_VARIABLE = "WIPPY_STATE"
_BASE_URL = re.compile(r"https?://[^\s/]+(/\S*)?\Z")


class Sources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    registry: str = "registry"
    prompts: str = "prompts"
    tools: str = "tools"


class ClusterSettings(BaseModel):
    """`cluster:` in wippy.yaml: run the app's nodes on a Ray cluster (`wippy run` is then their driver)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    engine: Literal["ray"] = "ray"
    address: str = Field("local", min_length=1,
                         description="`local` starts a private Ray instance on this machine; `auto`, `HOST:PORT` or "
                                     "`ray://...` joins an existing cluster, as `ray.init` does")
    nodes: int = Field(2, ge=1, le=256, description="how many wippy nodes to place on the Ray cluster")
    node_cpus: float = Field(0.1, gt=0, le=64,
                             description="CPUs Ray reserves for each node: little, so a restarted node fits on a "
                                         "surviving machine")
    health_check_period_ms: int = Field(500, ge=50, description="with `address: local`: how often Ray checks a "
                                                                "machine (an existing cluster uses its head's setting)")
    health_check_timeout_ms: int = Field(500, ge=50)
    health_check_failure_threshold: int = Field(2, ge=1, description="missed checks before Ray declares a machine dead")


class TelemetrySettings(BaseModel):
    """`telemetry:` in wippy.yaml: where traces go, and whether they may carry what agents and tools say."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    otlp_endpoint: str | None = Field(
        None, description="the OTLP HTTP/protobuf collector's base URL (traces go to `<url>/v1/traces`); the "
        "standard OTEL_EXPORTER_OTLP_ENDPOINT variable overrides it")
    content: bool = Field(False, description="record messages, tool arguments and results on spans (redacted)")

    @field_validator("otlp_endpoint")
    @classmethod
    def _a_url(cls, url: str | None) -> str | None:
        if url is not None and not _BASE_URL.match(url):
            raise ValueError("an http:// or https:// URL is expected here, such as http://localhost:4318")
        return url


class MemorySettings(BaseModel):
    """`memory:` in wippy.yaml: how agents' notes are recalled."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    embedding_model: str | None = Field(
        None, min_length=1,
        description="a local model2vec model folder (as `save_pretrained` writes it), relative to the app root or "
                    "absolute: recall then ranks notes by meaning as well as keywords (needs `pip install "
                    "'wippy-agents[memory]'`; nothing is ever downloaded)")


class RetentionSettings(BaseModel):
    """`retention:` in wippy.yaml: what the node deletes as it ages, at boot and every `interval_minutes` while it
    runs (null keeps that kind of record for ever)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tasks_days: float | None = Field(
        30, gt=0, description="finished tasks (workflows, not agents' turns) whose last event is older than this")
    conversations_days: float | None = Field(
        None, gt=0, description="conversations whose last turn began longer ago than this, with all their turns "
                                "(every turn finished) and their place in the conversations' index")
    audit_days: float | None = Field(None, gt=0, description="policy decisions in the audit trail older than this")
    usage_days: float | None = Field(
        None, ge=1, description="model calls' usage rows older than this (`wippy usage`; at least a day, which "
                                "daily budgets add up)")
    interval_minutes: float = Field(60, gt=0, description="how often the running node applies these settings")


class AppConfig(BaseModel):
    """The settings in `wippy.yaml`; every field is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = None
    sources: Sources = Sources()
    state: str = Field(".wippy/state.duckdb",
                       description="the DuckDB state file, relative to the app root; `:memory:` keeps nothing; or a "
                                   "`postgresql://` URL of a database shared by the nodes of a cluster "
                                   f"(the environment variable {STATE_VARIABLE} overrides it)")
    default_agent: str | None = None
    cluster: ClusterSettings | None = Field(None, description="run on a Ray cluster; needs a Postgres `state`")
    watch: bool = Field(True, description="hot-reload entries when source files change")
    watch_step_ms: int = Field(5, ge=1, le=1000, description="how long the watcher waits for more changes")
    telemetry: TelemetrySettings = Field(TelemetrySettings(), description="OpenTelemetry traces; nothing is exported "
                                                                       "unless an endpoint is set")
    memory: MemorySettings = Field(MemorySettings(), description="agents' memory: semantic recall")
    retention: RetentionSettings = Field(RetentionSettings(), description="what the node deletes as it ages")
    task_retention_days: float | None = Field(
        30, gt=0, description="the former name of `retention.tasks_days` (finished tasks older than this are deleted; "
                              "agents' turns are kept); null keeps all")

    @property
    def tasks_days(self) -> float | None:
        """How long finished tasks are kept: `retention.tasks_days`, or `task_retention_days` where that is set."""
        if "task_retention_days" in self.model_fields_set:
            return self.task_retention_days
        return self.retention.tasks_days


def state_location(config: AppConfig, root: Path, given: str | os.PathLike[str] | None = None) -> Path | str | None:
    """Where the app's state lives: `given`, else `WIPPY_STATE`, else `state:`; a path, None (in memory) or a URL."""
    location = os.fspath(given) if given is not None else os.environ.get(STATE_VARIABLE) or config.state
    if location == ":memory:":
        return None
    return location if is_database_url(location) else root / location


def load_config(root: Path) -> AppConfig:
    """Read `wippy.yaml` (defaults when it is absent); errors name the file, line and field."""
    try:
        raw = read_bytes(Path(os.path.realpath(root / CONFIG_FILE)))
        if raw is None:
            return AppConfig()
        data, lines = load_yaml(decode_text(raw), CONFIG_FILE)
    except Unreadable as error:
        raise RegistryError(f"{CONFIG_FILE} cannot be read", [
            Problem(error.message, file=CONFIG_FILE, line=error.line)]) from None
    except YAMLProblem as error:
        raise RegistryError(f"{CONFIG_FILE} is not valid YAML", error.problems) from None
    if data is not None and not isinstance(data, dict):
        raise RegistryError(f"{CONFIG_FILE} has invalid settings", [
            Problem("the file must be a mapping of settings (name: value)", file=CONFIG_FILE, line=1)])
    try:
        config = AppConfig.model_validate(data or {})
    except ValidationError as error:
        problems = [
            Problem(_setting_problem(e["type"], tuple(e["loc"]), e["msg"]), file=CONFIG_FILE,
                    line=lines.line_of(tuple(e["loc"])), field=".".join(map(str, e["loc"])))
            for e in error.errors(include_url=False)
        ]
        raise RegistryError(f"{CONFIG_FILE} has invalid settings", problems) from None
    problems = [  # the sources are read from `<root>/<name>`, and each file's id starts with its folder's name
        Problem(f"{name!r} is not a folder name; a source folder is one folder inside the app, such as {field!r}",
                file=CONFIG_FILE, line=lines.line_of(("sources", field)), field=f"sources.{field}")
        for field, name in config.sources
        if not name or name in (".", "..") or "/" in name or "\\" in name or hidden(name)
    ]
    if "task_retention_days" in config.model_fields_set and "tasks_days" in config.retention.model_fields_set:
        problems.append(Problem("set either `task_retention_days` (its former name) or `retention.tasks_days`, not "
                                "both", file=CONFIG_FILE, line=lines.line_of(("task_retention_days",)),
                                field="task_retention_days"))
    if problems:
        raise RegistryError(f"{CONFIG_FILE} has invalid settings", problems)
    return config


def _setting_problem(kind: str, loc: tuple[str | int, ...], message: str) -> str:
    if kind != "extra_forbidden":
        return message
    sections: dict[str | int, type[BaseModel]] = {"sources": Sources, "cluster": ClusterSettings,
                                                  "telemetry": TelemetrySettings, "memory": MemorySettings,
                                                  "retention": RetentionSettings}
    model = sections.get(loc[0], AppConfig) if len(loc) > 1 else AppConfig
    return f"unknown setting; the settings here are {', '.join(model.model_fields)}"
