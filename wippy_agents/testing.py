"""Test tooling shipped to users: a virtual clock now; scripted models come with the LLM layer."""

from ._runtime.clock import VirtualClock

__all__ = ["VirtualClock"]
