"""The state sits below everything that keeps records, and only it speaks to the database."""

from __future__ import annotations

import ast
from pathlib import Path

import wippy_agents

PACKAGE = Path(wippy_agents.__file__).parent
ABOVE_THE_STATE = ("durable", "registry", "policy", "agents")


def modules(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def test_the_engine_registry_policy_and_agents_hold_no_sql_and_no_duckdb() -> None:
    offenders = []
    for package in ABOVE_THE_STATE:
        for path in modules(package):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                imported = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(name.split(".")[0] == "duckdb" for name in imported):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports duckdb")
                if isinstance(node, ast.Attribute) and node.attr == "execute":
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} calls .execute(")
    assert offenders == []


def test_the_state_imports_only_the_errors_the_runtime_helpers_and_itself() -> None:
    outside = []
    for path in modules("state"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                if (node.module or "").split(".")[0] not in ("errors", "_runtime"):
                    outside.append(f"{path.name}:{node.lineno} imports {'.' * node.level}{node.module}")
            elif isinstance(node, ast.ImportFrom | ast.Import) and any(
                    name.startswith("wippy_agents") for name in
                    ([alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""])):
                outside.append(f"{path.name}:{node.lineno} imports the package by name")
    assert outside == []
