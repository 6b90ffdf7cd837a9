"""From a `model` entry to a ready `Model`: the provider, its key from the environment, its defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..registry import ModelSpec
from ._errors import MissingAPIKeyError
from ._model import Model, Settings
from ._offline import OfflineModel

KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "openai-compatible": None}


def load_model(
    spec: ModelSpec, *, entry_id: str | None = None, environ: Mapping[str, str] | None = None,
    http_client: Any = None,
) -> Model:
    """Build the model an entry describes. `http_client` (an `httpx2.AsyncClient`) is for tests and proxies."""
    environ = os.environ if environ is None else environ
    settings = Settings(max_tokens=spec.max_output_tokens, temperature=spec.temperature)
    if spec.provider == "offline":
        return OfflineModel(spec.model, pricing=spec.pricing, settings=settings, timeout=spec.timeout)
    key_env = spec.api_key_env or KEY_ENV[spec.provider]
    key = environ.get(key_env) if key_env else None
    if not key and spec.provider != "openai-compatible":
        entry = f" (model entry {entry_id})" if entry_id else ""
        raise MissingAPIKeyError(
            f"no API key: set the environment variable {key_env} to your {spec.provider} key{entry}, "
            "or name another variable with `api_key_env` in the entry",
            provider=spec.provider, model=spec.model,
        )
    common: dict[str, Any] = dict(
        pricing=spec.pricing, settings=settings, api_key=key, timeout=spec.timeout, max_retries=spec.max_retries,
        http_client=http_client,
    )
    if spec.provider == "anthropic":
        from ._anthropic import AnthropicModel

        return AnthropicModel(spec.model, base_url=spec.base_url or environ.get("ANTHROPIC_BASE_URL"), **common)
    from ._openai import OpenAIModel

    base_url = spec.base_url or environ.get("OPENAI_BASE_URL")
    if spec.provider == "openai-compatible" and not base_url:
        raise MissingAPIKeyError(
            "an openai-compatible model needs `base_url` in its entry, e.g. http://localhost:11434/v1 for Ollama",
            provider=spec.provider, model=spec.model,
        )
    return OpenAIModel(spec.model, base_url=base_url, provider=spec.provider, **common)


def default_model_spec(environ: Mapping[str, str] | None = None) -> ModelSpec:
    """The model an agent without one uses: OpenAI or Anthropic when their key is set, else offline."""
    environ = os.environ if environ is None else environ
    if environ.get("OPENAI_API_KEY"):
        return ModelSpec(provider="openai", model=environ.get("OPENAI_MODEL", "gpt-4.1-mini"))
    if environ.get("ANTHROPIC_API_KEY"):
        return ModelSpec(provider="anthropic", model=environ.get("ANTHROPIC_MODEL", "claude-sonnet-4-6"))
    return ModelSpec(provider="offline", model="wippy-offline")
