"""Text tools: each public, documented function here is a tool, `tools.words:<name>`."""


def count_words(text: str) -> int:
    """Count the words in a text.

    Args:
        text: The text; words are separated by whitespace.
    """
    return len(text.split())
