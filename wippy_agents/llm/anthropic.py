"""Claude through the official SDK's Messages API.

An `anthropic` model entry loads as an `AnthropicModel` (see `load_model`).
"""

from ._anthropic import AnthropicModel

__all__ = ["AnthropicModel"]
