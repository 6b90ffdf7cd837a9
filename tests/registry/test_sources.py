"""Reading one source file into entries: `_index.yaml`, prompt templates and tool modules.

Every bad input must say what is wrong and where: the file, the line, the entry and the field.
Files are read with the registry's own reader (`_sources.read_source`), one at a time, so that
each one's entries and problems are checked without booting an app around it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from wippy_agents.app import AppFolder
from wippy_agents.registry import KINDS, Entry, Folders, Origin, Problem
from wippy_agents.registry._sources import SourceFile, read_source
from wippy_agents.testing import write_file as write


def line(text: str, needle: str) -> int:
    """The 1-based number of the first line of `text` that contains `needle`."""
    for number, content in enumerate(text.splitlines(), 1):
        if needle in content:
            return number
    raise AssertionError(f"{needle!r} is not in the text")


def read(root: Path, relpath: str, text: str) -> tuple[SourceFile, str]:
    """Write one source file and read it back; return the outcome and the text written."""
    text = write(root, relpath, text)
    return read_source(root, relpath, Folders()), text


def entries(source: SourceFile) -> dict[str, Entry]:
    return {entry_id: entry for entry_id, (entry, _) in source.entries.items()}


def only_problem(source: SourceFile) -> Problem:
    """The one problem of a refused file (which contributes no entries)."""
    assert source.entries == {}, "a file with a problem contributes no entries"
    assert len(source.problems) == 1, [str(p) for p in source.problems]
    return source.problems[0]


INDEX = "registry/app/_index.yaml"

# -- _index.yaml: entries -------------------------------------------------------------------


def test_index_entries_of_several_kinds_load_with_ids_meta_and_data(tmp_path: Path) -> None:
    source, text = read(tmp_path, INDEX, """
        namespace: app.agents
        entries:
          - name: fast
            kind: model
            meta:
              title: Fast model
            provider: offline
            model: wippy-offline
          - name: x
            kind: agent
            meta: {title: X, tags: [a, b]}
            model: app.agents:fast
            max_steps: 4
          - name: greeting
            kind: prompt
            template: "Hello {{ name }}"
          - name: settings
            kind: config
            retries: 3
        """)
    assert source.problems == []
    assert entries(source) == {
        "app.agents:fast": Entry("app.agents:fast", "model", {"title": "Fast model"},
                                 {"provider": "offline", "model": "wippy-offline"}),
        "app.agents:x": Entry("app.agents:x", "agent", {"title": "X", "tags": ["a", "b"]},
                              {"model": "app.agents:fast", "max_steps": 4}),
        "app.agents:greeting": Entry("app.agents:greeting", "prompt", {}, {"template": "Hello {{ name }}"}),
        "app.agents:settings": Entry("app.agents:settings", "config", {}, {"retries": 3}),
    }
    origins = {entry_id: origin for entry_id, (_, origin) in source.entries.items()}
    assert origins["app.agents:x"].file == INDEX
    assert origins["app.agents:x"].line == line(text, "name: x")


def test_an_empty_index_file_has_no_entries_and_no_problems(tmp_path: Path) -> None:
    source, _ = read(tmp_path, INDEX, "# nothing here yet\n")
    assert (source.entries, source.problems) == ({}, [])


def test_nested_index_files_and_the_yml_spelling_are_found(tmp_path: Path) -> None:
    write(tmp_path, "registry/_index.yaml", "namespace: top\nentries:\n  - {name: a, kind: config}\n")
    write(tmp_path, "registry/one/two/three/_index.yaml", "namespace: deep.er\nentries:\n  - {name: b, kind: config}\n")
    write(tmp_path, "registry/other/_index.yml", "namespace: short\nentries:\n  - {name: c, kind: config}\n")
    write(tmp_path, "registry/other/notes.yaml", "namespace: ignored\nentries:\n  - {name: d, kind: config}\n")
    app = AppFolder(tmp_path, files_only=True)
    try:
        assert [entry.id for entry in app.registry.find() if entry.namespace != "wippy"] == ["deep.er:b", "short:c", "top:a"]
        assert app.registry.origin("short:c").file == "registry/other/_index.yml"  # type: ignore[union-attr]
        assert app.registry.problems == {}
    finally:
        app.close()


# -- _index.yaml: problems with the file as a whole ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "bad_line"),
    [
        pytest.param("namespace: app\nentries:\n  - name: x\n    kind: agent\n     max_steps: 3\n", 5,
                     id="bad-indentation"),
        pytest.param("namespace: app\nentries:\n  - name: x\n    kind: config\n    title: a: b\n", 5,
                     id="colon-in-value"),
        pytest.param("namespace: app\nentries:\n  - name: 'x\n    kind: config\n", 5, id="unclosed-quote"),
    ],
)
def test_invalid_yaml_names_the_file_and_line(tmp_path: Path, text: str, bad_line: int) -> None:
    problem = only_problem(read(tmp_path, INDEX, text)[0])
    assert (problem.file, problem.line) == (INDEX, bad_line)
    assert "invalid YAML" in problem.message
    assert str(problem).startswith(f"{INDEX}:{bad_line}: invalid YAML")


@pytest.mark.parametrize(
    ("text", "at", "words", "entry", "field"),
    [
        pytest.param("- a\n- b\n", "- a", ["mapping", "namespace", "entries"], None, None, id="not-a-mapping"),
        pytest.param("entries:\n  - {name: a, kind: config}\n", "entries", ["'namespace' is required"], None, None,
                     id="no-namespace"),
        pytest.param("namespace: [a]\nentries: []\n", "namespace", ["'namespace'", "string"], None, None,
                     id="namespace-not-a-string"),
        pytest.param("namespace: app\nentries:\n  a: {kind: config}\n", "entries:", ["'entries'", "list"], None, None,
                     id="entries-not-a-list"),
        pytest.param("namespace: app\nentries:\n  - just a string\n", "just a string", ["mapping", "name", "kind"],
                     None, None, id="entry-not-a-mapping"),
        pytest.param("namespace: app\nentries:\n  - kind: config\n    x: 1\n", "kind: config", ["'name'", "required"],
                     None, "name", id="entry-without-name"),
        pytest.param("namespace: app\nentries:\n  - name: q\n    x: 1\n", "name: q", ["'kind'", "required"], "app:q",
                     "kind", id="entry-without-kind"),
        pytest.param("namespace: app\nentrys:\n  - {name: a, kind: config}\n", "entrys", ["unknown top-level key",
                     "'entrys'"], None, None, id="unknown-top-level-key"),
        pytest.param("namespace: app\nentries:\n  - name: a\n    kind: config\n    meta: [x]\n", "name: a",
                     ["'meta'", "mapping"], "app:a", "meta", id="meta-not-a-mapping"),
    ],
)
def test_a_malformed_index_file_says_what_and_where(
    tmp_path: Path, text: str, at: str, words: list[str], entry: str | None, field: str | None
) -> None:
    problem = only_problem(read(tmp_path, INDEX, text)[0])
    assert problem.file == INDEX
    assert problem.line == line(text, at)
    assert (problem.entry, problem.field) == (entry, field)
    for word in words:
        assert word in problem.message


def test_an_id_defined_twice_in_one_file_is_refused_at_the_second(tmp_path: Path) -> None:
    source, text = read(tmp_path, INDEX, """
        namespace: app
        entries:
          - name: x
            kind: config
          - name: y
            kind: config
          - name: x   # again
            kind: config
        """)
    problem = only_problem(source)
    assert (problem.file, problem.line, problem.entry) == (INDEX, line(text, "# again"), "app:x")
    assert "twice" in problem.message


@pytest.mark.parametrize(
    ("namespace", "name", "bad_id"),
    [
        pytest.param("app", "Bad Name", "app:Bad Name", id="space-in-name"),
        pytest.param("bad ns", "a", "bad ns:a", id="space-in-namespace"),
        pytest.param("app..x", "a", "app..x:a", id="empty-namespace-part"),
        pytest.param("1app", "a", "1app:a", id="namespace-starts-with-digit"),
        pytest.param("app", "a:b", "app:a:b", id="colon-in-name"),
    ],
)
def test_a_malformed_id_shows_the_id_and_the_rule(tmp_path: Path, namespace: str, name: str, bad_id: str) -> None:
    source, text = read(tmp_path, INDEX, f"""
        namespace: '{namespace}'
        entries:
          - name: '{name}'
            kind: config
        """)
    problem = only_problem(source)
    bad_namespace = bad_id.startswith(namespace + ":") and " " not in name and ":" not in name and name != "Bad Name"
    where = "namespace:" if bad_namespace else "- name:"
    assert (problem.file, problem.line) == (INDEX, line(text, where))
    assert repr(namespace if bad_namespace else bad_id) in problem.message
    assert "'namespace:name'" in problem.message  # the rule


# -- _index.yaml: an entry's fields, checked by its kind ------------------------------------------


def test_a_misspelt_field_names_the_entry_the_field_and_its_line(tmp_path: Path) -> None:
    source, text = read(tmp_path, INDEX, """
        namespace: app.agents
        entries:
          - name: x
            kind: agent
            max_step: 3
        """)
    problem = only_problem(source)
    assert (problem.file, problem.line, problem.entry, problem.field) == (
        INDEX, line(text, "max_step:"), "app.agents:x", "max_step")
    assert "unknown field" in problem.message and "spelling" in problem.message
    assert str(problem) == f"{INDEX}:{problem.line}: entry app.agents:x: field max_step: {problem.message}"


def test_a_wrong_type_names_the_line_of_the_field(tmp_path: Path) -> None:
    source, text = read(tmp_path, INDEX, """
        namespace: app.agents
        entries:
          - name: x
            kind: agent
            prompt: app:p
            max_steps: many
        """)
    problem = only_problem(source)
    assert (problem.line, problem.entry, problem.field) == (line(text, "max_steps"), "app.agents:x", "max_steps")
    assert "integer" in problem.message


def test_a_bad_nested_field_names_its_path_and_line(tmp_path: Path) -> None:
    source, text = read(tmp_path, INDEX, """
        namespace: app
        entries:
          - name: tree
            kind: supervisor
            children:
              - id: a
                process: app:a
              - id: b
                process: app:b
                restart: sometimes
        """)
    problem = only_problem(source)
    assert (problem.line, problem.entry, problem.field) == (line(text, "restart:"), "app:tree", "children.1.restart")
    assert "'permanent', 'transient' or 'temporary'" in problem.message


def test_an_unknown_kind_lists_the_known_kinds(tmp_path: Path) -> None:
    source, text = read(tmp_path, INDEX, """
        namespace: app
        entries:
          - name: x
            kind: agnet
        """)
    problem = only_problem(source)
    assert (problem.line, problem.entry, problem.field) == (line(text, "kind:"), "app:x", "kind")
    assert "'agnet'" in problem.message
    for kind in KINDS:
        assert kind in problem.message


def test_one_bad_entry_keeps_every_entry_of_the_file_out_and_every_problem_is_reported(tmp_path: Path) -> None:
    source, text = read(tmp_path, INDEX, """
        namespace: app
        entries:
          - name: good
            kind: config
          - name: bad1
            kind: agent
            max_steps: 0
          - name: also_good
            kind: model
            provider: offline
            model: m
          - name: bad2
            kind: model
            provider: azure
            model: m
        """)
    assert source.entries == {}
    assert [(p.entry, p.field, p.line) for p in source.problems] == [
        ("app:bad1", "max_steps", line(text, "max_steps")),
        ("app:bad2", "provider", line(text, "azure")),
    ]


# -- prompts ----------------------------------------------------------------------------------


TRIAGE = """
    ---
    title: Triage
    description: Sorts tickets.
    vars:
      tone: calm
      limit: 3
    ---
    You are a {{ tone }} triager.
    Pick at most {{ limit }} labels.
    """


def test_a_prompt_file_takes_its_id_from_the_path_and_meta_and_vars_from_front_matter(tmp_path: Path) -> None:
    source, _ = read(tmp_path, "prompts/support/triage.md", TRIAGE)
    assert source.problems == []
    assert entries(source) == {
        "prompts.support:triage": Entry(
            "prompts.support:triage", "prompt", {"title": "Triage", "description": "Sorts tickets."},
            {"template": "You are a {{ tone }} triager.\nPick at most {{ limit }} labels.\n",
             "vars": {"tone": "calm", "limit": 3}},
        )
    }


def test_a_j2_prompt_without_front_matter_is_all_template(tmp_path: Path) -> None:
    text = "Hello {{ name }}\n\n---\nnot front matter\n"
    source, _ = read(tmp_path, "prompts/mail/welcome.j2", text)
    assert entries(source) == {"prompts.mail:welcome": Entry("prompts.mail:welcome", "prompt", {}, {"template": text})}


def test_a_prompt_at_the_top_of_the_folder(tmp_path: Path) -> None:
    source, _ = read(tmp_path, "prompts/hello.md", "---\ntitle: Hi\n---\nHi")
    assert entries(source) == {"prompts:hello": Entry("prompts:hello", "prompt", {"title": "Hi"}, {"template": "Hi"})}


@pytest.mark.parametrize(
    ("relpath", "text", "bad_line"),
    [
        pytest.param("prompts/p.md", "---\ntitle: T\nvars:\n  a: 1\n---\nline one\n{% if %}\n", 7,
                     id="after-front-matter"),
        pytest.param("prompts/p.j2", "line one\nline two\n{{ name | }}\n", 3, id="no-front-matter"),
        pytest.param("prompts/p.md", "---\n---\n{% for x in y %}\n", 3, id="unclosed-block-empty-front-matter"),
    ],
)
def test_a_jinja_syntax_error_names_its_line_in_the_file(tmp_path: Path, relpath: str, text: str,
                                                         bad_line: int) -> None:
    problem = only_problem(read(tmp_path, relpath, text)[0])
    assert (problem.file, problem.line, problem.entry, problem.field) == (relpath, bad_line, "prompts:p", "template")
    assert "template line" not in problem.message  # the line is in the location, counted in the file


def test_bad_front_matter_yaml_names_its_line_in_the_file(tmp_path: Path) -> None:
    source, text = read(tmp_path, "prompts/p.md", "---\ntitle: ok\ndescription: a: b\n---\nHello\n")
    problem = only_problem(source)
    assert (problem.file, problem.line) == ("prompts/p.md", line(text, "description"))
    assert "invalid YAML" in problem.message


def test_front_matter_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    problem = only_problem(read(tmp_path, "prompts/p.md", "---\n- a\n- b\n---\nHello\n")[0])
    assert (problem.file, problem.line) == ("prompts/p.md", 2)
    assert "front matter" in problem.message and "mapping" in problem.message


def test_a_bad_field_in_front_matter_names_its_line(tmp_path: Path) -> None:
    source, text = read(tmp_path, "prompts/p.md", "---\ntitle: T\nvars: [a, b]\n---\nHello\n")
    problem = only_problem(source)
    assert (problem.entry, problem.field) == ("prompts:p", "vars")
    assert problem.line == line(text, "vars:")


def test_front_matter_with_windows_line_endings(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts/p.md").write_bytes(b"---\r\ntitle: T\r\n---\r\nHello\r\n")
    source = read_source(tmp_path, "prompts/p.md", Folders())
    assert source.problems == []
    entry = entries(source)["prompts:p"]
    assert entry.meta == {"title": "T"}
    assert "title" not in entry.data["template"]


# -- tools ------------------------------------------------------------------------------------


WEATHER = '''
    """Weather tools."""
    from os.path import join  # documented, but not defined here: not a tool


    def forecast(city: str, days: int = 1) -> str:
        """Forecast the weather in a city.

        Args:
            city: The city's name.
            days: How many days ahead.
        """
        return helper(city) * days


    async def current(city: str) -> str:
        """The weather in a city right now."""
        return city


    def helper(x):
        return x


    def _private(y: int) -> int:
        """Documented but private."""
        return y


    class Station:
        """A class is not a tool."""
    '''


def test_each_public_documented_function_of_a_tool_file_is_a_tool_entry(tmp_path: Path) -> None:
    source, text = read(tmp_path, "tools/weather.py", WEATHER)
    assert source.problems == []
    assert sorted(source.entries) == ["tools.weather:current", "tools.weather:forecast"]
    forecast, origin = source.entries["tools.weather:forecast"]
    assert forecast.kind == "tool"
    assert origin == Origin("tools/weather.py", line(text, "def forecast"))
    assert {k: forecast.data[k] for k in ("description", "file", "function")} == {
        "description": "Forecast the weather in a city.", "file": "tools/weather.py", "function": "forecast"}
    assert forecast.data["parameters"] == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city's name."},
            "days": {"type": "integer", "default": 1, "description": "How many days ahead."},
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    assert sorted(source.tools) == sorted(source.entries)
    assert source.tools["tools.weather:forecast"].fn(city="x", days=2) == "xx"


def test_a_tool_file_in_a_subfolder_is_namespaced_by_its_path(tmp_path: Path) -> None:
    source, _ = read(tmp_path, "tools/sub/mod.py", 'def fn(a: int) -> int:\n    """Echo a."""\n    return a\n')
    assert list(source.entries) == ["tools.sub.mod:fn"]


def test_a_syntax_error_in_a_tool_file_names_its_line(tmp_path: Path) -> None:
    source, text = read(tmp_path, "tools/broken.py", "x = 1\n\n\ndef f(:\n    pass\n")
    problem = only_problem(source)
    assert (problem.file, problem.line) == ("tools/broken.py", line(text, "def f"))
    assert "syntax error" in problem.message


@pytest.mark.parametrize(
    ("code", "bad", "words"),
    [
        pytest.param('import os\n\nraise RuntimeError("no")\n', 'raise', ["RuntimeError", "no"], id="raise"),
        pytest.param("import os\nimport nonexistent_module_xyz\n", "nonexistent", ["ModuleNotFoundError",
                     "nonexistent_module_xyz"], id="missing-import"),
        pytest.param("def setup():\n    return 1 / 0\n\n\nsetup()\n", "1 / 0", ["ZeroDivisionError"],
                     id="raised-in-a-function-called-at-import"),
        pytest.param("import sys\nsys.exit(3)\n", "sys.exit", ["SystemExit", "3"], id="sys-exit"),
    ],
)
def test_a_tool_file_that_raises_on_import_names_the_error_and_line(
    tmp_path: Path, code: str, bad: str, words: list[str]
) -> None:
    source, text = read(tmp_path, "tools/boom.py", code)
    problem = only_problem(source)
    assert (problem.file, problem.line) == ("tools/boom.py", line(text, bad))
    assert "importing the file raised" in problem.message
    for word in words:
        assert word in problem.message
    assert "wippy_app.tools.boom" not in sys.modules


def test_an_app_with_a_tool_file_that_fails_to_import_still_loads_the_other_files(tmp_path: Path) -> None:
    write(tmp_path, "tools/boom.py", 'import os\n\nraise RuntimeError("no")\n')
    write(tmp_path, "tools/ok.py", 'def double(a: int) -> int:\n    """Double a."""\n    return 2 * a\n')
    write(tmp_path, "prompts/p.md", "Hi\n")
    write(tmp_path, INDEX, "namespace: app\nentries:\n  - {name: m, kind: model, provider: offline, model: m}\n")
    app = AppFolder(tmp_path, files_only=True)
    try:
        ids = [entry.id for entry in app.registry.find() if entry.namespace != "wippy"]
        assert ids == ["app:m", "prompts:p", "tools.ok:double"]
        assert [t for t in app.registry.tools if not t.startswith("wippy:")] == ["tools.ok:double"]
        [problem] = app.registry.problems["tools/boom.py"]
        assert (problem.line, "RuntimeError" in problem.message) == (3, True)
        assert list(app.registry.problems) == ["tools/boom.py"]
    finally:
        app.close()


def test_a_tool_without_type_hints_names_the_function_and_parameter(tmp_path: Path) -> None:
    source, text = read(tmp_path, "tools/nohint.py", '''
        def fine(a: int) -> int:
            """Fine."""
            return a


        def lookup(key, limit: int = 3) -> str:
            """Look a key up."""
            return key
        ''')
    problem = only_problem(source)
    assert (problem.file, problem.line, problem.entry) == ("tools/nohint.py", line(text, "def lookup"),
                                                           "tools.nohint:lookup")
    assert problem.field == "key" and "type hint" in problem.message
    assert source.tools == {}


# -- encoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("relpath", [INDEX, "prompts/p.md", "tools/t.py"])
def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path, relpath: str) -> None:
    path = tmp_path / relpath
    path.parent.mkdir(parents=True)
    path.write_bytes(b"# caf\xe9 in latin-1\n")
    problem = only_problem(read_source(tmp_path, relpath, Folders()))
    assert problem.file == relpath
    assert "UTF-8" in problem.message
