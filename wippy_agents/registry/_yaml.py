"""YAML that remembers where each value came from, so errors can name the line.

A file is untrusted input: a few hundred bytes of aliases of aliases (a "YAML bomb")
expand to billions of values, and deep nesting exhausts the stack of whatever walks
the data next. Both are measured on the parsed nodes, before any value is built,
and refused with the line where the limit is crossed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import yaml

from .._runtime.text import clean_data, is_clean
from ._entry import Problem, non_json

Path: TypeAlias = tuple[str | int, ...]

MAX_VALUES = 100_000
"""Values a document may hold, each alias counted as a copy of what it names: a real
registry file holds hundreds; a YAML bomb holds billions in a few hundred bytes."""

MAX_DEPTH = 100
"""How deeply a document may nest mappings and lists; a real file nests a handful of levels."""

_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc,valid-type]
    """The safe loader, with every failure to build a value reported as a YAML error at its node.

    PyYAML raises plain `ValueError`s (`2024-13-45` is a timestamp with month 13, a
    5000-digit integer), even `AttributeError`s (`!!timestamp x`), with no line.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as error:
            tag = str(node.tag).rpartition(":")[2]
            what = _shortened(node.value) if isinstance(node, yaml.ScalarNode) else "the value"
            raise yaml.constructor.ConstructorError(
                None, None, f"{what} is not a valid {tag} ({error}); quote it to keep it as text", node.start_mark,
            ) from None


def _shortened(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


@dataclass
class Lines:
    """1-based lines of a document's keys and of where its scalar values start."""

    keys: dict[Path, int] = field(default_factory=dict)
    values: dict[Path, tuple[int, bool]] = field(default_factory=dict)  # (line, is a `|` or `>` block)
    offset: int = 0  # lines before the document in its file (front matter starts after `---`)

    def line_of(self, path: Path) -> int | None:
        """The line of `path`, or of its closest ancestor that has one."""
        while path and path not in self.keys:
            path = path[:-1]
        line = self.keys.get(path)
        return None if line is None else line + self.offset

    def line_within(self, path: Path, line: int) -> int | None:
        """The file line of line `line` (1-based) inside the multi-line string at `path`."""
        if path not in self.values:
            return self.line_of(path)
        start, block = self.values[path]
        return start + self.offset + (line if block else line - 1)


class YAMLProblem(Exception):
    """A document that cannot be used; `problems` says what and where (at least one)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def load_yaml(text: str, file: str) -> tuple[Any, Lines]:
    """Parse one YAML document of JSON data; return the data and where each part of it is.

    Raises `YAMLProblem` with the file and line of a syntax error, of a value JSON
    cannot hold (a date, binary data), or of where the document grows past
    `MAX_VALUES` or `MAX_DEPTH`. Strings come back as valid text (see `clean_data`).
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, Lines()
        if "&" in text:  # anchors, so maybe aliases: measure what they expand to before walking them
            _check_size(node, file)
        lines = _walk(node, file)
        data = loader.construct_document(node)
        if "\\" in text or not is_clean(text):  # only an escape (or the text itself) can make a surrogate
            data = clean_data(data)
    except yaml.YAMLError as error:
        raise YAMLProblem([_syntax_problem(error, file, text)]) from None
    except RecursionError:  # the pure-Python parser recurses per level; libyaml stops at 1000 levels by itself
        raise YAMLProblem([Problem(f"the document nests deeper than {MAX_DEPTH} levels", file=file)]) from None
    finally:
        loader.dispose()
    problems = [Problem(message, file=file, line=lines.line_of(path), field=".".join(map(str, path)) or None)
                for path, message in non_json(data)]
    if problems:
        raise YAMLProblem(problems)
    return data, lines


def _syntax_problem(error: yaml.YAMLError, file: str, text: str) -> Problem:
    if isinstance(error, yaml.reader.ReaderError):  # a character YAML refuses, located by its offset in the text
        return Problem(f"invalid YAML: unacceptable character #x{error.character:04x}: {error.reason}; remove it",
                       file=file, line=text.count("\n", 0, error.position) + 1)
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    message = getattr(error, "problem", None) or str(error)
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        message += f" ({context} that starts on line {context_mark.line + 1})"
    return Problem(f"invalid YAML: {message}", file=file, line=None if mark is None else mark.line + 1)


def _check_size(root: yaml.Node, file: str) -> None:
    """Refuse a document past `MAX_VALUES` (aliases expanded) or `MAX_DEPTH`, or one that contains itself.

    Each node is measured once (an alias is the same node object as its anchor), so
    this costs one pass over the nodes actually written, however far they expand.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(collection node) -> (values with aliases expanded, depth)
    open_nodes: set[int] = set()  # nodes whose children are still being measured: meeting one again is a cycle
    written = 1  # values as written in the file, an alias counting as one
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in measured:
            continue
        children = _children(node)
        if not children_done:
            if id(node) in open_nodes:
                raise _located(node, file, "an alias refers to a value that contains it (a recursive structure); "
                                           "JSON data cannot hold that")
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if not isinstance(child, yaml.ScalarNode))
            continue
        open_nodes.discard(id(node))
        written += len(children)
        sizes = [(1, 1) if isinstance(child, yaml.ScalarNode) else measured[id(child)] for child in children]
        values = 1 + sum(size for size, _ in sizes)
        depth = 1 + max((d for _, d in sizes), default=0)
        if depth > MAX_DEPTH:
            raise _located(node, file, f"the document nests deeper than {MAX_DEPTH} levels here")
        if values > MAX_VALUES:
            if written >= values:  # the values are all written out: a big file, not a bomb
                raise _located(node, file, f"the document holds more than {MAX_VALUES:,} values; split it into "
                                           "smaller files")
            raise _located(node, file, f"the value here expands to more than {MAX_VALUES:,} values once its "
                                       "aliases are copied in: this looks like a YAML bomb (aliases of aliases); "
                                       "write the values out instead")
        measured[id(node)] = (values, depth)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _located(node: yaml.Node, file: str, message: str) -> YAMLProblem:
    return YAMLProblem([Problem(message, file=file, line=node.start_mark.line + 1)])


def _walk(root: yaml.Node, file: str) -> Lines:
    """Where each key and value is, refusing a document past `MAX_DEPTH` or `MAX_VALUES` on the way.

    Without recursion, so nesting is measured before anything recursive (the constructor) meets it.
    """
    lines = Lines()
    stack: list[tuple[yaml.Node, Path]] = [(root, ())]
    values = 0
    while stack:
        node, path = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise _located(node, file, f"the document holds more than {MAX_VALUES:,} values; split it into "
                                       "smaller files")
        if len(path) > MAX_DEPTH:
            raise _located(node, file, f"the document nests deeper than {MAX_DEPTH} levels here")
        lines.keys.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, key.value)
                lines.keys[child] = key.start_mark.line + 1
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, index)) for index, item in enumerate(node.value))
        else:
            lines.values[path] = (node.start_mark.line + 1, getattr(node, "style", None) in ("|", ">"))
    return lines
