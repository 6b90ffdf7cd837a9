"""Bad input (issue 19): generated registry files, loaded by the registry as a booting node loads them.

Whatever index files an app holds (entries with wrong types and unknown fields, ids that
are not ids, anchors and aliases, nesting, a valid file cut short or with junk in it,
bytes that are not text), whatever prompt files (junk front matter, broken templates), and
whatever vanishes while the folder is read, loading never fails: each problem names its
file, and its line when the file is text; a file with a problem contributes nothing;
every other file's entries load.
tests/registry/test_hostile_files.py has the hand-picked cases this generalizes.
Files vanish mid-load by a wrapper on the registry's own reader (`_registry.read_source`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, example, given
from hypothesis import strategies as st

from wippy_agents.registry import Folders, Registry, _registry
from wippy_agents.state import open_state

from ._generated import ODD_TEXT, json_like, odd_text

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")  # a failing example may be huge

GOOD = "namespace: good\nentries:\n  - {name: settings, kind: config, level: 1}\n"
"""A file that loads, whatever its neighbours hold."""

KINDS = ["config", "agent", "model", "prompt", "tool", "mcp_server", "policy", "process", "supervisor", "workflow"]
FIELDS = ["model", "prompt", "tools", "provider", "source", "runtime", "function", "template", "command", "url",
          "timeout", "file", "children", "rules", "description", "parameters", "examples", "meta"]

SAMPLES = [
    GOOD.replace("good", "sample"),
    "namespace: sample\nentries:\n  - name: model\n    kind: model\n    provider: offline\n    model: wippy-offline\n"
    "  - name: helper\n    kind: agent\n    prompt: prompts:x\n    model: sample:model\n    tools: ['tools.*:*']\n",
    "namespace: sample\nentries:\n  - &base {name: a, kind: config, v: [1, 2]}\n  - <<: *base\n    name: b\n",
    "namespace: sample\nentries:\n  - name: t\n    kind: tool\n    runtime: restricted\n    source: |\n"
    "      def main(x: int) -> int:\n          return x\n",
    'namespace: sample\nentries:\n  - {name: "\\u202eevil", kind: config}\n  - {name: "\\ud800", kind: config}\n',
]
"""Index files to cut short or put junk in: plain, with anchors and a merge key, code, escapes."""


def dumped(doc: Any) -> bytes:
    """`doc` as YAML, or as its repr where YAML cannot say it: either way an index file's bytes."""
    try:
        return yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass")
    except (yaml.YAMLError, RecursionError, UnicodeEncodeError):
        return repr(doc).encode("utf-8", "surrogatepass")


values = json_like(odd_text, 50)
ids = st.one_of(st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True), odd_text,
                st.sampled_from(["../x", "a/b:c", "x\x00", "a:b", ".hidden", "-x"]))
entries = st.fixed_dictionaries({"name": ids | values, "kind": st.sampled_from(KINDS) | odd_text | values}).flatmap(
    lambda entry: st.dictionaries(st.sampled_from(FIELDS) | odd_text, values, max_size=4).map(
        lambda fields: {**fields, **entry}))
structured = st.fixed_dictionaries(
    {"namespace": ids, "entries": st.lists(entries, max_size=4) | values},
    optional={"meta": values, "version": values, "extra": values}).map(dumped)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A sample index file cut short, or with bytes replaced or put in anywhere."""
    text = draw(st.sampled_from(SAMPLES)).encode()
    at = draw(st.integers(0, len(text)))
    how = draw(st.sampled_from(["cut", "insert", "replace"]))
    if how == "cut":
        return text[:at]
    junk = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(ODD_TEXT).map(
        lambda odd: odd.encode("utf-8", "surrogatepass")) | st.sampled_from([b"&a ", b"*a", b"*nope", b"<<: ", b"!!"]))
    return text[:at] + junk + text[at + (len(junk) if how == "replace" else 0):]


nesting = st.builds(lambda opening, depth: f"namespace: deep\nentries:\n  - name: x\n    kind: config\n    v: "
                    f"{opening * depth}\n".encode(), st.sampled_from(["[", "{a: ", "- ", "[{a: "]),
                    st.integers(1, 3000))
bombs = st.integers(1, 9).map(lambda levels: ("namespace: bomb\nentries:\n  - name: x\n    kind: config\n" + "".join(
    f"    a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9) if n else 'x'}]\n" for n in range(levels))).encode())

index_files = st.one_of(structured, damaged(), nesting, bombs, st.binary(max_size=500))
"""The bytes of one `_index.yaml`."""

TEMPLATE_PARTS = ["{{ x }}", "{{", "}}", "{% if x %}", "{% endif %}", "{% for i in range(3) %}", "{% endfor %}", "{#",
                  "{% raw %}", "{% include 'x' %}", "{{ x.__class__ }}", "{% set a = 1 %}", "---", "\n"]
prompt_files = st.builds(
    lambda meta, body: (b"" if meta is None else b"---\n" + meta + b"---\n") + body.encode("utf-8", "surrogatepass"),
    st.none() | st.dictionaries(st.sampled_from(["title", "description", "model", "tools"]) | odd_text, values,
                                max_size=3).map(dumped) | index_files,
    st.lists(st.sampled_from(TEMPLATE_PARTS) | odd_text, max_size=8).map("".join))
"""The bytes of one prompt file: front matter (or junk where it goes), then a template."""


def is_text(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@contextmanager
def loaded(app: Path) -> Iterator[Registry]:
    """The app's registry loaded from its files, with a fresh (in-memory) state: no version is kept from before."""
    with open_state(None) as state:
        registry = Registry(app, state.versions, folders=Folders())
        registry.load()
        yield registry


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "registry/good").mkdir(parents=True)
    (tmp_path / "registry/good/_index.yaml").write_text(GOOD)
    return tmp_path


def test_whatever_source_files_hold_each_problem_names_its_file_and_line_and_the_others_load(app: Path) -> None:
    @given(st.lists(index_files, min_size=1, max_size=3), st.lists(prompt_files, max_size=2))
    @example([b"namespace: a\nentries:\n- {name: a, kind: ''}\n"], [])  # found: an empty kind failed the reader
    def loads(indexes: list[bytes], prompts: list[bytes]) -> None:
        assume(not any(b"good" in raw for raw in indexes))  # the good file's ids are its own
        written = {f"registry/gen{n}/_index.yaml": raw for n, raw in enumerate(indexes)}
        written |= {f"prompts/gen{n}.md": raw for n, raw in enumerate(prompts)}
        for relpath, raw in written.items():
            (app / relpath).parent.mkdir(parents=True, exist_ok=True)
            (app / relpath).write_bytes(raw)
        try:
            with loaded(app) as registry:
                problems = dict(registry.problems)
                origins = {entry.id: registry.origin(entry.id) for entry in registry.find()}
        finally:
            for relpath in written:
                (app / relpath).unlink()
        assert registry.get("good:settings").data == {"level": 1}
        assert set(problems) <= set(written), problems
        for relpath, found in problems.items():
            for problem in found:
                assert problem.file == relpath and problem.message, problem
                assert "please report this" not in problem.message, problem  # a reader's own fault
                if is_text(written[relpath]):
                    assert problem.line is not None, problem
        files_loaded = {origin.file for origin in origins.values() if origin is not None}
        assert not files_loaded & set(problems)  # a file with a problem contributes nothing

    loads()


def test_files_that_vanish_while_the_folder_is_read_are_gone_not_errors(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_source = _registry.read_source

    @given(st.integers(1, 6).flatmap(lambda count: st.tuples(st.just(count), st.sets(st.integers(0, count - 1)))),
           st.integers(0, 6))
    def loads(files: tuple[int, set[int]], after: int) -> None:
        count, vanishing = files
        for n in range(count):
            (app / f"registry/gen{n}").mkdir(parents=True)
            (app / f"registry/gen{n}/_index.yaml").write_text(GOOD.replace("good", f"gen{n}"))
        reads = []

        def vanish_then_read(root: Path, relpath: str, *args: Any, **options: Any) -> Any:
            reads.append(relpath)
            if len(reads) == after + 1:  # listed already: now they go
                for n in vanishing:
                    shutil.rmtree(app / f"registry/gen{n}", ignore_errors=True)
            return read_source(root, relpath, *args, **options)

        monkeypatch.setattr(_registry, "read_source", vanish_then_read)
        try:
            with loaded(app) as registry:
                found = {entry.id for entry in registry.find()}
                problems = dict(registry.problems)
        finally:
            monkeypatch.setattr(_registry, "read_source", read_source)
            for n in range(count):
                shutil.rmtree(app / f"registry/gen{n}", ignore_errors=True)
        assert problems == {}
        read_after = set(reads[after:])  # read once they had gone
        for n in range(count):
            gone = n in vanishing and f"registry/gen{n}/_index.yaml" in read_after
            assert (f"gen{n}:settings" in found) is not gone
        assert "good:settings" in found

    loads()
