"""`wippy.yaml`, and booting an app folder with `AppFolder(root, files_only=True)` (in-memory state)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wippy_agents.app import AppConfig, AppFolder, load_config
from wippy_agents.registry import Problem, RegistryError
from wippy_agents.testing import write_file as write


def index(root: Path, folder: str, namespace: str, *entries: str) -> str:
    """Write `<folder>/_index.yaml` with one flow-style mapping per entry; return its path."""
    relpath = f"{folder}/_index.yaml"
    write(root, relpath, f"namespace: {namespace}\nentries:\n" + "".join(f"  - {{{e}}}\n" for e in entries))
    return relpath


def boot(root: Path) -> AppFolder:
    app = AppFolder(root, files_only=True)
    assert not (root / ".wippy").exists(), "files_only must not create a state file"
    return app


def config_problems(root: Path, text: str) -> list[Problem]:
    write(root, "wippy.yaml", text)
    with pytest.raises(RegistryError) as caught:
        load_config(root)
    assert caught.value.problems, "the error lists its problems"
    return list(caught.value.problems)


# -- wippy.yaml -------------------------------------------------------------------------------


def test_without_wippy_yaml_every_setting_has_its_default(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config == AppConfig()
    assert (config.sources.registry, config.sources.prompts, config.sources.tools) == ("registry", "prompts", "tools")
    assert (config.state, config.watch) == (".wippy/state.duckdb", True)


def test_an_empty_wippy_yaml_means_defaults(tmp_path: Path) -> None:
    write(tmp_path, "wippy.yaml", "# nothing set\n")
    assert load_config(tmp_path) == AppConfig()


def test_the_repo_example_wippy_yaml_is_valid() -> None:
    config = load_config(Path(__file__).parents[2])
    assert config.name == "example"


def test_settings_are_read(tmp_path: Path) -> None:
    write(tmp_path, "wippy.yaml", "name: shop\ndefault_agent: app:assistant\nwatch: false\nwatch_step_ms: 50\n")
    config = load_config(tmp_path)
    assert (config.name, config.default_agent, config.watch, config.watch_step_ms) == (
        "shop", "app:assistant", False, 50)


@pytest.mark.parametrize(
    ("text", "bad_line", "field", "words"),
    [
        pytest.param("name: x\nwach: false\n", 2, "wach", ["unknown setting"], id="unknown-key"),
        pytest.param("name: x\nsources:\n  registry: reg\n  prompt: p\n", 4, "sources.prompt", ["unknown setting"],
                     id="unknown-nested-key"),
        pytest.param("name: x\nwatch: maybe\n", 2, "watch", ["boolean"], id="wrong-type"),
        pytest.param("watch_step_ms: 0\n", 1, "watch_step_ms", ["greater than or equal to 1"], id="out-of-range"),
        pytest.param("sources: prompts\n", 1, "sources", ["dictionary"], id="sources-not-a-mapping"),
        pytest.param("name: x\nretention:\n  audit_days: 0\n", 3, "retention.audit_days", ["greater than 0"],
                     id="retention-out-of-range"),
        pytest.param("retention:\n  usage_days: 0.5\n", 2, "retention.usage_days", ["greater than or equal to 1"],
                     id="usage-kept-less-than-a-day"),
        pytest.param("retention:\n  task_days: 3\n", 2, "retention.task_days", ["unknown setting", "tasks_days"],
                     id="retention-unknown-key"),
        pytest.param("retention:\n  tasks_days: 3\ntask_retention_days: 4\n", 3, "task_retention_days",
                     ["either", "retention.tasks_days"], id="old-and-new-name-both-set"),
    ],
)
def test_a_bad_setting_names_wippy_yaml_the_line_and_the_field(
    tmp_path: Path, text: str, bad_line: int, field: str, words: list[str]
) -> None:
    [problem] = config_problems(tmp_path, text)
    assert (problem.file, problem.line, problem.field) == ("wippy.yaml", bad_line, field)
    for word in words:
        assert word in problem.message
    assert str(problem).startswith(f"wippy.yaml:{bad_line}: field {field}: ")


def test_retention_is_read_and_the_former_task_retention_days_still_sets_how_long_tasks_are_kept(
        tmp_path: Path) -> None:
    assert (load_config(tmp_path).tasks_days, load_config(tmp_path).retention.conversations_days) == (30, None)
    write(tmp_path, "wippy.yaml", "retention:\n  tasks_days: 2\n  conversations_days: 90\n  interval_minutes: 5\n")
    config = load_config(tmp_path)
    assert (config.tasks_days, config.retention.conversations_days, config.retention.interval_minutes) == (2, 90, 5)
    write(tmp_path, "wippy.yaml", "task_retention_days: null\n")
    assert load_config(tmp_path).tasks_days is None


def test_every_bad_setting_is_reported_at_once(tmp_path: Path) -> None:
    problems = config_problems(tmp_path, "wach: false\nstate: 3\nwatch_step_ms: lots\n")
    assert sorted((p.line, p.field) for p in problems) == [(1, "wach"), (2, "state"), (3, "watch_step_ms")]


def test_invalid_yaml_in_wippy_yaml_names_the_line(tmp_path: Path) -> None:
    [problem] = config_problems(tmp_path, "name: x\n  watch: true\n")
    assert (problem.file, problem.line) == ("wippy.yaml", 2)
    assert "invalid YAML" in problem.message


def test_wippy_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    [problem] = config_problems(tmp_path, "- name\n- x\n")
    assert (problem.file, problem.line) == ("wippy.yaml", 1)


def test_an_app_with_a_bad_wippy_yaml_does_not_boot(tmp_path: Path) -> None:
    write(tmp_path, "wippy.yaml", "wach: false\n")
    with pytest.raises(RegistryError, match=r"wippy\.yaml:1: field wach: unknown setting"):
        AppFolder(tmp_path, files_only=True)


def test_custom_source_folders_are_used(tmp_path: Path) -> None:
    write(tmp_path, "wippy.yaml", "sources:\n  registry: defs\n  prompts: templates\n  tools: code\n")
    write(tmp_path, "templates/x.md", "---\ntitle: X\n---\nHi\n")
    write(tmp_path, "templates/mail/welcome.j2", "Welcome\n")
    write(tmp_path, "code/m.py", 'def fn(a: int) -> int:\n    """Echo a."""\n    return a\n')
    index(tmp_path, "defs/app", "app", "name: m, kind: model, provider: offline, model: m")
    # the default folders are ordinary folders now
    write(tmp_path, "prompts/y.md", "Ignored\n")
    write(tmp_path, "tools/t.py", 'def t(a: int) -> int:\n    """Ignored."""\n    return a\n')
    index(tmp_path, "registry/app", "ignored", "name: m, kind: config")
    app = boot(tmp_path)
    try:
        assert [entry.id for entry in app.registry.find() if entry.namespace != "wippy"] == ["app:m", "code.m:fn", "templates.mail:welcome",
                                                               "templates:x"]
        assert app.registry.get("templates:x").data["template"] == "Hi\n"
        assert app.registry.origin("code.m:fn").file == "code/m.py"  # type: ignore[union-attr]
        assert app.registry.problems == {}
    finally:
        app.close()


def test_the_app_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        AppFolder(tmp_path / "nowhere", files_only=True)


# -- booting: references and ids across files ---------------------------------------------------------


MODELS = ("name: fast, kind: model, provider: offline, model: m",
          "name: mising, kind: model, provider: offline, model: m")


def test_a_dangling_reference_refuses_its_file_naming_the_id_and_close_matches(tmp_path: Path) -> None:
    index(tmp_path, "registry/models", "app", *MODELS)
    agents = index(tmp_path, "registry/agents", "app.agents", "name: a, kind: agent, model: app:missing",
                   "name: b, kind: agent")
    index(tmp_path, "registry/other", "app.other", "name: c, kind: agent, model: app:fast")
    app = boot(tmp_path)
    try:
        assert [entry.id for entry in app.registry.find() if entry.namespace != "wippy"] == ["app.other:c", "app:fast", "app:mising"]
        [problem] = app.registry.problems[agents]
        assert (problem.file, problem.entry, problem.field) == (agents, "app.agents:a", "model")
        assert "'app:missing'" in problem.message
        assert "did you mean 'app:mising'" in problem.message
        assert list(app.registry.problems) == [agents]
    finally:
        app.close()


def test_a_dangling_reference_names_its_line(tmp_path: Path) -> None:
    agents = index(tmp_path, "registry/agents", "app.agents", "name: b, kind: agent",
                   "name: a, kind: agent, model: app:missing")
    app = boot(tmp_path)
    try:
        [problem] = app.registry.problems[agents]
        assert problem.line == 4
    finally:
        app.close()


def test_a_reference_to_an_entry_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    index(tmp_path, "registry/models", "app", *MODELS)
    agents = index(tmp_path, "registry/agents", "app.agents", "name: a, kind: agent, delegates: [app:fast]")
    app = boot(tmp_path)
    try:
        [problem] = app.registry.problems[agents]
        assert (problem.entry, problem.field) == ("app.agents:a", "delegates.0")
        assert "'app:fast'" in problem.message and "model" in problem.message and "agent" in problem.message
    finally:
        app.close()


def test_a_refused_file_takes_the_files_that_refer_to_it_along(tmp_path: Path) -> None:
    models = "registry/models/_index.yaml"
    write(tmp_path, models, "namespace: app\nentries:\n  - name: m\n   kind: model\n")  # bad indentation
    agents = index(tmp_path, "registry/agents", "app.agents", "name: a, kind: agent, model: app:m")
    index(tmp_path, "registry/other", "app.other", "name: c, kind: config")
    app = boot(tmp_path)
    try:
        assert [entry.id for entry in app.registry.find() if entry.namespace != "wippy"] == ["app.other:c"]
        assert sorted(app.registry.problems) == [agents, models]
        assert "invalid YAML" in app.registry.problems[models][0].message
        assert "'app:m'" in app.registry.problems[agents][0].message
    finally:
        app.close()


def test_an_id_defined_in_two_files_refuses_the_second_naming_the_first(tmp_path: Path) -> None:
    first = index(tmp_path, "registry/a", "app", "name: shared, kind: config, v: 1", "name: only_a, kind: config")
    second = index(tmp_path, "registry/b", "app", "name: b_own, kind: config", "name: shared, kind: config, v: 2")
    app = boot(tmp_path)
    try:
        assert [entry.id for entry in app.registry.find() if entry.namespace != "wippy"] == ["app:only_a", "app:shared"]
        assert app.registry.get("app:shared").data == {"v": 1}
        [problem] = app.registry.problems[second]
        assert (problem.file, problem.entry, problem.line) == (second, "app:shared", 4)
        assert first in problem.message and "already defined" in problem.message
    finally:
        app.close()


def test_a_prompt_file_and_an_index_entry_with_the_same_id_clash(tmp_path: Path) -> None:
    write(tmp_path, "prompts/hello.md", "Hi\n")
    index_file = index(tmp_path, "registry/p", "prompts", "name: hello, kind: prompt, template: Hello")
    app = boot(tmp_path)
    try:
        clashing = list(app.registry.problems)
        assert len(clashing) == 1
        [problem] = app.registry.problems[clashing[0]]
        assert problem.entry == "prompts:hello"
        assert "already defined" in problem.message
        other = ({"prompts/hello.md", index_file} - set(clashing)).pop()
        assert other in problem.message
        assert app.registry.origin("prompts:hello").file == other  # type: ignore[union-attr]
    finally:
        app.close()
