"""max_changed_fragments: a migration policy's limit on how many running fragments a plan may change."""

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.checker import check
from optimizer.greedy import greedy
from optimizer.solver import solve
from optimizer.types import (
    Assignment,
    ClassCapacity,
    FragmentDemand,
    Infeasibility,
    Plan,
    PlanStatus,
    Problem,
    ServiceProfile,
)
from tests.optimizer.test_properties import graph_problems

DEAR = ClassCapacity("dear", 4.0, devices=10)
CHEAP = ClassCapacity("cheap", 1.0, devices=10)


def three_on_the_dear_class() -> Problem:
    """Three fragments run on the dear class; the cheap one serves each as well for a quarter of the price."""
    profiles = (ServiceProfile("dear", 10.0, 10.0), ServiceProfile("cheap", 10.0, 10.0))
    fragments = tuple(FragmentDemand(f"f{i}", "w", 5.0, profiles) for i in range(3))
    current = tuple(Assignment(f.fragment, "dear", 1, 1, 4.0) for f in fragments)
    return Problem((DEAR, CHEAP), fragments, headroom=1.0, current=current)


def changed(problem: Problem, plan: Plan) -> set[str]:
    now = {(a.fragment, a.device_class, a.replicas) for a in problem.current}
    then = {(a.fragment, a.device_class, a.replicas) for a in plan.assignments}
    return {f for f, _, _ in now ^ then}


def test_a_limit_moves_only_that_many_running_fragments():
    problem = three_on_the_dear_class()
    free = solve(problem)
    assert free.usd_per_hour == 3.0 and changed(problem, free) == {"f0", "f1", "f2"}
    limited = solve(replace(problem, max_changed_fragments=1))
    # One fragment moves to the cheap class ($1), two stay on the dear one ($4 each).
    assert limited.status is PlanStatus.optimal and limited.usd_per_hour == 9.0
    assert len(changed(problem, limited)) == 1 and check(replace(problem, max_changed_fragments=1), limited) == []
    still = solve(replace(problem, max_changed_fragments=0))
    assert still.usd_per_hour == 12.0 and changed(problem, still) == set()


def test_fragments_new_to_the_fleet_are_placed_regardless():
    problem = three_on_the_dear_class()
    new = FragmentDemand("new", "w", 5.0, (ServiceProfile("cheap", 10.0, 10.0),))
    plan = solve(replace(problem, fragments=(*problem.fragments, new), max_changed_fragments=0))
    assert plan.replicas_of("new") == {"cheap": 1}
    assert all(plan.replicas_of(f"f{i}") == {"dear": 1} for i in range(3))


def test_a_fragment_on_a_class_gone_from_the_fleet_must_change_and_the_limit_says_so():
    problem = three_on_the_dear_class()
    gone = replace(problem, device_classes=(replace(DEAR, devices=0), CHEAP), max_changed_fragments=1)
    plan = solve(gone)
    assert plan.status is PlanStatus.infeasible and plan.assignments == ()
    assert plan.infeasibility is Infeasibility.change_limit
    assert any("max_changed_fragments" in line and "at most 1 running fragments" in line for line in plan.diagnosis)
    assert solve(replace(gone, max_changed_fragments=3)).usd_per_hour == 3.0


def test_the_checker_counts_changed_fragments():
    problem = replace(three_on_the_dear_class(), max_changed_fragments=1)
    all_cheap = solve(replace(problem, max_changed_fragments=None))
    assert any("3 running fragments change" in v for v in check(problem, all_cheap))


def test_greedy_never_returns_a_plan_past_the_limit():
    problem = replace(three_on_the_dear_class(), device_classes=(replace(DEAR, devices=0), CHEAP),
                      max_changed_fragments=1)
    plan = greedy(problem)
    assert plan.status is PlanStatus.infeasible and "max_changed_fragments" in plan.diagnosis[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph_problems(), st.integers(0, 2))
def test_every_limited_plan_passes_the_checker(problem: Problem, limit: int) -> None:
    limited = replace(problem, max_changed_fragments=limit)
    for plan in (solve(limited), greedy(limited)):
        assert check(limited, plan) == []
