"""The agents layer's own error."""


class AgentError(Exception):
    """A turn could not run: an unknown or invalid agent, a prompt that does not render, a refused delegation."""
