"""Rollback end to end: the API's rollback to an earlier version, the reconciler's automatic rollback
when a migration's workload falls below its SLA, and the pins that hold rolled-back fragments."""

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.auth import mint_token
from controlplane.models import (
    AuditEvent,
    DeviceClass,
    Fragment,
    FragmentKind,
    FragmentPin,
    FragmentProfile,
    Migration,
    MigrationState,
    Placement,
    PlacementItem,
    PlacementState,
    RequestStat,
    Role,
    Sla,
    Workload,
)
from controlplane.models._common import minute_of, utcnow
from controlplane.reconciler import Reconciler
from controlplane.seed import seed_catalog
from controlplane.settings import Settings
from tests.controlplane.conftest import auth

B = minute_of(utcnow())
MIN = timedelta(minutes=1)
LLM = "llm:llama-3.1-8b-instruct"
DEAR = "MI300X"  # a dear class the planner never picks here: the LLM is moved to it, or back to it
NODES = (
    NodeInventory("mi300x-0", DEAR, devices=4, healthy_devices=4),
    NodeInventory("l40s-0", "L40S", devices=8, healthy_devices=8),
    NodeInventory("cpu-0", "CPU-EPYC-64C", devices=2, healthy_devices=2),
)


@pytest.fixture
def rag(engine, callers):
    """acme's RAG workload (SLA p99 5 s, 99% of requests), its fragments seen 30 times a minute from
    B-10 to B+30, and its first placement, as the planner made it, applied at B+30 s."""
    with Session(engine) as session:
        seed_catalog(session)
        workload = Workload(name="rag", tenant_id=callers.acme_id)
        session.add(workload)
        session.flush()
        session.add(Sla(workload_id=workload.id, p99_ms=5000, attainment_target=0.99))
        for kind, name, model, tin, tout in [
            (FragmentKind.llm, "llama-3.1-8b-instruct", "llama-3.1-8b-instruct", 500, 100),
            (FragmentKind.embedding, "bge-large-en", "bge-large-en", 200, 0),
            (FragmentKind.tool, "search", "", 0, 0),
        ]:
            fragment = Fragment(workload_id=workload.id, key=f"{kind.value}:{name}", kind=kind, name=name, model=model,
                                first_seen=B - 10 * MIN)
            session.add(fragment)
            session.flush()
            for k in range(-10, 31):
                session.add(FragmentProfile(fragment_id=fragment.id, minute=B + k * MIN, visits=30,
                                            latency_ms_sum=30 * 50.0, tokens_in=30 * tin, tokens_out=30 * tout))
        session.commit()
    actuator = InMemoryActuator(NODES)
    cycle(engine, actuator, B + timedelta(seconds=30))
    return actuator


def cycle(engine, actuator, at):
    return Reconciler(engine, actuator, Settings(solver_time_limit_s=2), clock=lambda: at).run_once()


def llm_classes(actuator) -> set[str]:
    return {rs.device_class for rs in actuator.observe().replica_sets if rs.fragment_key == LLM}


def rewrite_llm(engine, version: int, at, llm_items, state=PlacementState.applied, migrate_from: str | None = None):
    """Write placement `version`: the newest applied one with the LLM's items replaced by `llm_items`
    ((class, phase, replicas, slices) each); with `migrate_from`, the succeeded migration that moved
    it from that class at `at`. Returns the LLM's fragment id."""
    with Session(engine) as session:
        current = session.exec(select(Placement).where(Placement.state == PlacementState.applied)
                               .order_by(Placement.version.desc())).first()
        class_id = dict(session.exec(select(DeviceClass.name, DeviceClass.id)).all())
        llm = session.exec(select(Fragment).where(Fragment.key == LLM)).one()
        placement = Placement(version=version, state=state, created_at=at,
                              applied_at=at if state == PlacementState.applied else None)
        session.add(placement)
        session.flush()
        for item in session.exec(select(PlacementItem).where(PlacementItem.placement_id == current.id)).all():
            if item.fragment_id != llm.id:
                session.add(PlacementItem(placement_id=placement.id, fragment_id=item.fragment_id, phase=item.phase,
                                          device_class_id=item.device_class_id, replicas=item.replicas, slices=item.slices))
        for cls, phase, replicas, slices in llm_items:
            session.add(PlacementItem(placement_id=placement.id, fragment_id=llm.id, device_class_id=class_id[cls],
                                      phase=phase, replicas=replicas, slices=slices))
        if migrate_from is not None:
            session.add(Migration(placement_id=placement.id, fragment_id=llm.id,
                                  from_device_class_id=class_id[migrate_from], to_device_class_id=class_id[llm_items[0][0]],
                                  phase=llm_items[0][1], replicas=1, state=MigrationState.succeeded,
                                  started_at=at, finished_at=at))
        session.commit()
        return llm.id


def llm_items(engine, version: int) -> list[tuple[str, str, int, int]]:
    with Session(engine) as session:
        return [(cls, item.phase, item.replicas, item.slices) for item, cls in session.exec(
            select(PlacementItem, DeviceClass.name).join(Fragment, Fragment.id == PlacementItem.fragment_id)
            .join(DeviceClass, DeviceClass.id == PlacementItem.device_class_id)
            .join(Placement, Placement.id == PlacementItem.placement_id)
            .where(Fragment.key == LLM, Placement.version == version)).all()]


ON_DEAR = [(DEAR, "", 1, 1)]


def items_of(client, token, version) -> set[tuple[str, str, int]]:
    body = client.get(f"/api/v1/placements/{version}", headers=auth(token)).json()
    return {(i["fragment_key"], i["device_class"], i["replicas"]) for i in body["items"]}


# ---- POST /placements/{version}/rollback ----------------------------------------------------------------


def test_rolling_back_to_an_earlier_version_reapplies_it_and_pins_what_it_moves(client, callers, engine, rag):
    first = llm_classes(rag)
    assert DEAR not in first  # the planner's choice; v2 moves the LLM to the dearer class
    llm_id = rewrite_llm(engine, 2, B + 2 * MIN, ON_DEAR)
    response = client.post("/api/v1/placements/1/rollback", headers=auth(callers.operator))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"] == 3 and body["state"] == "applying" and body["rollback_to"] == 1
    assert body["decided_by"].endswith(":ops") and body["reason"] == f"rollback to v1 by {body['decided_by']}"
    assert items_of(client, callers.viewer, 3) == items_of(client, callers.viewer, 1)
    moves = client.get("/api/v1/migrations", params={"state": "pending"}, headers=auth(callers.viewer)).json()["items"]
    # v2 runs one LLM replica on the dear class, v1 ran two on the planner's class: one moves, one is added
    assert sorted((m["fragment_id"], m["from_device_class"] or "", m["to_device_class"], m["placement_id"])
                  for m in moves) == sorted((llm_id, source, cls, body["id"]) for source in ("", DEAR) for cls in first)
    pins = client.get("/api/v1/pins", headers=auth(callers.viewer)).json()["items"]
    assert [(p["fragment_key"], p["device_classes"]) for p in pins] == [(LLM, sorted(first))]

    cycle(engine, rag, B + 3 * MIN)  # the reconciler actuates it at its next cycle
    assert client.get("/api/v1/placements/3", headers=auth(callers.viewer)).json()["state"] == "applied"
    assert llm_classes(rag) == first
    with Session(engine) as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "placement.rollback")).one()
    assert event.actor.endswith(":ops") and event.detail["rollback_to"] == 1


def test_a_tenant_reads_its_moves_and_pins_of_an_operators_rollback_without_the_operators_name(
        client, callers, engine, rag):
    rewrite_llm(engine, 2, B + 2 * MIN, ON_DEAR)
    body = client.post("/api/v1/placements/1/rollback", headers=auth(callers.operator)).json()
    actor, acme = body["decided_by"], auth(callers.acme_operator)
    moves = client.get("/api/v1/migrations", params={"state": "pending"}, headers=acme)
    pins = client.get("/api/v1/pins", headers=acme)
    placement = client.get(f"/api/v1/placements/{body['version']}", headers=acme)
    assert all(actor not in r.text for r in (moves, pins, placement))
    assert {m["reason"] for m in moves.json()["items"]} == {"rollback to v1 by a fleet-wide operator"}
    assert [(p["created_by"], p["reason"]) for p in pins.json()["items"]] == [
        ("a fleet-wide operator", "rollback to v1 by a fleet-wide operator")]
    assert placement.json()["decided_by"] == "a fleet-wide operator"
    # Fleet-wide callers see who asked.
    assert [p["created_by"] for p in client.get("/api/v1/pins", headers=auth(callers.viewer)).json()["items"]] == [actor]


def test_rollback_refuses_unknown_unapplied_and_current_versions_and_tenant_tokens(client, callers, engine, rag):
    rewrite_llm(engine, 2, B + 2 * MIN, ON_DEAR)
    rewrite_llm(engine, 3, B + 3 * MIN, llm_items(engine, 1), state=PlacementState.proposed)
    rewrite_llm(engine, 4, B + 3 * MIN, llm_items(engine, 1), state=PlacementState.failed)

    def rollback(version, token=callers.operator):
        return client.post(f"/api/v1/placements/{version}/rollback", headers=auth(token))

    missing = rollback(99)
    assert missing.status_code == 404 and "version 99 not found" in missing.json()["detail"]
    for version, state in [(3, "proposed"), (4, "failed")]:
        refused = rollback(version)
        assert refused.status_code == 409 and f"v{version} is {state} and was never applied" in refused.json()["detail"]
    current = rollback(2)
    assert current.status_code == 409 and "v2 is the current placement" in current.json()["detail"]
    tenant = rollback(1, callers.acme_operator)
    assert tenant.status_code == 403 and "tenant-scoped" in tenant.json()["detail"]
    assert rollback(1, callers.viewer).status_code == 403
    with Session(engine) as session:
        assert len(session.exec(select(Placement)).all()) == 4 and not session.exec(select(FragmentPin)).all()


# ---- automatic rollback -----------------------------------------------------------------------------------


def request_stats(engine, outcomes: dict[int, tuple[int, int]]) -> None:
    """RequestStat of the workload for minutes B+k: k -> (requests, within SLA)."""
    with Session(engine) as session:
        wid = session.exec(select(Workload.id)).one()
        for k, (requests, within) in outcomes.items():
            session.add(RequestStat(workload_id=wid, minute=B + k * MIN, requests=requests, within_sla=within))
        session.commit()


def regressed_move(engine) -> tuple[set[str], int]:
    """The LLM ran on the dear class in v1 and was moved to the planner's choice by v2, at B+1:10; the
    workload met its SLA in the three minutes before and missed it in every one of the three after.
    Returns the planner's classes for the LLM and its fragment id."""
    planned_items = llm_items(engine, 1)
    with Session(engine) as session:  # v1 as it would have been: the LLM on one dear device
        v1 = session.exec(select(Placement).where(Placement.version == 1)).one()
        llm = session.exec(select(Fragment).where(Fragment.key == LLM)).one()
        for item in session.exec(select(PlacementItem).where(PlacementItem.placement_id == v1.id,
                                                             PlacementItem.fragment_id == llm.id)).all():
            session.delete(item)
        dear = session.exec(select(DeviceClass).where(DeviceClass.name == DEAR)).one()
        session.add(PlacementItem(placement_id=v1.id, fragment_id=llm.id, device_class_id=dear.id, replicas=1, slices=1))
        session.commit()
    llm_id = rewrite_llm(engine, 2, B + MIN + timedelta(seconds=10), planned_items, migrate_from=DEAR)
    request_stats(engine, {-2: (100, 100), -1: (100, 100), 0: (100, 100), 2: (100, 40), 3: (80, 40), 4: (100, 50)})
    return {cls for cls, _, _, _ in planned_items}, llm_id


def test_a_migration_after_which_the_sla_fell_is_rolled_back_and_pinned_until_cleared(client, callers, engine, rag):
    planned, llm_id = regressed_move(engine)
    cycle(engine, rag, B + 4 * MIN + timedelta(seconds=30))  # minute B+4 still open: not judged yet
    with Session(engine) as session:
        assert not session.exec(select(Placement).where(Placement.rollback_to.is_not(None))).all()

    cycle(engine, rag, B + 5 * MIN + timedelta(seconds=30))
    with Session(engine) as session:
        rollback = session.exec(select(Placement).where(Placement.rollback_to.is_not(None))).one()
        assert (rollback.rollback_to, rollback.state) == (1, PlacementState.applied)
        v2 = session.exec(select(Placement).where(Placement.version == 2)).one()
        moved = session.exec(select(Migration).where(Migration.placement_id == v2.id)).one()
        assert moved.rollback_placement_id == rollback.id  # never rolled back again
        pin = session.exec(select(FragmentPin)).one()
        assert (pin.fragment_id, pin.device_classes, pin.created_by) == (llm_id, [DEAR], "reconciler")
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "placement.rollback")).one()
    assert event.detail["attainment_before_pct"] == 100.0 and event.detail["attainment_after_pct"] == [40.0, 50.0, 50.0]
    assert llm_items(engine, rollback.version) == ON_DEAR and llm_classes(rag) == {DEAR}
    mine = client.get("/api/v1/migrations", params={"state": "succeeded"}, headers=auth(callers.acme_operator)).json()
    assert any("workload rag had 100.0% of requests within SLA" in m["reason"] for m in mine["items"])

    # Past the cooldown, the planner would move the LLM off the dearer class again; the pin holds it there.
    for minutes in (12, 18):
        cycle(engine, rag, B + minutes * MIN)
        assert llm_classes(rag) == {DEAR}
    with Session(engine) as session:
        assert len(session.exec(select(Placement).where(Placement.rollback_to.is_not(None))).all()) == 1

    assert client.get("/api/v1/pins", headers=auth(callers.globex_viewer)).json()["total"] == 0
    with Session(engine) as session:
        globex_ops = mint_token(session, "globex-ops", Role.operator, tenant_id=callers.globex_id)[1]
        session.commit()
    assert client.delete(f"/api/v1/pins/{llm_id}", headers=auth(globex_ops)).status_code == 404
    assert client.delete(f"/api/v1/pins/{llm_id}", headers=auth(callers.viewer)).status_code == 403
    assert client.delete(f"/api/v1/pins/{llm_id}", headers=auth(callers.acme_operator)).status_code == 204
    assert client.get(f"/api/v1/pins/{llm_id}", headers=auth(callers.viewer)).status_code == 404
    cycle(engine, rag, B + 19 * MIN)
    assert llm_classes(rag) == planned  # cleared: the planner moves it where it was cheapest
    with Session(engine) as session:
        cleared = session.exec(select(AuditEvent).where(AuditEvent.action == "pin.clear")).one()
    assert cleared.actor.endswith(":acme-ops") and cleared.tenant_id == callers.acme_id


def test_a_move_off_a_class_that_lost_its_devices_is_not_rolled_back(engine, rag):
    regressed_move(engine)
    rag.nodes = tuple(replace(n, healthy_devices=0) if n.device_class == DEAR else n for n in rag.nodes)
    cycle(engine, rag, B + 5 * MIN + timedelta(seconds=30))
    with Session(engine) as session:
        assert not session.exec(select(Placement).where(Placement.rollback_to.is_not(None))).all()
        assert not session.exec(select(FragmentPin)).all()
