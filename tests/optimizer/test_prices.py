"""Capacity prices: the LP relaxation's placement and prices, and the Lagrangian bound they prove."""

import itertools
import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from optimizer.greedy import fractional_bound
from optimizer.prepare import prepare
from optimizer.prices import _cheapest_cover, lagrangian_bound, relaxed_placement
from optimizer.solver import solve
from optimizer.types import ClassCapacity, FragmentDemand, PlanStatus, Problem, ServiceProfile
from tests.optimizer.test_properties import graph_problems

CHEAP = ClassCapacity("cheap", 1.0, devices=2)
DEAR = ClassCapacity("dear", 3.0, devices=10)


def short_of_cheap() -> Problem:
    """Two fragments each need both cheap devices; `saves` saves $2/h per slice there, `spare` $0.50."""
    saves = FragmentDemand("saves", "w", 2.0, (ServiceProfile("cheap", 1.0, 10.0), ServiceProfile("dear", 1.0, 10.0)))
    spare = FragmentDemand("spare", "w", 2.0, (ServiceProfile("cheap", 1.0, 10.0), ServiceProfile("dear", 2.0, 10.0)))
    return Problem((CHEAP, DEAR), (saves, spare), headroom=1.0)


def test_the_short_class_goes_to_the_fragment_that_saves_most_per_slice() -> None:
    problem = short_of_cheap()
    prepared = prepare(problem)
    lam, whole = relaxed_placement(problem, prepared.classes, prepared.candidates)
    assert whole == {"saves": "cheap", "spare": "dear"}
    assert 0.5 - 1e-9 <= lam["cheap"] <= 2.0 + 1e-9 and lam["dear"] == 0.0


def test_the_lagrangian_bound_is_tight_where_the_fractional_one_is_not() -> None:
    # Optimum: saves on 2 cheap ($2) + spare on 1 dear ($3) = $5/h. The fractional bound puts both
    # on cheap ($4); pricing the cheap class's two slices proves $5.
    problem = short_of_cheap()
    prepared = prepare(problem)
    lam, _ = relaxed_placement(problem, prepared.classes, prepared.candidates)
    capacity = {name: c.slices for name, c in prepared.classes.items()}
    assert fractional_bound(problem, prepared.candidates) == 4.0
    assert math.isclose(lagrangian_bound(problem, prepared.candidates, lam, capacity), 5.0, rel_tol=1e-6)
    plan = solve(problem)
    assert plan.status is PlanStatus.optimal and math.isclose(plan.usd_per_hour, 5.0)


def test_an_lp_with_too_little_capacity_gives_no_prices() -> None:
    problem = Problem((CHEAP,), (FragmentDemand("big", "w", 5.0, (ServiceProfile("cheap", 1.0, 10.0),)),), headroom=1.0)
    prepared = prepare(problem, diagnose=False)
    assert relaxed_placement(problem, prepared.classes, prepared.candidates) == ({}, {})


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 60), st.integers(0, 4),
       st.lists(st.tuples(st.integers(1, 50).map(lambda w: w / 4), st.integers(0, 20)), min_size=1, max_size=4))
@example(59, 0, [(7.75, 2)] * 4)  # equal classes: the search once tried every share and ran out of nodes
def test_the_cheapest_cover_is_exact(need: int, least: int, options: list[tuple[float, int]]) -> None:
    """Against every whole-replica vector up to what one class alone would need."""
    if need > 0 and not any(r for _, r in options):
        return  # no class can serve: prepare diagnoses it before any bound is asked for
    top = [max(-(-need // r) if r else 0, least) for _, r in options]
    best = min(sum(w * x for (w, _), x in zip(options, xs, strict=True))
               for xs in itertools.product(*(range(t + 1) for t in top))
               if sum(r * x for (_, r), x in zip(options, xs, strict=True)) >= need and sum(xs) >= least)
    assert math.isclose(_cheapest_cover(need, least, options), best, rel_tol=1e-12, abs_tol=1e-12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph_problems(), st.lists(st.floats(0.0, 5.0), min_size=3, max_size=3))
def test_any_prices_bound_the_optimal_cost_from_below(problem: Problem, prices: list[float]) -> None:
    """L(lam) <= the optimum for every lam >= 0, the LP's and arbitrary ones alike."""
    plan = solve(problem)
    if plan.status is not PlanStatus.optimal:
        return
    prepared = prepare(problem)
    capacity = {name: c.slices for name, c in prepared.classes.items()}
    lam, _ = relaxed_placement(problem, prepared.classes, prepared.candidates)
    arbitrary = dict(zip(capacity, prices, strict=False))
    for guess in (lam, arbitrary):
        assert lagrangian_bound(problem, prepared.candidates, guess, capacity, prepared.pools) <= plan.usd_per_hour + 1e-9
