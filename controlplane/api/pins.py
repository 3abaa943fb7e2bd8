"""Fragment pins: what holds a fragment on its device classes after a rollback, until an operator
clears it. Tenant tokens see and clear only their own fragments' pins."""

from fastapi import APIRouter, status
from sqlmodel import Session, select

from controlplane.api.common import Id, IdFilter, Page, WindowDep, paginate, remove
from controlplane.api.placements import FLEET_OPERATOR
from controlplane.api.routing import OneHopRoute
from controlplane.auth import Principal
from controlplane.deps import Operator, SessionDep, Viewer
from controlplane.errors import NotFound
from controlplane.models import Fragment, FragmentPin, Workload
from controlplane.models.placements import FragmentPinPublic
from controlplane.rollback import RECONCILER

router = APIRouter(tags=["placements"], route_class=OneHopRoute)


def _public(session: Session, principal: Principal, pin: FragmentPin) -> FragmentPinPublic:
    fragment = session.get(Fragment, pin.fragment_id)
    update = {"fragment_key": fragment.key, "workload_id": fragment.workload_id}
    if principal.tenant_id is not None and pin.created_by != RECONCILER:
        update["created_by"] = FLEET_OPERATOR
    return FragmentPinPublic.model_validate(pin, update=update)


@router.get("/pins", response_model=Page[FragmentPinPublic], summary="Fragment pins, newest first")
def list_pins(session: SessionDep, principal: Viewer, win: WindowDep, workload_id: IdFilter = None):
    statement = select(FragmentPin).join(Fragment, Fragment.id == FragmentPin.fragment_id).join(
        Workload, Workload.id == Fragment.workload_id)
    if principal.tenant_id is not None:
        statement = statement.where(Workload.tenant_id == principal.tenant_id)
    if workload_id is not None:
        statement = statement.where(Workload.id == workload_id)
    rows, total = paginate(session, statement, win, FragmentPin.id.desc())
    return Page(items=[_public(session, principal, p) for p in rows], total=total, limit=win.limit, offset=win.offset)


@router.get("/pins/{fragment_id}", response_model=FragmentPinPublic)
def get_pin(fragment_id: Id, session: SessionDep, principal: Viewer):
    return _public(session, principal, _pin_of(session, principal, fragment_id)[0])


@router.delete("/pins/{fragment_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Clear a fragment's pin: the planner may move it again from its next cycle")
def clear_pin(fragment_id: Id, session: SessionDep, principal: Operator):
    pin, tenant_id = _pin_of(session, principal, fragment_id)
    remove(session, principal, pin, "pin.clear", tenant_id=tenant_id,
           detail={"fragment_id": fragment_id, "device_classes": ",".join(pin.device_classes)})


def _pin_of(session: Session, principal: Principal, fragment_id: int) -> tuple[FragmentPin, int]:
    """The pin of `fragment_id` and its tenant; 404 alike for no pin and for another tenant's fragment."""
    row = session.exec(
        select(FragmentPin, Workload.tenant_id)
        .join(Fragment, Fragment.id == FragmentPin.fragment_id)
        .join(Workload, Workload.id == Fragment.workload_id)
        .where(FragmentPin.fragment_id == fragment_id)
    ).first()
    if row is None or not principal.can_see_tenant(row[1]):
        raise NotFound(f"fragment {fragment_id} has no pin", field="fragment_id")
    return row[0], row[1]
