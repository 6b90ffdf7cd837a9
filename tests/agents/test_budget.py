"""Spend limits: each limit stops a turn where it says, pricing fails closed, `ask` waits across a restart.

The agents run on a real app folder; their model is a scripted one priced like the
`app:priced` entry ($1,000 per million input tokens and $2,000 per million output
tokens: a token in costs $0.001, a token out $0.002), or the offline model itself.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from wippy_agents import App
from wippy_agents.agents import AgentError, ApprovalRequested, ToolFinished, TurnFailed
from wippy_agents.cli import main
from wippy_agents.durable import TaskFailed
from wippy_agents.llm import Response, ToolCall, Usage, UserMessage, estimate_tokens
from wippy_agents.registry import Pricing
from wippy_agents.testing import ScriptedModel, write_file

ENTRIES = """
namespace: app
entries:
  - name: priced
    kind: model
    provider: offline
    model: wippy-offline
    pricing: {input: 1000, output: 2000}
  - name: bare
    kind: model
    provider: offline
    model: wippy-offline
  - name: half_priced
    kind: model
    provider: offline
    model: wippy-offline
    pricing: {input: 1000}
  - name: helper
    kind: agent
    model: app:priced
"""

CALC = '''
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First.
        b: Second.
    """
    return a + b
'''


def make_app(root: Path, assistant: str, extra: str = "") -> Path:
    """An app whose `app:assistant` entry has the YAML fields `assistant` (indented under it), and `extra` entries."""
    fields = "".join(f"    {line}\n" for line in assistant.strip().splitlines())
    write_file(root, "registry/app/_index.yaml", ENTRIES + extra + "  - name: assistant\n    kind: agent\n"
               + "    tools: [tools.calc:add]\n    delegates: [app:helper]\n" + fields)
    write_file(root, "tools/calc.py", CALC)
    return root


def priced(*script: Response | str) -> ScriptedModel:
    model = ScriptedModel(script)
    model.pricing = Pricing(input=1000, output=2000)
    return model


def add_call(usage: Usage) -> Response:
    return Response(tool_calls=(ToolCall(id="c1", name="tools_calc_add", arguments={"a": 2, "b": 3}),),
                    finish_reason="tool_calls", usage=usage)


async def test_a_call_whose_estimate_would_cross_max_usd_per_turn_is_not_sent(tmp_path: Path) -> None:
    root = make_app(tmp_path, "model: app:priced\nbudget: {max_usd_per_turn: 0.01}")
    model = priced()
    async with App(root=root) as app:
        app.agents.model_overrides["*"] = model
        with pytest.raises(AgentError) as failed:
            await (await app.conversation("app:assistant")).ask("What is 2 + 3?")
    assert model.requests == []  # refused before anything was sent
    message = str(failed.value)
    assert "budget exceeded: app:assistant has spent $0.0000 this turn against max_usd_per_turn = $0.0100" in message
    assert "(agent app:assistant); its next call to app:priced, estimated at $" in message


async def test_a_call_that_crossed_max_tokens_per_turn_finishes_and_the_next_call_is_refused(tmp_path: Path) -> None:
    root = make_app(tmp_path, "model: app:priced\nbudget: {max_tokens_per_turn: 2000}")
    model = priced(add_call(Usage(input_tokens=1500, output_tokens=600)))
    async with App(root=root) as app:
        app.agents.model_overrides["*"] = model
        events = [event async for event in (await app.conversation("app:assistant")).stream("What is 2 + 3?")]
        [info] = [task for task in app.tasks.list() if task.id.startswith("turn:")]
    finished = [event for event in events if isinstance(event, ToolFinished)]
    assert [(event.tool, event.result) for event in finished] == [("tools.calc:add", "5")]  # its tool call ran
    assert len(model.requests) == 1
    assert isinstance(events[-1], TurnFailed) and events[-1].kind == "BudgetExceeded"
    assert "has spent 2,100 tokens this turn against max_tokens_per_turn = 2,000 tokens" in events[-1].error
    assert info.status == "failed" and info.error_kind == "BudgetExceeded"


async def test_max_cost_usd_is_max_usd_per_task_and_counts_what_delegates_spent(tmp_path: Path) -> None:
    root = make_app(tmp_path, "model: app:priced\nmax_cost_usd: 5")
    model = priced(Response(tool_calls=(ToolCall(id="d1", name="delegate_app_helper", arguments={"message": "go"}),),
                            finish_reason="tool_calls", usage=Usage(input_tokens=10)),
                   Response(text="done", usage=Usage(input_tokens=10, output_tokens=3000)))  # the helper: $6.01
    async with App(root=root) as app:
        app.agents.model_overrides["*"] = model
        with pytest.raises(AgentError) as failed:
            await (await app.conversation("app:assistant")).ask("delegate it")
    assert len(model.requests) == 2  # the assistant's call, the helper's; the assistant's second was refused
    assert ("has spent $6.0200 this task against max_usd_per_task = $5.0000 (agent app:assistant (max_cost_usd))"
            in str(failed.value))


@pytest.mark.parametrize(("budget", "usage", "spent"), [
    ("max_usd_per_day: 5", Usage(input_tokens=10, output_tokens=3000), "$6.0100 this day against max_usd_per_day"),
    ("max_tokens_per_day: 3000", Usage(input_tokens=10, output_tokens=3000),
     "3,010 tokens this day against max_tokens_per_day"),
])
async def test_a_policy_limit_per_day_counts_earlier_turns_read_from_the_state(
        tmp_path: Path, budget: str, usage: Usage, spent: str) -> None:
    policy = f"  - name: spend\n    kind: policy\n    subjects: ['app:*']\n    budget: {{{budget}}}\n"
    root = make_app(tmp_path, "model: app:priced", extra=policy)
    async with App(root=root) as app:
        app.agents.model_overrides["*"] = priced(Response(text="expensive", usage=usage))
        answer = await (await app.conversation("app:assistant")).ask("first")
    assert answer.text == "expensive"  # the call that crossed the limit finished its turn
    model = priced()
    async with App(root=root) as app:  # a new node: the day's spend is read from the state
        app.agents.model_overrides["*"] = model
        with pytest.raises(AgentError) as failed:
            await (await app.conversation("app:assistant")).ask("second")
    assert model.requests == []
    assert spent in str(failed.value) and "(policy app:spend)" in str(failed.value)


@pytest.mark.parametrize(("model", "missing"), [("app:bare", "pricing"), ("app:half_priced", "pricing.output")])
async def test_a_cost_limit_on_a_model_without_pricing_fails_closed_naming_the_entry_and_field(
        tmp_path: Path, model: str, missing: str) -> None:
    root = make_app(tmp_path, f"model: {model}\nbudget: {{max_usd_per_day: 100}}")
    async with App(root=root) as app:
        with pytest.raises(AgentError) as failed:
            await (await app.conversation("app:assistant")).ask("hello")
        [info] = [app.tasks.get(task.id) for task in app.tasks.list() if task.id.startswith("turn:")]
    assert f"the model {model} has no {missing}, and agent app:assistant sets max_usd_per_day" in str(failed.value)
    assert f"Add {missing} (US dollars per million tokens) to the model entry {model}" in str(failed.value)
    assert info.error_kind == "PricingMissing" and info.steps == []  # nothing was sent, not even the day read


async def test_a_token_limit_needs_no_pricing(tmp_path: Path) -> None:
    root = make_app(tmp_path, "model: app:bare\nbudget: {max_tokens_per_turn: 100000}")
    async with App(root=root) as app:
        answer = await (await app.conversation("app:assistant")).ask("hello")
    assert "You said: hello" in answer.text


async def ask_for_approval(app: App) -> tuple[str, str]:
    """Ask the frugal agent; return the budget approval its turn waits for, and the turn's task id."""
    conversation = await app.conversation("app:frugal")
    async for event in conversation.stream("hello"):
        if isinstance(event, ApprovalRequested):
            return event.approval, f"turn:{conversation.id}:1"
    raise AssertionError("the turn did not ask to go over its budget")


@pytest.mark.parametrize("decision", ["approve", "deny"])
async def test_on_exceed_ask_waits_for_a_person_across_a_restart(tmp_path: Path, decision: str) -> None:
    estimate = estimate_tokens([UserMessage(content="hello")], [])
    frugal = (f"  - name: frugal\n    kind: agent\n    model: app:priced\n"
              f"    budget: {{max_tokens_per_turn: {estimate - 1}, on_exceed: ask}}\n")
    root = make_app(tmp_path, "model: app:priced", extra=frugal)
    async with App(root=root) as app:
        approval_id, task_id = await ask_for_approval(app)
    async with App(root=root) as app:  # the turn is recovered and waits again
        [pending] = app.approvals.pending()
        assert (pending.id, pending.agent, pending.task_id, pending.action, pending.resource) == (
            approval_id, "app:frugal", task_id, "budget.exceed", "max_tokens_per_turn")
        assert f"Approve to let this turn go on with {estimate - 1:,} tokens more" in pending.summary
        assert app.tasks.status(task_id) == "running"
        await getattr(app.approvals, decision)(approval_id, by="user:carol")
        if decision == "approve":  # one more limit's worth: the call now fits, and is sent
            answer = (await app.tasks.result(task_id))["answer"]
            assert "You said: hello" in answer.text
        else:
            with pytest.raises(TaskFailed):
                await app.tasks.result(task_id)
            info = app.tasks.get(task_id)
            assert info.error_kind == "BudgetExceeded" and "going on was denied by user:carol" in (info.error or "")


def test_wippy_usage_prints_spend_per_day_agent_and_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_app(tmp_path, "model: app:priced")

    async def two_turns() -> None:
        async with App(root=root) as app:
            app.agents.model_overrides["*"] = priced(add_call(Usage(input_tokens=100, output_tokens=10)),
                                                     Response(text="5", usage=Usage(input_tokens=200, output_tokens=5)),
                                                     Response(text="ok", usage=Usage(input_tokens=50)))
            conversation = await app.conversation("app:assistant")
            await conversation.ask("What is 2 + 3?")
            await conversation.ask("thanks")

    asyncio.run(two_turns())
    assert main(["usage", "--root", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["DAY", "AGENT", "MODEL", "CALLS", "INPUT", "OUTPUT", "COST"]
    assert lines[1].split()[1:] == ["app:assistant", "app:priced", "3", "350", "15", "$0.3800"]
    assert lines[2].split() == ["total", "3", "350", "15", "$0.3800"]

    assert main(["usage", "--root", str(root), "--since", "1d", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["agent"], row["calls"], row["input_tokens"], row["output_tokens"]) == ("app:assistant", 3, 350, 15)

    assert main(["usage", "--root", str(root), "--agent", "app:helper"]) == 0
    assert capsys.readouterr().out == "no model calls by app:helper\n"
    with pytest.raises(SystemExit) as bad:
        main(["usage", "--root", str(root), "--since", "last week"])
    assert bad.value.code == 2 and "'last week' is not a day" in capsys.readouterr().err
