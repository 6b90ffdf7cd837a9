"""Models: one small interface for agents, providers behind it, configured by `model` entries.

```python
model = load_model(registry.spec("app:offline"))
response = await model.complete([UserMessage(content="hi")], tools=[...])
async for event in model.stream(messages):     # TextDelta, ToolCallStart, ToolCallDelta, then ResponseDone
    ...
```

Providers, each a public module beside this interface: `wippy_agents.llm.openai`
(`OpenAIModel`: the `openai` provider, Chat Completions, and `openai-compatible`:
Ollama, vLLM, LM Studio, llama.cpp, OpenRouter, any `base_url`) and
`wippy_agents.llm.anthropic` (`AnthropicModel`: the Messages API), both through the
official SDKs, and `wippy_agents.llm.offline` (`OfflineModel`: no key, no network,
deterministic).
"""

from ._context import DEFAULT_CONTEXT_WINDOW, KNOWN_CONTEXT_WINDOWS, context_window, estimate_tokens
from ._errors import (
    AuthenticationError,
    BadRequestError,
    ContextTooLongError,
    InvalidResponseError,
    MissingAPIKeyError,
    ModelConnectionError,
    ModelError,
    ModelTimeoutError,
    RateLimitError,
    RealModelRequestError,
    ServerError,
)
from ._loader import default_model_spec, load_model
from ._messages import (
    AssistantMessage,
    ChatMessage,
    FinishReason,
    Response,
    ResponseDone,
    StreamEvent,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from ._model import Model, Settings
from ._usage import Totals, UsageLedger, cost_usd

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "KNOWN_CONTEXT_WINDOWS",
    "AssistantMessage",
    "AuthenticationError",
    "BadRequestError",
    "ChatMessage",
    "ContextTooLongError",
    "FinishReason",
    "InvalidResponseError",
    "MissingAPIKeyError",
    "Model",
    "ModelConnectionError",
    "ModelError",
    "ModelTimeoutError",
    "RateLimitError",
    "RealModelRequestError",
    "Response",
    "ResponseDone",
    "ServerError",
    "Settings",
    "StreamEvent",
    "SystemMessage",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolDefinition",
    "ToolResultMessage",
    "Totals",
    "Usage",
    "UsageLedger",
    "UserMessage",
    "context_window",
    "cost_usd",
    "default_model_spec",
    "estimate_tokens",
    "load_model",
]
