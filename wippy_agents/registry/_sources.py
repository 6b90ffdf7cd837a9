"""Reading entries out of the app's files: `_index.yaml`, prompt templates and tool modules.

Each file is read on its own and is all-or-nothing: a file with any problem
contributes no entries, so the registry keeps that file's last good entries.
Ids come from the path (`prompts/support/triage.md` -> `prompts.support:triage`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..tools import TOOL_OPTIONS, FunctionTool, ToolDefinitionError, function_tool
from ._entry import ID_RULE, Entry, Problem, check_id
from ._kinds import KindSpec, SpecErrors, inner_line, parse_spec
from ._yaml import Lines, YAMLProblem, load_yaml

INDEX_NAMES = ("_index.yaml", "_index.yml")
PROMPT_SUFFIXES = (".md", ".j2")


@dataclass(frozen=True)
class Origin:
    """Where an entry lives: a file relative to the app root (POSIX form) and the line it starts on."""

    file: str
    line: int | None = None


@dataclass
class SourceFile:
    """The outcome of reading one file: its entries, or the problems that kept them out."""

    file: str
    digest: str
    entries: dict[str, tuple[Entry, Origin]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    tools: dict[str, FunctionTool] = field(default_factory=dict)
    specs: dict[str, KindSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class Folders:
    """The source folders of an app, relative to its root."""

    registry: str = "registry"
    prompts: str = "prompts"
    tools: str = "tools"


def source_kind(relpath: str, folders: Folders) -> str | None:
    """`index`, `prompt`, `tools` or None for a path relative to the app root."""
    path = Path(relpath)
    top = path.parts[0] if path.parts else ""
    if top == folders.registry and path.name in INDEX_NAMES:
        return "index"
    if top == folders.prompts and path.suffix in PROMPT_SUFFIXES:
        return "prompt"
    if top == folders.tools and path.suffix == ".py" and not path.name.startswith("_"):
        return "tools"
    return None


def scan(root: Path, folders: Folders) -> Iterator[str]:
    """Every source file under the app root, as sorted relative POSIX paths."""
    for folder in (folders.registry, folders.prompts, folders.tools):
        base = root / folder
        if base.is_dir():
            for path in sorted(base.rglob("*")):
                relpath = path.relative_to(root).as_posix()
                if path.is_file() and source_kind(relpath, folders) and not hidden(relpath):
                    yield relpath


def hidden(relpath: str) -> bool:
    """Dot files and folders, and `__pycache__`: never sources."""
    return any(part.startswith(".") or part == "__pycache__" for part in Path(relpath).parts)


def file_digest(path: Path) -> str:
    """The digest `read_source` records for a file ("" once it is gone)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return ""


def read_source(root: Path, relpath: str, folders: Folders) -> SourceFile:
    """Read one source file into entries (or problems)."""
    path = root / relpath
    try:
        raw = path.read_bytes()
    except OSError as error:
        return SourceFile(relpath, "", problems=[Problem(f"cannot read the file: {error.strerror}", file=relpath)])
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        return SourceFile(relpath, digest, problems=[Problem(f"not UTF-8 text: {error.reason}", file=relpath,
                                                             line=line)])
    kind = source_kind(relpath, folders)
    result = SourceFile(relpath, digest)
    if kind == "index":
        _read_index(result, text)
    elif kind == "prompt":
        _read_prompt(result, text)
    elif kind == "tools":
        _read_tools(result, path, text)
    if result.problems:
        result.entries.clear()
        result.tools.clear()
        result.specs.clear()
    return result


def path_namespace(relpath: str) -> str:
    """The namespace of a prompt file's entry: `prompts/support/triage.md` -> `prompts.support`."""
    return ".".join(Path(relpath).parts[:-1])


def module_name(relpath: str) -> str:
    """A Python file's dotted name, the namespace of its tools: `tools/weather.py` -> `tools.weather`."""
    return ".".join(Path(relpath).with_suffix("").parts)


def _add(result: SourceFile, entry_id: str, kind: str, meta: Any, data: dict[str, Any], line: int | None,
         lines: Lines | None = None, path: tuple[str | int, ...] = (), body_line: int | None = None) -> None:
    """Validate one entry and add it, or record where and why it is wrong.

    `lines` locates fields under `path`; `body_line` is where a prompt file's template starts.
    """
    if meta is not None and not isinstance(meta, dict):
        result.problems.append(Problem("'meta' must be a mapping", file=result.file, line=line, entry=entry_id,
                                       field="meta"))
        return
    if entry_id in result.entries:
        first = result.entries[entry_id][1].line
        result.problems.append(Problem(f"the id is defined twice in this file (first on line {first})",
                                       file=result.file, line=line, entry=entry_id))
        return
    entry = Entry(entry_id, kind, meta or {}, data)
    try:
        spec = parse_spec(entry)
    except SpecErrors as errors:
        for loc, message in errors.errors:
            at = line if lines is None else lines.line_of((*path, *loc))
            if (in_template := inner_line(message)) is not None:
                number, message = in_template
                if body_line is not None:
                    at = body_line + number - 1
                elif lines is not None:
                    at = lines.line_within((*path, *loc), number)
            result.problems.append(Problem(message, file=result.file, line=at, entry=entry_id,
                                           field=".".join(map(str, loc)) or None))
        return
    result.entries[entry_id] = (entry, Origin(result.file, line))
    result.specs[entry_id] = spec


INDEX_KEYS = ("namespace", "entries", "meta", "version")


def _read_index(result: SourceFile, text: str) -> None:
    try:
        doc, lines = load_yaml(text, result.file)
    except YAMLProblem as error:
        result.problems.append(error.problem)
        return
    if doc is None:
        return
    if not isinstance(doc, dict):
        result.problems.append(Problem("an _index.yaml file is a mapping with 'namespace' and 'entries'",
                                       file=result.file, line=1))
        return
    for key in sorted(set(doc) - set(INDEX_KEYS), key=str):
        result.problems.append(Problem(f"unknown top-level key {key!r} (the keys are {', '.join(INDEX_KEYS)})",
                                       file=result.file, line=lines.line_of((key,))))
    namespace = doc.get("namespace")
    namespace_line = lines.line_of(("namespace",))
    if not isinstance(namespace, str) or not namespace:
        result.problems.append(Problem("'namespace' is required and must be a string such as 'app.agents'",
                                       file=result.file, line=namespace_line))
        return
    try:
        check_id(f"{namespace}:x")
    except ValueError:
        result.problems.append(Problem(f"bad namespace {namespace!r}: {ID_RULE}", file=result.file,
                                       line=namespace_line, field="namespace"))
        return
    entries = doc.get("entries") or []
    if not isinstance(entries, list):
        result.problems.append(Problem("'entries' must be a list of mappings", file=result.file,
                                       line=lines.line_of(("entries",))))
        return
    for index, item in enumerate(entries):
        path = ("entries", index)
        line = lines.line_of(path)
        if not isinstance(item, dict):
            result.problems.append(Problem("each entry is a mapping with 'name' and 'kind'", file=result.file,
                                           line=line))
            continue
        data = dict(item)
        name, kind, meta = data.pop("name", None), data.pop("kind", None), data.pop("meta", None)
        named = f"{namespace}:{name}" if isinstance(name, str) else None
        for key, value in (("name", name), ("kind", kind)):
            if value is None:
                result.problems.append(Problem(f"'{key}' is required", file=result.file, line=line, entry=named,
                                               field=key))
            elif not isinstance(value, str):
                result.problems.append(Problem(
                    f"'{key}' must be a string, not {type(value).__name__}; quote it if it looks like a number",
                    file=result.file, line=lines.line_of((*path, key)), entry=named, field=key))
        if not isinstance(name, str) or not isinstance(kind, str):
            continue
        entry_id = f"{namespace}:{name}"
        try:
            check_id(entry_id)
        except ValueError as error:
            result.problems.append(Problem(str(error), file=result.file, line=lines.line_of((*path, "name")),
                                           field="name"))
            continue
        _add(result, entry_id, kind, meta, data, line, lines, path)


def split_front_matter(text: str) -> tuple[str | None, str, int]:
    """Split `---` YAML front matter from a template; return (front matter, body, body's first line)."""
    if not text.startswith("---\n"):
        return None, text, 1
    end = text.find("\n---\n", 3)
    if end < 0:
        if text.endswith("\n---"):
            end = len(text) - 4
        else:
            return None, text, 1
    front = text[4 : end + 1]
    body = text[end + 5 :]
    return front, body, front.count("\n") + 3


def _read_prompt(result: SourceFile, text: str) -> None:
    front, body, body_line = split_front_matter(text.replace("\r\n", "\n"))
    meta: dict[str, Any] = {}
    data: dict[str, Any] = {"template": body}
    lines = None
    if front is not None:
        try:
            doc, lines = load_yaml(front, result.file)
        except YAMLProblem as error:
            problem = error.problem
            line = None if problem.line is None else problem.line + 1
            result.problems.append(Problem(problem.message, file=result.file, line=line))
            return
        if doc is not None and not isinstance(doc, dict):
            result.problems.append(Problem("front matter must be a YAML mapping", file=result.file, line=2))
            return
        lines.offset = 1  # front matter starts on the file's second line
        meta = dict(doc or {})
        if "vars" in meta:
            data["vars"] = meta.pop("vars")
    entry_id = f"{path_namespace(result.file)}:{Path(result.file).stem}"
    try:
        check_id(entry_id)
    except ValueError as error:
        result.problems.append(Problem(f"{error} (rename the file or its folders)", file=result.file))
        return
    _add(result, entry_id, "prompt", meta, data, 1, lines, body_line=body_line)


def _read_tools(result: SourceFile, path: Path, text: str) -> None:
    namespace = module_name(result.file)
    try:
        module = import_file(path, f"wippy_app.{namespace}")
    except SyntaxError as error:
        result.problems.append(Problem(f"syntax error: {error.msg}", file=result.file, line=error.lineno))
        return
    except (Exception, SystemExit) as error:
        result.problems.append(Problem(f"importing the file raised {type(error).__name__}: {error}",
                                       file=result.file, line=_failing_line(error, path)))
        return
    code_hash = hashlib.sha256(text.encode()).hexdigest()[:16]
    for name, fn in vars(module).items():
        if name.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != module.__name__:
            continue
        if not inspect.getdoc(fn):
            continue  # undocumented functions are helpers, not tools
        entry_id = f"{namespace}:{name}"
        line = fn.__code__.co_firstlineno
        try:
            tool = function_tool(fn)
        except ToolDefinitionError as error:
            result.problems.append(Problem(error.reason, file=result.file, line=line, entry=entry_id,
                                           field=error.parameter))
            continue
        data: dict[str, Any] = {"description": tool.description, "parameters": tool.parameters,
                                "file": result.file, "function": name}
        meta: dict[str, Any] = {"code_hash": code_hash}
        options = getattr(fn, TOOL_OPTIONS, {})
        if options.get("timeout") is not None:
            data["timeout"] = options["timeout"]
        if options.get("llm_alias"):
            meta["llm_alias"] = options["llm_alias"]
        _add(result, entry_id, "tool", meta, data, line)
        result.tools[entry_id] = tool


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import a Python file as a fresh module (replacing an older import of it)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        raise
    return module


def _failing_line(error: BaseException, path: Path) -> int | None:
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return line
