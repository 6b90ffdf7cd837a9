"""Long conversations in a small window: history folded into a journaled summary, truncated, or recovered.

The models are test doubles (a `FunctionModel` that tells the summarizing call by its
prompt) on real apps; the crash is a real kill -9 of a child process in the middle of
a turn that has just compacted.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

from wippy_agents import App
from wippy_agents.agents import ApprovalRequested, Conversation, TurnFailed
from wippy_agents.agents._compaction import SUMMARY_PROMPT
from wippy_agents.agents._history import SUMMARY_HEADER, Compaction, load_history
from wippy_agents.durable import loads
from wippy_agents.llm import (
    DEFAULT_CONTEXT_WINDOW,
    AssistantMessage,
    ChatMessage,
    ContextTooLongError,
    Response,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
    context_window,
    estimate_tokens,
)
from wippy_agents.registry import Entry, ModelSpec, RegistryError
from wippy_agents.testing import FunctionModel, ModelRequest, write_file

WINDOW = 2_000
RESERVE = 500  # a quarter of the window: neither the agent nor its model sets max_tokens

AGENTS = f"""
namespace: app
entries:
  - name: model
    kind: model
    provider: offline
    model: wippy-offline
    context_window: {WINDOW}
  - name: assistant
    kind: agent
    model: app:model
    tools: ["tools.calc:add"]
    history: {{keep_recent_turns: 2}}
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


@pytest.fixture
def app(tmp_path: Path) -> Path:
    write_file(tmp_path, "registry/app/_index.yaml", AGENTS)
    write_file(tmp_path, "tools/calc.py", CALC)
    return tmp_path


def is_summary_request(request: ModelRequest) -> bool:
    return bool(request.messages) and request.messages[0].content == SUMMARY_PROMPT


def summary_of(messages: list[ChatMessage]) -> str | None:
    found = [m.content for m in messages if isinstance(m, SystemMessage) and m.content.startswith(SUMMARY_HEADER)]
    return found[0].removeprefix(SUMMARY_HEADER) if found else None


def check_calls_paired(messages: list[ChatMessage]) -> None:
    """Every tool result right after the call that asked for it, every call answered."""
    waiting: set[str] = set()
    for message in messages:
        if isinstance(message, ToolResultMessage):
            assert message.tool_call_id in waiting, f"a tool result without its call: {message!r}"
            waiting.discard(message.tool_call_id)
            continue
        assert not waiting, f"tool calls {waiting} without their results before {message!r}"
        if isinstance(message, AssistantMessage):
            waiting = {call.id for call in message.tool_calls}


class LongChat:
    """The model of a long conversation: every third question calls a tool; summaries number themselves."""

    def __init__(self) -> None:
        self.summaries = 0
        self.turn_requests: list[ModelRequest] = []

    def __call__(self, request: ModelRequest) -> Response | str:
        if is_summary_request(request):
            self.summaries += 1
            assert estimate_tokens(request.messages) <= WINDOW - RESERVE
            return f"summary {self.summaries}: the user asked numbered questions; the answers were long."
        self.turn_requests.append(request)
        last = request.messages[-1]
        if isinstance(last, UserMessage) and last.content.endswith("add"):
            n = len(self.turn_requests)
            return Response(tool_calls=(ToolCall(id=f"c{n}", name=request.tools[0].name, arguments={"a": n, "b": 1}),))
        return "an answer of some length, " * 6


async def test_a_2000_turn_conversation_sends_every_request_inside_a_small_window(app: Path) -> None:
    chat = LongChat()
    async with App(root=app, state=":memory:") as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(chat)
        conversation = await wippy.conversation("app:assistant")
        journal_reads = 0
        tasks_of = wippy.tasks.tasks_of

        def counted(*args: object) -> object:
            nonlocal journal_reads
            journal_reads += 1
            return tasks_of(*args)  # type: ignore[arg-type]

        wippy.tasks.tasks_of = counted  # type: ignore[method-assign]
        for n in range(1, 2001):
            answer = await conversation.ask(f"question {n}" + (" add" if n % 3 == 0 else ""))
        compacted = [info for info in wippy.tasks.list() if info.result and info.result["compaction"]]
        journaled = [loads(step.result) for step in wippy.tasks.get(compacted[-1].id).steps
                     if step.name.startswith("compact:")]

    assert answer.turn == 2000 and answer.text.startswith("an answer")
    assert journal_reads == 1  # the first turn's (nothing in memory yet): no later turn read the journal
    for request in chat.turn_requests:
        assert estimate_tokens(request.messages, request.tools) <= WINDOW - RESERVE
        check_calls_paired(request.messages)
    last = chat.turn_requests[-1].messages
    assert summary_of(last) == f"summary {chat.summaries}: the user asked numbered questions; the answers were long."
    assert [m.content for m in last if isinstance(m, UserMessage)][-3:] == ["question 1998 add", "question 1999",
                                                                           "question 2000"]
    assert len(compacted) > 50 and chat.summaries >= len(compacted)
    kept = compacted[-1].result["compaction"]  # a turn's result keeps its last compaction step's journaled result
    assert journaled and journaled[-1] == kept and kept.summary == summary_of(last)
    assert 0 < answer.context_tokens <= WINDOW and answer.context_window == WINDOW


async def test_truncate_drops_the_oldest_turns_without_a_model_call_and_off_sends_everything(app: Path) -> None:
    chat = LongChat()
    async with App(root=app, state=":memory:") as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(chat)
        for strategy, turns in (("truncate", 60), ("off", 20)):
            wippy.registry.apply([Entry(id="app:assistant", kind="agent", data={
                "model": "app:model", "tools": ["tools.calc:add"], "history": {"strategy": strategy}})],
                reason="test", author="test")
            conversation = await wippy.conversation("app:assistant")
            chat.turn_requests.clear()
            for n in range(1, turns + 1):
                await conversation.ask(f"{strategy} {n}" + (" add" if n % 3 == 0 else ""))
            if strategy == "truncate":
                assert chat.summaries == 0
                for request in chat.turn_requests:
                    assert estimate_tokens(request.messages, request.tools) <= WINDOW - RESERVE
                    assert summary_of(request.messages) is None
                    check_calls_paired(request.messages)
                asked = [m.content for m in chat.turn_requests[-1].messages if isinstance(m, UserMessage)]
                assert asked[-1] == "truncate 60 add" and "truncate 1" not in asked
            else:
                asked = [m.content for m in chat.turn_requests[-1].messages if isinstance(m, UserMessage)]
                assert asked == [f"off {n}" + (" add" if n % 3 == 0 else "") for n in range(1, 21)]


async def test_a_summary_far_longer_than_asked_for_is_cut_so_requests_still_fit(app: Path) -> None:
    def answer(request: ModelRequest) -> str:
        return "an endless summary " * 10_000 if is_summary_request(request) else "an answer of some length, " * 6

    async with App(root=app, state=":memory:") as wippy:
        wippy.agents.model_overrides["*"] = model = FunctionModel(answer)
        conversation = await wippy.conversation("app:assistant")
        for n in range(60):
            await conversation.ask(f"question {n}")

    turns = [request for request in model.requests if not is_summary_request(request)]
    assert len(turns) == 60 and summary_of(turns[-1].messages)
    assert all(estimate_tokens(request.messages, request.tools) <= WINDOW - RESERVE for request in turns)


async def test_a_context_too_long_error_is_recovered_by_one_compaction_and_a_retry(app: Path) -> None:
    refused: list[int] = []

    def answer(request: ModelRequest) -> Response | str | BaseException:
        if is_summary_request(request):
            return Response(text="the earlier turns, summarized", usage=Usage(input_tokens=50, output_tokens=10))
        asked = [m.content for m in request.messages if isinstance(m, UserMessage)]
        if asked[-1] == "one too many" and not refused:
            refused.append(len(request.messages))
            return ContextTooLongError("prompt is too long: 210000 tokens > 200000 maximum",
                                       provider="test", model="scripted", status=400)
        return "ok"

    async with App(root=app, state=":memory:") as wippy:
        wippy.agents.model_overrides["*"] = model = FunctionModel(answer)
        conversation = await wippy.conversation("app:assistant")
        for n in range(5):
            await conversation.ask(f"turn {n}")
        done = await conversation.ask("one too many")
        [task] = [info for info in wippy.tasks.list() if info.id.endswith(":6")]
        steps = [(step.name, step.ok) for step in wippy.tasks.get(task.id).steps]
        waterfall = wippy.agents.turn_steps(task)

    assert done.text == "ok" and done.usage == Usage(input_tokens=50, output_tokens=10)  # the summary's call counts
    assert steps == [("model:1", False), ("compact:1", True), ("model:1", True)]
    assert [(span.kind, span.label) for span in waterfall.steps][1] == ("model", "function (compaction)")
    assert waterfall.usage == done.usage  # the TUI's waterfall counts the summary's call as the answer does
    retried = model.requests[-1].messages
    assert summary_of(retried) == "the earlier turns, summarized" and len(retried) < refused[0]
    assert [m.content for m in retried if isinstance(m, UserMessage)] == ["turn 3", "turn 4", "one too many"]


def test_a_models_window_is_its_entrys_else_the_known_one_for_its_name_else_a_small_default() -> None:
    def window(provider: str, model: str, **fields: int) -> int:
        return context_window(ModelSpec(provider=provider, model=model, **fields))  # type: ignore[arg-type]

    assert window("openai", "gpt-4o-mini") == 128_000 and window("openai", "gpt-4") == 8_192
    assert window("openai", "gpt-4.1-nano") == 1_047_576
    assert window("anthropic", "claude-sonnet-4-5") == 200_000
    assert window("openai-compatible", "anthropic/claude-3.5-haiku") == 200_000  # an OpenRouter name
    assert window("openai-compatible", "llama3.1:8b") == DEFAULT_CONTEXT_WINDOW
    assert window("openai", "gpt-4o", context_window=50_000) == 50_000


def test_the_estimate_counts_a_token_per_3_bytes_so_cjk_text_is_not_undercounted() -> None:
    assert estimate_tokens([UserMessage(content="a" * 300)]) == 100 + 8
    assert estimate_tokens([UserMessage(content="語" * 100)]) == 100 + 8  # 3 bytes each: a token each


async def test_a_history_setting_out_of_range_is_refused_with_its_field(app: Path) -> None:
    async with App(root=app, state=":memory:") as wippy:
        with pytest.raises(RegistryError, match=r"history\.keep_recent_turns.*greater than or equal to 1"):
            wippy.registry.apply([Entry(id="app:assistant", kind="agent", data={
                "model": "app:model", "history": {"keep_recent_turns": 0}})], reason="test", author="test")
        with pytest.raises(RegistryError, match=r"history\.strategy"):
            wippy.registry.apply([Entry(id="app:assistant", kind="agent", data={
                "model": "app:model", "history": {"strategy": "forget"}})], reason="test", author="test")
        with pytest.raises(RegistryError, match=r"context_window"):
            wippy.registry.apply([Entry(id="app:model", kind="model", data={
                "provider": "offline", "model": "m", "context_window": 0})], reason="test", author="test")


def test_a_bad_history_or_window_in_a_file_is_reported_at_its_line_and_field(tmp_path: Path) -> None:
    write_file(tmp_path, "registry/app/_index.yaml", """
namespace: app
entries:
  - name: model
    kind: model
    provider: offline
    model: wippy-offline
    context_window: -5
  - name: assistant
    kind: agent
    model: app:model
    history:
      strategy: off
      keep_recent_turns: 0
""")
    linted = subprocess.run([str(Path(sys.executable).with_name("wippy")), "registry", "lint", "--root", str(tmp_path)],
                            capture_output=True, text=True, timeout=50)
    assert linted.returncode == 1
    assert "registry/app/_index.yaml:7: entry app:model: field context_window: Input should be greater than 0" \
        in linted.stderr
    assert ("registry/app/_index.yaml:13: entry app:assistant: field history.keep_recent_turns: Input should be "
            "greater than or equal to 1") in linted.stderr
    assert "strategy" not in linted.stderr  # a bare `off`, which YAML reads as false, is the strategy off


CHILD = """
import asyncio, os, signal, sys
from wippy_agents import App
from wippy_agents.agents._compaction import SUMMARY_PROMPT
from wippy_agents.durable import loads
from wippy_agents.agents._history import SUMMARY_HEADER
from wippy_agents.testing import FunctionModel

def answer(request):
    if request.messages[0].content == SUMMARY_PROMPT:
        print("summarized", flush=True)
        return "SUMMARY WRITTEN BEFORE THE CRASH"
    if any(m.role == "system" and m.content.startswith(SUMMARY_HEADER) for m in request.messages):
        os.kill(os.getpid(), signal.SIGKILL)  # the first call after the compaction step was journaled
    return "a long answer " * 20

async def main():
    async with App(root=sys.argv[1]) as app:
        app.agents.model_overrides["*"] = FunctionModel(answer)
        conversation = await app.conversation("app:assistant", id="long")
        for n in range(200):
            await conversation.ask(f"question {n}")

asyncio.run(main())
"""


async def test_a_summary_journaled_before_a_kill_9_is_replayed_not_written_again(app: Path) -> None:
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), str(app)], capture_output=True, text=True,
                           timeout=50)
    assert child.returncode == -signal.SIGKILL, child.stderr
    summarized = child.stdout.count("summarized")

    async with App(root=app) as wippy:  # boot resumes the killed turn (with the entry's own, offline, model)
        [killed] = [info for info in wippy.tasks.list() if info.status != "completed"]
        result = await wippy.tasks.result(killed.id)
        steps = [step.name for step in wippy.tasks.get(killed.id).steps]
        chat = FunctionModel(lambda request: "the summary is still there")
        wippy.agents.model_overrides["*"] = chat
        conversation = await wippy.conversation("app:assistant", id="long")
        await conversation.ask("after the restart")
        history = load_history(wippy.tasks, "app:assistant", "long", before=10**9)

    assert summarized > 0  # the compaction's calls, each journaled as a step before the crash, ran once each
    assert steps == [f"compact:{n}" for n in range(1, summarized + 1)] + ["model:1"]
    compaction = result["compaction"]
    assert isinstance(compaction, Compaction) and compaction.summary == "SUMMARY WRITTEN BEFORE THE CRASH"
    assert [is_summary_request(request) for request in chat.requests] == [False]
    assert summary_of(chat.requests[0].messages) == "SUMMARY WRITTEN BEFORE THE CRASH"
    assert history.summary == "SUMMARY WRITTEN BEFORE THE CRASH" and history.through == compaction.through

    wippy_cli = str(Path(sys.executable).with_name("wippy"))
    shown = subprocess.run([wippy_cli, "tasks", "show", killed.id, "--root", str(app)], capture_output=True, text=True,
                           timeout=50)
    assert shown.returncode == 0, shown.stderr
    assert f"up to turn {compaction.through} folded into the summary; history ~" in shown.stdout


async def test_only_the_most_recently_used_histories_stay_in_memory_and_a_dropped_one_is_read_back(app: Path) -> None:
    chat = LongChat()
    async with App(root=app, state=":memory:") as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(chat)
        wippy.agents.histories.capacity = 2
        conversations = [await wippy.conversation("app:assistant") for _ in range(3)]
        for n in range(1, 4):
            for number, conversation in enumerate(conversations):
                await conversation.ask(f"c{number} q{n}")
        assert len(wippy.agents.histories) == 2  # the third conversation's pushed the first one's out
        await conversations[0].ask("c0 q4")  # its history is read back from the journal
    asked = [m.content for m in chat.turn_requests[-1].messages if isinstance(m, UserMessage)]
    assert asked == ["c0 q1", "c0 q2", "c0 q3", "c0 q4"]


TURN_LIMIT = 1_700
"""Above any turn's own request here (the history is kept under 1,500 tokens), below the most a summary call of
this window may send and receive (its transcript's room, its prompt and its summary: about 1,900)."""


def limited(app: Path, on_exceed: str) -> Path:
    write_file(app, "registry/app/_index.yaml", AGENTS.replace(
        "    history: {keep_recent_turns: 2}",
        f"    history: {{keep_recent_turns: 2}}\n    budget: {{max_tokens_per_turn: {TURN_LIMIT}, on_exceed: {on_exceed}}}"))
    return app


async def test_a_summary_call_that_would_cross_a_spend_limit_is_not_sent(app: Path) -> None:
    chat = LongChat()
    async with App(root=limited(app, "fail"), state=":memory:") as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(chat)
        conversation = await wippy.conversation("app:assistant")
        for n in range(1, 200):
            failed = [event async for event in conversation.stream(f"question {n}") if isinstance(event, TurnFailed)]
            if failed:
                break
    assert n > 5 and failed[0].kind == "BudgetExceeded" and "max_tokens_per_turn" in failed[0].error
    assert chat.summaries == 0  # the summary call was refused before it was sent


class Asked(NamedTuple):
    turn: int
    approval: str


async def first_approval(conversation: Conversation) -> Asked:
    """Ask question after question until a turn waits for a person; that turn and the approval it waits for."""
    for n in range(1, 200):
        async for event in conversation.stream(f"question {n}"):
            if isinstance(event, ApprovalRequested):
                return Asked(n, event.approval)
    raise AssertionError("no turn asked to go over its budget")


async def test_a_summary_call_over_a_limit_waits_for_a_person_across_a_restart(app: Path) -> None:
    chat = LongChat()
    limited(app, "ask")
    async with App(root=app) as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(chat)
        conversation = await wippy.conversation("app:assistant")
        asked = await first_approval(conversation)
        task = f"turn:{conversation.id}:{asked.turn}"
    assert chat.summaries == 0
    async with App(root=app) as wippy:  # the turn is recovered: the approval it asked for replays, and it waits
        wippy.agents.model_overrides["*"] = FunctionModel(chat)
        [pending] = wippy.approvals.pending()
        assert (pending.id, pending.action, pending.task_id) == (asked.approval, "budget.exceed", task)
        await wippy.approvals.approve(pending.id, by="user:carol")
        answer = (await wippy.tasks.result(task))["answer"]
    assert answer.text.startswith("an answer") and chat.summaries == 1  # summarized once, after the approval


async def test_the_tui_s_task_detail_says_when_and_what_a_compaction_folded(app: Path) -> None:
    from wippy_agents.control import Hosted
    from wippy_agents.tui._format import task_detail

    chat = LongChat()
    async with App(root=app, state=":memory:") as wippy:
        wippy.agents.model_overrides["*"] = FunctionModel(chat)
        conversation = await wippy.conversation("app:assistant")
        while chat.summaries == 0:
            await conversation.ask(f"question {len(chat.turn_requests) + 1}")
        compacted = next(info for info in wippy.tasks.list() if info.result and info.result["compaction"])
        shown = await Hosted(wippy).request("tasks.show", id=compacted.id)
    detail = task_detail(shown).plain
    assert "compact:1" in detail and "folded into the summary; history ~" in detail
