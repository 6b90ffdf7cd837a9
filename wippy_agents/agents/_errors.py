"""The agents layer's own error."""

from ..errors import RunError


class AgentError(RunError):
    """A turn could not run: an unknown or invalid agent, a prompt that does not render, a refused delegation."""
