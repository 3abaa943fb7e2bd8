"""The CP-SAT placement: concrete cases with their arithmetic, and properties on random fleets."""

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.checker import check
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

H100 = ClassCapacity("H100-SXM", 6.88, devices=2, slices_per_device=7)
L40S = ClassCapacity("L40S", 1.861, devices=4)
# A whole-H100 replica serves 12 rps in 50 ms; an L40S replica serves 4 rps in 100 ms.
WHOLE_H100 = ServiceProfile("H100-SXM", throughput_rps=12.0, latency_ms=50.0, slices=7)
ONE_L40S = ServiceProfile("L40S", throughput_rps=4.0, latency_ms=100.0, slices=1)


def fragment(name: str, demand: float, *profiles: ServiceProfile, **kw) -> FragmentDemand:
    return FragmentDemand(name, "wl", demand, tuple(profiles), **kw)


def solved(problem: Problem) -> Plan:
    plan = solve(problem)
    assert check(problem, plan) == []
    return plan


def test_empty_problem_is_an_optimal_empty_plan() -> None:
    plan = solved(Problem((H100,), ()))
    assert plan.status is PlanStatus.optimal and plan.assignments == () and plan.usd_per_hour == 0


def test_fragment_goes_where_it_is_cheapest() -> None:
    # Needs 10 x 1.2 = 12 rps: 1 whole H100 = $6.88/h, 3 L40S = 3 x 1.861 = $5.583/h.
    plan = solved(Problem((H100, L40S), (fragment("chat", 10.0, WHOLE_H100, ONE_L40S),)))
    assert plan.status is PlanStatus.optimal
    assert plan.assignments == (Assignment("chat", "L40S", 3, 1, pytest.approx(5.583)),)
    assert plan.usd_per_hour == pytest.approx(5.583)
    assert plan.gap == pytest.approx(0.0)


def test_exact_demand_needs_no_extra_replica() -> None:
    # 100 x 1.2 = 120 rps at 12 rps a replica is exactly 10 replicas, not 11 from float noise.
    big_l40s = ClassCapacity("L40S", 1.861, devices=20)
    plan = solved(Problem((big_l40s,), (fragment("f", 100.0, ServiceProfile("L40S", 12.0, 10.0)),)))
    assert plan.replicas_of("f") == {"L40S": 10}


def test_capacity_limited_cheap_class_spills_to_the_next() -> None:
    # 12 rps needed. L40S: 4 rps for $1.861 ($0.465 per rps) but only 2 devices -> 8 rps.
    # A 1-slice H100 MIG replica rented by the slice: 1.5 rps for 6.88 / 7 = $0.983. The rest (4 rps)
    # takes ceil(4 / 1.5) = 3 slices: 2 x 1.861 + 3 x 0.983 = $6.670/h, cheaper than a whole-H100 plan.
    mig = ServiceProfile("H100-SXM", throughput_rps=1.5, latency_ms=60.0, slices=1)
    small_l40s = ClassCapacity("L40S", 1.861, devices=2)
    by_slice = replace(H100, sold_by_slice=True)
    plan = solved(Problem((by_slice, small_l40s), (fragment("chat", 10.0, mig, ONE_L40S),)))
    assert plan.replicas_of("chat") == {"L40S": 2, "H100-SXM": 3}
    assert plan.usd_per_hour == pytest.approx(2 * 1.861 + 3 * 6.88 / 7)


def test_a_device_sold_whole_costs_whole_once_any_slice_is_used() -> None:
    # The same fragment when H100s are paid per device: 3 slices cost a whole $6.88 device, so
    # 2 L40S + 1 device = $10.602 loses to 1 L40S (4 rps) + 6 slices of one device (9 rps) =
    # 1.861 + 6.88 = $8.741; 2 devices alone (7 + 1 slices) would be $13.76.
    mig = ServiceProfile("H100-SXM", throughput_rps=1.5, latency_ms=60.0, slices=1)
    small_l40s = ClassCapacity("L40S", 1.861, devices=2)
    plan = solved(Problem((H100, small_l40s), (fragment("chat", 10.0, mig, ONE_L40S),)))
    assert plan.replicas_of("chat") == {"L40S": 1, "H100-SXM": 6}
    assert plan.devices_used == {"L40S": 1, "H100-SXM": 1}
    assert plan.usd_per_hour == pytest.approx(1.861 + 6.88)
    assert plan.cost_breakdown.idle_by_class == {"H100-SXM": pytest.approx(6.88 / 7)}


def test_latency_bound_excludes_the_slow_class() -> None:
    # L40S answers in 100 ms > 80 ms bound: the fragment pays $6.88/h for one H100 instead.
    plan = solved(Problem((H100, L40S), (fragment("chat", 10.0, WHOLE_H100, ONE_L40S, latency_bound_ms=80.0),)))
    assert plan.replicas_of("chat") == {"H100-SXM": 1}
    assert plan.usd_per_hour == pytest.approx(6.88)


def test_min_replicas_hold_without_demand() -> None:
    plan = solved(Problem((H100, L40S), (fragment("idle", 0.0, WHOLE_H100, ONE_L40S, min_replicas=2),)))
    assert plan.replicas_of("idle") == {"L40S": 2}


def test_measured_profile_beats_the_estimate() -> None:
    # The estimate says 4 rps per L40S (3 replicas); telemetry measured 2 rps: 6 replicas.
    measured = ServiceProfile("L40S", throughput_rps=2.0, latency_ms=100.0, measured=True)
    big_l40s = ClassCapacity("L40S", 1.861, devices=10)
    plan = solved(Problem((big_l40s,), (fragment("chat", 10.0, ONE_L40S, measured),)))
    assert plan.replicas_of("chat") == {"L40S": 6}


def test_several_fragments_share_capacity() -> None:
    # Each needs 12 rps; 4 L40S give 16 rps in all, so one fragment takes 3 L40S and the other a
    # whole H100 (the cheaper way to split: 3 x 1.861 + 6.88 = $12.463/h).
    frags = (fragment("a", 10.0, WHOLE_H100, ONE_L40S), fragment("b", 10.0, WHOLE_H100, ONE_L40S))
    plan = solved(Problem((H100, L40S), frags))
    assert plan.usd_per_hour == pytest.approx(3 * 1.861 + 6.88)
    assert sorted(sum(plan.replicas_of(f).values()) for f in ("a", "b")) == [1, 3]


def test_same_problem_same_cost() -> None:
    # Needs 1, 2, 2 and 2 L40S (3.6, 4.8, 6.0, 7.2 rps at 4 rps each) but 6 fit: one of the
    # 2-replica fragments moves to an H100: 5 x 1.861 + 6.88 = $16.185/h, every time.
    frags = tuple(fragment(f"f{i}", 3.0 + i, WHOLE_H100, ONE_L40S) for i in range(4))
    problem = Problem((H100, ClassCapacity("L40S", 1.861, devices=6)), frags, time_limit_s=2.0)
    first, second = solved(problem), solved(problem)
    assert first.status is second.status is PlanStatus.optimal
    assert first.usd_per_hour == pytest.approx(second.usd_per_hour) == pytest.approx(5 * 1.861 + 6.88)


def test_too_tight_latency_bound_is_diagnosed() -> None:
    plan = solve(Problem((H100, L40S), (fragment("chat", 10.0, WHOLE_H100, ONE_L40S, latency_bound_ms=20.0),)))
    assert plan.status is PlanStatus.infeasible and plan.assignments == ()
    (message,) = plan.diagnosis
    assert "'chat'" in message
    assert "latency bound too tight: best latency 50 ms (on H100-SXM) > bound 20 ms" in message


def test_profile_only_on_classes_outside_the_fleet_is_diagnosed() -> None:
    plan = solve(Problem((L40S,), (fragment("chat", 1.0, WHOLE_H100),)))
    assert not plan.feasible
    assert "not in the fleet (H100-SXM)" in plan.diagnosis[0]


def test_demand_beyond_the_whole_fleet_is_diagnosed() -> None:
    # 100 x 1.2 = 120 rps; the fleet serves at most 2 x 12 + 4 x 4 = 40 rps of it.
    plan = solve(Problem((H100, L40S), (fragment("chat", 100.0, WHOLE_H100, ONE_L40S),)))
    assert not plan.feasible
    assert "needs 120 requests/s" in plan.diagnosis[0] and "at most 40 requests/s" in plan.diagnosis[0]


def test_joint_shortage_names_the_short_class() -> None:
    # Each fragment alone needs 12 / 4 = 3 L40S; together 6 > 4 devices: short by 2.
    frags = (fragment("a", 10.0, ONE_L40S), fragment("b", 10.0, ONE_L40S))
    plan = solve(Problem((L40S,), frags))
    assert not plan.feasible and check(Problem((L40S,), frags), plan) == []
    assert plan.infeasibility is Infeasibility.proven  # a caller may degrade (optimizer.degrade) on it
    assert any("'L40S' is short by 2 devices" in m and "need 6 devices" in m and "it has 4 healthy" in m
               for m in plan.diagnosis), plan.diagnosis


def test_bad_input_is_rejected_naming_the_field() -> None:
    with pytest.raises(ValueError, match="fragments\\[\\].fragment must be unique; duplicated: a"):
        solve(Problem((L40S,), (fragment("a", 1.0, ONE_L40S), fragment("a", 2.0, ONE_L40S))))
    with pytest.raises(ValueError, match="demand_rps"):
        solve(Problem((L40S,), (fragment("a", -1.0, ONE_L40S),)))


def test_checker_catches_violations() -> None:
    problem = Problem((L40S,), (fragment("chat", 10.0, ONE_L40S, latency_bound_ms=50.0),))
    plan = Plan(PlanStatus.feasible, (Assignment("chat", "L40S", 5, 1, 1.0), Assignment("x", "B200", 1, 1, 1.0)),
                usd_per_hour=2.0, devices_used={"L40S": 5})
    violations = check(problem, plan)
    assert any("unknown fragment" in v for v in violations)
    assert any("unknown device class" in v for v in violations)
    assert any("claims 5 devices but has 4 healthy" in v for v in violations)
    assert any("latency 100.0 ms > bound 50.0 ms" in v for v in violations)
    assert any("costs 1.0 $/h, expected 9.305" in v for v in violations)
    short = Plan(PlanStatus.feasible, (Assignment("chat", "L40S", 2, 1, 2 * 1.861),), usd_per_hour=2 * 1.861)
    assert any("serves 8.0 rps < 12.0 rps required" in v for v in check(problem, short))
    assert "class L40S: plan does not say how many devices it occupies" in check(problem, short)


# --- properties ----------------------------------------------------------------------------------

HEADROOMS = st.sampled_from([1.0, 1.2, 1.5])
TENTHS = st.integers(min_value=5, max_value=500).map(lambda n: n / 10)  # 0.5 .. 50.0


@st.composite
def fleets(draw, devices=st.just(1000)):
    n = draw(st.integers(min_value=1, max_value=4))
    return tuple(
        ClassCapacity(f"c{i}", draw(st.integers(min_value=10, max_value=1000)) / 100, draw(devices),
                      draw(st.sampled_from([1, 7])))
        for i in range(n)
    )


@st.composite
def feasible_problems(draw):
    """Unlimited capacity (1000 devices a class); every fragment has a class within its bound."""
    classes = draw(fleets())
    frags = []
    for i in range(draw(st.integers(min_value=1, max_value=5))):
        chosen = draw(st.lists(st.sampled_from(classes), min_size=1, max_size=len(classes), unique=True))
        profiles = tuple(
            ServiceProfile(c.device_class, draw(TENTHS), draw(st.integers(1, 100)) * 1.0,
                           draw(st.integers(1, c.slices_per_device)))
            for c in chosen
        )
        fastest = min(p.latency_ms for p in profiles)
        bound = draw(st.one_of(st.none(), st.floats(min_value=fastest, max_value=150.0)))
        frags.append(FragmentDemand(f"f{i}", "wl", draw(st.integers(0, 1000)) / 10, profiles, bound,
                                    draw(st.integers(0, 3))))
    return Problem(classes, tuple(frags), draw(HEADROOMS), time_limit_s=2.0)


def baseline_usd(problem: Problem) -> float:
    """Each fragment alone on its cheapest allowed class, on devices of its own (valid when capacity
    is unlimited): a class sold by the device charges ceil(replicas / replicas per device) devices."""
    classes = {c.device_class: c for c in problem.device_classes}
    total = 0.0
    for f in problem.fragments:
        options = []
        for p in f.profiles:
            if f.latency_bound_ms is None or p.latency_ms <= f.latency_bound_ms:
                by_demand = math.ceil(f.demand_rps * problem.headroom / p.throughput_rps - 1e-9)
                replicas = max(f.min_replicas, by_demand)
                c = classes[p.device_class]
                devices = math.ceil(replicas / (c.slices_per_device // p.slices))
                options.append(devices * c.usd_per_hour)
        total += min(options)
    return total


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feasible_problems())
def test_random_feasible_problems_are_valid_and_beat_the_baseline(problem: Problem) -> None:
    plan = solve(problem)
    assert plan.status is PlanStatus.optimal
    assert check(problem, plan) == []
    assert plan.usd_per_hour <= baseline_usd(problem) + 1e-6
    assert plan.lower_bound_usd_per_hour <= plan.usd_per_hour + 1e-9


@st.composite
def overloaded_problems(draw):
    """Demand beyond the fleet in every way of splitting it.

    A replica of f on c serves k_f * q_c per slice, so f needs d_f * h / k_f "q-slices" wherever it
    runs and the fleet holds Q = sum_c S_c * q_c of them; sum_f d_f * h / k_f > Q is infeasible.
    Each fragment alone may or may not fit, so both diagnosis paths are exercised.
    """
    classes = draw(fleets(devices=st.integers(1, 4)))
    q = {c.device_class: draw(st.integers(1, 5)) for c in classes}
    total_q = sum(c.slices * q[c.device_class] for c in classes)
    headroom = draw(HEADROOMS)
    shares = draw(st.lists(st.floats(min_value=0.2, max_value=1.5), min_size=1, max_size=4))
    if sum(shares) <= 1.05:
        shares[0] += 1.05 - sum(shares) + 0.05
    frags = []
    for i, share in enumerate(shares):
        k = draw(st.integers(1, 10)) / 2
        profiles = tuple(ServiceProfile(c.device_class, k * q[c.device_class] * s, 10.0, s)
                         for c in classes for s in [draw(st.integers(1, c.slices_per_device))])
        frags.append(FragmentDemand(f"f{i}", "wl", share * total_q * k / headroom, profiles))
    return Problem(classes, tuple(frags), headroom, time_limit_s=2.0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overloaded_problems())
def test_demand_beyond_capacity_is_infeasible_with_a_diagnosis(problem: Problem) -> None:
    plan = solve(problem)
    assert plan.status is PlanStatus.infeasible
    assert plan.assignments == ()
    assert plan.diagnosis and all(isinstance(m, str) and m for m in plan.diagnosis)
