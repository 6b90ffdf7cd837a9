"""YAML that remembers where each value came from, so errors can name the line."""

from __future__ import annotations

from typing import Any, TypeAlias

import yaml

from ._entry import Problem

Path: TypeAlias = tuple[str | int, ...]
Lines: TypeAlias = dict[Path, int]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str, file: str) -> tuple[Any, Lines]:
    """Parse one YAML document; return the data and a map from key path to 1-based line.

    Raises `YAMLProblem` with the file and line of a syntax error.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
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
    lines: Lines = {}
    _walk(node, (), lines)
    return data, lines


class YAMLProblem(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _walk(node: yaml.Node, path: Path, lines: Lines) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            _walk(value, child, lines)
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines)


def line_of(lines: Lines, path: Path) -> int | None:
    """The line of `path`, or of its closest ancestor that has one."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
