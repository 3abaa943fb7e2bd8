"""Migration policies: how and when the reconciler may move things, fleet-wide or per tenant or workload."""

from fastapi import APIRouter, status
from sqlalchemy import or_
from sqlmodel import Session, select

from controlplane.api.common import Id, Page, WindowDep, apply_update, get_or_404, paginate, remove, save
from controlplane.api.routing import OneHopRoute
from controlplane.api.workloads import visible_workload
from controlplane.auth import Principal
from controlplane.deps import Operator, SessionDep, Viewer, check_tenant
from controlplane.errors import Conflict, Forbidden, NotFound
from controlplane.models import MigrationPolicy, Tenant, Workload
from controlplane.models.workloads import (
    MigrationPolicyCreate,
    MigrationPolicyPublic,
    MigrationPolicyUpdate,
)

router = APIRouter(tags=["migration policies"], route_class=OneHopRoute)


def policy_tenant(session: Session, principal: Principal, tenant_id: int | None, workload_id: int | None) -> int | None:
    """The tenant a policy's scope belongs to (None: fleet-wide), checked against the caller."""
    if workload_id is not None:
        workload = visible_workload(session, principal, workload_id)
        if tenant_id is not None and tenant_id != workload.tenant_id:
            raise Conflict(f"workload {workload_id} does not belong to tenant {tenant_id}", field="tenant_id")
        return workload.tenant_id
    if tenant_id is not None:
        check_tenant(principal, tenant_id, f"tenant {tenant_id}")
        get_or_404(session, Tenant, tenant_id, "tenant")
        return tenant_id
    return None


def visible_policy(session: Session, principal: Principal, policy_id: int) -> MigrationPolicy:
    """The policy, or the same 404 as for a missing one when it covers another tenant's tenant or
    workload (naming neither: ids leak nothing)."""
    row = get_or_404(session, MigrationPolicy, policy_id, "migration policy")
    owner = session.get(Workload, row.workload_id).tenant_id if row.workload_id is not None else row.tenant_id
    if owner is not None and not principal.can_see_tenant(owner):
        raise NotFound(f"migration policy {policy_id} not found")
    return row


def writable_policy(session: Session, principal: Principal, policy_id: int) -> MigrationPolicy:
    row = visible_policy(session, principal, policy_id)
    if row.tenant_id is None and row.workload_id is None and principal.tenant_id is not None:
        raise Forbidden("a tenant-scoped token cannot change a fleet-wide policy")
    return row


@router.get("/migration-policies", response_model=Page[MigrationPolicyPublic])
def list_policies(session: SessionDep, principal: Viewer, win: WindowDep):
    statement = select(MigrationPolicy)
    if principal.tenant_id is not None:
        own_workloads = select(Workload.id).where(Workload.tenant_id == principal.tenant_id)
        statement = statement.where(
            or_(
                MigrationPolicy.tenant_id == principal.tenant_id,
                MigrationPolicy.workload_id.in_(own_workloads),
                (MigrationPolicy.tenant_id.is_(None)) & (MigrationPolicy.workload_id.is_(None)),
            )
        )
    items, total = paginate(session, statement, win, MigrationPolicy.id)
    return Page(items=items, total=total, limit=win.limit, offset=win.offset)


@router.get("/migration-policies/{policy_id}", response_model=MigrationPolicyPublic)
def get_policy(policy_id: Id, session: SessionDep, principal: Viewer):
    return visible_policy(session, principal, policy_id)


@router.post("/migration-policies", response_model=MigrationPolicyPublic, status_code=status.HTTP_201_CREATED)
def create_policy(body: MigrationPolicyCreate, session: SessionDep, principal: Operator):
    owner = policy_tenant(session, principal, body.tenant_id, body.workload_id)
    if owner is None and principal.tenant_id is not None:
        raise Forbidden("a tenant-scoped token can only create policies for its own tenant or workloads")
    # Unique within the owner's scope only (uq_migration_policy_tenant_name), so a 409 names nothing
    # the caller cannot list; a workload's policy records its workload's tenant.
    taken = select(MigrationPolicy.id).where(MigrationPolicy.name == body.name,
                                             MigrationPolicy.tenant_id.is_(None) if owner is None
                                             else MigrationPolicy.tenant_id == owner)
    if session.exec(taken).first() is not None:
        where = "fleet-wide" if owner is None else f"for tenant {owner}"
        raise Conflict(f"a migration policy named {body.name!r} already exists {where}", field="name")
    row = MigrationPolicy.model_validate(body, update={"tenant_id": owner})
    return save(session, principal, row, "migration_policy.create", tenant_id=owner, detail=body.model_dump())


@router.patch("/migration-policies/{policy_id}", response_model=MigrationPolicyPublic)
def update_policy(policy_id: Id, body: MigrationPolicyUpdate, session: SessionDep, principal: Operator):
    row = writable_policy(session, principal, policy_id)
    return save(session, principal, row, "migration_policy.update", tenant_id=row.tenant_id, detail=apply_update(row, body))


@router.delete("/migration-policies/{policy_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_policy(policy_id: Id, session: SessionDep, principal: Operator):
    row = writable_policy(session, principal, policy_id)
    remove(session, principal, row, "migration_policy.delete", tenant_id=row.tenant_id, detail={"name": row.name})
