"""The chat screen, driven with Textual's pilot on a copy of the example app.

The screen's widgets are the TUI's own (`tui._chat`, `tui._chat_screen`): the tests find them
by class, as a person finds them by sight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from textual.widgets import OptionList

from wippy_agents import App
from wippy_agents.agents import TurnArgs, turns
from wippy_agents.llm import (
    ChatMessage,
    Model,
    Response,
    ResponseDone,
    Settings,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolDefinition,
    Usage,
)
from wippy_agents.registry import Entry, Pricing
from wippy_agents.testing import ScriptedModel, forbid_model_requests, wait_until
from wippy_agents.tui._chat import (
    PAGE,
    ChatInput,
    ChatView,
    EarlierTurns,
    MarkdownText,
    ToolBlock,
    TurnView,
    UserMessage,
)
from wippy_agents.tui._chat_screen import ChatScreen


class GatedModel(Model):
    """Streams `before`, waits for `gate`, then streams `after` (and makes `calls`): an answer seen half written."""

    provider = "test"

    def __init__(self, before: str, after: str, calls: tuple[ToolCall, ...] = ()) -> None:
        super().__init__("gated", pricing=Pricing(input=50_000, output=25_000))  # $0.25 for 3 in, 4 out
        self.before, self.after, self.calls = before, after, calls
        self.gate = asyncio.Event()

    async def _stream(self, messages: list[ChatMessage], tools: list[ToolDefinition],
                      settings: Settings) -> AsyncIterator[StreamEvent]:
        yield TextDelta(text=self.before)
        await self.gate.wait()
        yield TextDelta(text=self.after)
        yield ResponseDone(response=Response(text=self.before + self.after, tool_calls=self.calls,
                                             usage=Usage(input_tokens=3, output_tokens=4)))


def chat(app: Any) -> ChatScreen:
    assert isinstance(app.screen, ChatScreen)
    return app.screen


def markdown_of(view: TurnView) -> str:
    """The agent's own text in the turn (a delegate's, nested in a tool block, left out)."""
    return "".join(part.source for part in view.body.query(MarkdownText) if part.parent is view.body)


async def test_an_answer_streams_as_markdown_then_shows_its_usage_and_cost(open_tui: Any) -> None:
    model = GatedModel("# Plan\n\nFirst **step**", ", then the second.")
    async with open_tui(model) as (app, pilot):
        chat(app).query_one(ChatInput).insert("make a plan")
        await pilot.press("enter")
        await wait_until(lambda: app.screen.query(TurnView) and "First **step**" in markdown_of(
            app.screen.query_one(TurnView)))
        view = app.screen.query_one(TurnView)
        assert not view.done  # the first half is on screen while the model is still writing
        assert [str(m.render()) for m in app.screen.query(UserMessage)] == ["make a plan"]
        model.gate.set()
        await wait_until(lambda: view.done)
        await pilot.pause()
        assert markdown_of(view) == "# Plan\n\nFirst **step**, then the second."
        assert str(view.footer.render()) == ("3 tokens in, 4 out · context 7 of 8,192 tokens (0%) · $0.250000 · "
                                             "1 model call")


async def test_a_tool_call_is_a_block_with_its_arguments_result_and_duration(open_tui: Any, send: Any) -> None:
    async with open_tui() as (app, pilot):  # the offline model: no key, no network
        view = await send(pilot, '/call tools.calc:add {"a": 2, "b": 3}')
        block = view.query_one(ToolBlock)
        assert block.title.startswith("✓ tools.calc:add · done in ") and block.title.endswith("s")
        assert block.collapsed
        shown = [str(static.render()) for static in block.query(".arguments, .result")]
        assert '"a": 2' in shown[0] and '"b": 3' in shown[0]
        assert shown[1] == "5.0"
        assert "tools_calc_add returned: 5.0" in markdown_of(view)
        block.query_one("CollapsibleTitle").focus()
        await pilot.press("enter")
        assert not block.collapsed


async def test_a_failing_tool_shows_its_error_in_the_block(open_tui: Any, send: Any) -> None:
    async with open_tui() as (app, pilot):
        view = await send(pilot, '/call tools.calc:add {"a": "two"}')
        block = view.query_one(ToolBlock)
        assert block.title.startswith("✗ tools.calc:add · failed in ")
        assert block.has_class("-error")


async def test_delegated_work_shows_nested_in_the_tool_block_that_asked(open_tui: Any, send: Any) -> None:
    model = ScriptedModel([
        Response(tool_calls=(ToolCall(id="d1", name="delegate_app_researcher", arguments={"message": "look"}),)),
        "the researcher found **it**",
        "done, with help",
    ])
    async with open_tui(model) as (app, pilot):
        view = await send(pilot, "ask the researcher")
        block = view.query_one(ToolBlock)
        assert block.tool == "app:researcher" and not block.collapsed
        assert block.delegate is not None
        assert "the researcher found **it**" in "".join(part.source for part in block.delegate.query(MarkdownText))
        assert markdown_of(view) == "done, with help"


async def test_a_reopened_conversation_shows_tool_calls_and_delegated_work_as_they_happened(
        open_tui: Any, send: Any) -> None:
    model = ScriptedModel([
        Response(tool_calls=(ToolCall(id="d1", name="delegate_app_researcher", arguments={"message": "look"}),
                             ToolCall(id="c1", name="tools_calc_add", arguments={"a": 1, "b": 2}))),
        "the researcher found **it**",
        "done, with help",
    ])
    async with open_tui(model, conversation="again") as (app, pilot):
        live = await send(pilot, "ask the researcher")
        live_titles = [block.title.partition(" · ")[0] for block in live.query(ToolBlock)]
        live_footer = str(live.footer.render())
    async with open_tui(conversation="again") as (app, pilot):
        await wait_until(lambda: app.screen.query(TurnView))
        view = app.screen.query_one(TurnView)
        blocks = list(view.body.query(ToolBlock))
        assert [block.title.partition(" · ")[0] for block in blocks] == live_titles == [
            "✓ app:researcher", "✓ tools.calc:add"]
        assert blocks[0].delegate is not None
        assert "the researcher found **it**" in "".join(part.source for part in blocks[0].delegate.query(MarkdownText))
        assert markdown_of(view) == "done, with help"
        assert str(view.footer.render()) == live_footer


async def test_enter_sends_ctrl_j_adds_a_line_and_up_down_recall_earlier_messages(open_tui: Any) -> None:
    async with open_tui(ScriptedModel(["one", "two"])) as (app, pilot):
        box = chat(app).query_one(ChatInput)
        await pilot.press(*"first", "ctrl+j", *"line", "enter")
        await wait_until(lambda: app.screen.query(TurnView) and app.screen.query(TurnView).last().done)
        assert [str(m.render()) for m in app.screen.query(UserMessage)] == ["first\nline"]
        assert box.text == ""
        await pilot.press(*"draft", "up")
        assert box.text == "first\nline" and box.cursor_location == (1, 4)
        await pilot.press("down")  # from the last line: forward, past the newest, to the draft
        assert box.text == "draft"
        await pilot.press("up", "up")  # the first recalls; the second moves up a line within it
        assert box.text == "first\nline" and box.cursor_location[0] == 0
        await pilot.press("up")  # from the first line: nothing older, it stays
        assert box.text == "first\nline"


async def test_escape_cancels_a_running_turn_and_its_task(open_tui: Any) -> None:
    model = GatedModel("thinking", ", then adding", (ToolCall(id="t1", name="tools_calc_add", arguments={"a": 1}),))
    async with open_tui(model) as (app, pilot):
        screen = chat(app)
        screen.query_one(ChatInput).insert("take your time")
        await pilot.press("enter")
        await wait_until(lambda: screen.turn_task is not None and "thinking" in markdown_of(
            screen.query_one(TurnView)))
        task = screen.turn_task
        await pilot.press("escape")
        await wait_until(lambda: screen.query(".note"))
        assert "Cancelled" in str(screen.query_one(".note").render())
        model.gate.set()  # the model call under way finishes; the task stops before its tool call
        tasks = app.application.tasks
        await wait_until(lambda: tasks.status(task) == "cancelled")
        assert screen.turn is not None and not screen.turn.is_running


async def test_a_failed_turn_is_shown_inline_and_the_app_goes_on(open_tui: Any, send: Any) -> None:
    async with open_tui() as (app, pilot):
        registry = app.application.registry
        registry.apply([Entry("app:keyless", "model", {}, {"provider": "openai", "model": "gpt-4.1-mini",
                                                             "api_key_env": "WIPPY_TEST_NO_SUCH_KEY"})],
                       author="user:test")
        await app.use_model("app:keyless")
        with forbid_model_requests():
            view = await send(pilot, "hello?")
        error = str(view.query_one(".error").render())
        assert "MissingAPIKeyError" in error and "WIPPY_TEST_NO_SUCH_KEY" in error
        assert any("the turn failed" in (n.title or "") for n in app._notifications)
        await app.use_model("app:offline")
        view = await send(pilot, "and now?")
        assert "You said: and now?" in markdown_of(view)


async def test_picking_an_agent_in_the_sidebar_starts_a_conversation_with_it(open_tui: Any, send: Any) -> None:
    async with open_tui(ScriptedModel(["researching"])) as (app, pilot):
        screen = chat(app)
        agents = screen.query_one("#agents", OptionList)
        agents.focus()
        agents.highlighted = agents.get_option_index("app:researcher")
        await pilot.press("enter")
        await pilot.pause()
        assert screen.agent == "app:researcher"
        assert str(screen.query_one("#title").render()).startswith("Researcher · new conversation")
        view = await send(pilot, "find things")
        assert str(view.query_one(".agent").render()) == "app:researcher"
        assert screen.conversation is not None
        assert turns(app.application.tasks, "app:researcher", screen.conversation)[0].status == "completed"


async def test_the_sidebar_follows_agent_entries_as_they_change(open_tui: Any) -> None:
    async with open_tui() as (app, pilot):
        agents = chat(app).query_one("#agents", OptionList)
        app.application.registry.apply([Entry("app:poet", "agent", {"title": "Poet", "description": "Writes verse."},
                                       {"model": "app:offline"})], author="user:test", reason="a poet")
        await wait_until(lambda: any(agents.get_option_at_index(i).id == "app:poet"
                                     for i in range(agents.option_count)))
        assert "Poet" in str(agents.get_option("app:poet").prompt)


async def test_the_palette_switches_the_agents_model_as_a_registry_change(open_tui: Any) -> None:
    async with open_tui() as (app, pilot):
        app.application.registry.apply([Entry("app:other", "model", {}, {"provider": "offline", "model": "other"})],
                                author="user:test")
        await pilot.press("ctrl+p")
        await pilot.press(*"use model app:other")
        await wait_until(lambda: app.screen.query("CommandList Option, CommandList") and
                         app.screen.query_one("CommandList").option_count > 0)
        await pilot.press("enter")
        await wait_until(lambda: app.application.registry.get("app:assistant").data["model"] == "app:other")
        version = app.application.registry.history("app:assistant")[-1]
        assert version.author.startswith("user:") and "app:other" in version.reason


async def test_conversations_persist_and_go_on_after_a_restart(open_tui: Any, send: Any) -> None:
    async with open_tui() as (app, pilot):
        await send(pilot, "remember me")
        first = chat(app).conversation
        await pilot.press("ctrl+q")
    async with open_tui() as (app, pilot):
        listing = chat(app).query_one("#conversations", OptionList)
        assert first is not None and "remember me" in str(listing.get_option(first).prompt)
        listing.focus()
        listing.highlighted = listing.get_option_index(first)
        await pilot.press("enter")
        await wait_until(lambda: app.screen.query(UserMessage))
        assert [str(m.render()) for m in app.screen.query(UserMessage)] == ["remember me"]
        assert "You said: remember me" in markdown_of(app.screen.query_one(TurnView))
        await send(pilot, "still there?")
        assert [TurnArgs(*info.args).text for info in turns(app.application.tasks, "app:assistant", first)] == [
            "remember me", "still there?"]


async def test_a_long_conversation_shows_its_latest_turns_and_loads_older_ones_on_request(
        open_tui: Any, example_app: Path) -> None:
    async with App(root=example_app) as wippy:
        wippy.agents.model_overrides["*"] = ScriptedModel([f"answer {n}" for n in range(PAGE + 5)])
        conversation = await wippy.conversation("app:assistant", id="long")
        for n in range(PAGE + 5):
            await conversation.ask(f"question {n}")
    async with open_tui(conversation="long") as (app, pilot):
        view = app.screen.query_one(ChatView)
        await wait_until(lambda: len(view.query(TurnView)) == PAGE)
        assert str(view.query(UserMessage).first().render()) == "question 5"
        view.scroll_home(animate=False)
        await pilot.pause()
        await pilot.click(EarlierTurns)
        await wait_until(lambda: len(view.query(TurnView)) == PAGE + 5)
        assert [str(m.render()) for m in view.query(UserMessage)][:6] == [f"question {n}" for n in range(6)]
        assert not view.query(EarlierTurns)


async def test_on_a_narrow_screen_the_sidebar_hides_until_asked_for(open_tui: Any) -> None:
    async with open_tui(size=(80, 24)) as (app, pilot):
        sidebar = app.screen.query_one("#sidebar")
        assert not sidebar.display
        await pilot.press("ctrl+s")
        assert sidebar.display
        await pilot.press("ctrl+n")  # opening a conversation puts the sidebar away again
        await pilot.pause()
        assert not sidebar.display
    async with open_tui(size=(120, 30)) as (app, pilot):
        assert app.screen.query_one("#sidebar").display


async def test_ctrl_f_searches_every_agents_conversations_by_the_words_of_their_messages(
        open_tui: Any, send: Any) -> None:
    async with open_tui() as (app, pilot):
        node = app.application
        for agent, text in (("app:assistant", "weather in Paris"), ("app:assistant", "a bread recipe"),
                            ("app:researcher", "sources on Paris bridges")):
            await (await node.conversation(agent)).ask(text)
        await send(pilot, "anything else")  # the screen's own conversation, listed again after its turn
        listing = chat(app).query_one("#conversations", OptionList)

        def listed() -> list[str]:
            return [str(listing.get_option_at_index(i).prompt).split("\n")[0] for i in range(listing.option_count)
                    if listing.get_option_at_index(i).id != "new"]

        assert sorted(listed()) == ["a bread recipe", "anything else", "weather in Paris"]  # the agent's own
        await pilot.press("ctrl+f")
        for key in "PARIS":
            await pilot.press(key)
        await wait_until(lambda: sorted(listed()) == ["sources on Paris bridges", "weather in Paris"])
        await pilot.press("space", "b", "r")  # every word must be found: "br" only in the researcher's
        await wait_until(lambda: listed() == ["sources on Paris bridges"])
        await pilot.press("enter")  # from the search box to the list
        assert listing.has_focus
        listing.highlighted = listing.get_option_index(next(iter(chat(app).agents_of)))
        await pilot.press("enter")
        await wait_until(lambda: [str(m.render()) for m in app.screen.query(UserMessage)] == [
            "sources on Paris bridges"])
        assert chat(app).agent == "app:researcher"  # opened with its own agent
