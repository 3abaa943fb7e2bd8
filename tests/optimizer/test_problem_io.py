"""Problems and plans to and from JSON, with errors that name the field."""

import copy
import json
from pathlib import Path

import pytest

from optimizer.problem_io import ProblemFormatError, plan_to_json, problem_from_json, problem_to_json
from optimizer.types import (
    Assignment,
    ClassCapacity,
    Edge,
    FragmentDemand,
    Plan,
    PlanStatus,
    Problem,
    ServiceProfile,
    WorkloadSla,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "problem.json"

DOC = {
    "device_classes": [{"device_class": "L4", "usd_per_hour": 0.805, "devices": 4}],
    "fragments": [
        {"fragment": "a", "workload": "w", "demand_rps": 3,
         "profiles": [{"device_class": "L4", "throughput_rps": 2, "latency_ms": 10}]},
        {"fragment": "b", "workload": "w", "demand_rps": 1, "latency_bound_ms": 50, "pinned": ["L4"],
         "profiles": [{"device_class": "L4", "throughput_rps": 5, "latency_ms": 20, "measured": True}]},
    ],
    "edges": [{"parent": "a", "child": "b", "bytes_per_call": 1024}],
    "slas": [{"workload": "w", "p99_ms": 100}],
}


def test_reads_nested_dataclasses_with_defaults() -> None:
    problem = problem_from_json(DOC)
    assert problem.device_classes == (ClassCapacity("L4", 0.805, 4),)
    assert problem.fragments[1] == FragmentDemand(
        "b", "w", 1.0, (ServiceProfile("L4", 5.0, 20.0, measured=True),), latency_bound_ms=50.0, pinned=("L4",)
    )
    assert problem.edges == (Edge("a", "b", bytes_per_call=1024.0),)
    assert problem.slas == (WorkloadSla("w", 100.0),)
    assert problem.headroom == Problem((), ()).headroom  # absent fields keep the dataclass default


def test_round_trip_through_json_text() -> None:
    problem = problem_from_json(DOC)
    problem = Problem(**{**problem.__dict__, "current": (Assignment("a", "L4", 2, 1, 1.61),)})
    text = json.dumps(problem_to_json(problem))
    assert problem_from_json(json.loads(text)) == problem


def test_the_example_file_reads() -> None:
    problem = problem_from_json(json.loads(EXAMPLE.read_text()))
    assert len(problem.fragments) == 3 and problem.edges


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("fragments", 1, "profiles", 0, "throughput_rps"), 0, "fragments[1].profiles[0].throughput_rps: must be > 0"),
        (("fragments", 0, "demand_rps"), -1, "fragments[0].demand_rps: must be >= 0"),
        (("fragments", 0, "demand_rps"), "3", "fragments[0].demand_rps: Input should be a valid number"),
        (("device_classes", 0, "devices"), 1.5, "device_classes[0].devices: Input should be a valid integer"),
        (("slas", 0, "p99_ms"), float("inf"), "slas[0].p99_ms: must be a finite number"),
        (("fragments", 0, "demand_rsp"), 3, "fragments[0].demand_rsp: unknown field; known fields: buckets, demand_rps"),
        (("edges", 0, "parent"), None, "edges[0].parent: Input should be a valid string"),
        (("headroom",), 0, "headroom: must be > 0"),
    ],
)
def test_bad_fields_are_named_by_path(path, value, message) -> None:
    doc = copy.deepcopy(DOC)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProblemFormatError) as info:
        problem_from_json(doc)
    assert message in str(info.value)
    assert info.value.path == message.split(":")[0]


def test_missing_required_field_and_non_object() -> None:
    doc = copy.deepcopy(DOC)
    del doc["fragments"][0]["workload"]
    with pytest.raises(ProblemFormatError, match=r"fragments\[0\].workload: Field required"):
        problem_from_json(doc)
    with pytest.raises(ProblemFormatError, match="must be a JSON object, got list"):
        problem_from_json([])


def test_plan_to_json_carries_status_gap_and_assignments() -> None:
    plan = Plan(PlanStatus.feasible, (Assignment("a", "L4", 2, 1, 1.61),), usd_per_hour=2.0,
                lower_bound_usd_per_hour=1.5, diagnosis=("x",))
    out = json.loads(json.dumps(plan_to_json(plan)))
    assert out["status"] == "feasible" and out["feasible"] is True and out["gap"] == pytest.approx(0.25)
    assert out["assignments"] == [
        {"fragment": "a", "device_class": "L4", "replicas": 2, "slices": 1, "usd_per_hour": 1.61, "phase": ""}
    ]
    assert out["diagnosis"] == ["x"]
