"""Each shipped kind validates its entries' fields and names the field at fault.

Entries are parsed with the registry's own `_kinds.parse_spec` (and its `SpecErrors`, `Reference`), one
entry at a time, so that each field's rule is checked without a whole registry around it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from wippy_agents.registry import KINDS, AgentSpec, ConfigSpec, Entry, Folders, SupervisorSpec
from wippy_agents.registry._kinds import Reference, SpecErrors, parse_spec
from wippy_agents.registry._sources import read_source

# A minimal valid entry of each kind.
VALID: dict[str, dict[str, Any]] = {
    "agent": {},
    "model": {"provider": "offline", "model": "m"},
    "prompt": {"template": "Hi"},
    "tool": {"file": "tools/t.py", "function": "f"},
    "policy": {"subjects": ["*"], "actions": ["tool.call"], "effect": "allow"},
    "process": {"module": "os.path", "function": "join"},
    "supervisor": {},
    "workflow": {"file": "flows/w.py", "function": "run"},
    "config": {},
    "mcp_server": {"command": "mcp-server-time"},
}


def errors(kind: str, data: dict[str, Any]) -> dict[str, str]:
    """The validation errors of an entry of `kind`, by field path ('' for the entry as a whole)."""
    with pytest.raises(SpecErrors) as caught:
        parse_spec(Entry("app:x", kind, {}, data))
    return {".".join(map(str, loc)): message for loc, message in caught.value.errors}


def check(kind: str, data: dict[str, Any]) -> Any:
    return parse_spec(Entry("app:x", kind, {}, data))


def test_every_shipped_kind_has_a_minimal_valid_entry_here() -> None:
    assert set(VALID) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(VALID))
def test_a_minimal_entry_of_each_kind_is_valid(kind: str) -> None:
    assert isinstance(check(kind, VALID[kind]), KINDS[kind])


@pytest.mark.parametrize("kind", sorted(set(VALID) - {"config"}))
def test_every_kind_but_config_refuses_an_unknown_field(kind: str) -> None:
    assert errors(kind, {**VALID[kind], "descripton": "typo"}) == {
        "descripton": "unknown field (check the spelling; the kind does not have it)"}


def test_an_unknown_kind_lists_the_kinds() -> None:
    [(field, message)] = errors("agnet", {}).items()
    assert field == "kind"
    assert message == ("unknown kind 'agnet'; the kinds are agent, config, mcp_server, model, policy, process, "
                       "prompt, supervisor, tool, workflow")


# -- model ------------------------------------------------------------------------------------


def test_a_model_needs_provider_and_model() -> None:
    assert errors("model", {}) == {"provider": "required field is missing", "model": "required field is missing"}
    assert "model" in errors("model", {"provider": "offline", "model": ""})


@pytest.mark.parametrize("provider", ["openai", "anthropic", "openai-compatible", "offline"])
def test_each_of_the_four_providers_is_accepted(provider: str) -> None:
    assert check("model", {"provider": provider, "model": "m"}).provider == provider


def test_an_unknown_provider_lists_the_four() -> None:
    message = errors("model", {"provider": "azure", "model": "m"})["provider"]
    for provider in ("'openai'", "'anthropic'", "'openai-compatible'", "'offline'"):
        assert provider in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 3), ("max_tokens", 0), ("timeout", -1), ("max_retries", -1), ("pricing.input", -0.5)],
)
def test_model_numbers_are_range_checked(field: str, value: float) -> None:
    data: dict[str, Any] = {"provider": "openai", "model": "gpt"}
    if "." in field:
        outer, inner = field.split(".")
        data[outer] = {inner: value}
    else:
        data[field] = value
    assert list(errors("model", data)) == [field]


# -- prompt -----------------------------------------------------------------------------------


def test_a_prompt_needs_a_template_that_jinja_can_parse() -> None:
    assert errors("prompt", {}) == {"template": "required field is missing"}
    [(field, message)] = errors("prompt", {"template": "fine\n{% if %}\n"}).items()
    assert message.startswith("inner line 2: ")
    assert check("prompt", {"template": "{% for x in xs %}{{ x }}{% endfor %}", "vars": {"xs": [1]}}).vars == {
        "xs": [1]}


def test_a_template_error_in_an_index_file_names_the_field_and_its_line_in_the_file(tmp_path: Path) -> None:
    text = "namespace: app\nentries:\n  - name: p\n    kind: prompt\n    template: |\n      fine\n      {% if %}\n"
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry/_index.yaml").write_text(text)
    [problem] = read_source(tmp_path, "registry/_index.yaml", Folders()).problems
    assert (problem.entry, problem.field, problem.line) == ("app:p", "template", 7)


# -- tool ---------------------------------------------------------------------------------------


def test_a_python_tool_names_its_code() -> None:
    for data in ({}, {"file": "tools/t.py"}, {"function": "f"}, {"module": "m"}):
        message = errors("tool", data)[""]
        assert "'file'" in message and "'function'" in message
    assert check("tool", {"module": "pkg.tools", "function": "f"}).module == "pkg.tools"


def test_a_restricted_tool_needs_its_source() -> None:
    assert "'source'" in errors("tool", {"runtime": "restricted"})[""]
    source = 'def f() -> int:\n    """One."""\n    return 1\n'
    assert check("tool", {"runtime": "restricted", "source": source, "function": "f"}).runtime == "restricted"
    assert errors("tool", {"runtime": "restricted", "source": source}) == {
        "source": "the code defines no top-level function 'main' (it defines f)"}
    assert errors("tool", {"runtime": "restricted", "source": "def main(x):\n    return open(x)\n"}) == {
        "source": "inner line 1: parameter 'x': has no type hint; annotate it (for example `x: str`) so the model "
                  "knows what to send"}
    assert "runtime" in errors("tool", {"runtime": "javascript", "source": "x"})


# -- agent ------------------------------------------------------------------------------------


def test_an_agent_declares_what_it_refers_to() -> None:
    spec = check("agent", {"prompt": "prompts:p", "model": "app:m", "tools": ["tools.a:f", "tools.b:*"],
                           "delegates": ["app:helper"]})
    assert isinstance(spec, AgentSpec)
    assert sorted(spec.references(), key=lambda r: r.field) == [
        Reference("delegates.0", "app:helper", ("agent",)),
        Reference("model", "app:m", ("model",)),
        Reference("prompt", "prompts:p", ("prompt",)),
        Reference("tools.0", "tools.a:f", ("tool",)),
        Reference("tools.1", "tools.b:*", ("tool",)),
    ]
    assert AgentSpec().references() == []


def test_agent_fields_are_checked() -> None:
    assert list(errors("agent", {"max_steps": 0, "tools": "tools.a:f", "temperature": 5})) == [
        "tools", "max_steps", "temperature"]


# -- policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("effect", ["allow", "deny", "ask"])
def test_a_policy_may_allow_deny_or_ask(effect: str) -> None:
    assert check("policy", {**VALID["policy"], "effect": effect}).effect == effect


def test_a_bad_policy_names_each_field() -> None:
    found = errors("policy", {"subjects": [], "actions": ["tool.run"], "effect": "maybe"})
    assert list(found) == ["subjects", "actions.0", "effect"]
    assert "'allow', 'deny' or 'ask'" in found["effect"]
    assert "'tool.call'" in found["actions.0"]
    assert errors("policy", {"subjects": ["*"], "actions": ["tool.call"]}) == {"effect": "required field is missing"}


def test_a_policy_may_set_only_a_budget_and_a_budget_names_its_bad_limits() -> None:
    limited = check("policy", {"subjects": ["app:*"], "budget": {"max_usd_per_day": 5, "on_exceed": "ask"}})
    assert (limited.actions, limited.effect, limited.budget.max_usd_per_day) == ([], None, 5)
    assert errors("policy", {"subjects": ["*"]}) == {
        "actions": "required field is missing (a policy may leave it out only to set a budget)"}
    found = errors("agent", {"budget": {"max_usd_per_turn": -1, "on_exceed": "retry", "max_usd_per_week": 1}})
    assert list(found) == ["budget.max_usd_per_turn", "budget.on_exceed", "budget.max_usd_per_week"]
    assert "'fail' or 'ask'" in found["budget.on_exceed"] and "unknown field" in found["budget.max_usd_per_week"]


# -- process and workflow -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["process", "workflow"])
def test_code_is_named_by_exactly_one_of_file_or_module(kind: str) -> None:
    for data in ({"function": "run"}, {"file": "a.py", "module": "a", "function": "run"}):
        message = errors(kind, data)[""]
        assert "exactly one of 'file'" in message and "'module'" in message
    assert errors(kind, {"file": "a.py"}) == {"function": "required field is missing"}
    assert check(kind, {"file": "processes/a.py", "function": "run"}).file == "processes/a.py"


def test_a_process_takes_args() -> None:
    assert check("process", {"module": "m", "function": "f", "args": [1, "two"]}).args == [1, "two"]
    assert "args" in errors("process", {"module": "m", "function": "f", "args": "one"})


# -- supervisor -------------------------------------------------------------------------------


def test_a_supervisor_refers_to_its_children_processes() -> None:
    spec = check("supervisor", {
        "strategy": "rest_for_one",
        "backoff": {"initial": 0.5},
        "children": [{"id": "db", "process": "app:db", "restart": "transient"},
                     {"id": "sub", "process": "app:subtree"}],
    })
    assert isinstance(spec, SupervisorSpec)
    assert spec.references() == [Reference("children.0.process", "app:db", ("process", "supervisor")),
                                 Reference("children.1.process", "app:subtree", ("process", "supervisor"))]


def test_a_bad_supervisor_names_each_field() -> None:
    found = errors("supervisor", {
        "strategy": "one_for_everyone",
        "max_restarts": -1,
        "children": [{"id": "a"}, {"id": "b", "process": "app:b", "restrat": "temporary"}],
    })
    assert list(found) == ["strategy", "max_restarts", "children.0.process", "children.1.restrat"]
    assert "'one_for_one', 'one_for_all' or 'rest_for_one'" in found["strategy"]


# -- config ------------------------------------------------------------------------------------


PG_SCHEMA = {
    "type": "object",
    "required": ["host", "port"],
    "properties": {"host": {"type": "string"}, "port": {"type": "integer", "minimum": 1, "maximum": 65535}},
}


def test_config_without_a_schema_is_free_form() -> None:
    spec = check("config", {"anything": 1, "nested": {"list": [1, 2]}, "name": "x"})
    assert isinstance(spec, ConfigSpec)
    assert spec.model_extra == {"anything": 1, "nested": {"list": [1, 2]}, "name": "x"}


def test_config_values_that_match_the_schema_pass() -> None:
    spec = check("config", {"host": "db", "port": 5432, "schema": PG_SCHEMA})
    assert isinstance(spec, ConfigSpec)
    assert spec.json_schema == PG_SCHEMA
    assert spec.model_extra == {"host": "db", "port": 5432}


@pytest.mark.parametrize(
    ("port", "words"),
    [("abc", ["'abc'", "integer"]), (99999, ["99999", "maximum", "65535"]), (0, ["minimum"])],
)
def test_a_config_value_that_breaks_the_schema_names_the_field(port: Any, words: list[str]) -> None:
    [(field, message)] = errors("config", {"host": "db", "port": port, "schema": PG_SCHEMA}).items()
    assert field == "port"
    for word in words:
        assert word in message


def test_a_missing_required_config_value_is_named() -> None:
    [message] = errors("config", {"host": "db", "schema": PG_SCHEMA}).values()
    assert "'port' is a required property" in message


def test_every_schema_violation_is_reported() -> None:
    found = errors("config", {"host": 1, "port": "x", "schema": PG_SCHEMA})
    assert set(found) == {"host", "port"}


def test_an_invalid_schema_is_a_clear_error() -> None:
    [(field, message)] = errors("config", {"port": 1, "schema": {"type": "integr"}}).items()
    assert field.startswith("schema") and "not a valid JSON schema" in message
    assert "'integr'" in message
    [(field, message)] = errors("config", {"schema": {"minimum": "zero"}}).items()
    assert field == "schema.minimum" and "not a valid JSON schema" in message


PG_INDEX = """
    namespace: app.db
    entries:
      - name: postgres
        kind: config
        host: localhost
        port: 99999
        schema:
          type: object
          properties:
            port: {type: integer, maximum: 65535}
    """


def test_a_schema_violation_in_a_file_names_the_entry_and_field_in_the_message(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry/_index.yaml").write_text(textwrap.dedent(PG_INDEX))
    [problem] = read_source(tmp_path, "registry/_index.yaml", Folders()).problems
    assert (problem.file, problem.entry) == ("registry/_index.yaml", "app.db:postgres")
    assert "port: 99999 is greater than the maximum of 65535" in str(problem)


def test_a_schema_violation_in_a_file_is_located_at_the_field(tmp_path: Path) -> None:
    text = textwrap.dedent(PG_INDEX).lstrip("\n")
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry/_index.yaml").write_text(text)
    [problem] = read_source(tmp_path, "registry/_index.yaml", Folders()).problems
    port_line = text.splitlines().index("    port: 99999") + 1
    assert (problem.field, problem.line) == ("port", port_line)


def test_a_policy_names_only_known_kinds() -> None:
    policy = {"subjects": ["app:*"], "actions": ["registry.create"], "effect": "allow"}
    assert errors("policy", {**policy, "kinds": ["tool", "tols"]}) == {
        "kinds.1": "unknown kind 'tols'; the kinds are agent, config, mcp_server, model, policy, process, prompt, "
                   "supervisor, tool, workflow"}
    assert check("policy", {**policy, "kinds": ["tool"]}).kinds == ["tool"]


# -- mcp_server -------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "field"), [({}, ""), ({"command": "x", "url": "http://h/mcp"}, "")])
def test_an_mcp_server_has_either_a_command_or_a_url(fields: dict[str, Any], field: str) -> None:
    assert errors("mcp_server", fields) == {
        field: "an mcp_server has either a 'command' (stdio) or a 'url' (streamable HTTP)"}


def test_an_mcp_tool_names_its_server_and_tool() -> None:
    assert errors("tool", {"runtime": "mcp", "server": "app:time"}) == {
        "": "an mcp tool names its 'server' (an mcp_server entry) and its 'tool' there"}
