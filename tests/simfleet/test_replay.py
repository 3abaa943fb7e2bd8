"""The closed-loop harness: its load curve, its stepped replay, and what it counts as within SLA."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlmodel import Session, select

from controlplane.db import int_sum
from controlplane.models import FragmentProfile
from controlplane.simfleet import SimulatedFleet
from controlplane.simfleet.controllers import Unmanaged
from controlplane.simfleet.driver import LoadDriver
from controlplane.simfleet.replay import START_S, ClosedLoop, LoadCurve, LoseNode, ReplayConfig, TimeWarp

SHORT = ReplayConfig(run_s=120.0, period_s=30.0, curve=LoadCurve(day_s=120.0), rate=0.3, traces_dir=None)


def test_the_day_has_mean_one_a_four_to_one_swing_and_a_burst():
    curve = LoadCurve(day_s=3600.0)
    values = [curve.multiplier(t + 0.5) for t in range(3600)]
    diurnal = [v for t, v in enumerate(values) if not 10 <= t / 150 < 10.6]  # 150 s per compressed hour
    assert max(diurnal) / min(diurnal) >= 4.0
    assert max(values) >= 1.15 * max(diurnal)  # the burst stands out above the daily peak
    # mean of the diurnal part is 1 by construction; the burst adds burst_hours / 24 x (factor - 1) x its level
    assert 1.0 <= sum(values) / len(values) <= 1.05


@settings(max_examples=50, deadline=None)
@given(st.floats(0.1, 3.0), st.floats(0.0, 5000.0))
def test_warp_consumes_trace_time_at_rate_times_the_curve(rate, offset):
    curve = LoadCurve(day_s=3600.0)
    warp = TimeWarp(curve, rate, horizon_s=3600.0)
    t = warp(offset)
    if math.isinf(t):
        return
    # T(t) = rate x integral of the multiplier up to t, stepping by one simulated second
    consumed = sum(rate * curve.multiplier(i + 0.5) for i in range(int(t))) + rate * curve.multiplier(int(t) + 0.5) * (t - int(t))
    assert math.isclose(consumed, offset, rel_tol=1e-6, abs_tol=1e-6)


def test_replaying_in_steps_runs_the_same_requests_as_one_run():
    whole, stepped = InMemorySpanExporter(), InMemorySpanExporter()
    n = LoadDriver(SimulatedFleet(seed=1), seed=1).run(200, whole, start_s=START_S)
    driver = LoadDriver(SimulatedFleet(seed=1), seed=1)
    last = max(s.start_time for s in whole.get_finished_spans() if s.parent is None) / 1e9
    steps = [START_S + 20.0 * k for k in range(1, int((last - START_S) // 20.0) + 1)] + [last + 1e-6]
    assert sum(driver.run_until(t, stepped, start_s=START_S) for t in steps) == 200
    key = lambda s: (s.start_time, s.end_time, s.name)  # noqa: E731
    assert sorted(map(key, whole.get_finished_spans())) == sorted(map(key, stepped.get_finished_spans()))
    assert n == len(stepped.get_finished_spans())


def test_a_request_with_a_failed_visit_misses_its_sla():
    # Every H100 device of both H100 nodes fails at once: the models' starting deployment has nowhere to run.
    faults = [LoseNode(at_s=30.0, node="sim-h100-0"), LoseNode(at_s=30.0, node="sim-h100-1")]
    result = ClosedLoop(Unmanaged(), SHORT, faults=faults).run()
    first, after = result.periods[0], result.periods[2]
    assert first.failed_requests == 0 and first.within_sla == first.requests
    assert after.failed_requests == after.requests > 0  # every request visits a model
    assert after.within_sla == 0


class _Reader(Unmanaged):
    """Reads what the collectors stored by each period's end: visits in the database."""

    def __init__(self) -> None:
        super().__init__(name="reader", reads_telemetry=True)
        self.stored: list[int] = []

    def act(self, loop, loads) -> None:
        with Session(loop.engine) as session:
            self.stored.append(int(session.exec(select(int_sum(FragmentProfile.visits))).one() or 0))


def test_spans_reach_the_database_through_the_collectors_when_their_request_ends():
    reader = _Reader()
    result = ClosedLoop(reader, SHORT).run()
    served = [sum(load.visits for load in p.loads) for p in result.periods]
    cumulative = [sum(served[: k + 1]) for k in range(len(served))]
    assert 0 < reader.stored[0] <= cumulative[0]
    # Requests still running at a period's end reach the database later, never twice.
    assert all(stored <= total for stored, total in zip(reader.stored, cumulative, strict=True))
    assert reader.stored == sorted(reader.stored)
    assert reader.stored[-1] >= 0.9 * cumulative[-1]
