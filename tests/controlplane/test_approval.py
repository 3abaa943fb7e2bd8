"""Approval-required and dry-run policies: one proposal per plan, approved or rejected through the API."""

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.models import (
    AuditEvent,
    Fragment,
    FragmentKind,
    FragmentProfile,
    Migration,
    MigrationPolicy,
    MigrationState,
    Placement,
    PlacementState,
    Workload,
)
from controlplane.models._common import minute_of, utcnow
from controlplane.policy import Action
from controlplane.reconciler import Reconciler
from controlplane.seed import seed_catalog
from controlplane.settings import Settings
from tests.controlplane.conftest import auth

NOW = minute_of(utcnow()) + timedelta(seconds=30)
NODES = (
    NodeInventory("l40s-0", "L40S", devices=4, healthy_devices=4),
    NodeInventory("cpu-0", "CPU-EPYC-64C", devices=2, healthy_devices=2),
)


@pytest.fixture
def fleet(engine, callers):
    """acme's chat workload (an 8B model and a tool, seen 600 times) under a policy of `policy` below."""
    with Session(engine) as session:
        seed_catalog(session)
        workload = Workload(name="chat", tenant_id=callers.acme_id)
        session.add(workload)
        session.flush()
        for kind, name, model in [(FragmentKind.llm, "llama-3.1-8b-instruct", "llama-3.1-8b-instruct"),
                                  (FragmentKind.tool, "search", "")]:
            fragment = Fragment(workload_id=workload.id, key=f"{kind.value}:{name}", kind=kind, name=name, model=model,
                                first_seen=NOW - timedelta(minutes=10))
            session.add(fragment)
            session.flush()
            session.add(FragmentProfile(fragment_id=fragment.id, minute=minute_of(NOW), visits=600,
                                        latency_ms_sum=600 * 50.0, tokens_in=600 * 500, tokens_out=600 * 100))
        session.commit()
    return InMemoryActuator(NODES)


def policy(engine, **flags) -> None:
    with Session(engine) as session:
        session.add(MigrationPolicy(name="gate", **flags))
        session.commit()


def cycle(engine, actuator, seconds: int = 0):
    return Reconciler(engine, actuator, Settings(solver_time_limit_s=2), clock=lambda: NOW + timedelta(seconds=seconds)).run_once()


def placements(engine) -> list[tuple[int, PlacementState]]:
    with Session(engine) as session:
        return [(p.version, p.state) for p in session.exec(select(Placement).order_by(Placement.version)).all()]


def migration_states(engine) -> set[MigrationState]:
    with Session(engine) as session:
        return {m.state for m in session.exec(select(Migration)).all()}


def test_an_approved_proposal_is_actuated_at_the_next_cycle(client, callers, engine, fleet):
    policy(engine, approval_required=True)
    assert cycle(engine, fleet).action is Action.propose
    again = cycle(engine, fleet, 10)  # the same plan: no second proposal
    assert again.action is Action.keep and "proposed as v1, awaiting approval" in again.reason
    assert placements(engine) == [(1, PlacementState.proposed)] and fleet.applied == []

    response = client.post("/api/v1/placements/1/approve", headers=auth(callers.operator))
    assert response.status_code == 200 and response.json()["state"] == "applying"
    assert migration_states(engine) == {MigrationState.pending}
    cycle(engine, fleet, 20)
    assert placements(engine) == [(1, PlacementState.applied)] and fleet.observe().version == 1
    assert migration_states(engine) == {MigrationState.succeeded}
    with Session(engine) as session:
        assert session.exec(select(AuditEvent).where(AuditEvent.action == "placement.approve")).one().actor.endswith(":ops")


def test_a_rejected_proposal_is_never_actuated_nor_proposed_again(client, callers, engine, fleet):
    policy(engine, approval_required=True)
    cycle(engine, fleet)
    response = client.post("/api/v1/placements/1/reject", headers=auth(callers.admin))
    assert response.status_code == 200 and response.json()["state"] == "rejected"
    assert migration_states(engine) == {MigrationState.rejected}
    report = cycle(engine, fleet, 10)
    assert report.action is Action.keep and "rejected" in report.reason
    assert placements(engine) == [(1, PlacementState.rejected)] and fleet.applied == []


def test_a_dry_run_records_one_proposal_that_cannot_be_approved(client, callers, engine, fleet):
    policy(engine, dry_run=True)
    cycle(engine, fleet)
    cycle(engine, fleet, 10)
    assert placements(engine) == [(1, PlacementState.recorded)]
    response = client.post("/api/v1/placements/1/approve", headers=auth(callers.operator))
    assert response.status_code == 409 and "dry-run" in response.json()["detail"]


def test_only_the_newest_proposal_of_a_fleet_wide_operator_can_be_decided(client, callers, engine, fleet):
    policy(engine, approval_required=True)
    cycle(engine, fleet)
    with Session(engine) as session:
        session.add(Placement(version=2, state=PlacementState.proposed))
        session.commit()
    stale = client.post("/api/v1/placements/1/approve", headers=auth(callers.operator))
    assert stale.status_code == 409 and "superseded by v2" in stale.json()["detail"]
    assert client.post("/api/v1/placements/9/approve", headers=auth(callers.operator)).status_code == 404
    assert client.post("/api/v1/placements/2/approve", headers=auth(callers.viewer)).status_code == 403
    tenant = client.post("/api/v1/placements/2/approve", headers=auth(callers.acme_operator))
    assert tenant.status_code == 403 and "tenant-scoped" in tenant.json()["detail"]
    assert client.post("/api/v1/placements/2/reject", headers=auth(callers.operator)).status_code == 200
    done = client.post("/api/v1/placements/2/approve", headers=auth(callers.operator))
    assert done.status_code == 409 and "is rejected" in done.json()["detail"]
    assert placements(engine) == [(1, PlacementState.proposed), (2, PlacementState.rejected)]


def add_visits(engine, factor: float) -> None:
    """Scale the window's visits of every fragment by `factor` (demand changes by as much)."""
    with Session(engine) as session:
        for row in session.exec(select(FragmentProfile)).all():
            row.visits = round(row.visits * factor)
            row.tokens_in, row.tokens_out = row.visits * 500, row.visits * 100
            session.add(row)
        session.commit()


def test_a_proposal_stays_open_through_jitter_and_closes_as_superseded_or_expired(client, callers, engine, fleet):
    policy(engine, approval_required=True, proposal_ttl_s=600, supersede_demand_pct=20)
    assert cycle(engine, fleet).action is Action.propose
    for step in range(1, 6):  # demand wobbles by 3%: v1 stays the one proposal
        add_visits(engine, 1.03 if step % 2 else 1 / 1.03)
        assert cycle(engine, fleet, 5 * step).action is Action.keep
    assert placements(engine) == [(1, PlacementState.proposed)]

    add_visits(engine, 3.0)  # demand triples: v1 no longer holds
    assert cycle(engine, fleet, 60).action is Action.propose
    assert placements(engine) == [(1, PlacementState.superseded), (2, PlacementState.proposed)]
    with Session(engine) as session:
        v1 = session.exec(select(Placement).where(Placement.version == 1)).one()
        assert {m.state for m in session.exec(select(Migration).where(Migration.placement_id == v1.id)).all()} == {
            MigrationState.superseded}
    stale = client.post("/api/v1/placements/1/approve", headers=auth(callers.operator))
    assert stale.status_code == 409 and "superseded" in stale.json()["detail"]

    cycle(engine, fleet, 60 + 600)  # nobody decided within the TTL
    states = dict(placements(engine))
    assert states[2] == PlacementState.expired and states[3] == PlacementState.proposed



def test_a_tenant_sees_no_fleet_wide_reason_or_cost_in_placements_and_migrations(client, callers, engine, fleet):
    cycle(engine, fleet)
    fleet_view = client.get("/api/v1/placements/1", headers=auth(callers.operator)).json()
    assert "$" in fleet_view["reason"]  # the fleet's operators read the whole reason
    for path in ("/api/v1/placements/1", "/api/v1/placements"):
        body = client.get(path, headers=auth(callers.acme_operator)).text
        assert "$" not in body and fleet_view["reason"] not in body and "fleet-wide operators" in body
    # A migration's reason speaks of its own workload only.
    moves = client.get("/api/v1/migrations", headers=auth(callers.acme_operator)).json()["items"]
    assert moves and {m["reason"] for m in moves} == {"initial placement"}


def test_approval_keeps_created_at_and_records_who_decided_and_when_it_was_applied(client, callers, engine, fleet):
    policy(engine, approval_required=True)
    cycle(engine, fleet)
    proposed = client.get("/api/v1/placements/1", headers=auth(callers.viewer)).json()
    assert proposed["decided_by"] is None and proposed["decided_at"] is None and proposed["applied_at"] is None

    approved = client.post("/api/v1/placements/1/approve", headers=auth(callers.operator)).json()
    assert approved["decided_by"].endswith(":ops") and approved["decided_at"] is not None
    cycle(engine, fleet, 20)
    applied = client.get("/api/v1/placements/1", headers=auth(callers.viewer)).json()
    assert applied["state"] == "applied" and applied["created_at"] == proposed["created_at"]
    assert applied["applied_at"].startswith((NOW + timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%S"))
    assert applied["decided_by"] == approved["decided_by"] and applied["decided_at"] == approved["decided_at"]


def test_rejection_records_who_decided(client, callers, engine, fleet):
    policy(engine, approval_required=True)
    cycle(engine, fleet)
    rejected = client.post("/api/v1/placements/1/reject", headers=auth(callers.admin)).json()
    assert rejected["state"] == "rejected" and rejected["decided_by"].endswith(":admin")
    assert rejected["decided_at"] is not None and rejected["applied_at"] is None
