"""A switch that turns any request to a real model into an error (`testing.forbid_model_requests`)."""

from __future__ import annotations

from ._errors import RealModelRequestError

_forbidden = 0


def forbid(delta: int) -> None:
    global _forbidden
    _forbidden += delta


def check(provider: str, model: str) -> None:
    if _forbidden:
        raise RealModelRequestError(
            "a test tried to send a request to a real model while model requests are forbidden; "
            "give the agent a testing.ScriptedModel or testing.FunctionModel instead",
            provider=provider, model=model,
        )
