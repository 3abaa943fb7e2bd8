"""The greedy fast path: fast, valid, warm-started from the current placement."""

import random
from dataclasses import replace

import pytest

from optimizer.checker import check
from optimizer.greedy import greedy
from optimizer.solver import solve
from optimizer.types import (
    Assignment,
    ClassCapacity,
    Edge,
    FragmentDemand,
    PlanStatus,
    Problem,
    ServiceProfile,
    WorkloadSla,
)

H100 = ClassCapacity("H100", 6.88, devices=2, slices_per_device=7)
L40S = ClassCapacity("L40S", 1.861, devices=2)
WHOLE_H100 = ServiceProfile("H100", throughput_rps=12.0, latency_ms=50.0, slices=7)
MIG = ServiceProfile("H100", throughput_rps=1.5, latency_ms=60.0, slices=1)
ONE_L40S = ServiceProfile("L40S", throughput_rps=4.0, latency_ms=100.0)


def test_cheapest_class_first_then_spill() -> None:
    # 12 rps: 2 L40S give 8 rps ($3.722/h), the remaining 4 rps take ceil(4 / 1.5) = 3 MIG slices.
    problem = Problem((H100, L40S), (FragmentDemand("chat", "w", 10.0, (MIG, ONE_L40S)),))
    plan = greedy(problem)
    assert plan.status is PlanStatus.feasible and check(problem, plan) == []
    assert plan.replicas_of("chat") == {"L40S": 2, "H100": 3}
    assert plan.lower_bound_usd_per_hour <= plan.usd_per_hour


def test_keeps_the_current_placement_when_still_allowed() -> None:
    # L40S is cheaper, but the fragment runs on a whole H100 now: the fast path leaves it there.
    current = (Assignment("chat", "H100", 1, 7, 6.88),)
    problem = Problem((H100, L40S), (FragmentDemand("chat", "w", 5.0, (WHOLE_H100, ONE_L40S)),), current=current)
    plan = greedy(problem)
    assert plan.replicas_of("chat") == {"H100": 1} and plan.moves == ()


def test_repairs_a_late_path() -> None:
    # Both on L40S: 100 + 100 = 200 ms > 170 ms; moving one to a whole H100 gives 150 ms plus
    # 1 ms for the hop (classes of unknown vendor count as cross vendor).
    frags = tuple(FragmentDemand(n, "w", 1.0, (WHOLE_H100, ONE_L40S)) for n in "ab")
    problem = Problem((H100, L40S), frags, edges=(Edge("a", "b"),), slas=(WorkloadSla("w", 170.0),))
    plan = greedy(problem)
    assert check(problem, plan) == [] and plan.predicted_p99_ms["w"] == pytest.approx(151.0)
    assert plan.usd_per_hour >= solve(problem).usd_per_hour


def scale_problem(fragments: int = 1000, classes: int = 12, devices: int = 5000, seed: int = 0) -> Problem:
    """Chains of 10 fragments per workload, an SLA each, every fragment on ~80% of the classes."""
    rng = random.Random(seed)
    fleet = tuple(ClassCapacity(f"c{i}", rng.uniform(0.5, 10), devices // classes, vendor=rng.choice(["nvidia", "amd"]),
                                fabric=rng.choice(["nvlink", "pcie"])) for i in range(classes))
    frags, edges = [], []
    for i in range(fragments):
        profiles = tuple(ServiceProfile(c.device_class, rng.uniform(1, 30), rng.uniform(10, 100))
                         for c in fleet if rng.random() < 0.8) or (ServiceProfile("c0", 5.0, 50.0),)
        frags.append(FragmentDemand(f"f{i}", f"w{i // 10}", rng.uniform(0.5, 20), profiles))
        if i % 10:
            edges.append(Edge(f"f{i - 1}", f"f{i}", 1.0, 1e6))
    slas = tuple(WorkloadSla(f"w{w}", 900.0) for w in range(fragments // 10))
    return Problem(fleet, tuple(frags), edges=tuple(edges), slas=slas)


def test_a_thousand_fragment_fleet_gets_a_valid_plan() -> None:
    # Its speed (target 100 ms) is measured in bench/scale.py, not asserted here.
    problem = scale_problem()
    plan = greedy(problem)
    assert plan.status is PlanStatus.feasible and check(problem, plan) == []


def test_a_limit_too_short_for_the_search_returns_the_greedy_plan_with_its_gap() -> None:
    # 1 ms is less than validating 1,000 fragments takes: no LP, no model, no search; greedy's plan
    # comes back feasible (not optimal), valid, with its gap to the fractional bound.
    problem = replace(scale_problem(seed=1), time_limit_s=0.001)
    plan = solve(problem)
    assert plan.status is PlanStatus.feasible and check(problem, plan) == []
    assert plan.usd_per_hour == pytest.approx(greedy(problem).usd_per_hour)
    assert 0 < plan.gap < 1
