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


@pytest.mark.parametrize("calls, p99_calls, expected", [
    (2.0, None, 50 + 2 * 50),  # two calls in turn: both at the tail
    (1.3, None, 50 + 2 * 50),  # 30% of visits call twice: the tail visit does
    (0.5, None, 50 + 50),  # half the visits call: the p99 visit is one of them, in full
    (0.01, None, 50),  # 1% of visits call: outside the p99's tail
    (1.3, 4.0, 50 + 4 * 50),  # measured: the 99th percentile visit calls 4 times
])
def test_calls_at_the_tail_count_in_full(calls: float, p99_calls: float | None, expected: float) -> None:
    frags = (FragmentDemand("a", "w", 1.0, PROFILES), FragmentDemand("b", "w", 1.0, PROFILES))
    edge = Edge("a", "b", calls, calls_p99=p99_calls)
    problem = Problem((H100,), frags, edges=(edge,), slas=(WorkloadSla("w", expected - 1),))
    (violation,) = check(problem, plan(("a", "H100"), ("b", "H100")))
    assert f"worst path {float(expected)} ms" in violation


def test_children_in_turn_add_and_concurrent_ones_take_the_max() -> None:
    # The case: an agent (100 ms) always calls search (600 ms) and on 30% of visits a tool
    # (2,000 ms). In turn: 100 + 600 + 2,000 = 2,700 ms (the mean-weighted max said 700 ms).
    latency = {"agent": 100.0, "search": 600.0, "tool": 2000.0}
    frags = tuple(FragmentDemand(f, "w", 1.0, (ServiceProfile("H100", 12.0, ms),)) for f, ms in latency.items())
    rows = [(f, "H100") for f in latency]
    for concurrent, worst in ((False, 2700.0), (True, 2100.0)):
        edges = (Edge("agent", "search", 1.0, concurrent=concurrent), Edge("agent", "tool", 0.3, concurrent=concurrent))
        problem = Problem((H100,), frags, edges=edges, slas=(WorkloadSla("w", 1000.0),))
        assert check(problem, plan(*rows)) == [f"workload w: worst path {worst} ms > p99 1000.0 ms"]
