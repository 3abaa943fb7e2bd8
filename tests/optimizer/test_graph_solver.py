"""Graph-aware placement: pins, forbids, memory, SLAs along the call graph, migration, explanations."""

import pytest

from optimizer.checker import check
from optimizer.greedy import greedy
from optimizer.solver import solve
from optimizer.transfer import Link, TransferModel, link
from optimizer.types import (
    Assignment,
    ClassCapacity,
    Edge,
    FragmentDemand,
    Plan,
    PlanStatus,
    Problem,
    ReplicaMove,
    ServiceProfile,
    WorkloadSla,
)

# Fast, dear H100 ($6.88, 12 rps in 50 ms) and slow, cheap L40S ($1.861, 4 rps in 100 ms).
H100 = ClassCapacity("H100", 6.88, devices=4, vendor="nvidia", fabric="nvlink", memory_gib_per_device=80.0)
L40S = ClassCapacity("L40S", 1.861, devices=8, vendor="nvidia", fabric="pcie", memory_gib_per_device=48.0)
MI300X = ClassCapacity("MI300X", 6.0, devices=4, vendor="amd", fabric="infinity-fabric", memory_gib_per_device=192.0)
FAST, SLOW = ServiceProfile("H100", 12.0, 50.0), ServiceProfile("L40S", 4.0, 100.0)


def frag(name: str, demand: float = 3.0, *profiles: ServiceProfile, **kw) -> FragmentDemand:
    return FragmentDemand(name, "w", demand, profiles or (FAST, SLOW), **kw)


def solved(problem: Problem) -> Plan:
    plan = solve(problem)
    assert check(problem, plan) == []
    return plan


def test_transfer_model_prices_links_by_fabric_pair() -> None:
    model = TransferModel()
    assert link(H100, H100) is Link.same_class and model.ms(1e9, H100, H100) == 0
    # Same vendor, different fabric: 0.05 ms + 1 GB / 25 GB/s = 40.05 ms.
    assert link(H100, L40S) is Link.cross_fabric and model.ms(1e9, H100, L40S) == pytest.approx(40.05)
    # Cross vendor through host memory: 1 ms penalty + 1 GB / 10 GB/s = 101 ms.
    assert link(H100, MI300X) is Link.cross_vendor and model.ms(1e9, H100, MI300X) == pytest.approx(101.0)
    b200 = ClassCapacity("B200", 10.0, 1, vendor="nvidia", fabric="nvlink")
    assert link(H100, b200) is Link.same_fabric and model.ms(0, H100, b200) == pytest.approx(0.01)


def test_pin_and_forbid_override_price() -> None:
    # Alone, 3 x 1.2 = 3.6 rps fits one L40S ($1.861); pinned to H100 it pays $6.88.
    pinned = solved(Problem((H100, L40S), (frag("a", pinned=("H100",)),)))
    assert pinned.replicas_of("a") == {"H100": 1}
    assert pinned.explanations["a"].binding == "pinned to H100"
    forbidden = solved(Problem((H100, L40S), (frag("a", forbidden=("L40S",)),)))
    assert forbidden.replicas_of("a") == {"H100": 1}


def test_memory_that_does_not_fit_excludes_the_class() -> None:
    # 60 GiB per replica: an L40S has 48 GiB, so the fragment goes to the H100 (80 GiB).
    plan = solved(Problem((H100, L40S), (frag("a", memory_gib_per_replica=60.0),)))
    assert plan.replicas_of("a") == {"H100": 1}
    none_fit = solve(Problem((L40S,), (frag("a", memory_gib_per_replica=60.0),)))
    assert not none_fit.feasible and "needs 60 GiB but L40S gives it 48 GiB" in none_fit.diagnosis[0]


def test_sla_along_the_path_counts_calls_and_transfers() -> None:
    # a calls b (L40S only) twice per visit, 1 MB each. All on L40S: 100 + 2 x 100 = 300 ms > 260.
    # a on H100: 50 + 2 x (0.09 transfer + 100) = 250.18 ms <= 260 for 6.88 + 1.861.
    problem = Problem((H100, L40S), (frag("a"), frag("b", 3.0, SLOW)), edges=(Edge("a", "b", 2.0, 1e6),),
                      slas=(WorkloadSla("w", 260.0),))
    plan = solved(problem)
    assert plan.replicas_of("a") == {"H100": 1} and plan.replicas_of("b") == {"L40S": 1}
    assert plan.predicted_p99_ms == {"w": pytest.approx(250.18)}
    assert plan.explanations["a"].binding == "latency bound of workload w"
    assert plan.explanations["a"].runner_up == "L40S"
    assert plan.explanations["a"].runner_up_delta_usd_per_hour == pytest.approx(1.861 - 6.88)
    assert plan.explanations["b"].binding == "cheapest per throughput"
    assert plan.cost_breakdown.by_class == {"H100": pytest.approx(6.88), "L40S": pytest.approx(1.861)}
    assert plan.cost_breakdown.by_workload == {"w": pytest.approx(6.88 + 1.861)}


def test_heavy_edge_pulls_both_ends_onto_one_class() -> None:
    # 1 GB per call: a cross-vendor hop costs 101 ms. b only runs on MI300X and a is cheapest
    # on L40S, but 100 + 101 + 50 > 200 ms, so a joins b on MI300X: 50 + 50 = 100 ms.
    b_amd = ServiceProfile("MI300X", 12.0, 50.0)
    problem = Problem((L40S, MI300X), (frag("a", 3.0, SLOW, b_amd), frag("b", 3.0, b_amd)),
                      edges=(Edge("a", "b", 1.0, 1e9),), slas=(WorkloadSla("w", 200.0),))
    plan = solved(problem)
    assert plan.replicas_of("a") == {"MI300X": 1}
    assert plan.predicted_p99_ms["w"] == pytest.approx(100.0)
    graph_blind = solved(Problem(problem.device_classes, problem.fragments))
    assert graph_blind.replicas_of("a") == {"L40S": 1}


def test_sla_beyond_the_best_path_is_diagnosed_by_how_much() -> None:
    # Fastest: 50 + 50 = 100 ms > 80 ms by 20 ms.
    problem = Problem((H100, L40S), (frag("a"), frag("b")), edges=(Edge("a", "b"),), slas=(WorkloadSla("w", 80.0),))
    for plan in (solve(problem), greedy(problem)):
        assert plan.status is PlanStatus.infeasible and plan.assignments == ()
        assert plan.diagnosis == ("workload 'w': predicted p99 at best 100 ms vs SLA 80 ms: no device class of this "
                                  "fleet is fast enough, even with every fragment on its fastest class "
                                  "(slowest path: a -> b)",)


def test_sla_that_capacity_cannot_hold_is_diagnosed() -> None:
    # Each fragment alone meets 60 ms only on H100; one H100 device, two fragments each needing one.
    one_h100 = ClassCapacity("H100", 6.88, devices=1)
    problem = Problem((one_h100, L40S), (frag("a", 9.0), FragmentDemand("b", "v", 9.0, (FAST, SLOW))),
                      slas=(WorkloadSla("w", 60.0), WorkloadSla("v", 60.0)))
    plan = solve(problem)
    assert not plan.feasible and check(problem, plan) == []
    assert "the device classes fast enough are too few for all of these workloads at once" in plan.diagnosis[0]
    assert "slack" not in plan.diagnosis[0]  # each SLA has slack alone: that is not why


def test_cycle_is_diagnosed() -> None:
    problem = Problem((L40S,), (frag("a", 1.0, SLOW), frag("b", 1.0, SLOW)),
                      edges=(Edge("a", "b"), Edge("b", "a")), slas=(WorkloadSla("w", 1000.0),))
    plan = solve(problem)
    assert not plan.feasible and "cycle" in plan.diagnosis[0]


def test_migration_cost_keeps_the_current_placement() -> None:
    # Moving a from H100 to L40S saves 6.88 - 1.861 = $5.019/h; a move costs $8/h here, so it stays.
    current = (Assignment("a", "H100", 1, 1, 6.88),)
    stay = solved(Problem((H100, L40S), (frag("a"),), current=current, migration_cost_usd=8.0))
    assert stay.replicas_of("a") == {"H100": 1} and stay.moves == ()
    assert stay.explanations["a"].binding == "migration cost"
    go = solved(Problem((H100, L40S), (frag("a"),), current=current, migration_cost_usd=4.0))
    assert go.replicas_of("a") == {"L40S": 1}
    assert go.moves == (ReplicaMove("a", "H100", "L40S", 1),) and go.migration_usd_per_hour == pytest.approx(4.0)


def test_capacity_is_named_as_binding() -> None:
    # 2 x 4 rps L40S serve one fragment's 7.2 rps; the other must take an H100.
    two_l40s = ClassCapacity("L40S", 1.861, devices=2)
    plan = solved(Problem((H100, two_l40s), (frag("a", 6.0), frag("b", 6.0))))
    bindings = sorted(e.binding for e in plan.explanations.values())
    assert bindings == ["capacity of L40S", "cheapest per throughput"]


def test_tie_break_prefers_one_class_per_fragment() -> None:
    # Two 4 rps replicas at $1 each, on either of two equally priced classes: 1 class, not 2.
    a = ClassCapacity("A", 1.0, devices=4)
    b = ClassCapacity("B", 1.0, devices=4)
    f = FragmentDemand("f", "w", 6.0, (ServiceProfile("A", 4.0, 10.0), ServiceProfile("B", 4.0, 10.0)))
    plan = solved(Problem((a, b), (f,)))
    assert len(plan.replicas_of("f")) == 1 and sum(plan.replicas_of("f").values()) == 2


def test_a_child_called_on_some_visits_counts_in_full_at_the_p99() -> None:
    # The agent: 100 ms, always calls search (600 ms), on 30% of visits a tool (2,000 ms),
    # one after another. A tool-calling visit takes 2,700 ms: a 1,000 ms SLA cannot be met (the
    # mean-weighted max predicted 700 ms and planned it as met); 3,000 ms can.
    def one(name: str, ms: float) -> FragmentDemand:
        return frag(name, 1.0, ServiceProfile("H100", 12.0, ms))

    fragments = (one("agent", 100.0), one("search", 600.0), one("tool", 2000.0))
    edges = (Edge("agent", "search", 1.0), Edge("agent", "tool", 0.3))
    tight = Problem((H100,), fragments, edges=edges, slas=(WorkloadSla("w", 1000.0),))
    plan = solve(tight)
    assert plan.status is PlanStatus.infeasible and "predicted p99 at best 2,700 ms vs SLA 1,000 ms" in " ".join(plan.diagnosis)
    loose = Problem((H100,), fragments, edges=edges, slas=(WorkloadSla("w", 3000.0),))
    assert solved(loose).predicted_p99_ms == {"w": pytest.approx(2700.0)}
    # Called concurrently, the slower of the two sets the pace: 100 + 2,000 ms.
    side_by_side = tuple(Edge(e.parent, e.child, e.calls_per_parent_call, concurrent=True) for e in edges)
    together = Problem((H100,), fragments, edges=side_by_side, slas=(WorkloadSla("w", 2100.0),))
    assert solved(together).predicted_p99_ms == {"w": pytest.approx(2100.0)}
