"""GET /metrics as a scraper reads it: parsed by prometheus_client's own parser, each value checked
against the database, the actuator or the ingest pipeline, in one process and through an API worker."""

import threading
import time
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlmodel import Session, select

from collectors.normalise import normalise_request
from collectors.pipeline import Ingest
from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.app import create_app
from controlplane.auth import mint_token
from controlplane.collected import database_sink
from controlplane.models import Migration, MigrationState, Placement, PlacementState, Role
from controlplane.reconciler import Reconciler
from controlplane.settings import Settings
from controlplane.telemetry import Telemetry
from controlplane.workers import STALE_AFTER_S, PublishedStatus, StatusBoard
from tests.collectors.otlp_builders import agent_loop, make_request
from tests.controlplane.conftest import Callers, auth
from tests.controlplane.test_reconciler import NODES, NOW, graph  # noqa: F401  (graph: the seeded workload)


@pytest.fixture
def viewer(engine) -> str:
    """A fleet-wide viewer token (no tenant rows, so it fits beside the seeded workload)."""
    with Session(engine) as session:
        raw = mint_token(session, "prometheus", Role.viewer)[1]
        session.commit()
    return raw


def scrape(client: TestClient, token: str) -> dict[str, list[Sample]]:
    """The samples of each family /metrics serves; fails when a family is printed twice."""
    response = client.get("/metrics", headers=auth(token))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(response.text))
    names = Counter(f.name for f in families)
    assert not [name for name, n in names.items() if n > 1], "families printed twice"
    return {f.name: f.samples for f in families}


def value(families: dict[str, list[Sample]], sample: str, **labels: str) -> float:
    found = [s.value for samples in families.values() for s in samples if s.name == sample and s.labels == labels]
    assert len(found) == 1, f"{sample}{labels}: {found}"
    return found[0]


def cycles(families: dict[str, list[Sample]], action: str, outcome: str = "ok") -> float:
    return value(families, "heteroplane_reconcile_cycles_total", action=action, outcome=outcome)


def reconciler(engine, telemetry: Telemetry, actuator=None) -> Reconciler:
    return Reconciler(engine, actuator or InMemoryActuator(NODES), Settings(solver_time_limit_s=2),
                      clock=lambda: NOW, observer=telemetry.reconciler)


class BrokenActuator(InMemoryActuator):
    def inventory(self) -> tuple[NodeInventory, ...]:
        raise ConnectionError("the cluster API is unreachable")


def test_cycles_and_the_placement_in_force_match_the_database(engine, graph, viewer):  # noqa: F811
    app = create_app(engine, Settings())
    actuator = InMemoryActuator(NODES)
    loop = reconciler(engine, app.state.telemetry, actuator)
    with TestClient(app) as client:
        before = scrape(client, viewer)
        assert loop.run_once().action.value == "apply"
        after_one = scrape(client, viewer)
        assert loop.run_once().action.value == "keep"  # nothing changed: the placement in force stays
        after_two = scrape(client, viewer)

    assert (cycles(before, "apply"), cycles(after_one, "apply"), cycles(after_two, "apply")) == (0, 1, 1)
    assert (cycles(after_one, "keep"), cycles(after_two, "keep")) == (0, 1)
    assert value(after_two, "heteroplane_reconcile_cycle_seconds_count") == 2
    assert value(after_two, "heteroplane_solve_seconds_count") == 2
    assert value(after_two, "heteroplane_infeasible_cycles_total") == 0
    assert value(after_two, "heteroplane_unmet_slas") == 0
    assert 0 <= value(after_two, "heteroplane_solve_gap_ratio") < 1
    assert value(after_two, "heteroplane_placement_applied_version") == 1

    # The replicas the actuator was asked to run, by the names an autoscaler selects on.
    desired = {(s.labels["tenant"], s.labels["workload"], s.labels["fragment"], s.labels["device_class"],
                s.labels["phase"]): s.value for s in after_two["heteroplane_desired_replicas"]}
    running = {("acme", "rag", rs.fragment_key, rs.device_class, rs.phase.value or "whole"): rs.replicas
               for rs in actuator.observe().replica_sets}
    assert desired == running and len(desired) >= 3

    with Session(engine) as session:
        placements = Counter(str(p.state) for p in session.exec(select(Placement)).all())
        migrations = Counter(str(m.state) for m in session.exec(select(Migration)).all())
    assert placements[PlacementState.applied] == 1 and migrations[MigrationState.succeeded] >= 3
    for state in PlacementState:
        assert value(after_two, "heteroplane_placements", state=state.value) == placements[state.value]
    for state in MigrationState:
        assert value(after_two, "heteroplane_migrations", state=state.value) == migrations[state.value]


def test_a_failed_cycle_counts_as_an_error(engine, callers: Callers):
    app = create_app(engine, Settings())
    loop = reconciler(engine, app.state.telemetry, BrokenActuator(NODES))
    with pytest.raises(ConnectionError):
        loop.run_once()
    with TestClient(app) as client:
        families = scrape(client, callers.admin)
    assert cycles(families, "none", "error") == 1
    assert sum(cycles(families, action) for action in ("apply", "keep", "propose", "record")) == 0
    assert value(families, "heteroplane_reconcile_cycle_seconds_count") == 1
    assert value(families, "heteroplane_solve_seconds_count") == 0  # nothing was solved


def test_the_process_leads_while_it_runs_the_loop(engine, graph):  # noqa: F811
    telemetry = Telemetry()
    stop = threading.Event()
    during = []

    def succeeded(_report) -> None:
        during.append(telemetry.registry.get_sample_value("heteroplane_leader"))
        stop.set()

    before = telemetry.registry.get_sample_value("heteroplane_leader")
    reconciler(engine, telemetry).run_forever(stop, on_success=succeeded)
    assert (before, during, telemetry.registry.get_sample_value("heteroplane_leader")) == (0, [1], 0)


def test_ingest_counts_spans_and_batches_accepted_and_refused(engine, callers: Callers):
    ingest = Ingest(database_sink(engine), max_queued_batches=1)
    spans = normalise_request(make_request(agent_loop(tool_calls=2), {"service.name": "bot"})).records
    assert ingest.submit(spans) and not ingest.submit(spans)  # the one-batch queue is full
    with TestClient(create_app(engine, Settings(), ingest)) as client:
        families = scrape(client, callers.viewer)
    assert value(families, "heteroplane_ingest_queue_batches") == 1
    assert value(families, "heteroplane_ingest_batches_total", outcome="accepted") == 1
    assert value(families, "heteroplane_ingest_batches_total", outcome="refused") == 1
    assert value(families, "heteroplane_ingest_spans_total", outcome="accepted") == len(spans) == 4
    assert value(families, "heteroplane_ingest_spans_total", outcome="refused") == len(spans)


def test_only_fleet_wide_tokens_read_metrics_unless_they_are_public(engine, callers: Callers):
    with TestClient(create_app(engine, Settings())) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=auth("hp_not-a-token")).status_code == 401
        assert client.get("/metrics", headers=auth(callers.globex_viewer)).status_code == 403
        assert client.get("/metrics", headers=auth(callers.acme_operator)).status_code == 403
        assert client.get("/metrics", headers=auth(callers.viewer)).status_code == 200
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]
    with TestClient(create_app(engine, Settings(metrics_public=True))) as client:
        public = client.get("/metrics")
    assert public.status_code == 200 and "heteroplane_placements" in public.text


def test_an_api_worker_serves_the_main_process_metrics_and_its_own_database_families(
        engine, graph, viewer, tmp_path):  # noqa: F811
    main = Telemetry(Ingest(database_sink(engine)))
    assert reconciler(engine, main).run_once().action.value == "apply"
    status = tmp_path / "status.json"
    StatusBoard(status, {"reconciler": "ok"}, None, main).publish()

    worker = create_app(engine, Settings())  # as controlplane.workers.run_worker builds it
    worker.state.published = PublishedStatus(status)
    with TestClient(worker) as client:
        fresh = scrape(client, viewer)
        worker.state.published = PublishedStatus(status, now=lambda: time.time() + STALE_AFTER_S + 1)
        stale = scrape(client, viewer)
        worker.state.published = PublishedStatus(tmp_path / "never-published.json")
        missing = scrape(client, viewer)

    assert cycles(fresh, "apply") == 1  # counted in the main process, not in this one
    assert value(fresh, "heteroplane_ingest_spans_total", outcome="accepted") == 0
    assert value(fresh, "heteroplane_main_status_stale") == 0
    assert value(fresh, "heteroplane_placements", state="applied") == 1
    assert len(fresh["heteroplane_desired_replicas"]) >= 3
    for families in (stale, missing):
        assert value(families, "heteroplane_main_status_stale") == 1
        assert "heteroplane_reconcile_cycles" not in families and "heteroplane_ingest_spans" not in families
        assert value(families, "heteroplane_placements", state="applied") == 1
