"""Properties on random agent graphs: the independent checker accepts every plan solve and greedy return."""

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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

VENDORS = st.sampled_from([("nvidia", "nvlink"), ("nvidia", "pcie"), ("amd", "infinity-fabric"), ("", "")])


@st.composite
def graph_problems(draw, devices=st.integers(2, 12)):
    """1-3 workloads of 1-4 fragments in a random tree, each with an SLA; pins, forbids, memory, a current."""
    classes = []
    for i in range(draw(st.integers(1, 3))):
        vendor, fabric = draw(VENDORS)
        classes.append(ClassCapacity(f"c{i}", draw(st.integers(50, 1000)) / 100, draw(devices),
                                     draw(st.sampled_from([1, 2])), vendor, fabric, draw(st.sampled_from([0.0, 80.0]))))
    frags, edges, slas = [], [], []
    for w in range(draw(st.integers(1, 3))):
        names = [f"w{w}f{j}" for j in range(draw(st.integers(1, 4)))]
        for j, name in enumerate(names):
            chosen = draw(st.lists(st.sampled_from(classes), min_size=1, max_size=len(classes), unique=True))
            profiles = tuple(ServiceProfile(c.device_class, draw(st.integers(1, 40)) / 2, draw(st.integers(1, 100)) * 1.0,
                                            draw(st.integers(1, c.slices_per_device))) for c in chosen)
            names_chosen = [c.device_class for c in chosen]
            pinned = tuple(draw(st.lists(st.sampled_from(names_chosen), max_size=1)))
            frags.append(FragmentDemand(
                name, f"w{w}", draw(st.integers(0, 40)) / 4, profiles, min_replicas=draw(st.integers(0, 2)),
                memory_gib_per_replica=draw(st.sampled_from([None, None, 10.0, 30.0])),
                pinned=pinned,
                forbidden=() if pinned else tuple(draw(st.lists(st.sampled_from(names_chosen), max_size=len(names_chosen) - 1))),
            ))
            if j:
                parent = names[draw(st.integers(0, j - 1))]
                edges.append(Edge(parent, name, draw(st.sampled_from([0.005, 0.3, 1.0, 1.5, 2.0])),
                                  draw(st.sampled_from([0.0, 1e6, 1e9])), concurrent=draw(st.booleans()),
                                  calls_p99=draw(st.sampled_from([None, None, 0.0, 3.0]))))
        slas.append(WorkloadSla(f"w{w}", draw(st.integers(50, 1500)) * 1.0))
    current = tuple(
        Assignment(f.fragment, p.device_class, draw(st.integers(1, 2)), p.slices, 0.0)
        for f in frags if draw(st.booleans()) for p in f.profiles[:1]
    )
    return Problem(tuple(classes), tuple(frags), draw(st.sampled_from([1.0, 1.2])), time_limit_s=5.0,
                   edges=tuple(edges), slas=tuple(slas), current=current,
                   migration_cost_usd=draw(st.sampled_from([0.0, 0.5, 5.0])))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph_problems())
def test_every_plan_passes_the_checker(problem: Problem) -> None:
    plan = solve(problem)
    assert check(problem, plan) == []
    assert plan.status is not PlanStatus.feasible or plan.lower_bound_usd_per_hour <= plan.usd_per_hour
    fast = greedy(problem)
    assert check(problem, fast) == []
    if fast.feasible:
        # The greedy plan is the hint, so the solver never returns anything dearer in its objective.
        assert plan.feasible
        assert plan.usd_per_hour + plan.migration_usd_per_hour <= fast.usd_per_hour + fast.migration_usd_per_hour + 1e-4
    if not plan.feasible:
        assert plan.diagnosis and not fast.feasible


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph_problems(devices=st.just(1000)), st.floats(min_value=0.05, max_value=0.95))
def test_sla_tighter_than_the_best_path_is_infeasible(problem: Problem, fraction: float) -> None:
    """With each workload's p99 set below its fastest possible path, no plan may come back."""
    loose = solve(Problem(problem.device_classes, problem.fragments, problem.headroom, 5.0, problem.edges,
                          tuple(WorkloadSla(s.workload, 1e9) for s in problem.slas)))
    if not loose.feasible:
        return  # infeasible for other reasons (pins against memory, ...): covered above
    best = _fastest_paths(problem)
    tight = Problem(problem.device_classes, problem.fragments, problem.headroom, 5.0, problem.edges,
                    tuple(WorkloadSla(s.workload, best[s.workload] * fraction) for s in problem.slas[:1])
                    + problem.slas[1:])
    for plan in (solve(tight), greedy(tight)):
        assert plan.status is PlanStatus.infeasible and plan.assignments == ()
        assert any(f"workload '{tight.slas[0].workload}'" in m for m in plan.diagnosis)


def _fastest_paths(problem: Problem) -> dict[str, float]:
    """Per workload, the worst path with every fragment on its fastest class and no transfers,
    a lower bound on any plan's p99 (the test's own arithmetic, apart from the optimizer's)."""
    fastest = {f.fragment: min(p.latency_ms for p in f.profiles) for f in problem.fragments}
    children: dict[str, list[Edge]] = {}
    for e in problem.edges:
        children.setdefault(e.parent, []).append(e)

    def at_tail(e: Edge) -> int:  # calls a p99 visit makes
        if e.calls_p99 is not None:
            return math.ceil(e.calls_p99)
        return 0 if e.calls_per_parent_call <= 0.01 else math.ceil(e.calls_per_parent_call)

    def down(f: str) -> float:
        calls = [(e, n) for e in children.get(f, ()) if (n := at_tail(e))]
        in_turn = sum(n * down(e.child) for e, n in calls if not e.concurrent)
        side_by_side = max((down(e.child) for e, _ in calls if e.concurrent), default=0.0)
        return fastest[f] + in_turn + side_by_side

    called = {e.child for e in problem.edges}
    return {s.workload: max(down(f.fragment) for f in problem.fragments
                            if f.workload == s.workload and f.fragment not in called) for s in problem.slas}
