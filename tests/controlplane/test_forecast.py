"""Demand forecasting: the rate planned over the settling horizon, and how planning uses it."""

import math
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session

from controlplane.actuators.base import NodeInventory
from controlplane.forecast import DemandHistory, ForecastConfig, bucket_seconds, forecast
from controlplane.inventory import sync_inventory
from controlplane.models import Fragment, FragmentKind, FragmentProfile, RequestStat, Tenant, Workload
from controlplane.models._common import minute_of
from controlplane.planning import build_problem, take_snapshot
from controlplane.seed import seed_catalog

HOUR = 3600.0


def office_hours(hours: np.ndarray) -> np.ndarray:
    """Requests/s of a service busy from 09:00 to 18:00: 40 then, 10 otherwise."""
    return np.where((hours % 24 >= 9) & (hours % 24 < 18), 40.0, 10.0)


def history(days: int, rng: np.random.Generator, into_hour_s: float) -> DemandHistory:
    """`days` days and eight hours of hourly buckets (the last complete one 07:00-08:00), and the last
    two hours of minutes, all Poisson around office_hours; now is `into_hour_s` into 08:00."""
    hours = np.arange(24 * days + 8)
    buckets = rng.poisson(office_hours(hours) * HOUR).astype(float)
    minutes = rng.poisson(10.0 * 60, 120).astype(float)
    return DemandHistory(tuple(minutes), tuple(buckets), HOUR, into_hour_s)


def test_a_daily_rise_is_planned_for_before_it_comes():
    rng = np.random.default_rng(3)
    # 08:57: the five-minute horizon reaches into 09:00, when demand quadruples every day.
    ahead = forecast(history(3, rng, into_hour_s=57 * 60))
    assert ahead.observed_rps < 11
    assert ahead.planned_rps > 35 and ahead.method == "seasonal/24"
    assert ahead.ratio > 3
    # 08:10: the horizon ends at 08:15, before the rise; only the minutes' noise is planned for.
    early = forecast(history(3, rng, into_hour_s=10 * 60))
    assert early.observed_rps <= early.planned_rps < 12
    # One day of history does not cover the day twice: no seasonal model, so nothing foretells the rise.
    short = forecast(history(1, rng, into_hour_s=57 * 60))
    assert short.planned_rps < 12 and not short.method.startswith("seasonal")


def test_two_weeks_of_history_fit_the_week_with_the_day_inside_it():
    rng = np.random.default_rng(5)
    hours = np.arange(24 * 14 + 8)
    weekend = (hours // 24) % 7 >= 5  # the history starts on a Monday: days 5 and 6 are quiet
    buckets = rng.poisson(np.where(weekend, 10.0, office_hours(hours)) * HOUR).astype(float)
    minutes = rng.poisson(600, 120).astype(float)
    monday = forecast(DemandHistory(tuple(minutes), tuple(buckets), HOUR, 57 * 60))
    assert monday.method == "seasonal/168" and monday.planned_rps > 35


def test_flat_noisy_demand_plans_above_its_mean_but_not_far():
    rng = np.random.default_rng(11)
    # 10 requests/s, Poisson: a minute's rate has a standard deviation of sqrt(600) / 60 = 0.41/s,
    # so its 90th percentile is about 10 + 1.28 * 0.41 = 10.5/s.
    got = forecast(DemandHistory(tuple(rng.poisson(600, 120).astype(float))))
    assert got.method == "level"
    assert 10.2 < got.planned_rps < 11.5


def test_tiny_and_degenerate_histories_give_sane_rates():
    assert forecast(DemandHistory()).planned_rps == 0.0
    assert forecast(DemandHistory()).ratio == 1.0
    one = forecast(DemandHistory((120.0,)))
    assert one.observed_rps == one.planned_rps == 2.0
    two = forecast(DemandHistory((60.0, 120.0)))
    assert two.observed_rps == 1.5 and two.planned_rps == 2.0  # the busier of the two minutes
    zeros = forecast(DemandHistory((0.0,) * 60, (0.0,) * 100, HOUR, 0.0))
    assert zeros.planned_rps == 0.0 and zeros.ratio == 1.0
    constant = forecast(DemandHistory((300.0,) * 60, (18_000.0,) * 60, HOUR, 0.0))
    assert constant.planned_rps == 5.0
    broken = forecast(DemandHistory((math.nan, -5.0, math.inf, 60.0)))
    assert math.isfinite(broken.planned_rps) and broken.planned_rps == 1.0


def test_a_compressed_day_sets_the_bucket_and_the_period():
    assert bucket_seconds((86_400.0, 604_800.0)) == HOUR
    assert bucket_seconds((1_200.0,)) == 60.0  # a 20-minute "day": minute buckets, 20 of them
    assert bucket_seconds(()) == HOUR


counts = st.floats(min_value=0, max_value=1e6) | st.sampled_from([math.nan, math.inf, -1.0])


@settings(max_examples=40, deadline=None)
@given(minutes=st.lists(counts, max_size=150), buckets=st.lists(counts, max_size=80),
       into=st.floats(min_value=0, max_value=3599), quantile=st.floats(min_value=0.5, max_value=0.99))
def test_the_planned_rate_is_finite_and_never_below_what_is_observed(minutes, buckets, into, quantile):
    got = forecast(DemandHistory(tuple(minutes), tuple(buckets), HOUR, into),
                   ForecastConfig(quantile=quantile, periods_s=(24 * HOUR / 8,)))  # 3 h period of 8 buckets
    assert math.isfinite(got.planned_rps) and math.isfinite(got.observed_rps)
    assert got.planned_rps >= got.observed_rps >= 0
    assert got.ratio >= 1


def test_planning_scales_a_workloads_demand_by_its_forecast(engine):
    # A compressed "day" of 20 minutes: 2 requests/s, 8/s from minute 15 to minute 20 of each.
    # Three days of history; now is 14:30 into the fourth, so the 5-minute horizon reaches the burst.
    config = ForecastConfig(horizon_s=300.0, quantile=0.9, periods_s=(1_200.0,))
    start = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    now = start + timedelta(minutes=60 + 14, seconds=30)
    with Session(engine) as session:
        seed_catalog(session)
        sync_inventory(session, (NodeInventory("h100-0", "H100-SXM", 8, 8),))
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        workload = Workload(tenant_id=tenant.id, name="chat")
        session.add(workload)
        session.flush()
        llm = Fragment(workload_id=workload.id, key="llm:m-8b", kind=FragmentKind.llm, name="m-8b", model="m-8b",
                       first_seen=start)
        session.add(llm)
        session.flush()
        for i in range(74):
            rate = 8.0 if i % 20 >= 15 else 2.0
            session.add(RequestStat(workload_id=workload.id, minute=start + timedelta(minutes=i), requests=rate * 60))
        for i in range(70, 75):  # the LLM's visits of the last five minutes: one per request
            session.add(FragmentProfile(fragment_id=llm.id, minute=start + timedelta(minutes=i), visits=120,
                                        latency_ms_sum=120 * 500.0, tokens_in=120 * 200, tokens_out=120 * 50))
        session.commit()
        plain = take_snapshot(session, now)
        forecast_snapshot = take_snapshot(session, now, config)
        wid, fid = workload.id, str(llm.id)

    assert plain.forecasts == {}
    got = forecast_snapshot.forecasts[wid]
    assert got.method == "seasonal/20" and got.planned_rps > 6
    observed = next(f.rate_rps for f in plain.fragments)
    demand = {f.fragment: f.demand_rps for f in build_problem(forecast_snapshot, 1.2, 2.0).fragments}
    assert demand[fid] == observed * got.ratio and demand[fid] > 2.5 * observed
    assert {f.fragment: f.demand_rps for f in build_problem(plain, 1.2, 2.0).fragments}[fid] == observed
    assert minute_of(now) == start + timedelta(minutes=74)
