"""Policy decisions, and `wippy approvals` on an app with a change waiting for a person."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from wippy_agents import App
from wippy_agents.agents import ApprovalRequested
from wippy_agents.registry import Entry

WIPPY = Path(sys.executable).with_name("wippy")


def policy(name: str, effect: str, **fields: Any) -> Entry:
    return Entry(f"app.policies:{name}", "policy", {}, {"effect": effect, **fields})


async def test_deny_wins_then_ask_then_allow_and_writes_are_denied_by_default(example_app: Path) -> None:
    async with App(root=example_app) as app:
        app.registry.apply([
            Entry("app:helper", "agent", {"traits": ["builder"]}, {"model": "app:offline"}),
            policy("builders", "allow", subjects=["trait:builder"], actions=["registry.create", "registry.update"],
                   resources=["lab:*"]),
            policy("careful", "ask", subjects=["app:*"], actions=["registry.update"], resources=["lab:core*"]),
            policy("never", "deny", subjects=["*"], actions=["registry.create"], resources=["lab:core*"]),
            policy("only_prompts", "allow", subjects=["app:helper"], actions=["registry.create"],
                   resources=["notes:*"], kinds=["prompt"]),
        ], author="user:test")
        decide = app    .policies.decide  # type: ignore[union-attr]
        assert decide("app:helper", "registry.create", "lab:x", "tool").effect == "allow"
        assert decide("app:helper", "registry.update", "lab:core2", "tool").effect == "ask"
        assert decide("app:helper", "registry.create", "lab:core", "tool").policy == "app.policies:never"
        assert decide("app:assistant", "registry.create", "lab:x", "tool").policy is None  # no trait: default deny
        assert decide("app:helper", "registry.create", "notes:a", "prompt").effect == "allow"
        assert decide("app:helper", "registry.create", "notes:a", "tool").effect == "deny"
        assert decide("app:helper", "tool.call", "tools.calc:add", "tool").effect == "allow"  # calls: listed = granted


def wippy(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WIPPY, *map(str, args)], capture_output=True, text=True, timeout=60)


async def test_the_cli_lists_shows_and_decides_approvals_without_a_running_node(example_app: Path) -> None:
    source = 'def main(x: int) -> int:\n    """Double."""\n    return 2 * x\n'
    async with App(root=example_app) as app:
        app.registry.apply([Entry("generated:double", "tool", {}, {"runtime": "restricted", "source": source})],
                            author="user:test")
        conv = await app.conversation("app:toolsmith")
        async for event in conv.stream('/call wippy:delete_entry {"id": "generated:double"}'):
            if isinstance(event, ApprovalRequested):
                approval = event.approval
                break
    listed = wippy("approvals", "list", "--root", example_app)
    assert listed.returncode == 0, listed.stderr
    assert f"{approval}  " in listed.stdout and "app:toolsmith  registry.delete generated:double" in listed.stdout
    shown = wippy("approvals", "show", approval, "--root", example_app)
    assert "-      return 2 * x" in shown.stdout and "policy app.policies:toolsmith_asks_before_deleting" in shown.stdout
    denied = wippy("approvals", "deny", approval, "--reason", "keep it", "--root", example_app)
    assert denied.returncode == 0, denied.stderr
    assert f"denied {approval} (registry.delete generated:double)" in denied.stdout
    again = wippy("approvals", "approve", approval, "--root", example_app)
    assert again.returncode == 1 and "was already denied by user:" in again.stderr
    audit = json.loads(wippy("approvals", "audit", "--json", "--entry", "generated:double", "--root",
                             example_app).stdout)
    assert [r["decision"] for r in audit] == ["asked", "denied by person"] and audit[1]["reason"] == "keep it"
    async with App(root=example_app) as app:  # the agent's turn heard the decision and finished
        [turn] = [t for t in app.tasks.list() if t.id.startswith("turn:") and "toolsmith" in json.dumps(t.args)]
        answer = (await app.tasks.result(turn.id))["answer"]
        assert "denied by user:" in answer.text and "keep it" in answer.text
        assert "generated:double" in app.registry


def test_a_restricted_tool_in_a_file_is_checked_by_the_sandbox_policy_with_its_line(example_app: Path) -> None:
    (example_app / "registry/lab").mkdir()
    (example_app / "registry/lab/_index.yaml").write_text(
        "namespace: lab\nentries:\n  - name: peek\n    kind: tool\n    runtime: restricted\n    description: Peek.\n"
        "    source: |\n      def main(x: int) -> str:\n          return str(x.__class__)\n")
    linted = wippy("registry", "lint", "--root", example_app)
    assert linted.returncode == 1
    assert ('registry/lab/_index.yaml:9: entry lab:peek: field source: "__class__" is an invalid attribute name '
            'because it starts with "_".') in linted.stdout + linted.stderr
