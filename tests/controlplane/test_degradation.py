"""When no plan meets every SLA: the reconciler applies the best plan by priority, and /health says
which SLAs it cannot meet, by name, to callers allowed to see them."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from controlplane import reconciler as reconciler_module
from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.app import create_app
from controlplane.auth import mint_token
from controlplane.models import Fragment, FragmentKind, FragmentProfile, Placement, Role, Sla, Tenant, Workload
from controlplane.models._common import minute_of, utcnow
from controlplane.policy import Action
from controlplane.reconciler import Reconciler
from controlplane.seed import seed_catalog
from controlplane.settings import Settings
from optimizer.types import Infeasibility, Plan, PlanStatus, Priority, ShortfallCause, ShortfallKind

NOW = minute_of(utcnow()) + timedelta(seconds=30)
# One L40S: room for a few replicas of an 8B chat model, not for a busy batch pipeline beside it.
TINY = (NodeInventory("l40s-0", "L40S", devices=1, healthy_devices=1),)
MODEL = "llama-3.1-8b-instruct"


def _workload(session: Session, tenant: str, name: str, priority: Priority, visits: int, p99_ms: float) -> int:
    """A workload of one 8B LLM fragment seen `visits` times in the last 30 s, with a p99 SLA."""
    row = session.exec(select(Tenant).where(Tenant.name == tenant)).first()
    if row is None:
        row = Tenant(name=tenant)
        session.add(row)
        session.flush()
    workload = Workload(name=name, tenant_id=row.id, priority=priority)
    session.add(workload)
    session.flush()
    fragment = Fragment(workload_id=workload.id, key=f"llm:{MODEL}", kind=FragmentKind.llm, name=MODEL, model=MODEL,
                        first_seen=NOW - timedelta(minutes=10))
    session.add(fragment)
    session.flush()
    session.add(FragmentProfile(fragment_id=fragment.id, minute=minute_of(NOW), visits=visits,
                                latency_ms_sum=visits * 500.0, tokens_in=visits * 500, tokens_out=visits * 100))
    session.add(Sla(workload_id=workload.id, p99_ms=p99_ms))
    return workload.id


def _run(engine, nodes=TINY):
    reconciler = Reconciler(engine, InMemoryActuator(nodes), Settings(solver_time_limit_s=2), clock=lambda: NOW)
    return reconciler, reconciler.run_once()


def _health(engine, reconciler, token: str | None = None) -> tuple[int, dict]:
    app = create_app(engine, Settings())
    app.state.reconciler = reconciler  # as the demo wires it
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = client.get("/api/v1/health", headers=headers)
    return response.status_code, response.json()


def _token(engine, role: Role, tenant: str | None = None) -> str:
    with Session(engine) as session:
        tenant_id = session.exec(select(Tenant.id).where(Tenant.name == tenant)).one() if tenant else None
        raw = mint_token(session, f"t-{role}-{tenant}", role, tenant_id=tenant_id)[1]
        session.commit()
    return raw


def test_batch_is_shed_first_and_health_names_what_is_not_met(engine):
    # 10 rps of realtime chat fits the one L40S; 200 rps of batch on top of it does not.
    with Session(engine) as session:
        seed_catalog(session)
        chat = _workload(session, "acme", "chatbot", Priority.realtime, 300, 20_000)
        docs = _workload(session, "globex", "doc-pipeline", Priority.batch, 6000, 20_000)
        session.commit()
    reconciler, report = _run(engine)

    assert report.action is Action.apply
    placed = {rs.workload: rs.replicas for rs in reconciler.actuator.observe().replica_sets}
    assert placed.get("chatbot", 0) > 0 and "doc-pipeline" not in placed  # batch shed, realtime kept
    (short,) = report.shortfalls
    assert (short.workload, short.kind, short.cause) == (str(docs), ShortfallKind.demand, ShortfallCause.shed)
    with Session(engine) as session:
        placement = session.exec(select(Placement)).one()
    assert placement.solver_status == "degraded"
    # Placement reasons are read by every tenant: no more than /health tells anyone, never a name.
    assert placement.reason.endswith("degraded: no plan meets every SLA, 1 not met by this one; "
                                     "GET /health says which and why")

    status, body = _health(engine, reconciler, _token(engine, Role.viewer))
    assert status == 503 and body["status"] == "degraded" and body["unmet_sla_count"] == 1
    (unmet,) = body["unmet_slas"]
    assert (unmet["workload"], unmet["tenant"], unmet["workload_id"], unmet["kind"]) == (
        "doc-pipeline", "globex", docs, "demand")
    assert unmet["reason"].startswith("globex/doc-pipeline (batch): serving 0 requests/s of 22.22 requests/s demanded")
    assert "L40S devices, 1 healthy" in unmet["reason"] and "e+" not in unmet["reason"]
    assert chat not in {u["workload_id"] for u in body["unmet_slas"]}

    # No token: the count only. Another tenant's token: not globex's workloads.
    assert _health(engine, reconciler)[1]["unmet_slas"] == []
    assert _health(engine, reconciler, "hp_not-a-token")[1]["unmet_slas"] == []
    _, acme = _health(engine, reconciler, _token(engine, Role.operator, "acme"))
    assert acme["unmet_sla_count"] == 1 and acme["unmet_slas"] == []
    _, globex = _health(engine, reconciler, _token(engine, Role.viewer, "globex"))
    assert [u["workload"] for u in globex["unmet_slas"]] == ["doc-pipeline"]

    # The next cycle finds the degraded plan in force: nothing to change, and still loud about it.
    again = reconciler.run_once()
    assert again.action is Action.keep and again.shortfalls == report.shortfalls, again.reason
    assert _health(engine, reconciler)[1]["unmet_sla_count"] == 1

    # Capacity comes back: the batch pipeline is served again and health follows the latest cycle.
    reconciler.actuator.nodes = (NodeInventory("l40s-0", "L40S", devices=16, healthy_devices=16),)
    restored = reconciler.run_once()
    assert restored.action is Action.apply and restored.shortfalls == ()
    assert "doc-pipeline" in {rs.workload for rs in reconciler.actuator.observe().replica_sets}
    status, body = _health(engine, reconciler)
    assert status == 200 and body["status"] == "ok" and body["unmet_sla_count"] == 0


def test_an_sla_no_class_meets_is_reported_in_ms(engine):
    # 100 output tokens of an 8B model take far longer than 50 ms on any class.
    with Session(engine) as session:
        seed_catalog(session)
        _workload(session, "acme", "chatbot", Priority.realtime, 300, 50)
        session.commit()
    reconciler, report = _run(engine)
    assert report.action is Action.apply  # served as fast as the fleet can, not left unplaced
    _, body = _health(engine, reconciler, _token(engine, Role.admin))
    (unmet,) = body["unmet_slas"]
    assert unmet["kind"] == "latency" and unmet["cause"] == "no_fast_class"
    predicted = unmet["predicted_p99_ms"]
    assert predicted > 50
    assert unmet["reason"] == (
        f"acme/chatbot (realtime): predicted p99 {predicted:,.0f} ms vs SLA 50 ms; no device class of this fleet "
        f"is fast enough (the fastest placement gives {report.shortfalls[0].best_p99_ms:,.0f} ms)")


def test_health_is_ok_when_every_sla_is_met(engine):
    with Session(engine) as session:
        seed_catalog(session)
        _workload(session, "acme", "chatbot", Priority.realtime, 300, 20_000)
        session.commit()
    reconciler, report = _run(engine)
    assert report.shortfalls == ()
    status, body = _health(engine, reconciler, _token(engine, Role.admin))
    assert status == 200 and body["status"] == "ok" and body["unmet_sla_count"] == 0


def test_a_solve_out_of_time_is_no_reason_to_shed(engine, monkeypatch):
    # Only a proven infeasibility degrades: a plan not found in time keeps what runs.
    with Session(engine) as session:
        seed_catalog(session)
        _workload(session, "acme", "chatbot", Priority.realtime, 300, 20_000)
        session.commit()
    timed_out = Plan(PlanStatus.infeasible, diagnosis=("no feasible plan found within the 2 s time limit",),
                     infeasibility=Infeasibility.not_proven)
    monkeypatch.setattr(reconciler_module, "solve", lambda problem: timed_out)
    monkeypatch.setattr(reconciler_module, "degrade", lambda problem: pytest.fail("degraded on a timeout"))
    _, report = _run(engine)
    assert report.action is Action.keep and report.shortfalls == ()
    assert report.reason.startswith("no feasible plan")
