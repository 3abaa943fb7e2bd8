"""Prefill/decode disaggregation and per-workload TTFT/TPOT bounds."""

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.checker import check
from optimizer.greedy import greedy
from optimizer.perfmodel import estimate_profiles, kv_bytes_per_token, params_from_model_name
from optimizer.solver import solve
from optimizer.types import (
    Assignment,
    ClassCapacity,
    Edge,
    FragmentDemand,
    Phase,
    Plan,
    PlanStatus,
    Problem,
    ServiceProfile,
    WorkloadSla,
)
from tests.optimizer.test_properties import graph_problems

# "flops": cheap compute, slow memory; "bandwidth": cheap memory bandwidth, slow compute.
FLEET = (
    ClassCapacity("flops", 2.0, 8, vendor="nvidia", fabric="nvlink"),
    ClassCapacity("bandwidth", 2.0, 8, vendor="nvidia", fabric="nvlink"),
)


def llm(kv_bytes: float = 1e8, **kw) -> FragmentDemand:
    """Whole replicas are poor on both classes (each has one slow phase); pools are good on one each."""
    profiles = (
        ServiceProfile("flops", 1.0, 900.0, ttft_ms=50.0, tpot_ms=40.0),
        ServiceProfile("bandwidth", 1.0, 900.0, ttft_ms=400.0, tpot_ms=10.0),
        ServiceProfile("flops", 10.0, 50.0, phase=Phase.prefill),
        ServiceProfile("flops", 2.0, 800.0, phase=Phase.decode, tpot_ms=40.0),
        ServiceProfile("bandwidth", 1.5, 400.0, phase=Phase.prefill),
        ServiceProfile("bandwidth", 8.0, 200.0, phase=Phase.decode, tpot_ms=10.0),
    )
    return FragmentDemand("llm", "chat", 4.0, profiles, kv_bytes_per_request=kv_bytes, **kw)


def problem(*fragments: FragmentDemand, p99_ms: float = 5000.0, **sla) -> Problem:
    return Problem(FLEET, fragments or (llm(),), headroom=1.0, slas=(WorkloadSla("chat", p99_ms, **sla),))


def whole_only(p: Problem) -> Problem:
    return replace(p, fragments=tuple(replace(f, profiles=tuple(x for x in f.profiles if x.phase is Phase.whole))
                                      for f in p.fragments))


def pools(plan: Plan) -> dict[Phase, dict[str, int]]:
    return {phase: plan.replicas_of("llm", phase) for phase in Phase if plan.replicas_of("llm", phase)}


def test_split_pays_when_each_phase_has_a_cheaper_class() -> None:
    p = problem()
    plan = solve(p)
    assert check(p, plan) == []
    # prefill 4 rps / 10 per replica -> 1 on flops; decode 4 / 8 -> 1 on bandwidth; whole would need 4.
    assert pools(plan) == {Phase.prefill: {"flops": 1}, Phase.decode: {"bandwidth": 1}}
    assert plan.usd_per_hour == pytest.approx(4.0)
    assert solve(whole_only(p)).usd_per_hour == pytest.approx(8.0)
    assert plan.explanations["llm"].binding.startswith("split: prefill on flops, decode on bandwidth")
    # Own latency: prefill 50 + decode 200 + KV hand-off of 100 MB over the same fabric (2 ms + 0.01 ms).
    assert plan.predicted_p99_ms["chat"] == pytest.approx(252.01)


def test_kv_transfer_that_breaks_the_sla_keeps_both_pools_on_one_class() -> None:
    # 100 GB of KV cache at 50 GB/s is 2 s: the cross-class split (50 + 200 + 2000 ms) misses p99 1 s.
    # Both pools on flops (50 + 800 ms, 1 + 2 replicas) beat whole replicas (900 ms, 4 replicas).
    p = problem(llm(kv_bytes=1e11), p99_ms=1000.0)
    plan = solve(p)
    assert check(p, plan) == [] and plan.feasible
    assert pools(plan) == {Phase.prefill: {"flops": 1}, Phase.decode: {"flops": 2}}
    assert plan.usd_per_hour == pytest.approx(6.0)
    # Under 600 ms (the fastest one-class split, on bandwidth) nothing fits.
    tight = solve(problem(llm(kv_bytes=1e11), p99_ms=550.0))
    assert tight.status is PlanStatus.infeasible and tight.diagnosis


def test_same_class_pools_pay_no_hand_off() -> None:
    p = problem(llm(kv_bytes=1e10, pinned=("flops",)), p99_ms=1000.0)
    plan = solve(p)
    assert check(p, plan) == []
    # prefill 4 / 10 -> 1 replica, decode 4 / 2 -> 2: cheaper than 4 whole replicas; no transfer on one class.
    assert pools(plan) == {Phase.prefill: {"flops": 1}, Phase.decode: {"flops": 2}}
    assert plan.predicted_p99_ms["chat"] == pytest.approx(850.0)


def test_ttft_and_tpot_bounds_rule_out_classes() -> None:
    whole = whole_only(problem())
    # TTFT 100 ms rules out whole replicas on bandwidth (400 ms), TPOT 20 ms those on flops (40 ms).
    assert solve(replace(whole, slas=(WorkloadSla("chat", 5000.0, ttft_ms=100.0),))).replicas_of("llm") == {"flops": 4}
    assert solve(replace(whole, slas=(WorkloadSla("chat", 5000.0, tpot_ms=20.0),))).replicas_of("llm") == {
        "bandwidth": 4}
    both = replace(whole, slas=(WorkloadSla("chat", 5000.0, ttft_ms=100.0, tpot_ms=20.0),))
    plan = solve(both)
    assert plan.status is PlanStatus.infeasible
    assert any("TTFT on bandwidth 400 ms > workload 'chat' SLA 100 ms" in m
               and "TPOT on flops 40 ms > workload 'chat' SLA 20 ms" in m for m in plan.diagnosis), plan.diagnosis
    # With pools, the same bounds hold: prefill (TTFT 50 ms) on flops, decode (TPOT 10 ms) on bandwidth.
    p = problem(ttft_ms=100.0, tpot_ms=20.0)
    split = solve(p)
    assert check(p, split) == [] and pools(split) == {Phase.prefill: {"flops": 1}, Phase.decode: {"bandwidth": 1}}


def test_checker_rejects_broken_split_plans() -> None:
    p = problem(tpot_ms=20.0)
    good = solve(p)
    assert check(p, good) == []

    def with_assignments(*assignments: Assignment) -> Plan:
        return replace(good, assignments=assignments, usd_per_hour=sum(a.usd_per_hour for a in assignments),
                       lower_bound_usd_per_hour=0.0)

    mixed = with_assignments(*good.assignments, Assignment("llm", "bandwidth", 1, 1, 2.0))
    assert any("also has whole replicas" in v for v in check(p, mixed))
    short = with_assignments(Assignment("llm", "flops", 1, 1, 2.0, Phase.prefill))
    assert any("decode pool: serves 0" in v for v in check(p, short))
    slow = with_assignments(Assignment("llm", "flops", 1, 1, 2.0, Phase.prefill),
                            Assignment("llm", "flops", 2, 1, 4.0, Phase.decode))
    assert any("TPOT 40.0 ms > bound 20.0 ms" in v for v in check(p, slow))


def test_migration_cost_keeps_a_running_split() -> None:
    p = problem()
    first = solve(p)
    again = solve(replace(p, current=first.assignments, migration_cost_usd=1.0))
    assert pools(again) == pools(first) and again.moves == ()
    # Unsplitting moves are per phase: stopping pools and starting whole replicas.
    whole = solve(replace(whole_only(p), current=first.assignments, migration_cost_usd=1.0))
    assert {(m.phase, m.from_class, m.to_class) for m in whole.moves} >= {
        (Phase.prefill, "flops", None), (Phase.decode, "bandwidth", None)}


def test_estimated_llm_profiles_split_prefill_onto_compute_and_decode_onto_bandwidth() -> None:
    """With catalog estimates, a 70B chat model on H100 (compute) and H200 (bandwidth) at H100's
    price per GB/s favours decode on H200; the plan and its hand-off pass the checker."""
    model, t_in, t_out = "llama2-70b", 1155.0, 211.0
    kv = kv_bytes_per_token(params_from_model_name(model)) * t_in
    profiles = estimate_profiles("llm", model, t_in, t_out, phases=True)
    f = FragmentDemand("llm", "chat", 3.0, tuple(x for x in profiles if x.device_class in ("H100-SXM", "A100-80GB")),
                       kv_bytes_per_request=kv)
    fleet = (ClassCapacity("H100-SXM", 2.5, 64, vendor="nvidia", fabric="nvlink"),
             ClassCapacity("A100-80GB", 1.2, 64, vendor="nvidia", fabric="nvlink"))
    p = Problem(fleet, (f,), headroom=1.0, slas=(WorkloadSla("chat", 20_000.0, ttft_ms=400.0),))
    plan = solve(p)
    assert check(p, plan) == [] and plan.feasible
    # A100's prefill TTFT (~524 ms) is over 400 ms: whole replicas must be H100; a split may put decode on A100.
    assert not plan.replicas_of("llm").get("A100-80GB") and not plan.replicas_of("llm", Phase.prefill).get("A100-80GB")
    assert plan.usd_per_hour <= solve(whole_only(p)).usd_per_hour + 1e-9


def with_phases(draw, p: Problem) -> Problem:
    """Give some fragments prefill/decode profiles (and TTFT/TPOT), some SLAs TTFT/TPOT bounds, and
    some current placements pools."""
    fragments = []
    for f in p.fragments:
        if f.latency_bound_ms is not None or not draw(st.booleans()):
            fragments.append(f)
            continue
        extra = []
        for x in f.profiles:  # a pool replica does one phase, often several times as fast as a whole one
            if draw(st.booleans()):
                extra.append(ServiceProfile(x.device_class, x.throughput_rps * draw(st.integers(2, 8)),
                                            x.latency_ms * draw(st.integers(1, 9)) / 10, x.slices, phase=Phase.prefill))
            if draw(st.booleans()):
                extra.append(ServiceProfile(x.device_class, x.throughput_rps * draw(st.integers(2, 8)),
                                            x.latency_ms * draw(st.integers(1, 9)) / 10, x.slices, phase=Phase.decode,
                                            tpot_ms=draw(st.integers(5, 50)) * 1.0))
        whole = tuple(replace(x, ttft_ms=draw(st.integers(5, 100)) * 1.0, tpot_ms=draw(st.integers(5, 50)) * 1.0)
                      for x in f.profiles)
        fragments.append(replace(f, profiles=whole + tuple(extra), 
                                 demand_rps=max(x.throughput_rps for x in f.profiles) * draw(st.integers(1, 4)),
                                 kv_bytes_per_request=draw(st.sampled_from([0.0, 1e7, 1e9]))))
    slas = tuple(replace(s, ttft_ms=draw(st.sampled_from([None, None, 30.0, 80.0])),
                         tpot_ms=draw(st.sampled_from([None, None, 25.0])))
                 for s in p.slas)
    current = p.current + tuple(Assignment(f.fragment, x.device_class, 1, x.slices, 0.0, x.phase)
                                for f in fragments for x in f.profiles if x.phase is not Phase.whole and draw(st.booleans()))
    return replace(p, fragments=tuple(fragments), slas=slas, current=current)


@st.composite
def split_problems(draw):
    return with_phases(draw, draw(graph_problems()))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_problems())
def test_every_plan_with_pools_passes_the_checker(p: Problem) -> None:
    plan = solve(p)
    assert check(p, plan) == []
    fast = greedy(p)
    assert check(p, fast) == []
    if fast.feasible:  # greedy never splits; its plan is the hint, so solve is never dearer
        assert plan.feasible
        assert plan.usd_per_hour + plan.migration_usd_per_hour <= fast.usd_per_hour + fast.migration_usd_per_hour + 1e-4
    if plan.feasible:
        assert plan.lower_bound_usd_per_hour <= plan.usd_per_hour + 1e-9
    # Splitting can only help: the same problem without pools never costs less.
    if plan.status is PlanStatus.optimal:
        whole = solve(whole_only(p))
        if whole.status is PlanStatus.optimal:
            assert plan.usd_per_hour + plan.migration_usd_per_hour <= whole.usd_per_hour + whole.migration_usd_per_hour + 1e-4


def test_edges_into_a_split_fragment_count_transfers_from_every_class_it_uses() -> None:
    caller = FragmentDemand("app", "chat", 4.0, (ServiceProfile("bandwidth", 100.0, 1.0),), pinned=("bandwidth",))
    p = Problem(FLEET, (caller, llm()), headroom=1.0, edges=(Edge("app", "llm", 1.0, 5e9),),
                slas=(WorkloadSla("chat", 5000.0),))
    plan = solve(p)
    assert check(p, plan) == [] and plan.is_split("llm")
    # app on bandwidth, llm's prefill on flops: the 5 GB call crosses (100 ms) even though decode is co-located.
    assert plan.predicted_p99_ms["chat"] == pytest.approx(1.0 + 100.01 + 252.01)
