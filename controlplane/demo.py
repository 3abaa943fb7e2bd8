"""`heteroplane demo`: the whole control plane on the embedded default, over a simulated fleet.

Three sample agent apps replay the Azure LLM trace through the OpenTelemetry SDK into our
receiver; the reconciler places their fragments every period; the console shows the result.
"""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console
from sqlmodel import Session, select

from controlplane.auth import mint_token
from controlplane.composition import build
from controlplane.db import display_url
from controlplane.models import ApiToken, AuditEvent, Role, Sla, Tenant, Workload
from controlplane.models._common import utcnow
from controlplane.runtime import port_is_free, run_until_interrupted
from controlplane.settings import Settings
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


CONSOLE_TOKEN = "demo-console"


def console_token(session: Session, now: datetime) -> str:
    """A fresh admin token for the demo's console, the one live admin token named CONSOLE_TOKEN:
    those of earlier runs are revoked (and audited), since a secret, shown once and never stored,
    cannot be shown again; so `make demo` run again and again leaves one, not one per run."""
    earlier = session.exec(select(ApiToken).where(
        ApiToken.name == CONSOLE_TOKEN, ApiToken.role == Role.admin, ApiToken.tenant_id.is_(None),
        ApiToken.revoked_at.is_(None),
    ))
    for row in earlier.all():
        row.revoked_at = now
        session.add(AuditEvent(actor="heteroplane demo", action="token.revoke", target_type=ApiToken.__tablename__,
                               target_id=str(row.id), detail={"name": row.name}))
    _, raw = mint_token(session, CONSOLE_TOKEN, Role.admin)
    return raw


def prepare_demo(session: Session, now: datetime) -> str:
    """What the demo writes before it starts: the sample apps, once (seed_demo), and a console admin
    token that replaces the previous run's (console_token), returned."""
    seed_demo(session)
    return console_token(session, now)


def run_demo(settings: Settings, console: Console, log_file: Path | None = None) -> int:
    """Start everything over the simulated fleet, print where to look, and run until Ctrl-C; returns
    the exit code. The same components as `serve` (controlplane.composition), with the simulated
    fleet as the actuator, the API in this process and the sample workloads seeded. The banner
    (where to look, the token) is printed last, between two rules; `log_file` is where the log
    goes meanwhile (set up by the caller), named in the banner."""
    settings = settings.model_copy(update={"actuator": "sim", "api_workers": 1})
    ports = {"API": (settings.api_host, settings.api_port), "OTLP": (settings.otlp_host, settings.otlp_port),
             "fleet metrics": ("127.0.0.1", settings.sim_metrics_port)}
    for what, (host, port) in ports.items():
        if not port_is_free(host, port):
            console.print(f"[red]port {port} for the {what} is in use; stop what holds it or set HETEROPLANE_*_PORT[/red]")
            return 2
    try:
        plane = build(settings)
        with Session(plane.engine) as session:
            token = prepare_demo(session, utcnow())
            session.commit()
        plane.start()
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        return 2

    base = f"http://{settings.api_host}:{settings.api_port}"
    console.rule("[bold]heteroplane demo is running[/bold]")
    lines = [
        f"  Console   {base}/ui",
        "            admin token (shown once; the previous demo's is revoked):",
        f"            {token}",
        f"  REST API  {base}/api/v1",
        f"  API docs  {base}/docs and {base}/redoc",
        f"  OTLP      http://{settings.otlp_host}:{settings.otlp_port}/v1/traces",
        f"  Metrics   http://127.0.0.1:{plane.actuator.metrics_port}/metrics (simulated DCGM and vLLM)",
        f"  Database  {display_url(settings.effective_database_url)}",
        *([f"  Log       {log_file} (warnings and errors show below too)"] if log_file is not None else []),
        f"  Placements are re-planned every {settings.reconcile_period_s:g} s; charts fill within a minute.",
    ]
    for line in lines:  # soft_wrap: a long URL or path is left whole, for the terminal to wrap or copy
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.rule("Ctrl-C stops everything")
    run_until_interrupted([plane.stop])
    console.print("stopped")
    return 0
