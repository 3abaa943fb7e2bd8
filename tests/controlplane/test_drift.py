"""The loop trusts what runs: drift from the applied placement is re-applied and recorded, and
metering bills what the actuator reported running, not what the database asked for."""

from dataclasses import dataclass, replace
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session, select

from controlplane.actuators.base import ApplyResult, DesiredPlacement, ObservedPlacement, ReplicaSet
from controlplane.actuators.memory import InMemoryActuator
from controlplane.demo import seed_demo
from controlplane.drift import compare
from controlplane.models import (
    AuditEvent,
    DeviceClass,
    Fragment,
    FragmentKind,
    MigrationPolicy,
    Placement,
    PlacementItem,
    PlacementState,
    Tenant,
    UsageRecord,
    Workload,
)
from controlplane.reconciler import Reconciler
from controlplane.seed import seed_catalog
from controlplane.settings import Settings
from controlplane.simfleet import SimulatedFleet
from controlplane.simfleet.apps import APPS
from optimizer.types import Phase
from tests.controlplane.test_reconciler import NODES, NOW, graph, reconciler  # noqa: F401  (graph: a fixture)

LLM_8B = ReplicaSet("globex", "doc-pipeline", "llm:llama-3.1-8b-instruct", "L40S", 1)
LLM_32B = ReplicaSet("acme", "coding-agent", "llm:qwen2.5-coder-32b", "Gaudi2", 2)


# ---------------------------------------------------------------------------- the pure comparison

SETS = st.lists(
    st.builds(
        ReplicaSet,
        tenant=st.sampled_from(["acme", "globex"]),
        workload=st.just("w"),
        fragment_key=st.sampled_from(["llm:a", "llm:b", "tool:c"]),
        device_class=st.sampled_from(["H100-SXM", "L40S"]),
        replicas=st.integers(0, 3),
        slices=st.integers(1, 2),
        phase=st.sampled_from(list(Phase)),
    ),
    max_size=6,
    unique_by=lambda rs: (rs.tenant, rs.fragment_key, rs.device_class, rs.phase),
)


@given(applied=SETS, order=st.randoms())
def test_what_runs_as_applied_has_no_drift_in_any_order(applied, order):
    running = list(applied)
    order.shuffle(running)
    assert not compare(tuple(applied), tuple(running))


@given(applied=SETS, running=SETS)
def test_drift_is_exactly_the_sets_that_differ_on_named_fragments(applied, running):
    drift = compare(tuple(applied), tuple(running))
    named = {(rs.tenant, rs.workload, rs.fragment_key) for rs in applied}
    assert set(drift.missing) == {rs for rs in applied if rs.replicas and rs not in running}
    assert set(drift.unexpected) == {
        rs for rs in running if rs.replicas and rs not in applied and (rs.tenant, rs.workload, rs.fragment_key) in named
    }


def test_fragments_the_placement_does_not_name_are_not_drift():
    unmanaged = ReplicaSet("acme", "rag-chatbot", "cpu:api", "CPU-EPYC-64C", 2)
    moved = replace(LLM_8B, device_class="H100-SXM", slices=2)
    assert not compare((LLM_8B,), (LLM_8B, unmanaged))
    drift = compare((LLM_8B,), (moved, unmanaged))
    assert (drift.missing, drift.unexpected) == ((LLM_8B,), (moved,))
    assert drift.summary() == ("1 missing (doc-pipeline/llm:llama-3.1-8b-instruct on L40S ×1); "
                               "1 unexpected (doc-pipeline/llm:llama-3.1-8b-instruct on H100-SXM ×1)")


# ---------------------------------------------------------------------------- a restarted fleet


def _database_says_llms_off_h100(engine) -> None:
    """The sample apps' fragments, and an applied v1 running their small LLMs on L40S and Gaudi2; a
    dry-run policy keeps the reconciler from applying anything newer, so v1 stays what was applied."""
    with Session(engine) as session:
        seed_catalog(session)
        seed_demo(session)
        session.add(MigrationPolicy(name="look-only", dry_run=True))
        workloads = {(t.name, w.name): w.id for w, t in session.exec(select(Workload, Tenant).join(Tenant)).all()}
        fragments = {}
        for app in APPS:
            for f in app.fragments():
                row = Fragment(workload_id=workloads[(app.tenant, app.workload)], key=f.key, kind=FragmentKind(f.kind),
                               name=f.name, model=f.name if f.key.startswith("llm:") else "", first_seen=NOW)
                session.add(row)
                session.flush()
                fragments[(app.tenant, app.workload, f.key)] = row.id
        classes = dict(session.exec(select(DeviceClass.name, DeviceClass.id)).all())
        placement = Placement(version=1, state=PlacementState.applied, created_at=NOW - timedelta(minutes=5))
        session.add(placement)
        session.flush()
        for rs in (LLM_8B, LLM_32B):
            session.add(PlacementItem(placement_id=placement.id, fragment_id=fragments[rs.tenant, rs.workload, rs.fragment_key],
                                      device_class_id=classes[rs.device_class], replicas=rs.replicas, slices=rs.slices))
        session.commit()


def llm_classes(fleet) -> dict[str, str]:
    return {rs.fragment_key: rs.device_class for rs in fleet.observe().replica_sets
            if rs.fragment_key in (LLM_8B.fragment_key, LLM_32B.fragment_key)}


def test_a_restarted_fleet_is_put_back_on_the_applied_placement_within_one_cycle(engine):
    _database_says_llms_off_h100(engine)
    fleet = SimulatedFleet()  # restarted: its initial deployment, every LLM on H100
    assert llm_classes(fleet) == {LLM_8B.fragment_key: "H100-SXM", LLM_32B.fragment_key: "H100-SXM"}

    report = Reconciler(engine, fleet, Settings(solver_time_limit_s=1), clock=lambda: NOW).run_once()
    assert llm_classes(fleet) == {LLM_8B.fragment_key: "L40S", LLM_32B.fragment_key: "Gaudi2"}
    assert report.drifted == 4  # two sets missing, two unexpected
    with Session(engine) as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "placement.drift")).one()
    assert event.target_id == "1" and event.detail["reapplied"] is True
    assert event.detail["summary"].startswith("2 missing (")

    again = Reconciler(engine, fleet, Settings(solver_time_limit_s=1), clock=lambda: NOW + timedelta(seconds=10))
    assert again.run_once().drifted == 0


# ---------------------------------------------------------------------------- metering what ran


@dataclass
class StuckActuator(InMemoryActuator):
    """Says yes to every apply but keeps running what it ran before (a fleet that ignores its orders)."""

    runs: tuple[ReplicaSet, ...] = ()

    def apply(self, desired: DesiredPlacement) -> ApplyResult:
        super().apply(desired)
        return ApplyResult(ok=True)

    def observe(self) -> ObservedPlacement:
        return ObservedPlacement(None, self.runs)


def test_usage_follows_what_ran_when_the_database_says_otherwise(engine, graph):  # noqa: F811
    runs = (ReplicaSet("acme", "rag", "llm:llama-3.1-8b-instruct", "H100-SXM", 3, slices=7),)
    actuator = StuckActuator(NODES, runs=runs)
    reconciler(engine, actuator, now=NOW).run_once()
    report = reconciler(engine, actuator, now=NOW + timedelta(seconds=20)).run_once()
    assert report.drifted > 0
    with Session(engine) as session:
        placed = set(session.exec(
            select(DeviceClass.name).join(PlacementItem, PlacementItem.device_class_id == DeviceClass.id)).all())
        usage = session.exec(select(UsageRecord, DeviceClass.name).join(DeviceClass)).all()
    assert placed != {"H100-SXM"}  # the database's placement is not what ran
    # 20 s of 3 replicas × 7 of H100's 7 slices = 60 device-seconds, all on H100 and nothing else.
    assert [(name, u.device_seconds_allocated) for u, name in usage] == [("H100-SXM", 60.0)]
