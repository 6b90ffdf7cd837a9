"""Time tools."""

from datetime import UTC, datetime


def now(timezone: str = "UTC") -> str:
    """The current date and time, ISO 8601.

    Args:
        timezone: Only "UTC" is supported.
    """
    if timezone.upper() != "UTC":
        raise ValueError(f"unknown timezone {timezone!r}; only UTC is supported")
    return datetime.now(UTC).isoformat(timespec="seconds")
