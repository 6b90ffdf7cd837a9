"""Semantic recall: with model2vec and a local model folder set as `memory.embedding_model`, recall finds by meaning.

The model is a tiny static one built here from a hand-made vocabulary ("car",
"automobile" and "vehicle" point one way, "tea" and "coffee" another), saved with
model2vec's own `save_pretrained`: nothing is downloaded, and pytest-socket refuses
every connection beyond loopback, so a model that loads here loaded from its files.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model2vec import StaticModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from wippy_agents import App
from wippy_agents.agents import Embeddings, Memory
from wippy_agents.app import load_config
from wippy_agents.errors import UsageError
from wippy_agents.registry import RegistryError
from wippy_agents.state import open_state

from .test_memory import add_agents, call, tool_result

VECTORS = {
    "car": [1.0, 0.0, 0.0], "automobile": [0.95, 0.1, 0.0], "vehicle": [0.9, 0.0, 0.1],
    "tea": [0.0, 1.0, 0.0], "coffee": [0.1, 0.9, 0.0],
    "deploy": [0.0, 0.0, 1.0], "build": [0.1, 0.0, 0.9],
}
LOOPBACK = ("127.0.0.1", "::1")
CAR = "Ada drives a red car to work"
TEA = "The office kitchen has green tea"


def save_tiny_model(folder: Path) -> Path:
    """A word-level model2vec model of the words in VECTORS (any other word is unknown and ignored)."""
    words = ["[UNK]", *VECTORS]
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    vectors = np.array([[0.0, 0.0, 0.0], *VECTORS.values()], dtype=np.float32)
    StaticModel(vectors, tokenizer, normalize=True).save_pretrained(folder)
    return folder


def with_model(app: Path, folder: str) -> Path:
    with (app / "wippy.yaml").open("a", encoding="utf-8") as config:
        config.write(f"memory:\n  embedding_model: {folder}\n")
    return app


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address a socket tried to connect to (pytest-socket refuses those beyond loopback anyway)."""
    tried: list[Any] = []
    connect = socket.socket.connect

    def recording(self: socket.socket, address: Any) -> None:
        tried.append(address)
        connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording)
    return tried


async def loaded_memory(state: Any, folder: Path) -> Memory:
    memory = Memory(state.memory, Embeddings(folder))
    await memory.load_embeddings()
    assert memory.embeddings is not None and memory.embeddings.ready, memory.embeddings
    return memory


async def test_an_agent_recalls_its_note_about_a_car_when_it_asks_for_an_automobile(
        example_app: Path, tmp_path: Path, connections: list[Any]) -> None:
    async with App(root=example_app) as app:  # no model set: keywords alone
        add_agents(app)
        await tool_result(app, "app:keeper", call("wippy:remember", text=CAR, tags=["people"]))
        await tool_result(app, "app:keeper", call("wippy:remember", text=TEA))
        missed = await tool_result(app, "app:keeper", call("wippy:recall", query="automobile"))
        assert json.loads(missed.result) == []
    save_tiny_model(example_app / "models" / "tiny")
    async with App(root=with_model(example_app, "models/tiny")) as app:
        found = await tool_result(app, "app:keeper", call("wippy:recall", query="automobile"))
        assert [(n["text"], n["tags"]) for n in json.loads(found.result)] == [(CAR, ["people"])]
        tea = await tool_result(app, "app:keeper", call("wippy:recall", query="coffee"))
        assert [n["text"] for n in json.loads(tea.result)] == [TEA]
    assert not [address for address in connections if isinstance(address, tuple) and address[0] not in LOOPBACK]


async def test_keywords_and_meaning_are_mixed_and_tags_still_filter_first(tmp_path: Path) -> None:
    with open_state(None) as state:
        memory = await loaded_memory(state, save_tiny_model(tmp_path / "model"))
        for text, tags in [(CAR, ["people"]), ("Automobile insurance renews in May", ["admin"]), (TEA, ["office"]),
                           ("Every deploy needs a green build", ["ops"])]:
            memory.remember("app:a", text, tags, author="app:a", task=None)
        ranked = memory.recall("app:a", "automobile")
        assert [r.note.text for r in ranked] == ["Automobile insurance renews in May", CAR]  # keyword and meaning first
        assert 0 < ranked[1].score < ranked[0].score <= 1
        assert [r.note.text for r in memory.recall("app:a", "vehicle", ["office"])] == []  # tags first, then meaning
        assert [r.note.text for r in memory.recall("app:a", "green")] == ["Every deploy needs a green build", TEA]
        assert [r.note.note for r in memory.recall("app:a", "")] == [4, 3, 2, 1]  # no query: newest first


async def test_a_recall_embeds_only_the_query_and_the_notes_written_since_the_last_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[str] = []
    encode = StaticModel.encode

    def counting(self: StaticModel, sentences: list[str], **options: Any) -> Any:
        encoded.extend(sentences)
        return encode(self, sentences, **options)

    monkeypatch.setattr(StaticModel, "encode", counting)
    with open_state(None) as state:
        memory = await loaded_memory(state, save_tiny_model(tmp_path / "model"))
        memory.remember("app:a", CAR, (), author="app:a", task=None)
        memory.remember("app:a", TEA, (), author="app:a", task=None)
        memory.recall("app:a", "automobile")
        assert encoded == [CAR, TEA, "automobile"]
        encoded.clear()
        memory.recall("app:a", "vehicle")
        assert encoded == ["vehicle"]
        encoded.clear()
        memory.remember("app:a", "Ada's car is blue now", (), author="app:a", task=1, note=1)
        assert [r.note.text for r in memory.recall("app:a", "automobile")] == ["Ada's car is blue now"]
        assert encoded == ["Ada's car is blue now", "automobile"]  # the rewritten note, and only it


async def test_without_model2vec_installed_recall_keeps_to_keywords_and_says_how_to_install_it(
        example_app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    save_tiny_model(example_app / "model")
    monkeypatch.setitem(sys.modules, "model2vec", None)  # `import model2vec` now fails, as when it is not installed
    async with App(root=with_model(example_app, "model")) as app:
        add_agents(app)
        await tool_result(app, "app:keeper", call("wippy:remember", text=CAR))
        missed = await tool_result(app, "app:keeper", call("wippy:recall", query="automobile"))
        found = await tool_result(app, "app:keeper", call("wippy:recall", query="car"))
        assert (json.loads(missed.result), missed.is_error) == ([], False)
        assert [n["text"] for n in json.loads(found.result)] == [CAR]
        assert app.agents.memory is not None and app.agents.memory.embeddings is not None
        problem = app.agents.memory.embeddings.problem
    assert isinstance(problem, UsageError)
    assert "memory.embedding_model" in str(problem) and "pip install 'wippy-agents[memory]'" in str(problem)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"semantic recall is off, recall uses keywords alone: {problem}"]  # logged once, for two recalls


@pytest.mark.parametrize("broken", ["missing", "empty", "garbled"])
async def test_a_bad_model_folder_is_a_clear_error_logged_once_and_recall_falls_back_to_keywords(
        tmp_path: Path, broken: str, caplog: pytest.LogCaptureFixture, connections: list[Any]) -> None:
    folder = tmp_path / "model"
    if broken != "missing":
        folder.mkdir()
    if broken == "garbled":
        save_tiny_model(folder)
        (folder / "model.safetensors").write_bytes(b"\x00not safetensors at all")
    with open_state(None) as state:
        memory = Memory(state.memory, Embeddings(folder))
        memory.remember("app:a", CAR, (), author="app:a", task=None)
        for query in ("automobile", "car"):
            await memory.load_embeddings()
            assert [r.note.text for r in memory.recall("app:a", query)] == ([CAR] if query == "car" else [])
    assert memory.embeddings is not None and isinstance(memory.embeddings.problem, UsageError)
    message = str(memory.embeddings.problem)
    assert message.startswith(f"memory.embedding_model in wippy.yaml ({folder}) ")
    assert ("is not a folder" if broken == "missing" else "holds no model model2vec can read") in message
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert connections == []  # a missing folder is never taken for a model to download


def test_the_setting_is_checked_with_its_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "wippy.yaml").write_text("name: x\nmemory:\n  embedding_model: ''\n  model: y\n", encoding="utf-8")
    with pytest.raises(RegistryError) as caught:
        load_config(tmp_path)
    problems = {(p.field, p.line): p.message for p in caught.value.problems}
    assert set(problems) == {("memory.embedding_model", 3), ("memory.model", 4)}
    assert problems["memory.model", 4] == "unknown setting; the settings here are embedding_model"
