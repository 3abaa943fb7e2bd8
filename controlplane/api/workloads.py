"""Workloads (agent applications), their graphs, and their SLAs."""

from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlmodel import Session, select

from controlplane.api.common import Id, IdFilter, Page, WindowDep, apply_update, get_or_404, paginate, remove, save
from controlplane.api.routing import OneHopRoute
from controlplane.deps import Operator, SessionDep, Viewer, check_tenant
from controlplane.errors import Conflict
from controlplane.models import Edge, Fragment, Sla, Tenant, Workload
from controlplane.models._common import Instant, utcnow
from controlplane.models.workloads import (
    EdgePublic,
    FragmentPublic,
    SlaCreate,
    SlaPublic,
    SlaUpdate,
    WorkloadCreate,
    WorkloadPublic,
    WorkloadUpdate,
)
from controlplane.profiles import (
    GRAPH_FRAGMENTS_DEFAULT,
    Graph,
    Profiles,
    edge_views,
    fragment_views,
    graph_of,
    profiles_of,
)

router = APIRouter(tags=["workloads"], route_class=OneHopRoute)


def visible_workload(session: Session, principal, workload_id: int) -> Workload:
    """The workload, or 404 when it does not exist or belongs to another tenant."""
    row = get_or_404(session, Workload, workload_id, "workload")
    check_tenant(principal, row.tenant_id, f"workload {workload_id}")
    return row


@router.get("/workloads", response_model=Page[WorkloadPublic])
def list_workloads(session: SessionDep, principal: Viewer, win: WindowDep, tenant_id: IdFilter = None):
    statement = select(Workload)
    if principal.tenant_id is not None:
        statement = statement.where(Workload.tenant_id == principal.tenant_id)
    if tenant_id is not None:
        statement = statement.where(Workload.tenant_id == tenant_id)
    items, total = paginate(session, statement, win, Workload.id)
    return Page(items=items, total=total, limit=win.limit, offset=win.offset)


@router.get("/workloads/{workload_id}", response_model=WorkloadPublic)
def get_workload(workload_id: Id, session: SessionDep, principal: Viewer):
    return visible_workload(session, principal, workload_id)


@router.post("/workloads", response_model=WorkloadPublic, status_code=status.HTTP_201_CREATED)
def create_workload(body: WorkloadCreate, session: SessionDep, principal: Operator):
    check_tenant(principal, body.tenant_id, f"tenant {body.tenant_id}")
    get_or_404(session, Tenant, body.tenant_id, "tenant")
    exists = select(Workload).where(Workload.tenant_id == body.tenant_id, Workload.name == body.name)
    if session.exec(exists).first():
        raise Conflict(f"tenant {body.tenant_id} already has a workload named {body.name!r}", field="name")
    row = Workload.model_validate(body)
    return save(session, principal, row, "workload.create", tenant_id=row.tenant_id, detail=body.model_dump())


@router.patch("/workloads/{workload_id}", response_model=WorkloadPublic)
def update_workload(workload_id: Id, body: WorkloadUpdate, session: SessionDep, principal: Operator):
    row = visible_workload(session, principal, workload_id)
    return save(session, principal, row, "workload.update", tenant_id=row.tenant_id, detail=apply_update(row, body))


@router.delete("/workloads/{workload_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_workload(workload_id: Id, session: SessionDep, principal: Operator):
    row = visible_workload(session, principal, workload_id)
    remove(session, principal, row, "workload.delete", tenant_id=row.tenant_id, detail={"name": row.name})


@router.get("/workloads/{workload_id}/fragments", response_model=Page[FragmentPublic])
def list_fragments(workload_id: Id, session: SessionDep, principal: Viewer, win: WindowDep):
    visible_workload(session, principal, workload_id)
    fragments, total = paginate(session, select(Fragment).where(Fragment.workload_id == workload_id), win, Fragment.id)
    return Page(items=fragment_views(session, fragments), total=total, limit=win.limit, offset=win.offset)


@router.get("/workloads/{workload_id}/edges", response_model=Page[EdgePublic])
def list_edges(workload_id: Id, session: SessionDep, principal: Viewer, win: WindowDep):
    visible_workload(session, principal, workload_id)
    edges, total = paginate(session, select(Edge).where(Edge.workload_id == workload_id), win, Edge.id)
    return Page(items=edge_views(session, edges), total=total, limit=win.limit, offset=win.offset)


@router.get("/workloads/{workload_id}/graph", response_model=Graph, summary="The observed data-flow graph, bounded")
def get_graph(
    workload_id: Id,
    session: SessionDep,
    principal: Viewer,
    limit: Annotated[int, Query(ge=1, le=500, description="Fragments to show: the busiest (most visits).")] = GRAPH_FRAGMENTS_DEFAULT,
):
    """The `limit` fragments of most visits and the edges among them, most calls first, at most
    4 × `limit` (EDGES_PER_FRAGMENT); `fragments_total`, `edges_total` count the whole graph and `truncated`
    says whether anything was left out. The full lists page through `/fragments` and `/edges`."""
    visible_workload(session, principal, workload_id)
    return graph_of(session, workload_id, limit)


@router.get("/workloads/{workload_id}/profiles", response_model=Profiles, summary="Profiles per fragment and class")
def get_profiles(
    workload_id: Id,
    session: SessionDep,
    principal: Viewer,
    win: WindowDep,
    minutes: Annotated[int, Query(ge=1, le=1440, description="Window: this many minutes up to `until`.")] = 15,
    until: Annotated[Instant | None, Query(description="End of the window (UTC, 2000-01-01 to 2200-01-01); default now.")] = None,
):
    """Arrival rate, latency p50/p95/p99 (1% sketch), TTFT/TPOT and token histograms per fragment and class,
    one page (`limit`, `offset`) of the pairs observed in the window, most visits first; `total` counts them all."""
    visible_workload(session, principal, workload_id)
    return profiles_of(session, workload_id, until or utcnow(), minutes, win.limit, win.offset)


@router.get("/slas", response_model=Page[SlaPublic])
def list_slas(session: SessionDep, principal: Viewer, win: WindowDep):
    statement = select(Sla)
    if principal.tenant_id is not None:
        statement = statement.join(Workload, Workload.id == Sla.workload_id).where(Workload.tenant_id == principal.tenant_id)
    items, total = paginate(session, statement, win, Sla.id)
    return Page(items=items, total=total, limit=win.limit, offset=win.offset)


def visible_sla(session: Session, principal, sla_id: int) -> tuple[Sla, Workload]:
    sla = get_or_404(session, Sla, sla_id, "SLA")
    workload = session.get(Workload, sla.workload_id)
    check_tenant(principal, workload.tenant_id, f"SLA {sla_id}")
    return sla, workload


@router.get("/slas/{sla_id}", response_model=SlaPublic)
def get_sla(sla_id: Id, session: SessionDep, principal: Viewer):
    return visible_sla(session, principal, sla_id)[0]


@router.post("/slas", response_model=SlaPublic, status_code=status.HTTP_201_CREATED)
def create_sla(body: SlaCreate, session: SessionDep, principal: Operator):
    workload = visible_workload(session, principal, body.workload_id)
    if session.exec(select(Sla).where(Sla.workload_id == workload.id)).first():
        raise Conflict(f"workload {workload.id} already has an SLA; update it instead", field="workload_id")
    row = Sla.model_validate(body)
    return save(session, principal, row, "sla.create", tenant_id=workload.tenant_id, detail=body.model_dump())


@router.patch("/slas/{sla_id}", response_model=SlaPublic)
def update_sla(sla_id: Id, body: SlaUpdate, session: SessionDep, principal: Operator):
    row, workload = visible_sla(session, principal, sla_id)
    return save(session, principal, row, "sla.update", tenant_id=workload.tenant_id, detail=apply_update(row, body))


@router.delete("/slas/{sla_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_sla(sla_id: Id, session: SessionDep, principal: Operator):
    row, workload = visible_sla(session, principal, sla_id)
    remove(session, principal, row, "sla.delete", tenant_id=workload.tenant_id)
