"""Measured capacity: a replica's throughput read from how long visits queued for it."""

import math
from dataclasses import replace
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session, select

from collectors.records import Series
from collectors.sketch import latency_bucket
from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.app import create_app
from controlplane.auth import mint_token
from controlplane.models import (
    Fragment,
    FragmentKind,
    FragmentProfile,
    MeasuredCapacity,
    Migration,
    MigrationState,
    Placement,
    PlacementItem,
    PlacementState,
    ProfileBucket,
    Role,
    Tenant,
    Workload,
)
from controlplane.models._common import minute_of, utcnow
from controlplane.planning import (
    CAPACITY_TTL,
    FragmentView,
    Snapshot,
    build_problem,
    take_snapshot,
)
from controlplane.policy import Action
from controlplane.reconciler import Reconciler
from controlplane.seed import seed_catalog
from controlplane.settings import Settings
from controlplane.simfleet import physics
from controlplane.simfleet.apps import DOC_PIPELINE
from controlplane.simfleet.devices import H100
from optimizer.catalog import by_name
from optimizer.perfmodel import TARGET_UTILISATION, capacity_from_queueing, estimate_profiles
from optimizer.types import Phase

NOW = minute_of(utcnow()) + timedelta(seconds=30)
CLASSES = (by_name("H100-SXM"), by_name("L40S"))
MODEL = "llama-3.1-8b-instruct"


def mm1_wait_s(rate: float, mu: float) -> float:
    """Mean wait in an M/M/1 queue receiving `rate` visits/s and completing at most `mu`."""
    return rate / (mu * (mu - rate))


# --- the inversion ---------------------------------------------------------------------------------------------


@given(mu=st.floats(0.01, 1e4), rho=st.floats(0.01, 0.99))
def test_the_wait_an_mm1_queue_shows_gives_back_its_capacity(mu, rho):
    found, utilisation = capacity_from_queueing(rho * mu, mm1_wait_s(rho * mu, mu))
    assert found == pytest.approx(mu, rel=1e-6)
    assert utilisation == pytest.approx(rho, rel=1e-6)


def test_no_wait_says_nothing_about_capacity():
    assert capacity_from_queueing(5.0, 0.0) == (math.inf, 0.0)


@pytest.mark.parametrize(("rate", "wait"), [(0.0, 1.0), (-1.0, 1.0), (math.nan, 1.0), (1.0, -0.1), (1.0, math.inf)])
def test_bad_rates_and_waits_are_refused_by_name(rate, wait):
    with pytest.raises(ValueError, match="rate_rps" if not (rate > 0) else "wait_s"):
        capacity_from_queueing(rate, wait)


def test_the_simulated_fleets_queue_is_the_one_planning_inverts():
    """The sim's wait, read back, gives the occupancy it charged a replica: capacity 1 / occupancy."""
    llama = next(f for f in DOC_PIPELINE.fragments() if f.key == f"llm:{MODEL}")
    deployments = [physics.Deployment(H100, 3, 7)]
    for rate in (3.0, 12.0, 30.0):
        visit = physics.visit(llama, deployments, physics.Load(rate, 1000, 200), 1000, 200, 0.5, 0.0)
        if visit.rho >= physics.MAX_RHO:
            continue  # saturated: the sim caps the wait
        mu, rho = capacity_from_queueing(rate / 3, visit.wait_s / physics.jitter(0.0))
        assert mu == pytest.approx(1 / visit.occupancy_s, rel=1e-6)
        assert rho == pytest.approx(visit.rho, rel=1e-6)


# --- from a snapshot to profiles -------------------------------------------------------------------------------


def view(queue_ms: dict[str, float], rate: float = 4.0, known: dict[str, float] | None = None) -> FragmentView:
    return FragmentView(1, f"llm:{MODEL}", "llm", MODEL, 1, 1, "acme", "w", rate, 500.0, 100.0, 1200,
                        settled_rate_rps={"H100-SXM": rate}, queue_ms=queue_ms, known_capacity=known or {})


def snapshot(fragment: FragmentView, replicas: int = 2) -> Snapshot:
    return Snapshot(
        now=NOW, classes=CLASSES, class_ids={"H100-SXM": 1, "L40S": 2}, healthy_devices={"H100-SXM": 8, "L40S": 8},
        fragments=(fragment,), workloads={}, current={(1, "H100-SXM", Phase.whole): (replicas, 7)},
        current_version=1, latest_version=1,
    )


def profiles(problem) -> dict[tuple[str, Phase], object]:
    (fragment,) = problem.fragments
    return {(p.device_class, p.phase): p for p in fragment.profiles}


ESTIMATED = {(p.device_class, p.phase): p for p in estimate_profiles("llm", MODEL, 500.0, 100.0, CLASSES, phases=True)}


def test_a_queue_measures_the_replicas_it_waited_for_and_calibrates_the_other_classes():
    # 4 visits/s over 2 replicas, each completing at most 2.5/s: an M/M/1 queue waits 1.6 s.
    got = profiles(build_problem(snapshot(view({"H100-SXM": 1000 * mm1_wait_s(2.0, 2.5)})), 1.2, 2.0))

    h100 = got["H100-SXM", Phase.whole]
    assert h100.measured and h100.throughput_rps == pytest.approx(TARGET_UTILISATION * 2.5)
    shortfall = h100.throughput_rps / ESTIMATED["H100-SXM", Phase.whole].throughput_rps
    assert shortfall < 1  # the estimate was far too optimistic for this test's numbers
    for key, p in got.items():
        if key != ("H100-SXM", Phase.whole):
            assert not p.measured
            assert p.throughput_rps == pytest.approx(ESTIMATED[key].throughput_rps * shortfall)


def test_a_short_queue_or_one_with_no_replicas_behind_it_keeps_the_estimates():
    light = view({"H100-SXM": 1000 * mm1_wait_s(2.0, 10.0)})  # utilisation 0.2: too light to say
    unplaced = view({"H100-SXM": 1000 * mm1_wait_s(2.0, 2.5)})
    for problem in (build_problem(snapshot(light), 1.2, 2.0), build_problem(snapshot(unplaced, replicas=0), 1.2, 2.0)):
        got = profiles(problem)
        assert {k: p.throughput_rps for k, p in got.items()} == {k: p.throughput_rps for k, p in ESTIMATED.items()}


def test_a_remembered_capacity_holds_until_a_fresh_queue_replaces_it():
    remembered = profiles(build_problem(snapshot(view({}, known={"H100-SXM": 1.5})), 1.2, 2.0))
    assert remembered["H100-SXM", Phase.whole].throughput_rps == pytest.approx(TARGET_UTILISATION * 1.5)

    fresh = view({"H100-SXM": 1000 * mm1_wait_s(2.0, 2.5)}, known={"H100-SXM": 1.5})
    assert profiles(build_problem(snapshot(fresh), 1.2, 2.0))["H100-SXM", Phase.whole].throughput_rps == \
        pytest.approx(TARGET_UTILISATION * 2.5)


# --- from the database ------------------------------------------------------------------------------------------


def _llm(session: Session) -> Fragment:
    seed_catalog(session)
    tenant = Tenant(name="acme")
    session.add(tenant)
    session.flush()
    workload = Workload(name="chat", tenant_id=tenant.id)
    session.add(workload)
    session.flush()
    llm = Fragment(workload_id=workload.id, key=f"llm:{MODEL}", kind=FragmentKind.llm, name=MODEL, model=MODEL,
                   first_seen=NOW - timedelta(minutes=10))
    session.add(llm)
    session.flush()
    return llm


def test_the_snapshot_reads_waits_since_the_last_move_and_latency_without_them(engine):
    minute = minute_of(NOW)
    with Session(engine) as session:
        llm = _llm(session)
        # Two minutes ago, before the move: 600 visits that queued 2 s each. Now: 300 that queued 0.5 s.
        for at, visits, queue_s in ((minute - timedelta(minutes=2), 600, 2.0), (minute, 300, 0.5)):
            session.add(FragmentProfile(fragment_id=llm.id, device_class="H100-SXM", minute=at, visits=visits,
                                        latency_ms_sum=visits * (1000 * queue_s + 800.0), tokens_in=visits * 500,
                                        tokens_out=visits * 100, queue_visits=visits, queue_ms_sum=visits * 1000 * queue_s))
        placement = Placement(version=1, state=PlacementState.applied)
        session.add(placement)
        session.flush()
        session.add(Migration(placement_id=placement.id, fragment_id=llm.id, replicas=2,
                              state=MigrationState.succeeded, finished_at=minute - timedelta(seconds=60)))
        session.add_all([
            MeasuredCapacity(fragment_id=llm.id, device_class="H100-SXM", visits_per_s=1.5, measured_at=NOW),
            MeasuredCapacity(fragment_id=llm.id, device_class="L40S", visits_per_s=0.9,
                             measured_at=NOW - CAPACITY_TTL - timedelta(seconds=1)),
        ])
        session.commit()
        (fragment,) = take_snapshot(session, NOW).fragments

    assert fragment.measured_latency_ms == {"H100-SXM": pytest.approx(800.0)}  # served, not queued
    assert fragment.queue_ms == {"H100-SXM": pytest.approx(500.0)}  # only the minute after the move
    assert fragment.settled_rate_rps == {"H100-SXM": pytest.approx(300 / 30.0)}  # 300 visits in 30 s
    assert fragment.known_capacity == {"H100-SXM": 1.5}  # the L40S one is too old


def test_measured_latency_is_the_p99_visit_less_the_mean_wait(engine):
    # 100 visits: 98 of 500 ms and 2 of 3,000 ms, each having waited 100 ms for a replica. The SLA is a
    # p99, so the fragment's latency on the class is its p99 visit, 3,000 ms, less the 100 ms mean wait.
    minute = minute_of(NOW)
    with Session(engine) as session:
        llm = _llm(session)
        session.add(FragmentProfile(fragment_id=llm.id, device_class="H100-SXM", minute=minute, visits=100,
                                    latency_ms_sum=98 * 500.0 + 2 * 3000.0, tokens_in=100 * 500, tokens_out=100 * 100,
                                    queue_visits=100, queue_ms_sum=100 * 100.0))
        for value, count in ((500.0, 98), (3000.0, 2)):
            session.add(ProfileBucket(fragment_id=llm.id, device_class="H100-SXM", minute=minute,
                                      series=Series.latency_ms, bucket=latency_bucket(value), count=count))
        session.commit()
        (fragment,) = take_snapshot(session, NOW).fragments
    # The sketch answers within 1% of the value.
    assert fragment.measured_latency_ms["H100-SXM"] == pytest.approx(3000.0 - 100.0, rel=0.011)


# --- the reconciler, end to end ---------------------------------------------------------------------------------

NODES = (NodeInventory("h100-0", "H100-SXM", devices=8, healthy_devices=8),)


def _replicas(engine) -> int:
    with Session(engine) as session:
        version = max(i.placement_id for i in session.exec(select(PlacementItem)).all())
        return sum(i.replicas for i in session.exec(select(PlacementItem).where(PlacementItem.placement_id == version)))


def _visits(session: Session, llm_id: int, minute, visits: int, wait_ms: float = 0.0) -> None:
    session.add(FragmentProfile(fragment_id=llm_id, device_class="H100-SXM", minute=minute, visits=visits,
                                latency_ms_sum=visits * (900.0 + wait_ms), tokens_in=visits * 500,
                                tokens_out=visits * 100, queue_visits=visits if wait_ms else 0,
                                queue_ms_sum=visits * wait_ms))


def test_replicas_that_queue_more_than_estimated_get_company_and_keep_it(engine):
    rate, minute = 2.0, minute_of(NOW)
    with Session(engine) as session:
        llm = _llm(session)
        llm_id, workload_id = llm.id, llm.workload_id
        token = mint_token(session, "viewer", Role.viewer)[1]
        for ago in range(4, 0, -1):
            _visits(session, llm_id, minute - timedelta(minutes=ago), int(rate * 60))
        _visits(session, llm_id, minute, int(rate * 30))  # NOW is 30 s into its minute
        session.commit()
    actuator = InMemoryActuator(NODES)
    settings = Settings(solver_time_limit_s=2)
    assert Reconciler(engine, actuator, settings, clock=lambda: NOW).run_once().action is Action.apply
    assert _replicas(engine) == 1  # the estimate: one replica serves 3 visits/s at its operating point

    # The next minute, the replica runs at 95% of what it can do: 2.1 visits/s, not the 4.3 estimated.
    mu = rate / 0.95
    wait_ms = 1000 * mm1_wait_s(rate, mu)
    later = NOW + timedelta(seconds=60)
    with Session(engine) as session:
        _visits(session, llm_id, minute + timedelta(minutes=1), int(rate * 30), wait_ms)
        session.commit()
    report = Reconciler(engine, actuator, settings, clock=lambda: later).run_once()
    assert report.action is Action.apply, report.reason
    assert _replicas(engine) == 2  # sized to what a replica really completes
    with Session(engine) as session:
        (kept,) = session.exec(select(MeasuredCapacity)).all()
    assert (kept.fragment_id, kept.device_class, kept.visits_per_s) == (llm_id, "H100-SXM", pytest.approx(mu))
    with TestClient(create_app(engine, settings)) as api:  # operators see why: the wait and the capacity
        (shown,) = api.get(f"/api/v1/workloads/{workload_id}/fragments",
                           headers={"Authorization": f"Bearer {token}"}).json()["items"]
    assert shown["mean_queue_ms"] == pytest.approx(wait_ms)
    assert shown["capacity_per_replica"] == {"H100-SXM": pytest.approx(mu)}

    # Right after the move no wait has been measured with two replicas; the remembered capacity
    # keeps them: the plan does not fall back to the estimate and scale down again.
    again = Reconciler(engine, actuator, settings, clock=lambda: later + timedelta(seconds=10)).run_once()
    assert again.action is Action.keep, again.reason
    assert _replicas(engine) == 2


def test_an_accelerators_shortfall_does_not_calibrate_cpu_classes():
    classes = (by_name("H100-SXM"), by_name("L40S"), by_name("CPU-EPYC-64C"))
    embedding = FragmentView(1, "embedding:bge-large-en", "embedding", "bge-large-en", 1, 1, "acme", "w", 4.0, 300.0,
                             0.0, 1200, known_capacity={"H100-SXM": 1.0})  # far below the estimate
    got = profiles(build_problem(replace(snapshot(embedding), classes=classes,
                                         healthy_devices={"H100-SXM": 8, "L40S": 8, "CPU-EPYC-64C": 2}), 1.2, 2.0))
    estimated = {p.device_class: p for p in estimate_profiles("embedding", "bge-large-en", 300.0, 0.0, classes)}
    assert got["H100-SXM", Phase.whole].throughput_rps == pytest.approx(TARGET_UTILISATION)
    assert got["L40S", Phase.whole].throughput_rps < estimated["L40S"].throughput_rps
    assert got["CPU-EPYC-64C", Phase.whole].throughput_rps == estimated["CPU-EPYC-64C"].throughput_rps
