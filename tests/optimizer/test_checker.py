"""The independent checker catches each kind of violation a graph-aware plan can carry."""

from collections import Counter

import pytest

from optimizer.checker import check
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

H100 = ClassCapacity("H100", 6.88, devices=4, vendor="nvidia", fabric="nvlink", memory_gib_per_device=80.0)
MI300X = ClassCapacity("MI300X", 6.0, devices=4, vendor="amd", memory_gib_per_device=192.0)
PROFILES = (ServiceProfile("H100", 12.0, 50.0), ServiceProfile("MI300X", 12.0, 40.0))


def plan(*rows: tuple[str, str], p99: dict[str, float] | None = None) -> Plan:
    assignments = tuple(Assignment(f, c, 1, 1, 6.88 if c == "H100" else 6.0) for f, c in rows)
    return Plan(PlanStatus.feasible, assignments, usd_per_hour=sum(a.usd_per_hour for a in assignments),
                predicted_p99_ms=p99 or {}, devices_used=dict(Counter(c for _, c in rows)))


def test_pins_forbids_and_memory() -> None:
    problem = Problem((H100, MI300X), (
        FragmentDemand("pinned", "w", 1.0, PROFILES, pinned=("MI300X",)),
        FragmentDemand("forbidden", "w", 1.0, PROFILES, forbidden=("H100",)),
        FragmentDemand("big", "w", 1.0, PROFILES, memory_gib_per_replica=100.0),
    ))
    violations = check(problem, plan(("pinned", "H100"), ("forbidden", "H100"), ("big", "H100")))
    assert violations == [
        "pinned@H100: fragment is pinned to MI300X",
        "forbidden@H100: class is forbidden for this fragment",
        "big@H100: a replica needs 100.0 GiB > 80.0 GiB",
    ]


def test_path_sla_counts_cross_vendor_transfer() -> None:
    # a (H100, 50 ms) calls b (MI300X, 40 ms) once with 1 GB: 50 + 1 + 100 + 40 = 191 ms > 150 ms.
    frags = (FragmentDemand("a", "w", 1.0, PROFILES), FragmentDemand("b", "w", 1.0, PROFILES))
    problem = Problem((H100, MI300X), frags, edges=(Edge("a", "b", 1.0, 1e9),), slas=(WorkloadSla("w", 150.0),))
    (violation,) = check(problem, plan(("a", "H100"), ("b", "MI300X")))
    assert violation.startswith("workload w: worst path 191.0") and violation.endswith("> p99 150.0 ms")
    # Same class: no transfer, 50 + 50 = 100 ms; a wrong prediction is itself a violation.
    assert check(problem, plan(("a", "H100"), ("b", "H100"), p99={"w": 100.0})) == []
    assert check(problem, plan(("a", "H100"), ("b", "H100"), p99={"w": 90.0})) == [
        "workload w: predicted p99 90.0 ms, recomputed 100.0 ms"]


def test_cycle_is_a_violation() -> None:
    frags = (FragmentDemand("a", "w", 1.0, PROFILES), FragmentDemand("b", "w", 1.0, PROFILES))
    problem = Problem((H100,), frags, edges=(Edge("a", "b"), Edge("b", "a")), slas=(WorkloadSla("w", 1e6),))
    assert any("cycle" in v for v in check(problem, plan(("a", "H100"), ("b", "H100"))))


@pytest.mark.parametrize("calls, expected", [(2.0, 50 + 2 * 50), (0.5, 50 + 0.5 * 50)])
def test_calls_multiply_the_child_path(calls: float, expected: float) -> None:
    frags = (FragmentDemand("a", "w", 1.0, PROFILES), FragmentDemand("b", "w", 1.0, PROFILES))
    problem = Problem((H100,), frags, edges=(Edge("a", "b", calls),), slas=(WorkloadSla("w", expected - 1),))
    (violation,) = check(problem, plan(("a", "H100"), ("b", "H100")))
    assert f"worst path {expected}" in violation
