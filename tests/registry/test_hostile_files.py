"""Hostile files: whatever a file holds (or is), it is only ever that file's error.

Nothing dropped into an app's folders may crash boot, stop the file watcher, take
the agents down, freeze the node, leak a file from outside the app, or slip in an
id that only looks like another.

Some tests reach inside, where no public call can set the scene: one file is read with the
registry's own reader (`_sources.read_source`), a save read while an API write lands is
staged with the two halves of a reload (`_read_changed`, `_commit_reads`), and an entry
stored under older rules is written with the state's own store (`_state`, `registry._store`).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from wippy_agents import App
from wippy_agents.app import AppFolder
from wippy_agents.registry import Entry, EntryChange, Folders, Problem, RegistryError, check_id
from wippy_agents.registry._sources import SourceFile, read_source
from wippy_agents.registry._store import record
from wippy_agents.state import open_state
from wippy_agents.testing import wait_until
from wippy_agents.testing import write_file as write

WIPPY = str(Path(sys.executable).with_name("wippy"))
INDEX = "registry/app/_index.yaml"
GOOD_INDEX = "namespace: app\nentries:\n  - {name: settings, kind: config, level: 1}\n"


def line(text: str, needle: str) -> int:
    """The 1-based number of the first line of `text` that contains `needle`."""
    return next(number for number, content in enumerate(text.splitlines(), 1) if needle in content)


def only_problem(source: SourceFile) -> Problem:
    assert source.entries == {}, "a file with a problem contributes no entries"
    assert len(source.problems) == 1, [str(p) for p in source.problems]
    return source.problems[0]


def read(root: Path, relpath: str, text: str, **options: Any) -> tuple[Problem, str]:
    """Write one source file, read it back and return its one problem and the text written."""
    text = write(root, relpath, text)
    return only_problem(read_source(root, relpath, Folders(), **options)), text


def config_with(value: str, namespace: str = "app") -> str:
    """An index file whose one config entry has the field `v: <value>` on line 5."""
    return f"namespace: {namespace}\nentries:\n  - name: x\n    kind: config\n    v: {value}\n"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def aliases_of_aliases(levels: int, indent: str) -> str:
    """A YAML bomb: a few hundred bytes of mapping fields that expand to 9**levels values."""
    fields = [f"{indent}a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    fields += [f"{indent}a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "\n".join(fields) + "\n"


def yaml_bomb(levels: int, namespace: str = "app") -> str:
    """An index file whose one config entry is a YAML bomb."""
    return f"namespace: {namespace}\nentries:\n  - name: x\n    kind: config\n" + aliases_of_aliases(levels, "    ")


def refused(wippy: App, relpath: str) -> bool:
    return relpath in wippy.registry.problems


def system_pids(wippy: App) -> tuple[object, object]:
    """The watcher's and the agents' supervisor's pids: unchanged means neither went down."""
    watcher, agents = wippy.node.whereis("wippy:registry_watcher"), wippy.node.whereis("wippy:agents")
    assert watcher is not None and agents is not None
    return watcher, agents


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    write(root, INDEX, GOOD_INDEX)
    return root


# -- 1. a file the readers choke on --------------------------------------------------------------------------


def test_a_deeply_nested_index_file_is_refused_at_its_line_and_the_app_still_boots(app: Path) -> None:
    write(app, "registry/deep/_index.yaml", config_with(nested(990), "deep"))
    with AppFolder(app) as booted:
        [problem] = booted.registry.problems["registry/deep/_index.yaml"]
        assert "app:settings" in booted.registry
    assert (problem.line, "nests deeper than 100 levels" in problem.message) == (5, True)


async def test_a_deeply_nested_save_is_refused_and_the_watcher_and_agents_stay_up(example_app: Path) -> None:
    async with App(root=example_app) as wippy:
        before = system_pids(wippy)
        write(example_app, "registry/deep/_index.yaml", config_with(nested(990), "deep"))
        await wait_until(lambda: refused(wippy, "registry/deep/_index.yaml"))
        write(example_app, "registry/deep/_index.yaml", config_with("1", "deep"))
        await wait_until(lambda: "deep:x" in wippy.registry)  # still watching: the next good save applies
        assert system_pids(wippy) == before


async def test_new_folders_of_links_out_of_the_app_are_refused_unread_and_the_watcher_stays_up(
    example_app: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.md"
    secret.write_text("the launch code is 0000\n")
    async with App(root=example_app) as wippy:
        before = system_pids(wippy)
        for n in range(12):
            (example_app / "prompts" / f"evil{n}").mkdir()
            (example_app / "prompts" / f"evil{n}" / "leak.md").symlink_to(secret)
        await wait_until(lambda: all(refused(wippy, f"prompts/evil{n}/leak.md") for n in range(12)))
        [problem] = wippy.registry.problems["prompts/evil0/leak.md"]
        assert "outside the app folder" in problem.message
        assert not [entry for entry in wippy.registry.find() if "launch code" in str(entry.data)]
        assert system_pids(wippy) == before


async def test_a_folder_linked_in_from_outside_the_app_is_not_entered(app: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "leak.md").write_text("the launch code is 0000\n")
    async with App(root=app) as wippy:
        before = system_pids(wippy)
        (app / "prompts/evil").symlink_to(outside, target_is_directory=True)
        write(app, "prompts/later.md", "Hi\n")
        await wait_until(lambda: "prompts:later" in wippy.registry)  # the link's batch came first
        assert list(wippy.registry.problems) == [] and system_pids(wippy) == before
        assert not [entry for entry in wippy.registry.find() if "launch code" in str(entry.data)]


async def test_a_batch_that_fails_is_logged_and_the_watcher_keeps_watching(
    app: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with App(root=app) as wippy:
        before = system_pids(wippy)
        refresh = wippy.registry.refresh
        failures = ["a fault while committing a batch"]

        async def fails_once(relpaths: Any = None) -> int | None:
            if failures:
                raise RuntimeError(failures.pop())
            return await refresh(relpaths)

        monkeypatch.setattr(wippy.registry, "refresh", fails_once)
        write(app, "registry/one/_index.yaml", "namespace: one\nentries:\n  - {name: x, kind: config}\n")
        await wait_until(lambda: not failures)
        write(app, "registry/two/_index.yaml", "namespace: two\nentries:\n  - {name: x, kind: config}\n")
        await wait_until(lambda: "two:x" in wippy.registry)
        assert system_pids(wippy) == before
    assert "could not apply a batch of file changes; still watching" in caplog.text
    assert "a fault while committing a batch" in caplog.text


async def test_a_source_file_replaced_by_a_folder_counts_as_deleted(app: Path) -> None:
    async with App(root=app) as wippy:
        before = system_pids(wippy)
        (app / INDEX).unlink()
        (app / INDEX).mkdir()
        await wait_until(lambda: "app:settings" not in wippy.registry)
        assert system_pids(wippy) == before and INDEX not in wippy.registry.problems


async def test_a_file_where_a_source_folder_belongs_does_not_stop_the_watcher(app: Path) -> None:
    (app / "tools").write_text("a file, not a folder\n")
    async with App(root=app) as wippy:
        before = system_pids(wippy)
        write(app, INDEX, GOOD_INDEX.replace("level: 1", "level: 2"))
        await wait_until(lambda: wippy.registry.get("app:settings").data == {"level": 2})
        assert system_pids(wippy) == before


def test_a_template_nested_too_deeply_to_compile_is_refused(tmp_path: Path) -> None:
    problem, _ = read(tmp_path, "prompts/deep.md", "{% if x %}" * 400 + "hi" + "{% endif %}" * 400 + "\n")
    assert "nests too deeply" in problem.message


def test_a_pipe_named_like_a_source_file_is_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "registry/app").mkdir(parents=True)
    os.mkfifo(tmp_path / INDEX)
    problem = only_problem(read_source(tmp_path, INDEX, Folders()))
    assert "not a plain file" in problem.message


def test_a_missing_file_reads_as_gone_not_as_an_error(tmp_path: Path) -> None:
    source = read_source(tmp_path, INDEX, Folders())
    assert (source.digest, source.entries, source.problems) == ("", {}, [])


# -- 2. a file too big to read -------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [7, 9])
def test_a_yaml_bomb_is_refused_as_one_without_being_expanded(tmp_path: Path, levels: int) -> None:
    tracemalloc.start()
    try:
        problem, text = read(tmp_path, INDEX, yaml_bomb(levels))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(text) < 600 and peak < 10_000_000  # expanded, 9**7 values take gigabytes
    assert "looks like a YAML bomb" in problem.message and "100,000 values" in problem.message
    assert problem.line == line(text, "a5:")  # 9**6 copies: the first alias level over the limit


def test_a_file_with_too_many_values_is_refused_as_too_big_not_as_a_bomb(tmp_path: Path) -> None:
    problem, text = read(tmp_path, INDEX, config_with("[" + "0, " * 100_000 + "]"))
    assert "holds more than 100,000 values; split it" in problem.message and problem.line == 5


def test_a_file_over_4_mib_is_refused_unparsed(tmp_path: Path) -> None:
    problem, _ = read(tmp_path, INDEX, "#" * (4 * 1024 * 1024) + "\n")
    assert "larger than 4 MiB" in problem.message


def test_a_value_that_contains_itself_is_refused(tmp_path: Path) -> None:
    problem, _ = read(tmp_path, INDEX, config_with("&loop [1, *loop]"))
    assert "contains it" in problem.message and problem.line == 5


async def test_the_node_keeps_running_while_the_watcher_imports_a_slow_tool_file(app: Path, tmp_path: Path) -> None:
    started, release = tmp_path / "import started", tmp_path / "release the import"
    async with App(root=app) as wippy:
        write(app, "tools/slow.py", f'''
            import os, time

            open({str(started)!r}, "w").close()
            deadline = time.monotonic() + 5
            while not os.path.exists({str(release)!r}) and time.monotonic() < deadline:
                time.sleep(0.005)
            if not os.path.exists({str(release)!r}):
                raise TimeoutError("the node stalled while importing this file")


            def ping() -> str:
                """Answer."""
                return "pong"
            ''')
        await wait_until(started.exists)  # this runs on the event loop while the import is under way
        release.touch()
        await wait_until(lambda: "tools.slow:ping" in wippy.registry)


# -- 3. tool files that would freeze or kill the node -------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "bad", "words"),
    [
        pytest.param("import os\n\nos._exit(7)\n", "_exit", ["ended the process", "exit status 7"], id="os-exit"),
        pytest.param("x = 1\nraise KeyboardInterrupt\n", "raise", ["raised KeyboardInterrupt"], id="ctrl-c"),
        pytest.param("import ctypes\n\nctypes.string_at(0)\n", "string_at", ["crashed the process", "SIGSEGV"],
                     id="segfault"),
    ],
)
def test_a_tool_file_that_would_kill_the_node_at_import_is_refused(
    tmp_path: Path, code: str, bad: str, words: list[str]
) -> None:
    problem, text = read(tmp_path, "tools/boom.py", code)
    assert problem.file == "tools/boom.py"
    for word in words:
        assert word in problem.message
    if "exit status" not in problem.message:  # os._exit leaves no traceback behind
        assert problem.line == line(text, bad)
    assert "wippy_app.tools.boom" not in sys.modules


async def test_a_process_file_that_exits_at_import_cannot_be_spawned_and_the_node_lives_on(app: Path) -> None:
    write(app, "registry/jobs/_index.yaml", """
        namespace: jobs
        entries:
          - {name: quitter, kind: process, file: processes/quits.py, function: run}
        """)
    write(app, "processes/quits.py", "import os\nos._exit(3)\n\n\nasync def run() -> None:\n    pass\n")
    async with App(root=app) as wippy:
        with pytest.raises(RegistryError, match="cannot import processes/quits.py") as refusal:
            wippy.node.spawn("jobs:quitter", None)
        system_pids(wippy)
    assert "exit status 3" in refusal.value.problems[0].message


def test_a_tool_file_that_never_finishes_importing_is_refused_at_the_time_limit(tmp_path: Path) -> None:
    problem, text = read(tmp_path, "tools/spin.py", "import os\n\nwhile True: pass\n", import_time_limit=0.3)
    assert "did not finish within 0.3 s" in problem.message and problem.line == line(text, "while")


def test_a_tool_file_that_hangs_only_in_the_node_is_refused_at_the_time_limit(tmp_path: Path) -> None:
    probed = tmp_path / "probed"  # the probe's import creates it; the node's import then waits while it exists
    problem, _ = read(tmp_path, "tools/second.py", f'''
        import os, time

        deadline = time.monotonic() + 5
        if os.path.exists({str(probed)!r}):
            while os.path.exists({str(probed)!r}) and time.monotonic() < deadline:
                time.sleep(0.005)
        else:
            open({str(probed)!r}, "w").close()
        ''', import_time_limit=0.3)
    probed.unlink()  # lets the abandoned import finish
    assert "did not finish within 0.3 s" in problem.message


PROBE_HYGIENE = '''
import atexit, os, sys
from pathlib import Path
from wippy_agents.registry._sources import Folders, read_source

root = Path(sys.argv[1])
log = open(root / "parent.log", "a")  # buffered, unflushed: a child that flushed it would write the line twice
log.write("written by the parent\\n")
atexit.register(lambda: (root / "atexit.log").open("a").write("atexit ran\\n"))
for name in ("raises_system_exit", "prints", "exits"):
    print(name, [p.message for p in read_source(root, f"tools/{name}.py", Folders()).problems], flush=True)
try:
    os.waitpid(-1, os.WNOHANG)
    print("a child process is left")
except ChildProcessError:
    print("no child process is left")
'''


def test_a_probe_child_never_writes_to_the_nodes_files_runs_its_atexit_handlers_or_lingers(tmp_path: Path) -> None:
    write(tmp_path, "tools/raises_system_exit.py", "raise SystemExit(0)\n")
    write(tmp_path, "tools/prints.py", 'print("printed at import", flush=True)\n')
    write(tmp_path, "tools/exits.py", "import os\nos._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", PROBE_HYGIENE, str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("printed at import") == 1  # by the node's import, not by the probe
    assert "raised SystemExit" in done.stdout and "exit status 0" in done.stdout
    assert "no child process is left" in done.stdout
    assert (tmp_path / "parent.log").read_text() == "written by the parent\n"
    assert (tmp_path / "atexit.log").read_text() == "atexit ran\n"


def test_a_tool_file_whose_name_is_not_a_namespace_is_refused_unimported(tmp_path: Path) -> None:
    problem, _ = read(tmp_path, "tools/2fast.py", 'print("imported")\n')
    assert "namespace 'tools.2fast'" in problem.message and "rename the file" in problem.message


def test_files_whose_names_are_not_utf8_are_refused_under_a_readable_name(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    os.makedirs(root + b"/registry/caf\xe9")
    Path(os.fsdecode(root + b"/registry/caf\xe9/_index.yaml")).write_text(GOOD_INDEX)
    os.makedirs(root + b"/tools")
    Path(os.fsdecode(root + b"/tools/\xff.py")).write_text('def f() -> int:\n    """Doc."""\n    return 1\n')
    with AppFolder(tmp_path) as booted:
        problems = booted.registry.problems
        assert sorted(problems) == ["registry/caf\ufffd/_index.yaml", "tools/\ufffd.py"]
        assert "app:settings" not in booted.registry
    for [problem] in problems.values():
        assert "not UTF-8" in problem.message and str(problem).encode("utf-8")


def test_lone_surrogates_in_a_tool_docstring_are_stored_as_replacement_characters(tmp_path: Path) -> None:
    write(tmp_path, "tools/odd.py", 'def f() -> int:\n    "Say \\ud800 hi."\n    return 1\n')
    with AppFolder(tmp_path) as booted:
        assert booted.registry.get("tools.odd:f").data["description"] == "Say \ufffd hi."


# -- 4. links out of the app ------------------------------------------------------------------------------------


def test_a_prompt_linked_to_a_file_outside_the_app_is_refused_unread(app: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.md").write_text("the launch code is 0000\n")
    (app / "prompts/evil").mkdir(parents=True)
    (app / "prompts/evil/leak.md").symlink_to(tmp_path / "secret.md")
    with AppFolder(app, files_only=True) as booted:
        [problem] = booted.registry.problems["prompts/evil/leak.md"]
        assert "prompts.evil:leak" not in booted.registry
    assert "outside the app folder" in problem.message and "launch code" not in str(problem)


def test_a_tool_file_linked_outside_the_app_is_refused_without_importing_it(app: Path, tmp_path: Path) -> None:
    (tmp_path / "passwords").write_text("hunter2\n")
    (app / "tools").mkdir()
    (app / "tools/x.py").symlink_to(tmp_path / "passwords")
    problem = only_problem(read_source(app, "tools/x.py", Folders()))
    assert "outside the app folder" in problem.message and "hunter2" not in str(problem)


def test_a_link_that_stays_inside_the_app_is_followed(tmp_path: Path) -> None:
    write(tmp_path, "prompts/real.md", "Hello\n")
    (tmp_path / "prompts/alias.md").symlink_to(tmp_path / "prompts/real.md")
    source = read_source(tmp_path, "prompts/alias.md", Folders())
    assert source.problems == [] and source.entries["prompts:alias"][0].data["template"] == "Hello\n"


def test_write_through_refuses_a_file_that_a_link_leads_outside_the_app(app: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (app / "registry/ext").symlink_to(outside, target_is_directory=True)
    with AppFolder(app, files_only=True) as booted, pytest.raises(RegistryError, match="leads outside the app folder"):
        booted.registry.apply([Entry("ext:x", "config", {}, {"v": 1})], author="test")
    assert list(outside.iterdir()) == []


# -- 5. ids that only look alike --------------------------------------------------------------------------------


def test_an_id_with_a_trailing_newline_is_not_an_id() -> None:
    with pytest.raises(ValueError, match="bad entry id"):
        check_id("generated:shout\n")
    with pytest.raises(ValueError, match="bad entry id"):
        Entry.from_json({"id": "generated:shout\n", "kind": "prompt", "data": {"template": "HEY"}})


def test_an_index_entry_whose_name_ends_in_a_newline_is_refused(tmp_path: Path) -> None:
    problem, text = read(tmp_path, INDEX, 'namespace: app\nentries:\n  - {name: "shout\\n", kind: config}\n')
    assert "bad entry id" in problem.message and problem.line == 3


# -- values YAML has and JSON has not ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        pytest.param("2024-01-01", "a date is not JSON data; quote it", id="date"),
        pytest.param("2024-13-45", "'2024-13-45' is not a valid timestamp (month must be in 1..12)", id="bad-date"),
        pytest.param("!!timestamp x", "'x' is not a valid timestamp", id="bad-timestamp"),
        pytest.param("!!binary aGk=", "binary data (!!binary) is not JSON data", id="binary"),
        pytest.param("!!set {a}", "a set (!!set) is not JSON data; write a list", id="set"),
        pytest.param("{1: a, b: c}", "the key 1 is not text", id="number-key"),
        pytest.param(".nan", "nan is not a number JSON can hold", id="nan"),
        pytest.param("1" * 5000, "is not a valid int (Exceeds the limit", id="huge-number"),
        pytest.param(str(2**70), "larger than 64 bits", id="big-number"),
    ],
)
def test_a_yaml_value_that_is_not_json_data_is_refused_at_its_line_and_boot_goes_on(
    tmp_path: Path, value: str, words: str
) -> None:
    write(tmp_path, INDEX, config_with(value))
    write(tmp_path, "registry/other/_index.yaml", GOOD_INDEX.replace("app", "other"))
    with AppFolder(tmp_path) as booted:  # with a real state file: whatever loads is stored as JSON
        [problem] = booted.registry.problems[INDEX]
        assert "other:settings" in booted.registry
    assert words in problem.message and problem.line == 5


def test_an_api_change_holding_a_value_json_cannot_hold_is_refused_before_anything_is_written(app: Path) -> None:
    with AppFolder(app) as booted:
        with pytest.raises(RegistryError, match="a date is not JSON data") as refusal:
            booted.registry.apply([Entry("other:when", "config", {}, {"at": datetime.date(2024, 1, 1)})],
                                  author="test")
        assert booted.registry.version == 1
    assert refusal.value.problems[0].field == "at"
    assert not (app / "registry/other/_index.yaml").exists()


# -- the last good version stays in force ---------------------------------------------------------------------


def test_entries_of_a_refused_file_cannot_be_changed_through_the_api(app: Path) -> None:
    with AppFolder(app):
        pass  # the state file now holds app:settings
    broken = GOOD_INDEX.replace("level: 1", "level: [1")
    (app / INDEX).write_text(broken)
    with AppFolder(app) as booted:
        assert booted.registry.get("app:settings").data == {"level": 1}  # kept from its last good version
        with pytest.raises(RegistryError, match="is refused"):
            booted.registry.apply([Entry("app:settings", "config", {}, {"level": 2})], author="test")
    assert (app / INDEX).read_text() == broken


def test_a_save_read_before_an_api_write_through_is_not_committed_over_it(app: Path) -> None:
    with AppFolder(app, files_only=True) as booted:
        registry = booted.registry
        (app / INDEX).write_text(GOOD_INDEX.replace("level: 1", "level: 2"))
        reads = registry._read_changed({INDEX})  # the watcher reads the save in its thread, while on the loop...
        registry.apply([Entry("app:settings", "config", {}, {"level": 3})], author="agent")  # ...a change lands
        registry._commit_reads(reads)
        assert registry.get("app:settings").data == {"level": 3}
    assert "level: 3" in (app / INDEX).read_text()


def test_a_stored_entry_that_no_longer_validates_does_not_stop_boot(app: Path) -> None:
    with AppFolder(app):
        pass
    with open_state(app / ".wippy/state.duckdb") as state:  # as if an older version had stored an entry today's
        settings = Entry("app:settings", "config", {}, {"level": 1})  # rules refuse
        record(state.versions, 2, [EntryChange("app:settings", settings, Entry("app:settings", "model"))],
               {"app:settings": INDEX}, author="test", task=None, reason="stored under older rules")
    (app / INDEX).write_text("namespace: app\nentries: [\n")  # refused: its stored entries would stay in force
    with AppFolder(app) as booted:
        assert "app:settings" not in booted.registry and INDEX in booted.registry.problems


# -- wippy.yaml ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        pytest.param(b"sources:\n  registry: /etc\n", "'/etc' is not a folder name", id="folder-outside"),
        pytest.param(b"sources:\n  tools: ../tools\n", "'../tools' is not a folder name", id="folder-up"),
        pytest.param(b"name: caf\xe9\n", "not UTF-8 text", id="not-utf8"),
        pytest.param(f"name:\n{aliases_of_aliases(7, '  ')}".encode(), "looks like a YAML bomb", id="bomb"),
    ],
)
def test_a_bad_wippy_yaml_is_a_clear_error_naming_the_file(tmp_path: Path, content: bytes, words: str) -> None:
    (tmp_path / "wippy.yaml").write_bytes(content)
    with pytest.raises(RegistryError) as refusal:
        AppFolder(tmp_path, files_only=True)
    problem = refusal.value.problems[0]
    assert problem.file == "wippy.yaml" and words in problem.message


# -- the whole app, as a user runs it -----------------------------------------------------------------------


def test_wippy_run_and_lint_start_whatever_files_the_app_holds(example_app: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.md").write_text("the launch code is 0000\n")
    hostile = {
        "registry/deep/_index.yaml": config_with(nested(990), "deep"),
        "registry/bomb/_index.yaml": yaml_bomb(9, "bomb"),
        "registry/dates/_index.yaml": config_with("2024-13-45", "dates"),
        "tools/2fast.py": 'def f() -> int:\n    """Doc."""\n    return 1\n',
        "tools/quits.py": "import os\nos._exit(7)\n",
        "tools/interrupts.py": "raise KeyboardInterrupt\n",
    }
    for relpath, text in hostile.items():
        write(example_app, relpath, text)
    (example_app / "prompts/evil").mkdir()
    (example_app / "prompts/evil/leak.md").symlink_to(tmp_path / "secret.md")
    (example_app / "registry/pipe").mkdir()
    os.mkfifo(example_app / "registry/pipe/_index.yaml")
    Path(os.fsdecode(os.fsencode(example_app) + b"/tools/\xff.py")).write_text("x = 1\n")
    files = [*hostile, "prompts/evil/leak.md", "registry/pipe/_index.yaml", "tools/\ufffd.py"]

    lint = subprocess.run([WIPPY, "registry", "lint", "--root", str(example_app)], capture_output=True, text=True,
                          timeout=60)
    assert lint.returncode == 1, lint.stderr
    assert f"{len(files)} problem(s)" in lint.stderr
    ran = subprocess.run([WIPPY, "run", "--once", "--root", str(example_app)], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "wippy:agents" in ran.stdout and "Traceback" not in ran.stderr
    for file in files:
        assert f"refused: {file}" in ran.stdout and file in lint.stderr
    assert "launch code" not in ran.stdout + ran.stderr + lint.stdout + lint.stderr
