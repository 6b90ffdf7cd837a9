"""Reading entries out of the app's files: `_index.yaml`, prompt templates and tool modules.

Each file is read on its own and is all-or-nothing: a file with any problem
contributes no entries, so the registry keeps that file's last good entries.
Ids come from the path (`prompts/support/triage.md` -> `prompts.support:triage`).

Files are untrusted input: whatever one holds (or is: a link out of the app, a
pipe, 20 MB, a name that is not UTF-8) becomes that file's problem, never an
exception out of `read_source`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._runtime.text import clean_data, os_text
from ..tools import FunctionTool, ToolDefinitionError, function_tool
from ..tools._options import tool_options
from ._entry import ID_RULE, Entry, Problem, check_id
from ._imports import IMPORT_TIME_LIMIT, ImportFailed, import_guarded
from ._kinds import KindSpec, SpecErrors, inner_line, parse_spec
from ._yaml import Lines, YAMLProblem, load_yaml

log = logging.getLogger("wippy_agents.registry")

INDEX_NAMES = ("_index.yaml", "_index.yml")
PROMPT_SUFFIXES = (".md", ".j2")

MAX_FILE_BYTES = 4 * 1024 * 1024
"""The largest source file read (4 MiB): real registry files, prompts and tool modules are kilobytes;
parsing 20 MB of YAML takes seconds."""


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
        for relpath in sorted(path.relative_to(root).as_posix() for path in walk_files(root / folder)):
            if source_kind(relpath, folders):
                yield relpath


def walk_files(folder: Path) -> Iterator[Path]:
    """The files under `folder`, skipping hidden folders; linked folders are not entered.

    A folder that vanishes or cannot be listed mid-walk is skipped, not an error.
    """
    for parent, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not hidden(name)]
        for name in files:
            if not hidden(name):
                yield Path(parent, name)


def hidden(relpath: str) -> bool:
    """Dot files and folders, and `__pycache__`: never sources."""
    return any(part.startswith(".") or part == "__pycache__" for part in Path(relpath).parts)


class Unreadable(Exception):
    """A file that exists but cannot be used; `message` says why and what to do, `line` where (if it is known)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def read_bytes(path: Path) -> bytes | None:
    """A plain file's bytes, or None once it is gone (or is a folder now).

    `path` is a real path (links resolved); a link put in its place since is refused.
    Raises `Unreadable` for a pipe or device (which would block the reader), a file
    over `MAX_FILE_BYTES`, or one the OS refuses to open.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise Unreadable(f"cannot read the file: {error.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            return None
        if not stat.S_ISREG(mode):
            raise Unreadable("not a plain file (a pipe or a device?); source files are plain files")
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise Unreadable(f"cannot read the file: {error.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise Unreadable(f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, the most a source file "
                         "may be; split it into smaller files")
    return data


def decode_text(raw: bytes) -> str:
    """A file's bytes as text; `Unreadable` naming the line if they are not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Unreadable(f"not UTF-8 text: {error.reason}", raw[: error.start].count(b"\n") + 1) from None


def inside(root: Path, relpath: str) -> Path:
    """The real path of `root / relpath`; `Unreadable` if links lead it out of the (real) app folder."""
    real = Path(os.path.realpath(root / relpath))
    if not real.is_relative_to(os.path.realpath(root)):
        raise Unreadable("the file is a link to a place outside the app folder (or lies in a linked folder); "
                         "source files must be inside the app: copy the file in instead")
    return real


def file_digest(root: Path, relpath: str) -> str:
    """The digest `read_source` records for a file ("" once it is gone or cannot be read)."""
    try:
        raw = read_bytes(inside(root, relpath))
    except Unreadable:
        return ""
    return "" if raw is None else hashlib.sha256(raw).hexdigest()


def read_source(root: Path, relpath: str, folders: Folders, *,
                import_time_limit: float = IMPORT_TIME_LIMIT) -> SourceFile:
    """Read one source file into entries (or problems); never raises.

    A file that is gone comes back with no entries, no problems and digest "".
    `import_time_limit` bounds importing a tool file (see `_imports`).
    """
    if os_text(relpath) != relpath:
        return SourceFile(relpath, "", problems=[Problem("the file name is not UTF-8 text; rename the file",
                                                         file=os_text(relpath))])
    try:
        path = inside(root, relpath)
        raw = read_bytes(path)
    except Unreadable as error:
        return SourceFile(relpath, "", problems=[Problem(error.message, file=relpath)])
    if raw is None:
        return SourceFile(relpath, "")
    result = SourceFile(relpath, hashlib.sha256(raw).hexdigest())
    try:
        _read_text(result, decode_text(raw), path, source_kind(relpath, folders), import_time_limit)
    except Unreadable as error:
        result.problems.append(Problem(error.message, file=relpath, line=error.line))
    except RecursionError:  # say, a template of blocks inside blocks hundreds deep
        result.problems.append(Problem("the file nests too deeply to be read; flatten it", file=relpath))
    except Exception as error:  # a fault in a reader must stay this file's problem, not stop the registry
        log.exception("registry: reading %s failed", relpath)
        result.problems.append(Problem(f"reading the file failed ({type(error).__name__}: {error}); "
                                       "please report this", file=relpath))
    if result.problems:
        result.entries.clear()
        result.tools.clear()
        result.specs.clear()
    return result


def _read_text(result: SourceFile, text: str, path: Path, kind: str | None, import_time_limit: float) -> None:
    if kind == "index":
        _read_index(result, text)
    elif kind == "prompt":
        _read_prompt(result, text)
    elif kind == "tools":
        _read_tools(result, path, text, import_time_limit)


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
        result.problems += error.problems
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
        named = f"{namespace}:{name}" if isinstance(name, str) and name else None
        for key, value in (("name", name), ("kind", kind)):
            if value is None or value == "":
                result.problems.append(Problem(f"'{key}' is required", file=result.file, line=line, entry=named,
                                               field=key))
            elif not isinstance(value, str):
                result.problems.append(Problem(
                    f"'{key}' must be a string, not {type(value).__name__}; quote it if it looks like a number",
                    file=result.file, line=lines.line_of((*path, key)), entry=named, field=key))
        if not (isinstance(name, str) and name and isinstance(kind, str) and kind):
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
        except YAMLProblem as error:  # lines count from the front matter's first line, the file's second
            result.problems += [dataclasses.replace(p, line=None if p.line is None else p.line + 1)
                                for p in error.problems]
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


def _read_tools(result: SourceFile, path: Path, text: str, import_time_limit: float) -> None:
    namespace = module_name(result.file)
    try:
        check_id(f"{namespace}:x")
    except ValueError:
        result.problems.append(Problem(f"the file's path makes the namespace {namespace!r}, which is not valid: "
                                       f"{ID_RULE}; rename the file or its folders", file=result.file))
        return
    try:
        module = import_guarded(path, f"wippy_app.{namespace}", time_limit=import_time_limit)
    except ImportFailed as error:
        result.problems.append(Problem(error.message, file=result.file, line=error.line))
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
            check_id(entry_id)
        except ValueError as error:
            result.problems.append(Problem(f"{error} (rename the function)", file=result.file, line=line))
            continue
        try:
            tool = function_tool(fn)
        except ToolDefinitionError as error:
            result.problems.append(Problem(error.reason, file=result.file, line=line, entry=entry_id,
                                           field=error.parameter))
            continue
        data: dict[str, Any] = {"description": tool.description, "parameters": tool.parameters,
                                "file": result.file, "function": name}
        meta: dict[str, Any] = {"code_hash": code_hash}
        options = tool_options(fn)
        if options.get("timeout") is not None:
            data["timeout"] = options["timeout"]
        if options.get("llm_alias"):
            meta["llm_alias"] = options["llm_alias"]
        _add(result, entry_id, "tool", clean_data(meta), clean_data(data), line)
        result.tools[entry_id] = tool
