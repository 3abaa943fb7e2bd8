"""Tenants: who workloads, costs and tokens belong to."""

from fastapi import APIRouter, status
from sqlmodel import select

from controlplane.api.common import Id, Page, WindowDep, apply_update, audit, get_or_404, paginate, remove, save
from controlplane.api.routing import OneHopRoute
from controlplane.deps import Admin, SessionDep, Viewer, check_tenant, fleet_writer
from controlplane.errors import Conflict
from controlplane.models import Tenant
from controlplane.models.tenancy import TenantCreate, TenantPublic, TenantUpdate

router = APIRouter(tags=["tenants"], route_class=OneHopRoute)


@router.get("/tenants", response_model=Page[TenantPublic])
def list_tenants(session: SessionDep, principal: Viewer, win: WindowDep):
    statement = select(Tenant)
    if principal.tenant_id is not None:
        statement = statement.where(Tenant.id == principal.tenant_id)
    items, total = paginate(session, statement, win, Tenant.id)
    return Page(items=items, total=total, limit=win.limit, offset=win.offset)


@router.get("/tenants/{tenant_id}", response_model=TenantPublic)
def get_tenant(tenant_id: Id, session: SessionDep, principal: Viewer):
    check_tenant(principal, tenant_id, f"tenant {tenant_id}")
    return get_or_404(session, Tenant, tenant_id, "tenant")


@router.post("/tenants", response_model=TenantPublic, status_code=status.HTTP_201_CREATED)
def create_tenant(body: TenantCreate, session: SessionDep, principal: Admin):
    fleet_writer(principal)
    if session.exec(select(Tenant).where(Tenant.name == body.name)).first():
        raise Conflict(f"a tenant named {body.name!r} already exists", field="name")
    row = Tenant.model_validate(body)
    session.add(row)
    session.flush()
    audit(session, principal, "tenant.create", row, tenant_id=row.id, detail=body.model_dump())
    session.commit()
    return row


@router.patch("/tenants/{tenant_id}", response_model=TenantPublic)
def update_tenant(tenant_id: Id, body: TenantUpdate, session: SessionDep, principal: Admin):
    fleet_writer(principal)
    row = get_or_404(session, Tenant, tenant_id, "tenant")
    return save(session, principal, row, "tenant.update", tenant_id=row.id, detail=apply_update(row, body))


@router.delete("/tenants/{tenant_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_tenant(tenant_id: Id, session: SessionDep, principal: Admin):
    """Deletes the tenant with its workloads, their graphs, usage and tokens."""
    fleet_writer(principal)
    row = get_or_404(session, Tenant, tenant_id, "tenant")
    remove(session, principal, row, "tenant.delete", detail={"name": row.name})
