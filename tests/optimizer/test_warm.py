"""Warm re-solves: settled components keep what runs; changed ones are re-optimised."""

from dataclasses import replace

from optimizer.checker import check
from optimizer.prepare import prepare
from optimizer.solver import solve
from optimizer.types import ClassCapacity, Edge, FragmentDemand, PlanStatus, Problem, ServiceProfile, WorkloadSla
from optimizer.warm import neighbourhood

FLEET = (ClassCapacity("cheap", 1.0, 40, vendor="nvidia", fabric="nvlink"),
         ClassCapacity("fast", 3.0, 40, vendor="nvidia", fabric="nvlink"))


def chains(n: int = 6) -> Problem:
    """n workloads of two fragments each; cheap is slower, and each SLA leaves room for it."""
    frags, edges, slas = [], [], []
    for w in range(n):
        for j in range(2):
            frags.append(FragmentDemand(f"w{w}f{j}", f"w{w}", 3.0 + w,
                                        (ServiceProfile("cheap", 2.0, 40.0), ServiceProfile("fast", 5.0, 10.0))))
        edges.append(Edge(f"w{w}f0", f"w{w}f1", 1.0, 1e6))
        slas.append(WorkloadSla(f"w{w}", 100.0))
    return Problem(FLEET, tuple(frags), headroom=1.0, edges=tuple(edges), slas=tuple(slas), migration_cost_usd=0.5)


def test_only_the_changed_component_is_re_solved() -> None:
    cold = solve(chains())
    assert cold.status is PlanStatus.optimal
    changed = chains()
    changed = replace(changed, current=cold.assignments,
                      fragments=tuple(replace(f, demand_rps=f.demand_rps * 2) if f.fragment == "w0f1" else f
                                      for f in changed.fragments))
    hood = neighbourhood(changed, prepare(changed))
    assert hood is not None and {f.fragment for f in hood.problem.fragments} == {"w0f0", "w0f1"}
    # The fixed components' slices are taken out of the capacity the free one may use.
    used_by_fixed = sum(a.replicas * a.slices for a in hood.fixed if a.device_class == "cheap")
    assert hood.classes["cheap"].slices == 40 - used_by_fixed
    warm = solve(changed)
    assert check(changed, warm) == [] and warm.feasible
    assert {m.fragment for m in warm.moves} <= {"w0f0", "w0f1"} and warm.moves
    kept = {(a.fragment, a.device_class, a.replicas) for a in cold.assignments if not a.fragment.startswith("w0")}
    assert kept <= {(a.fragment, a.device_class, a.replicas) for a in warm.assignments}


def test_everything_changed_solves_the_whole_problem() -> None:
    cold = solve(chains())
    doubled = replace(chains(), current=cold.assignments,
                      fragments=tuple(replace(f, demand_rps=f.demand_rps * 2) for f in chains().fragments))
    assert neighbourhood(doubled, prepare(doubled)) is None
    plan = solve(doubled)
    assert check(doubled, plan) == [] and plan.status is PlanStatus.optimal


def test_a_fleet_that_shrank_under_what_runs_re_places_everything() -> None:
    cold = solve(chains())
    cheap_used = sum(a.replicas for a in cold.assignments if a.device_class == "cheap")
    shrunk = replace(chains(), current=cold.assignments,
                     device_classes=(replace(FLEET[0], devices=cheap_used - 1), FLEET[1]))
    assert neighbourhood(shrunk, prepare(shrunk)) is None
    plan = solve(shrunk)
    assert check(shrunk, plan) == [] and plan.feasible
