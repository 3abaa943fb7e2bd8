"""Liveness and readiness: is the database reachable, when did the reconciler last finish a cycle,
and which SLAs its latest plan could not meet."""

from dataclasses import replace
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlmodel import Session, func, select

from collectors.pipeline import IngestStats
from controlplane.api.routing import OneHopRoute
from controlplane.auth import Principal
from controlplane.deps import OptionalPrincipal, SessionDep
from controlplane.errors import database_state
from controlplane.models import Tenant, Workload
from controlplane.queries import newest_placement
from controlplane.runtime import with_staleness
from optimizer.reasons import describe
from optimizer.types import Priority, Shortfall, ShortfallCause, ShortfallKind

router = APIRouter(tags=["health"], route_class=OneHopRoute)


class UnmetSla(BaseModel):
    """An SLA the reconciler's latest plan does not meet for one workload, and why, in plain units."""

    workload_id: int
    workload: str
    tenant: str
    priority: Priority
    kind: ShortfallKind = Field(description="latency: served later than the SLA; demand: part of it not served.")
    cause: ShortfallCause
    reason: str = Field(description="The shortfall in one sentence: ms, requests/s, devices, $/h.")
    sla_p99_ms: float | None = None
    predicted_p99_ms: float | None = None
    demand_rps: float = 0.0
    served_rps: float = 0.0
    device_class: str | None = None
    devices_needed: int = 0
    devices_healthy: int = 0
    extra_usd_per_hour: float = 0.0


class FoldedWorkload(BaseModel):
    """A workload whose fragment names passed HETEROPLANE_MAX_FRAGMENTS_PER_WORKLOAD and were folded."""

    workload_id: int
    workload: str
    tenant: str
    fragments_folded: int = Field(description="Names folded into its '<kind>:~overflow' fragments.")
    visits_folded: int = Field(description="Visits recorded against those overflow fragments.")


FOLDED_SHOWN = 50


class Health(BaseModel):
    status: str
    database: str
    last_placement_at: datetime | None
    components: dict[str, str]
    ingest: IngestStats | None = None
    unmet_sla_count: int = Field(
        0, description="SLAs the latest reconciler cycle's plan cannot meet (it applied the best plan by "
                       "priority instead: batch queued and shed first); any makes the status degraded.")
    unmet_slas: list[UnmetSla] = Field(
        default_factory=list,
        description="Those SLAs by workload name, with a reason in plain units. Only for a caller with a valid "
                    "token: a fleet-wide token sees every tenant's, a tenant-scoped token its own tenant's; "
                    "without a token only the count is shown.")
    workloads_folding: int = Field(
        0, description="Workloads some of whose fragment names were folded past the fragment limit (does not "
                       "degrade the status).")
    folded_workloads: list[FoldedWorkload] = Field(
        default_factory=list,
        description=f"Those workloads, most folded first (at most {FOLDED_SHOWN}), only for a caller with a valid "
                    "token: a fleet-wide token sees every tenant's, a tenant-scoped token its own tenant's.")


@router.get("/health", response_model=Health, summary="Health of the service (no token needed)")
def health(session: SessionDep, request: Request, principal: OptionalPrincipal):
    body = health_of(session, request, principal)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.status == "ok" else 503)


def health_of(session: Session, request: Request, principal: Principal | None) -> Health:
    """The service's health as `principal` (None: no token) may see it. `degraded` when the database
    does not answer, any loop of the process is not ok (the reconciler failing or standing by, the
    main process silent, ingest failing), or the latest reconciler cycle left SLAs unmet (no plan met
    them all). The console's banner shows this same answer."""
    components, stats, shortfalls = process_status(request)
    try:
        session.exec(text("SELECT 1"))
        last = newest.created_at if (newest := newest_placement(session)) is not None else None
        database = "ok"
    except Exception as exc:  # the point of a health check is to report, not raise
        database_state(up=False, why=type(exc).__name__)  # logged once per outage, without the driver's text
        session.info["database_unavailable"] = True
        last, database = None, "unavailable"
    if stats is not None and stats.last_error:
        if principal is None or principal.tenant_id is not None:
            # The driver's words may quote any tenant's rows (a key that clashed): only its kind is
            # shown but to fleet-wide tokens; the log has the whole of it.
            stats = replace(stats, last_error=stats.last_error.split(":", 1)[0])
        components["ingest"] = f"degraded: {stats.last_error}"
    unmet = visible_unmet(session, principal, shortfalls) if database == "ok" and principal is not None else []
    folding, folded = folded_workloads(session, principal) if database == "ok" else (0, [])
    ok = database == "ok" and all(v == "ok" for v in components.values()) and not shortfalls
    return Health(
        status="ok" if ok else "degraded", database=database, last_placement_at=last, components=components,
        ingest=stats, unmet_sla_count=len(shortfalls), unmet_slas=unmet, workloads_folding=folding,
        folded_workloads=folded,
    )


class Ready(BaseModel):
    ready: bool
    database: str


@router.get("/ready", response_model=Ready, summary="Whether this process can serve requests (no token needed)")
def ready(session: SessionDep):
    """For a load balancer's readiness check: 200 while this process reaches its database. Unlike
    /health it ignores the loops (ingest, Prometheus puller, reconciler) and unmet SLAs, which
    degrade every replica alike: taking them all out of service for it would stop OTLP ingest too."""
    try:
        session.exec(text("SELECT 1"))
    except Exception as exc:  # reported, not raised: the answer is the point
        database_state(up=False, why=type(exc).__name__)
        session.info["database_unavailable"] = True
        return JSONResponse(Ready(ready=False, database="unavailable").model_dump(), status_code=503)
    return Ready(ready=True, database="ok")


def process_status(request: Request) -> tuple[dict[str, str], IngestStats | None, tuple[Shortfall, ...]]:
    """The loops' states, the ingest statistics and the latest reconciler cycle's unmet SLAs of the
    process that runs them: this one, or, in an API worker process, the main process's as it last
    published them (controlplane.workers)."""
    published = getattr(request.app.state, "published", None)
    if published is not None:
        main = published.read()
        return main.components, main.ingest, main.shortfalls
    ingest = getattr(request.app.state, "ingest", None)
    reconciler = getattr(request.app.state, "reconciler", None)
    report = getattr(reconciler, "last", None)
    components = with_staleness(getattr(request.app.state, "components", {}), reconciler)
    return components, ingest.stats() if ingest is not None else None, report.shortfalls if report is not None else ()



def folded_workloads(session: Session, principal: Principal | None) -> tuple[int, list[FoldedWorkload]]:
    """How many workloads folded fragment names, and those `principal` may see (none without a token)."""
    count = session.exec(select(func.count()).select_from(Workload).where(Workload.fragments_folded > 0)).one()
    if principal is None or not count:
        return count, []
    statement = (
        select(Workload.id, Workload.name, Tenant.name, Workload.fragments_folded, Workload.visits_folded)
        .join(Tenant, Tenant.id == Workload.tenant_id)
        .where(Workload.fragments_folded > 0)
        .order_by(Workload.fragments_folded.desc(), Workload.id)
        .limit(FOLDED_SHOWN)
    )
    if principal.tenant_id is not None:
        statement = statement.where(Workload.tenant_id == principal.tenant_id)
    return count, [
        FoldedWorkload(workload_id=wid, workload=name, tenant=tenant, fragments_folded=names, visits_folded=visits)
        for wid, name, tenant, names, visits in session.exec(statement).all()
    ]


def visible_unmet(session: Session, principal: Principal, shortfalls: tuple[Shortfall, ...]) -> list[UnmetSla]:
    """`shortfalls` named for `principal`: a tenant-scoped caller sees only its own tenant's workloads."""
    ids = {int(s.workload) for s in shortfalls if s.workload.isdigit()}
    names = {
        wid: (name, tenant_id, tenant)
        for wid, name, tenant_id, tenant in session.exec(
            select(Workload.id, Workload.name, Tenant.id, Tenant.name)
            .join(Tenant, Tenant.id == Workload.tenant_id)
            .where(Workload.id.in_(ids))
        ).all()
    }
    out = []
    for s in shortfalls:
        known = names.get(int(s.workload)) if s.workload.isdigit() else None
        if known is None or not principal.can_see_tenant(known[1]):
            continue  # deleted since the cycle, or another tenant's
        name, _, tenant = known
        out.append(UnmetSla(
            workload_id=int(s.workload), workload=name, tenant=tenant, priority=s.priority, kind=s.kind, cause=s.cause,
            reason=describe(s, f"{tenant}/{name}"), sla_p99_ms=s.sla_p99_ms, predicted_p99_ms=s.predicted_p99_ms,
            demand_rps=s.demand_rps, served_rps=s.served_rps, device_class=s.device_class,
            devices_needed=s.devices_needed, devices_healthy=s.devices_healthy,
            extra_usd_per_hour=s.extra_usd_per_hour,
        ))
    return out
