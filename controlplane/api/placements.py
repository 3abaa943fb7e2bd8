"""Placements (current and history) and the migrations between them; tenant tokens see only their own.
Operators approve or reject a proposed placement (a policy with approval_required), and roll the
fleet back to an earlier applied version."""

from fastapi import APIRouter
from sqlalchemy import func
from sqlmodel import Session, select

from controlplane.api.common import Id, IdFilter, Page, WindowDep, audit, get_or_404, paginate
from controlplane.api.routing import OneHopRoute
from controlplane.auth import Principal
from controlplane.deps import Operator, SessionDep, Viewer, check_tenant, fleet_writer
from controlplane.errors import Conflict, NotFound
from controlplane.models import (
    DeviceClass,
    Fragment,
    Migration,
    MigrationState,
    Placement,
    PlacementState,
    Workload,
)
from controlplane.models._common import utcnow
from controlplane.models.placements import (
    MigrationPublic,
    PlacementChoice,
    PlacementChoicePublic,
    PlacementItemPublic,
    PlacementPublic,
)
from controlplane.planning import placement_items
from controlplane.queries import placement_in_force, placement_of_version, priced_items
from controlplane.rollback import changed_fragments, reapplied, record_rollback

router = APIRouter(tags=["placements"], route_class=OneHopRoute)

# A placement's reason and an actuator's error speak for the whole fleet (its cost, other tenants'
# fragments); a tenant-scoped caller gets this instead. A migration's reason speaks of its own
# workload only (controlplane.policy.WorkloadVerdict), so its tenant reads it.
TENANT_REASON = "decided for the whole fleet; the reason is shown to fleet-wide operators"
# Who of the fleet's operators approved, rejected or rolled back is theirs to know (decided_by, the
# audit trail); a tenant reads this instead.
FLEET_OPERATOR = "a fleet-wide operator"


def placement_public(session: Session, principal: Principal, placement: Placement, with_items: bool) -> PlacementPublic:
    """A placement as `principal` may see it: a tenant sees its own items and their cost only."""
    items = [
        PlacementItemPublic(
            fragment_id=item.fragment_id,
            fragment_key=item.fragment_key,
            workload_id=item.workload_id,
            device_class=item.device_class,
            phase=item.phase,
            replicas=item.replicas,
            slices=item.slices,
            usd_per_hour=item.usd_per_hour,
        )
        for item in priced_items(session, placement.id, principal.tenant_id)
    ]
    update = {"usd_per_hour": placement.usd_per_hour}
    if principal.tenant_id is not None:
        update = {"usd_per_hour": sum(i.usd_per_hour for i in items), "reason": TENANT_REASON,
                  "decided_by": FLEET_OPERATOR if placement.decided_by else None}
    public = PlacementPublic.model_validate(placement, update=update)
    public.items = items if with_items else []
    public.choices = choices_of(session, principal, placement) if with_items else []
    return public


def choices_of(session: Session, principal: Principal, placement: Placement) -> list[PlacementChoicePublic]:
    """Why each fragment is where it is; a tenant sees its own fragments' only (a binding names at
    most the fragment's own workload)."""
    statement = (
        select(PlacementChoice, Fragment)
        .join(Fragment, Fragment.id == PlacementChoice.fragment_id)
        .join(Workload, Workload.id == Fragment.workload_id)
        .where(PlacementChoice.placement_id == placement.id)
        .order_by(Workload.id, Fragment.id)
    )
    if principal.tenant_id is not None:
        statement = statement.where(Workload.tenant_id == principal.tenant_id)
    return [PlacementChoicePublic(fragment_id=fragment.id, fragment_key=fragment.key, workload_id=fragment.workload_id,
                                  binding=choice.binding, runner_up=choice.runner_up,
                                  runner_up_delta_usd_per_hour=choice.runner_up_delta_usd_per_hour)
            for choice, fragment in session.exec(statement).all()]


@router.get("/placements/current", response_model=PlacementPublic)
def current_placement(session: SessionDep, principal: Viewer):
    placement = placement_in_force(session)
    if placement is None:
        raise NotFound("no placement applied yet: the reconciler has not completed a cycle")
    return placement_public(session, principal, placement, with_items=True)


@router.get("/placements", response_model=Page[PlacementPublic], summary="Placement history, newest first")
def list_placements(session: SessionDep, principal: Viewer, win: WindowDep):
    """Each version's summary; fetch one version for its items."""
    rows, total = paginate(session, select(Placement), win, Placement.version.desc())
    items = [placement_public(session, principal, p, with_items=False) for p in rows]
    return Page(items=items, total=total, limit=win.limit, offset=win.offset)


@router.get("/placements/{version}", response_model=PlacementPublic)
def get_placement(version: Id, session: SessionDep, principal: Viewer):
    placement = placement_of_version(session, version)
    if placement is None:
        raise NotFound(f"placement version {version} not found")
    return placement_public(session, principal, placement, with_items=True)


@router.post("/placements/{version}/approve", response_model=PlacementPublic,
             summary="Approve a proposed placement: the reconciler actuates it at its next cycle")
def approve_placement(version: Id, session: SessionDep, principal: Operator):
    return _decide(session, principal, version, PlacementState.applying, MigrationState.pending, "placement.approve")


@router.post("/placements/{version}/reject", response_model=PlacementPublic,
             summary="Reject a proposed placement: it is never actuated, and the same plan is not proposed again")
def reject_placement(version: Id, session: SessionDep, principal: Operator):
    return _decide(session, principal, version, PlacementState.rejected, MigrationState.rejected, "placement.reject")


def _decide(session: Session, principal: Principal, version: int, state: PlacementState,
            migration_state: MigrationState, action: str) -> PlacementPublic:
    """Move the newest proposal and its migrations to `state` and `migration_state`, audited as `action`."""
    placement, migrations = _decidable(session, principal, version)
    placement.state = state
    placement.decided_by, placement.decided_at = principal.actor, utcnow()
    for migration in migrations:
        migration.state = migration_state
    audit(session, principal, action, placement, detail={"version": version})
    session.commit()
    return placement_public(session, principal, placement, with_items=True)


def _decidable(session: Session, principal: Principal, version: int) -> tuple[Placement, list[Migration]]:
    """The newest placement when it awaits approval, with its migrations; otherwise a clear error."""
    fleet_writer(principal)  # a placement moves every tenant's fragments
    placement = placement_of_version(session, version)
    if placement is None:
        raise NotFound(f"placement version {version} not found")
    if placement.state == PlacementState.recorded:
        raise Conflict(f"placement v{version} was recorded by a dry-run policy and is never actuated; turn "
                       "dry_run off and the reconciler proposes again")
    if placement.state in (PlacementState.superseded, PlacementState.expired):
        newest = session.exec(select(func.max(Placement.version))).one()
        raise Conflict(f"placement v{version} is {placement.state} (the newest placement is v{newest}); decide "
                       "on an open proposal")
    if placement.state != PlacementState.proposed:
        raise Conflict(f"placement v{version} is {placement.state}; only a proposed placement can be "
                       "approved or rejected")
    newest = session.exec(select(func.max(Placement.version))).one()
    if newest != version:
        raise Conflict(f"placement v{version} is superseded by v{newest}; decide on the newest proposal")
    migrations = session.exec(select(Migration).where(Migration.placement_id == placement.id)).all()
    return placement, list(migrations)


@router.post("/placements/{version}/rollback", response_model=PlacementPublic, status_code=201,
             summary="Re-apply an earlier applied version as a new one; the reconciler actuates it at its next cycle")
def rollback_placement(version: Id, session: SessionDep, principal: Operator):
    """The new version holds `version`'s items (fragments it did not know keep their current ones);
    the fragments it changes are pinned to the classes it puts them on, until an operator clears the
    pins (DELETE /pins/{fragment_id}), so the planner does not move them straight back."""
    fleet_writer(principal)  # a placement moves every tenant's fragments
    target = placement_of_version(session, version)
    if target is None:
        raise NotFound(f"placement version {version} not found")
    if target.state != PlacementState.applied:
        raise Conflict(f"placement v{version} is {target.state} and was never applied; only a version that ran "
                       "can be rolled back to")
    current = placement_in_force(session)
    if current is not None and current.version == version:
        raise Conflict(f"placement v{version} is the current placement; roll back to an earlier version")
    running = placement_items(session, current.id) if current is not None else {}
    items = reapplied(running, placement_items(session, target.id))
    reason = f"rollback to v{version} by {principal.actor}"
    # What each moved fragment's migration and pin say, to its tenant too: not who asked.
    why = {fid: f"rollback to v{version} by {FLEET_OPERATOR}" for fid in changed_fragments(running, items)}
    if not why:
        raise Conflict(f"placement v{version} places every fragment as the current v{current.version} does; "
                       "there is nothing to roll back")
    placement = record_rollback(session, utcnow(), items, running, reason, rollback_to=version,
                                decided_by=principal.actor, actor=principal.actor, why=why)
    audit(session, principal, "placement.rollback", placement,
          detail={"version": placement.version, "rollback_to": version, "fragments_pinned": len(why)})
    session.commit()
    return placement_public(session, principal, placement, with_items=True)


def migration_public(session: Session, principal: Principal, migration: Migration, workload_id: int) -> MigrationPublic:
    def class_name(class_id: int | None) -> str | None:
        return session.get(DeviceClass, class_id).name if class_id is not None else None

    update = {
        "workload_id": workload_id,
        "from_device_class": class_name(migration.from_device_class_id),
        "to_device_class": class_name(migration.to_device_class_id),
    }
    if principal.tenant_id is not None:
        update |= {"error": "the actuator failed (details: fleet-wide operators)" if migration.error else ""}
    return MigrationPublic.model_validate(migration, update=update)


@router.get("/migrations", response_model=Page[MigrationPublic], summary="Migrations, newest first")
def list_migrations(
    session: SessionDep,
    principal: Viewer,
    win: WindowDep,
    state: MigrationState | None = None,
    workload_id: IdFilter = None,
):
    statement = select(Migration).join(Fragment, Fragment.id == Migration.fragment_id).join(
        Workload, Workload.id == Fragment.workload_id
    )
    if principal.tenant_id is not None:
        statement = statement.where(Workload.tenant_id == principal.tenant_id)
    if state is not None:
        statement = statement.where(Migration.state == state)
    if workload_id is not None:
        statement = statement.where(Workload.id == workload_id)
    rows, total = paginate(session, statement, win, Migration.id.desc())
    workload_of = {
        f.id: f.workload_id
        for f in session.exec(select(Fragment).where(Fragment.id.in_({m.fragment_id for m in rows}))).all()
    }
    items = [migration_public(session, principal, m, workload_of[m.fragment_id]) for m in rows]
    return Page(items=items, total=total, limit=win.limit, offset=win.offset)


@router.get("/migrations/{migration_id}", response_model=MigrationPublic)
def get_migration(migration_id: Id, session: SessionDep, principal: Viewer):
    migration = get_or_404(session, Migration, migration_id, "migration")
    fragment = session.get(Fragment, migration.fragment_id)
    workload = session.get(Workload, fragment.workload_id)
    check_tenant(principal, workload.tenant_id, f"migration {migration_id}")
    return migration_public(session, principal, migration, workload.id)
