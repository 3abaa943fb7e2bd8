"""Helpers shared by the table modules."""

from datetime import UTC, datetime
from typing import Annotated, Any, get_args

from pydantic import AfterValidator, ValidationInfo, field_validator
from sqlmodel import SQLModel
from sqlmodel._compat import SQLModelConfig

from optimizer.vocabulary import minute_of, to_utc  # noqa: F401 - re-exported: shared words live there


def utcnow() -> datetime:
    """Now, as an aware UTC datetime; SQLModel stores and returns every time in UTC on every backend."""
    return datetime.now(UTC)


INT32_MAX = 2**31 - 1
"""The largest PostgreSQL `integer`: the range of every id, count and duration column, and so of
every integer a client may send."""

INPUT = SQLModelConfig(allow_inf_nan=False)
"""The configuration of every model a client writes: `1e999` parses to inf in JSON, and no column
holds an infinite or NaN value, so they are refused as invalid (422 naming the field)."""

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def within_window(value: datetime) -> datetime:
    """`value` if it lies in [EARLIEST, LATEST) UTC; a naive value is taken to be UTC. Compared on the
    wall clock first, so that dates near years 1 and 9999 are refused before a conversion overflows."""
    if not EARLIEST.replace(tzinfo=None) <= value.replace(tzinfo=None) < LATEST.replace(tzinfo=None) or \
            not EARLIEST <= to_utc(value) < LATEST:
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)")
    return value


Instant = Annotated[datetime, AfterValidator(within_window)]
"""A point in time a client sends: RFC 3339, within the window heteroplane stores."""


def input_config(*not_null: str, schema: dict[str, Any] | None = None) -> SQLModelConfig:
    """INPUT, with the fields `not_null` documented as not nullable: optional in an update (left out,
    the value is kept) but refused as null, which their validators do (pydantic would otherwise
    document `T | None` as accepting null); `schema` adds what a validator checks across fields."""

    def document(schema_: dict[str, Any]) -> None:
        schema_.update(schema or {})
        drop_null(schema_)

    def drop_null(schema: dict[str, Any]) -> None:
        for name in not_null:
            field = schema.get("properties", {}).get(name, {})
            branches = [b for b in field.pop("anyOf", []) if b.get("type") != "null"]
            if len(branches) == 1:  # keys the field sets itself (e.g. a documented pattern) win
                field.update({k: v for k, v in branches[0].items() if k not in field})
            elif branches:
                field["anyOf"] = branches

    return SQLModelConfig(allow_inf_nan=False, json_schema_extra=document)



class Input(SQLModel):
    """The base of every model a client writes (configured by INPUT or input_config)."""

    model_config = INPUT

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1 for a number; JSON Schema (and so the API's document) does not.
        if isinstance(value, bool) and bool not in _types(cls.model_fields[info.field_name].annotation):
            raise ValueError("must be a number, not true or false")
        return value


def _types(annotation: Any) -> set[Any]:
    """`annotation` and every type inside it (unions, Annotated)."""
    return {annotation}.union(*(_types(arg) for arg in get_args(annotation)))
