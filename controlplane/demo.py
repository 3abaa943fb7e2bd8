"""`heteroplane demo`: the whole control plane on the embedded default, over a simulated fleet.

Three sample agent apps replay the Azure LLM trace through the OpenTelemetry SDK into our
receiver; the reconciler places their fragments every period; the console shows the result.
"""

import threading
from dataclasses import dataclass

from rich.console import Console
from sqlmodel import Session, select

from collectors.pipeline import Ingest
from collectors.receiver import create_receiver_app
from controlplane.app import create_app
from controlplane.auth import mint_token
from controlplane.db import make_engine, pool_size
from controlplane.models import Role, Sla, Tenant, Workload
from controlplane.reconciler import Reconciler
from controlplane.runtime import (
    ServerThread,
    port_is_free,
    prepare_database,
    report_cycles,
    run_until_interrupted,
)
from controlplane.settings import Settings
from controlplane.simfleet import SimulatedFleet
from optimizer.types import Priority


@dataclass(frozen=True)
class SampleWorkload:
    tenant: str
    name: str
    description: str
    p99_ms: float
    priority: Priority = Priority.realtime


# SLAs sized to what the sample apps need when well placed (see the simulated fleet's physics).
SAMPLE_WORKLOADS = (
    SampleWorkload("acme", "rag-chatbot", "RAG chatbot: embed, retrieve, rerank, generate (Azure conv trace)", 20_000),
    SampleWorkload("acme", "coding-agent", "Coding agent calling tools in a loop (Azure code trace)", 30_000),
    SampleWorkload("globex", "doc-pipeline", "Document-processing batch pipeline", 15_000, Priority.batch),
)


def seed_demo(session: Session) -> None:
    """Tenants, workloads and SLAs of the sample apps; existing rows are left as they are."""
    for sample in SAMPLE_WORKLOADS:
        tenant = session.exec(select(Tenant).where(Tenant.name == sample.tenant)).first()
        if tenant is None:
            tenant = Tenant(name=sample.tenant, display_name=sample.tenant.title())
            session.add(tenant)
            session.flush()
        workload = session.exec(
            select(Workload).where(Workload.tenant_id == tenant.id, Workload.name == sample.name)
        ).first()
        if workload is None:
            workload = Workload(tenant_id=tenant.id, name=sample.name, description=sample.description,
                                priority=sample.priority)
            session.add(workload)
            session.flush()
        if session.exec(select(Sla).where(Sla.workload_id == workload.id)).first() is None:
            session.add(Sla(workload_id=workload.id, p99_ms=sample.p99_ms))


def run_demo(settings: Settings, console: Console) -> int:
    """Start everything, print where to look, and run until Ctrl-C; returns the exit code."""
    ports = {"API": (settings.api_host, settings.api_port), "OTLP": (settings.otlp_host, settings.otlp_port),
             "fleet metrics": ("127.0.0.1", settings.sim_metrics_port)}
    for what, (host, port) in ports.items():
        if not port_is_free(host, port):
            console.print(f"[red]port {port} for the {what} is in use; stop what holds it or set HETEROPLANE_*_PORT[/red]")
            return 2

    engine = make_engine(settings.effective_database_url, pool_size(settings.api_concurrency))
    prepare_database(engine, settings)
    with Session(engine) as session:
        seed_demo(session)
        _, console_token = mint_token(session, "demo-console", Role.admin)
        _, fleet_token = mint_token(session, "demo-fleet-telemetry", Role.operator)
        session.commit()

    ingest = Ingest(engine)
    app = create_app(engine, settings, ingest)
    api = ServerThread(app, settings.api_host, settings.api_port, "api")
    otlp = ServerThread(create_receiver_app(engine, settings, ingest), settings.otlp_host, settings.otlp_port, "otlp")
    fleet = SimulatedFleet(
        seed=settings.sim_seed,
        speedup=settings.sim_speedup,
        otlp_endpoint=f"http://{settings.otlp_host}:{settings.otlp_port}/v1/traces",
        otlp_headers={"Authorization": f"Bearer {fleet_token}"},
        metrics_port=settings.sim_metrics_port,
        metrics_addr="127.0.0.1",
    )
    reconciler = Reconciler(engine, fleet, settings, observer=app.state.telemetry.reconciler)  # for /metrics
    app.state.reconciler = reconciler  # GET /health reports the SLAs its latest cycle could not meet
    stop = threading.Event()

    loop = threading.Thread(
        target=report_cycles, args=(reconciler, app.state.components, stop), name="reconciler", daemon=True
    )
    ingest.start()
    api.start()
    otlp.start()
    fleet.start()
    loop.start()

    base = f"http://{settings.api_host}:{settings.api_port}"
    console.print("[bold]heteroplane demo is running[/bold] (Ctrl-C stops everything)")
    console.print(f"  Console   {base}/ui")
    console.print("            sign in with this admin token (it is shown once):")
    console.print(f"            {console_token}", markup=False, highlight=False)
    console.print(f"  REST API  {base}/api/v1   OpenAPI: {base}/docs")
    console.print(f"  OTLP      http://{settings.otlp_host}:{settings.otlp_port}/v1/traces")
    console.print(f"  Metrics   http://127.0.0.1:{fleet.metrics_port}/metrics (simulated DCGM and vLLM)")
    console.print(f"  Database  {settings.effective_database_url}")
    console.print(f"  Placements are re-planned every {settings.reconcile_period_s:g}s; charts fill within a minute.")

    def stop_loop() -> None:
        stop.set()
        loop.join(timeout=30)

    run_until_interrupted([engine.dispose, ingest.stop, api.stop, otlp.stop, fleet.stop, stop_loop])
    console.print("stopped")
    return 0
