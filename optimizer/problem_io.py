"""JSON for the optimizer's types: read a `Problem`, write a `Problem` or a `Plan`.

The shape is the dataclasses' own (field names as keys, tuples as arrays, enums as their values),
so a field added to `optimizer.types` is read and written without a change here. pydantic does
the typing; on top of it the reader rejects keys no dataclass declares (a typo must not silently
fall back to a default) and numbers that cannot be right: every number in a problem is finite
and >= 0, and those in `POSITIVE_FIELDS` are > 0. Errors name the field's path, e.g.
``fragments[3].profiles[0].throughput_rps: must be > 0``.
"""

import dataclasses
import json
import math
from typing import Any

from pydantic import TypeAdapter, ValidationError

from optimizer.types import Plan, Problem

# Fields that are divisors or bounds somewhere downstream: zero is as wrong as negative.
POSITIVE_FIELDS = frozenset(
    {"throughput_rps", "slices", "slices_per_device", "headroom", "time_limit_s", "p99_ms", "latency_bound_ms"}
)

_PROBLEM = TypeAdapter(Problem)
_PLAN = TypeAdapter(Plan)


class ProblemFormatError(ValueError):
    """A problem document that cannot be read; `path` names the offending field ("" for the root)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path or '(document)'}: {message}")


def problem_from_json(obj: Any) -> Problem:
    """The `Problem` a parsed JSON document describes; ProblemFormatError naming the bad field."""
    if not isinstance(obj, dict):
        raise ProblemFormatError("", f"must be a JSON object, got {type(obj).__name__}")
    try:
        # Strict JSON mode: no "3" for 3, no 1 for true; arrays become tuples, strings enums.
        problem = _PROBLEM.validate_json(json.dumps(obj), strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ProblemFormatError(_path(error["loc"]), error["msg"]) from None
    _check(problem, obj, "")
    return problem


def problem_to_json(problem: Problem) -> dict[str, Any]:
    """`problem` as a JSON-ready dict that `problem_from_json` reads back to an equal problem."""
    return _PROBLEM.dump_python(problem, mode="json")


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """`plan` as a JSON-ready dict, with its derived `feasible` and `gap` beside the fields."""
    return {**_PLAN.dump_python(plan, mode="json"), "feasible": plan.feasible, "gap": plan.gap}


def _check(value: Any, raw: Any, path: str) -> None:
    """Walk the validated `value` beside the `raw` document: unknown keys and bad numbers."""
    if dataclasses.is_dataclass(value) and isinstance(raw, dict):
        names = {f.name for f in dataclasses.fields(value)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ProblemFormatError(_join(path, unknown[0]), f"unknown field; known fields: {', '.join(sorted(names))}")
        for name in names & set(raw):
            field_value, field_path = getattr(value, name), _join(path, name)
            _check_number(field_value, field_path, name)
            _check(field_value, raw[name], field_path)
    elif isinstance(value, tuple) and isinstance(raw, list):
        for index, (item, raw_item) in enumerate(zip(value, raw, strict=True)):
            _check_number(item, f"{path}[{index}]", path.rsplit(".", 1)[-1])
            _check(item, raw_item, f"{path}[{index}]")
    elif isinstance(value, dict) and isinstance(raw, dict):
        for key, item in value.items():
            _check_number(item, f"{path}.{key}", path.rsplit(".", 1)[-1])
            _check(item, raw[key], f"{path}.{key}")


def _check_number(value: Any, path: str, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if not math.isfinite(value):
        raise ProblemFormatError(path, f"must be a finite number, got {value}")
    if name in POSITIVE_FIELDS and value <= 0:
        raise ProblemFormatError(path, f"must be > 0, got {value}")
    if value < 0:
        raise ProblemFormatError(path, f"must be >= 0, got {value}")


def _path(loc: tuple[str | int, ...]) -> str:
    path = ""
    for part in loc:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, str(part))
    return path


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
