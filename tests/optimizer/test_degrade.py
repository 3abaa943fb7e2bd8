"""The degraded fallback: the best plan by priority when no plan meets every SLA, checked apart
from the code that made it (optimizer.checker on the relaxed problem), with its shortfalls."""

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.checker import check
from optimizer.degrade import degrade
from optimizer.reasons import describe
from optimizer.solver import solve
from optimizer.types import (
    ClassCapacity,
    Edge,
    FragmentDemand,
    PlanStatus,
    Priority,
    Problem,
    ServiceProfile,
    ShortfallCause,
    ShortfallKind,
    WorkloadSla,
)

L40S = ClassCapacity("L40S", 1.861, devices=2)
H100 = ClassCapacity("H100-SXM", 6.88, devices=1)
# One L40S replica: 4 rps in 100 ms; one H100 replica: 12 rps in 40 ms.
SLOW = ServiceProfile("L40S", throughput_rps=4.0, latency_ms=100.0)
FAST = ServiceProfile("H100-SXM", throughput_rps=12.0, latency_ms=40.0)


def degraded(problem: Problem):
    """degrade() of a problem `solve` finds infeasible, with the independent check on the relaxed problem."""
    assert not solve(problem).feasible
    result = degrade(problem)
    assert result.plan.status is PlanStatus.degraded
    assert check(result.problem, result.plan) == []
    return result


def served_rps(plan, problem: Problem, fragment: str) -> float:
    f = next(f for f in problem.fragments if f.fragment == fragment)
    by_class = {p.device_class: p.throughput_rps for p in f.profiles}
    return sum(a.replicas * by_class[a.device_class] for a in plan.assignments if a.fragment == fragment)


def test_batch_is_shed_first_and_realtime_keeps_its_sla() -> None:
    # Realtime chat: 12 rps within 50 ms, only the one H100 is fast enough (1 replica = 12 rps).
    # Batch docs: 16 rps, any class. Together: H100 taken by chat, docs gets the 2 L40S = 8 rps:
    # served 8 of 16 (phi = 1/2 on the grid), and it would need 4 L40S devices, 2 healthy, +2 x $1.861/h.
    chat = FragmentDemand("chat", "rt", 12.0, (SLOW, FAST))
    docs = FragmentDemand("docs", "bt", 16.0, (SLOW, FAST))
    problem = Problem((L40S, H100), (chat, docs), headroom=1.0, time_limit_s=3,
                      slas=(WorkloadSla("rt", 50.0), WorkloadSla("bt", 500.0)), batch_workloads=("bt",))
    result = degraded(problem)
    assert result.plan.replicas_of("chat") == {"H100-SXM": 1}
    assert result.plan.predicted_p99_ms["rt"] == pytest.approx(40.0)
    assert served_rps(result.plan, result.problem, "docs") == pytest.approx(8.0)
    (short,) = result.plan.shortfalls
    assert (short.workload, short.priority, short.kind, short.cause) == (
        "bt", Priority.batch, ShortfallKind.demand, ShortfallCause.shed)
    assert (short.served_rps, short.demand_rps) == (8.0, 16.0)
    assert (short.device_class, short.devices_needed, short.devices_healthy) == ("L40S", 4, 2)
    assert short.extra_usd_per_hour == pytest.approx(2 * 1.861)
    assert describe(short, "globex/doc-pipeline") == (
        "globex/doc-pipeline (batch): serving 8 requests/s of 16 requests/s demanded; batch is shed first so that "
        "realtime workloads are served; serving it all needs 4 L40S devices, 2 healthy (+$3.72/h)")


def test_batch_is_queued_before_it_is_shed() -> None:
    # docs' 50 ms SLA needs the H100, which chat holds; on the L40S (8 rps >= its 8 rps) it is served
    # in full at 100 ms: queued, not shed.
    chat = FragmentDemand("chat", "rt", 12.0, (SLOW, FAST))
    docs = FragmentDemand("docs", "bt", 8.0, (SLOW, FAST))
    problem = Problem((L40S, H100), (chat, docs), headroom=1.0, time_limit_s=3,
                      slas=(WorkloadSla("rt", 50.0), WorkloadSla("bt", 50.0)), batch_workloads=("bt",))
    result = degraded(problem)
    assert result.plan.replicas_of("docs") == {"L40S": 2}
    (short,) = result.plan.shortfalls
    assert (short.kind, short.cause, short.predicted_p99_ms, short.sla_p99_ms) == (
        ShortfallKind.latency, ShortfallCause.queued, 100.0, 50.0)


def test_an_sla_no_class_meets_says_predicted_against_sla_in_ms() -> None:
    # a -> b: 40 + 40 = 80 ms on the fastest class, against a 60 ms SLA: relaxed to the best path,
    # served as fast as the fleet can (both on the H100).
    big_h100 = replace(H100, devices=2)
    problem = Problem((L40S, big_h100), (FragmentDemand("a", "rt", 4.0, (SLOW, FAST)),
                                         FragmentDemand("b", "rt", 4.0, (SLOW, FAST))),
                      headroom=1.0, time_limit_s=3, edges=(Edge("a", "b"),), slas=(WorkloadSla("rt", 60.0),))
    result = degraded(problem)
    assert result.plan.replicas_of("a") == {"H100-SXM": 1} and result.plan.replicas_of("b") == {"H100-SXM": 1}
    (short,) = result.plan.shortfalls
    assert (short.kind, short.cause) == (ShortfallKind.latency, ShortfallCause.no_fast_class)
    assert describe(short, "acme/rag-chatbot") == (
        "acme/rag-chatbot (realtime): predicted p99 80 ms vs SLA 60 ms; no device class of this fleet is fast "
        "enough (the fastest placement gives 80 ms)")


def test_realtime_is_shed_only_once_batch_is_gone() -> None:
    # chat needs 24 rps but the fleet serves 12 + 8 = 20 at most: batch docs goes to 0, chat's SLA
    # is dropped (the L40S are too slow for it), then chat is shed to the largest grid fraction that
    # fits: floor(64 x 20 / 24) = 53, 53/64 x 24 = 19.875 rps.
    chat = FragmentDemand("chat", "rt", 24.0, (SLOW, FAST))
    docs = FragmentDemand("docs", "bt", 4.0, (SLOW, FAST))
    problem = Problem((L40S, H100), (chat, docs), headroom=1.0, time_limit_s=5,
                      slas=(WorkloadSla("rt", 50.0),), batch_workloads=("bt",))
    result = degraded(problem)
    assert served_rps(result.plan, result.problem, "docs") == 0
    assert served_rps(result.plan, result.problem, "chat") == pytest.approx(20.0)
    causes = {s.workload: (s.kind, s.cause) for s in result.plan.shortfalls}
    assert causes == {"bt": (ShortfallKind.demand, ShortfallCause.shed),
                      "rt": (ShortfallKind.demand, ShortfallCause.capacity)}
    rt = next(s for s in result.plan.shortfalls if s.workload == "rt")
    assert rt.served_rps == pytest.approx(24.0 * 53 / 64)


def test_a_fragment_no_class_can_run_is_shed_alone() -> None:
    ghost = FragmentDemand("ghost", "rt2", 1.0, (ServiceProfile("MI300X", 5.0, 10.0),))
    chat = FragmentDemand("chat", "rt", 12.0, (SLOW, FAST))
    problem = Problem((L40S, H100), (chat, ghost), headroom=1.0, time_limit_s=3, slas=(WorkloadSla("rt", 50.0),))
    result = degraded(problem)
    assert result.plan.replicas_of("chat") == {"H100-SXM": 1}
    (short,) = result.plan.shortfalls
    assert (short.workload, short.cause, short.served_rps) == ("rt2", ShortfallCause.no_class, 0.0)
    assert "no healthy device class can run one of its fragments" in describe(short, "rt2")


@st.composite
def fleets(draw):
    """Two workloads (one realtime, one batch) with random demand on a random small fleet."""
    l40s = draw(st.integers(0, 4))
    h100 = draw(st.integers(0, 2))
    chat = FragmentDemand("chat", "rt", draw(st.floats(1.0, 40.0)), (SLOW, FAST))
    docs = FragmentDemand("docs", "bt", draw(st.floats(1.0, 40.0)), (SLOW, FAST))
    p99 = draw(st.sampled_from([50.0, 150.0]))
    return Problem((replace(L40S, devices=l40s), replace(H100, devices=h100)), (chat, docs), headroom=1.0,
                   time_limit_s=3, slas=(WorkloadSla("rt", p99), WorkloadSla("bt", 50.0)), batch_workloads=("bt",))


def _shed(result, workload: str) -> float:
    return next((1 - s.served_rps / s.demand_rps for s in result.plan.shortfalls
                 if s.workload == workload and s.kind is ShortfallKind.demand), 0.0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_realtime_is_never_shed_while_batch_is_served(problem: Problem) -> None:
    if solve(problem).feasible:
        return
    result = degrade(problem)
    assert check(result.problem, result.plan) == []
    if _shed(result, "rt") > 0:
        assert served_rps(result.plan, result.problem, "docs") == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.integers(1, 3))
def test_shedding_never_grows_when_the_fleet_grows(problem: Problem, more: int) -> None:
    if solve(problem).feasible:
        return
    bigger = replace(problem, device_classes=tuple(replace(c, devices=c.devices + more)
                                                   for c in problem.device_classes))
    small, large = degrade(problem), degrade(bigger) if not solve(bigger).feasible else None
    for workload in ("rt", "bt"):
        assert (_shed(large, workload) if large else 0.0) <= _shed(small, workload) + 1e-9
