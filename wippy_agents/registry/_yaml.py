"""YAML that remembers where each value came from, so errors can name the line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import yaml

from ._entry import Problem

Path: TypeAlias = tuple[str | int, ...]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def load_yaml(text: str, file: str) -> tuple[Any, Lines]:
    """Parse one YAML document; return the data and where each part of it is.

    Raises `YAMLProblem` with the file and line of a syntax error.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, Lines()
        data = loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        message = getattr(error, "problem", None) or str(error)
        context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
        if context and context_mark is not None and context_mark is not mark:
            message += f" ({context} that starts on line {context_mark.line + 1})"
        raise YAMLProblem(
            Problem(f"invalid YAML: {message}", file=file, line=None if mark is None else mark.line + 1)
        ) from None
    finally:
        loader.dispose()
    lines = Lines()
    _walk(node, (), lines)
    return data, lines


def _walk(node: yaml.Node, path: Path, lines: Lines) -> None:
    lines.keys[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            _walk(value, child, lines)
            lines.keys[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines)
    else:
        lines.values[path] = (node.start_mark.line + 1, getattr(node, "style", None) in ("|", ">"))
