"""Bucketed demand (Mélange's request-size buckets) in the solver, greedy and checker."""

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.baselines import GpuOffer, melange
from optimizer.buckets import melange_problem
from optimizer.checker import check
from optimizer.greedy import greedy
from optimizer.solver import solve
from optimizer.types import BucketDemand, ClassCapacity, FragmentDemand, PlanStatus, Problem, ServiceProfile

SMALL, LONG = (0, 0), (5, 5)
CHEAP = GpuOffer("cheap", 1.0, {SMALL: 10.0, LONG: 0.1})
DEAR = GpuOffer("dear", 4.0, {SMALL: 20.0, LONG: 2.0})


def _problem(buckets, devices=(50, 50), headroom=1.0, **fragment):
    classes = (ClassCapacity("cheap", 1.0, devices[0]), ClassCapacity("dear", 4.0, devices[1]))
    profiles = (ServiceProfile("cheap", 10.0, 1.0), ServiceProfile("dear", 20.0, 1.0))
    frag = FragmentDemand("llm", "w", 0.0, profiles, buckets=tuple(buckets), **fragment)
    return Problem(classes, (frag,), headroom=headroom)


def _buckets(short: float, long: float):
    return (BucketDemand("short", short, (("cheap", 10.0), ("dear", 20.0))),
            BucketDemand("long", long, (("cheap", 0.1), ("dear", 2.0))))


def test_short_on_the_cheap_gpu_long_on_the_dear_one():
    # cheap alone: 10/10 + 2/0.1 = 21 GPUs ($21); dear alone: 1.5 -> 2 ($8); split: 1 cheap + 1 dear ($5).
    problem = _problem(_buckets(10.0, 2.0))
    plan = solve(problem)
    assert plan.status is PlanStatus.optimal and check(problem, plan) == []
    assert plan.replicas_of("llm") == {"cheap": 1, "dear": 1} and plan.usd_per_hour == pytest.approx(5.0)
    assert plan.bucket_split["llm"] == {"short": {"cheap": 10.0}, "long": {"dear": 2.0}}


def test_a_bucket_is_split_across_classes_when_that_fills_replicas():
    # 3 req/s long: one dear GPU holds 2; the last 1 req/s fits in the dear GPU only if short requests
    # go elsewhere. short 5 (0.5 cheap GPU or 0.25 dear): 2 dear ($8) would carry 1.5 + 0.25 = 1.75.
    # Best: dear x2 ($8) for everything vs cheap x1 + dear x2 ($9) -> $8, all on dear.
    problem = _problem(_buckets(5.0, 3.0))
    plan = solve(problem)
    assert check(problem, plan) == [] and plan.usd_per_hour == pytest.approx(8.0)
    # Headroom counts: 1.2 x (5 short, 3 long) = 0.3 + 1.8 dear loads -> 3 dear ($12), or cheap x1 + dear x2 ($9).
    plan = solve(dataclasses.replace(problem, headroom=1.2))
    assert check(dataclasses.replace(problem, headroom=1.2), plan) == []
    assert plan.replicas_of("llm") == {"cheap": 1, "dear": 2} and plan.usd_per_hour == pytest.approx(9.0)


def test_capacity_forces_the_dearer_split():
    # Only one dear GPU: the long bucket (2 req/s) fills it; nothing else may go there.
    problem = _problem(_buckets(15.0, 2.0), devices=(50, 1))
    plan = solve(problem)
    assert check(problem, plan) == [] and plan.replicas_of("llm") == {"cheap": 2, "dear": 1}
    assert solve(_problem(_buckets(15.0, 2.5), devices=(2, 1))).status is PlanStatus.infeasible


def test_greedy_serves_each_bucket_on_its_cheapest_class_per_throughput():
    problem = _problem(_buckets(10.0, 2.0))
    plan = greedy(problem)
    assert check(problem, plan) == [] and plan.usd_per_hour == pytest.approx(5.0)
    assert plan.lower_bound_usd_per_hour == pytest.approx(5.0)  # 10/10 x $1 + 2/2 x $4


def test_a_bucket_no_class_serves_is_diagnosed():
    problem = _problem((BucketDemand("huge", 1.0, (("h100", 5.0),)),))
    plan = solve(problem)
    assert plan.status is PlanStatus.infeasible and "huge" in plan.diagnosis[0]


def test_demand_rps_must_match_the_buckets():
    problem = _problem(_buckets(1.0, 1.0))
    frag = dataclasses.replace(problem.fragments[0], demand_rps=5.0)
    with pytest.raises(ValueError, match="buckets' total"):
        solve(dataclasses.replace(problem, fragments=(frag,)))
    frag = dataclasses.replace(problem.fragments[0], demand_rps=2.0)
    assert solve(dataclasses.replace(problem, fragments=(frag,))).feasible


def test_the_checker_catches_an_overloaded_split():
    problem = _problem(_buckets(10.0, 2.0))
    plan = solve(problem)
    bad = dataclasses.replace(plan, bucket_split={"llm": {"short": {"cheap": 10.0}, "long": {"cheap": 2.0}}})
    assert any("load" in v or "throughput" in v for v in check(problem, bad))
    short = dataclasses.replace(plan, bucket_split={"llm": {"short": {"cheap": 9.0}, "long": {"dear": 2.0}}})
    assert any("short" in v and "<" in v for v in check(problem, short))


def test_melange_problem_matches_the_hand_case():
    demand = {SMALL: 10.0, LONG: 2.0}
    problem = melange_problem(demand, [CHEAP, DEAR])
    plan = solve(problem)
    assert check(problem, plan) == [] and plan.usd_per_hour == pytest.approx(melange(demand, [CHEAP, DEAR]).usd_per_hour)


_tput = st.one_of(st.just(0.0), st.floats(0.05, 30.0).map(lambda v: round(v, 2)))


@st.composite
def grounds(draw):
    n_buckets = draw(st.integers(1, 4))
    keys = [(i, 0) for i in range(n_buckets)]
    gpus = []
    for g in range(draw(st.integers(1, 3))):
        price = draw(st.sampled_from([0.7, 1.01, 3.67, 7.5, 1.0, 4.0]))
        gpus.append(GpuOffer(f"g{g}", price, {k: draw(_tput) for k in keys}))
    # every bucket servable by some GPU
    for k in keys:
        if all(g.throughput[k] <= 0 for g in gpus):
            gpus[0].throughput[k] = draw(st.floats(0.05, 30.0).map(lambda v: round(v, 2)))
    demand = {k: draw(st.one_of(st.floats(0.01, 20.0), st.integers(1, 20).map(float))) for k in keys}
    return demand, gpus


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grounds())
def test_never_costlier_than_melange(ground):
    demand, gpus = ground
    problem = melange_problem(demand, gpus, time_limit_s=20.0)
    plan = solve(problem)
    assert plan.status is PlanStatus.optimal and check(problem, plan) == []
    quick = greedy(problem)
    # Greedy may give up (saying so); when it answers, its plan is valid and never cheaper than the optimum.
    assert check(problem, quick) == []
    assert not quick.feasible or quick.usd_per_hour >= plan.usd_per_hour - 1e-9
    assert plan.usd_per_hour <= melange(demand, gpus).usd_per_hour + 1e-9


def test_an_exactly_integral_load_takes_exactly_that_many_devices():
    # Found by the property above: 0.75 req/s at 0.25 req/s per GPU is 3 GPUs, not 4 (rounding noise).
    demand, gpus = {(0, 0): 0.75}, [GpuOffer("g0", 0.7, {(0, 0): 0.25})]
    plan = solve(melange_problem(demand, gpus, headroom=1.0))
    assert plan.replicas_of("llm") == {"g0": 3} and plan.usd_per_hour == pytest.approx(2.1)
    assert greedy(melange_problem(demand, gpus, headroom=1.0)).replicas_of("llm") == {"g0": 3}


# --- no phantom capacity ----------------------------------------------------------------------

PER_DAY = 1 / 86_400  # one request a day, in req/s


def _served_on_classes_without_replicas(plan) -> list[str]:
    """(fragment, bucket, class) served where the plan runs no replica of the fragment: computed
    from the plan alone, without the checker."""
    out = []
    for fragment, by_bucket in plan.bucket_split.items():
        running = plan.replicas_of(fragment)
        out += [f"{fragment}/{b}@{c}" for b, by_class in by_bucket.items()
                for c, rps in by_class.items() if rps > 0 and running.get(c, 0) == 0]
    return out


def test_one_small_bucket_needs_a_real_replica():
    # The case: all demand in one bucket at 0.0014 req/s (~121 requests a day). It used to
    # be "optimal" at $0/h, its load on a class with no replica absorbed by the float tolerance.
    problem = melange_problem({(0, 0): 0.0014}, [CHEAP, DEAR])
    plan = solve(problem)
    assert plan.status is PlanStatus.optimal and check(problem, plan) == []
    assert plan.replicas_of("llm") == {"cheap": 1} and plan.usd_per_hour == pytest.approx(1.0)
    assert _served_on_classes_without_replicas(plan) == []


def test_the_checker_rejects_load_on_a_class_without_replicas():
    problem = melange_problem({(0, 0): 0.0014}, [CHEAP, DEAR])
    phantom = dataclasses.replace(solve(problem), assignments=(), usd_per_hour=0.0, devices_used={},
                                  lower_bound_usd_per_hour=0.0)
    assert "fragment llm@cheap: bucket load 0.00014 replicas > 0" in check(problem, phantom)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rates=st.lists(st.sampled_from([0.0, PER_DAY, 2 * PER_DAY, 0.0014, 0.01, 0.3, 2.5]), min_size=1, max_size=4),
    tputs=st.lists(st.lists(st.sampled_from([0.0, 0.05, 0.5, 1.0, 7.0, 25.0]), min_size=4, max_size=4),
                   min_size=1, max_size=3),
    headroom=st.sampled_from([1.0, 1.2]),
)
def test_tiny_demands_never_ride_on_missing_replicas(rates, tputs, headroom):
    """Rates down to one request a day: every served bucket runs on replicas, and demand costs money."""
    gpus = [GpuOffer(f"g{i}", 0.5 + i, {(b, 0): t[b] for b in range(4)}) for i, t in enumerate(tputs)]
    demand = {(b, 0): r for b, r in enumerate(rates)}
    servable = all(r == 0 or any(g.throughput[b] > 0 for g in gpus) for b, r in demand.items())
    problem = melange_problem(demand, gpus, headroom=headroom, time_limit_s=5.0)
    plan = solve(problem)
    if not servable or not problem.fragments:
        return
    assert plan.feasible and check(problem, plan) == []
    assert _served_on_classes_without_replicas(plan) == []
    if any(rates):
        assert plan.usd_per_hour >= min(g.usd_per_hour for g in gpus) - 1e-9
