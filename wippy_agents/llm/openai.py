"""OpenAI's Chat Completions through the official SDK, and the servers that speak it.

An `openai` model entry, or an `openai-compatible` one (Ollama, vLLM, LM Studio,
llama.cpp, OpenRouter: any `base_url`), loads as an `OpenAIModel` (see `load_model`).
"""

from ._openai import OpenAIModel

__all__ = ["OpenAIModel"]
