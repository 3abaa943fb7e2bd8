"""heteroplane's shared words that are plain values: imported by every package, importing none.

The collectors classify spans into fragment kinds and bucket them by minute, the control plane stores
and plans with the same kinds and minutes: defined here, below both, so the pure normaliser loads no
table, engine or setting (and no package imports another back in a loop).
"""

from datetime import UTC, datetime
from enum import StrEnum


class FragmentKind(StrEnum):
    """What a fragment does, which decides the resource it is bound by."""

    llm = "llm"
    embedding = "embedding"
    rerank = "rerank"
    retrieval = "retrieval"
    tool = "tool"
    agent = "agent"
    db = "db"
    cpu = "cpu"


def to_utc(value: datetime) -> datetime:
    """An aware UTC datetime from a client's value; a naive one is taken to be UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def minute_of(value: datetime) -> datetime:
    """The start of the UTC minute holding `value`: the key of every per-minute row."""
    return to_utc(value).replace(second=0, microsecond=0)
