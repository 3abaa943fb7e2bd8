"""Helpers shared by the table modules."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, in UTC, without tzinfo: every stored time is UTC (SQLite keeps no zone)."""
    return datetime.now(UTC).replace(tzinfo=None)
