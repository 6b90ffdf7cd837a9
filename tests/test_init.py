"""`wippy init`: a new app that lints clean and answers at once, written without overwriting anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WIPPY = str(Path(sys.executable).with_name("wippy"))


def wippy(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WIPPY, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd)


NEW_FILES = [".gitignore", "prompts/assistant.md", "prompts/toolsmith.md", "registry/app/_index.yaml",
             "registry/app/policies/_index.yaml", "tools/words.py", "wippy.yaml"]


def test_init_writes_an_app_that_lints_clean_and_answers_without_a_key(tmp_path: Path) -> None:
    app = tmp_path / "new" / "app"
    done = wippy("init", app)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:8] == [f"wrote a wippy app in {app}:", *(f"  {name}" for name in NEW_FILES)]
    assert f"  cd {app}\n" in done.stdout and '  wippy ask app:assistant "hello"' in done.stdout
    assert "  wippy chat" in done.stdout
    assert sorted(str(p.relative_to(app)) for p in app.rglob("*") if p.is_file()) == NEW_FILES
    assert ".wippy/" in (app / ".gitignore").read_text().splitlines()

    linted = wippy("registry", "lint", "--root", app)
    assert linted.returncode == 0 and linted.stdout == f"ok: 7 entries in {app}, no problems\n", linted.stderr
    hello = wippy("ask", "app:assistant", "hello", "--root", app)
    assert hello.returncode == 0 and "You said: hello" in hello.stdout, hello.stderr
    counted = wippy("ask", "app:assistant", '/call tools.words:count_words {"text": "one two three"}', "--root", app)
    assert counted.stdout == "Here is what the tools said:\n- tools_words_count_words returned: 3\n", counted.stderr


def test_the_new_apps_toolsmith_may_write_a_tool_that_the_assistant_then_calls(tmp_path: Path) -> None:
    assert wippy("init", tmp_path).returncode == 0
    source = 'def main(x: int) -> int:\n    """Double a number."""\n    return 2 * x\n'
    tool = {"id": "generated:double", "source": source, "description": "Double a number.",
            "examples": [{"args": {"x": 2}, "expect": 4}]}
    made = wippy("ask", "app:toolsmith", f"/call wippy:create_tool {json.dumps(tool)}", "--root", tmp_path)
    assert made.returncode == 0 and "done: create tool generated:double" in made.stdout, made.stderr
    called = wippy("ask", "app:assistant", '/call generated:double {"x": 21}', "--root", tmp_path)
    assert "generated_double returned: 42" in called.stdout, called.stderr


def test_init_without_a_folder_writes_into_the_current_one(tmp_path: Path) -> None:
    done = wippy("init", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote a wippy app in .:\n") and "cd " not in done.stdout
    assert (tmp_path / "wippy.yaml").is_file()


def test_init_overwrites_nothing_and_names_the_files_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "wippy.yaml").write_text("name: mine\n")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "words.py").write_text("")
    done = wippy("init", tmp_path)
    assert done.returncode == 1
    assert done.stderr == (f"wippy: {tmp_path} already has tools/words.py, wippy.yaml; `wippy init` overwrites "
                           f"nothing (move those away, or pick another folder)\n")
    assert (tmp_path / "wippy.yaml").read_text() == "name: mine\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["tools", "wippy.yaml", "words.py"]
