"""The baselines solve Mélange's ground exactly as described, on cases small enough to check by hand."""

import pytest

from optimizer.baselines import GpuOffer, best_single_class, graph_unaware, melange
from optimizer.checker import check
from optimizer.solver import solve
from optimizer.types import ClassCapacity, Edge, FragmentDemand, PlanStatus, Problem, ServiceProfile, WorkloadSla

SMALL = (0, 0)  # short requests
LONG = (5, 5)  # long requests

# A cheap GPU that is fast on short requests and useless on long ones, a dear one good at both.
CHEAP = GpuOffer("cheap", 1.0, {SMALL: 10.0, LONG: 0.1})
DEAR = GpuOffer("dear", 4.0, {SMALL: 20.0, LONG: 2.0})


def test_best_single_class_takes_the_cheapest_type_that_serves_everything():
    demand = {SMALL: 10.0, LONG: 2.0}
    # cheap: 10/10 + 2/0.1 = 21 GPUs = $21; dear: 10/20 + 2/2 = 1.5 -> 2 GPUs = $8.
    result = best_single_class(demand, [CHEAP, DEAR])
    assert (result.devices, result.usd_per_hour) == ({"dear": 2}, 8.0)


def test_melange_mixes_types_by_bucket():
    demand = {SMALL: 10.0, LONG: 2.0}
    # Short requests on one cheap GPU ($1), long on one dear GPU ($4): $5 < $8 for dear alone.
    result = melange(demand, [CHEAP, DEAR])
    assert result.optimal and (result.devices, result.usd_per_hour) == ({"cheap": 1, "dear": 1}, 5.0)


def test_melange_slices_a_bucket_across_types():
    # 15 req/s of short requests: one cheap GPU takes 10 (8 slices of 1.875 -> 5 slices = 9.375 req/s),
    # the rest would need a second GPU either way; two cheap GPUs ($2) beat one dear ($4).
    result = melange({SMALL: 15.0}, [CHEAP, DEAR])
    assert (result.devices, result.usd_per_hour) == ({"cheap": 2}, 2.0)


def test_an_unservable_bucket_is_a_clear_error():
    with pytest.raises(ValueError, match="bucket"):
        melange({(1, 1): 1.0}, [CHEAP])


# Graph-unaware placement, on heteroplane's own ground.

NV = ClassCapacity("nv", 4.0, devices=4, vendor="nvidia", fabric="nvlink")
AMD = ClassCapacity("amd", 2.0, devices=4, vendor="amd", fabric="infinity-fabric")


def heavy_edge_problem() -> Problem:
    # Alone, "a" is cheapest on nv and "b" on amd; split, the 400 MB edge costs 1 ms + 40 ms cross vendor.
    a = FragmentDemand("a", "w", 1.0, (ServiceProfile("nv", 2.0, 20.0), ServiceProfile("amd", 0.5, 25.0)))
    b = FragmentDemand("b", "w", 1.0, (ServiceProfile("nv", 2.0, 20.0), ServiceProfile("amd", 2.0, 25.0)))
    return Problem((NV, AMD), (a, b), edges=(Edge("a", "b", 1.0, 400e6),), slas=(WorkloadSla("w", 60.0),))


def test_graph_unaware_splits_a_heavy_edge_across_vendors_and_misses_the_sla():
    problem = heavy_edge_problem()
    # Budgets: 60 ms x 20 / 40 = 30 ms each, so both classes qualify for both fragments. Alone,
    # a costs $4 on nv (1 replica) vs $6 on amd (3 replicas); b costs $4 on nv vs $2 on amd.
    unaware = graph_unaware(problem)
    assert unaware.status is PlanStatus.feasible
    assert unaware.replicas_of("a") == {"nv": 1} and unaware.replicas_of("b") == {"amd": 1}
    assert unaware.usd_per_hour == pytest.approx(6.0)
    assert unaware.predicted_p99_ms["w"] == pytest.approx(20.0 + 41.0 + 25.0)
    assert any("p99" in v for v in check(problem, unaware))
    # Graph-aware keeps both on nv (20 + 20 ms, no transfer) for $8: dearer, but within the SLA.
    aware = solve(problem)
    assert check(problem, aware) == [] and aware.usd_per_hour == pytest.approx(8.0)


def test_graph_unaware_meets_the_sla_when_edges_are_light_and_respects_capacity():
    light = Problem((NV, ClassCapacity("amd", 2.0, devices=1, vendor="amd")),
                    (FragmentDemand("b", "w", 3.0, (ServiceProfile("nv", 2.0, 20.0), ServiceProfile("amd", 2.0, 25.0))),),
                    slas=(WorkloadSla("w", 60.0),))
    plan = graph_unaware(light)
    # 3.6 rps with headroom: the one amd device serves 2, the rest spills to one nv replica.
    assert plan.replicas_of("b") == {"amd": 1, "nv": 1} and check(light, plan) == []
