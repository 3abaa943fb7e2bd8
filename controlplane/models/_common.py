"""Helpers shared by the table modules."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, as an aware UTC datetime; SQLModel stores and returns every time in UTC on every backend."""
    return datetime.now(UTC)


def to_utc(value: datetime) -> datetime:
    """An aware UTC datetime from a client's value; a naive one is taken to be UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def minute_of(value: datetime) -> datetime:
    """The start of the UTC minute holding `value`: the key of every per-minute row."""
    return to_utc(value).replace(second=0, microsecond=0)
