"""Semantic recall's half: a local model2vec model that embeds notes and queries, so recall finds by meaning.

Optional twice over: the `model2vec` package (`pip install 'wippy-agents[memory]'`) and a
model folder named by `memory.embedding_model` in wippy.yaml. Nothing is ever downloaded:
model2vec takes a path that does not exist for a Hugging Face Hub id and fetches it, so
the folder is checked to be a local folder first and handed over as an absolute path
(which is no valid hub id either); the model is then read from its files alone.

The model loads once, lazily, in a thread: reading tens of megabytes must not stall the
event loop. When the package or the folder is missing or its files are bad, the reason is
a `UsageError` logged once, and recall keeps to keywords: the node never goes down for it.
A static model embeds a text by averaging its tokens' vectors, which is cheap, but each
note's vector is kept all the same (per agent, by the version that wrote the note), so a
recall embeds its query and only the notes written since the last one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    from model2vec import StaticModel
    from numpy.typing import NDArray

__all__ = ["SETTING", "Embeddings", "load_model"]

SETTING = "memory.embedding_model"
log = logging.getLogger("wippy_agents.agents")


def load_model(folder: Path) -> StaticModel:
    """The model2vec model in `folder` (absolute), read from its files alone; a UsageError says what to change."""
    where = f"{SETTING} in wippy.yaml ({folder})"
    try:
        from model2vec import StaticModel
    except ImportError:
        raise UsageError(f"{where} is set, but the model2vec package is not installed: pip install "
                         "'wippy-agents[memory]', or remove the setting") from None
    if not folder.is_dir():
        raise UsageError(f"{where} is not a folder: name a local model2vec model folder (as its `save_pretrained` "
                         "writes it), relative to the app or absolute; nothing is downloaded")
    try:
        return StaticModel.from_pretrained(folder, force_download=False)
    except Exception as error:  # the files are the user's: anything in them may be wrong
        reason = str(error)[:300] or type(error).__name__
        raise UsageError(f"{where} holds no model model2vec can read ({reason}): it needs model.safetensors, "
                         "tokenizer.json and config.json as `save_pretrained` writes them") from None


class Embeddings:
    """The embedding model of `folder` (absolute), loaded on first use, and the vectors of the notes seen so far."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.problem: UsageError | None = None
        """Why the model could not be loaded (logged once); recall then ranks by keywords alone."""
        self._model: StaticModel | None = None
        self._loading = asyncio.Lock()
        self._vectors: dict[str, dict[int, NDArray[np.float32]]] = {}  # agent -> note version -> unit vector

    @property
    def ready(self) -> bool:
        return self._model is not None

    async def load(self) -> bool:
        """Load the model, once, in a thread; whether it is loaded (a failure is logged once, kept in `problem`)."""
        async with self._loading:
            if self._model is None and self.problem is None:
                try:
                    self._model = await asyncio.to_thread(load_model, self.folder)
                except UsageError as error:
                    self.problem = error
                    log.error("semantic recall is off, recall uses keywords alone: %s", error)
        return self._model is not None

    def similarities(self, agent: str, query: str, documents: Mapping[int, str]) -> dict[int, float]:
        """The cosine similarity of `query` to each document (`documents`: all of `agent`'s current notes' text, by
        version; 0 for a text without a word the model knows). Their vectors are kept for the next call, and
        those of notes no longer current are dropped."""
        model = self._model
        if model is None:
            raise RuntimeError("the embedding model is not loaded: await load() first")
        known = self._vectors.get(agent, {})
        new = [version for version in documents if version not in known]
        vectors = {version: known[version] for version in documents if version in known}
        if new:
            encoded = model.encode([documents[version] for version in new], normalize=True, use_multiprocessing=False)
            vectors.update(zip(new, encoded, strict=True))
        self._vectors[agent] = vectors
        wanted = model.encode([query], normalize=True, use_multiprocessing=False)[0]
        return {version: float(vector @ wanted) for version, vector in vectors.items()}
