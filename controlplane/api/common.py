"""What every router shares: pagination, lookups that 404 cleanly, partial updates and the audit trail."""

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Path, Query
from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import Session, SQLModel, select
from sqlmodel.sql.expression import SelectOfScalar

from controlplane.auth import Principal
from controlplane.errors import NotFound
from controlplane.models import AuditEvent
from controlplane.models._common import INT32_MAX, utcnow

T = TypeVar("T")
M = TypeVar("M", bound=SQLModel)


Id = Annotated[int, Path(ge=1, le=INT32_MAX, description="An id: a positive integer up to 2147483647.")]
IdFilter = Annotated[int | None, Query(ge=1, le=INT32_MAX, description="Only items of this id (up to 2147483647).")]
DeviceIndex = Annotated[int, Path(ge=0, le=63, description="The device's index in its node, from 0.")]


class Page(BaseModel, Generic[T]):
    """One page of a list: `items`, the `total` matching, and the window asked for."""

    items: list[T]
    total: int
    limit: int
    offset: int


class Window(BaseModel):
    limit: int
    offset: int


async def window(
    limit: Annotated[int, Query(ge=1, le=500, description="Items per page.")] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX, description="Items to skip.")] = 0,
) -> Window:
    return Window(limit=limit, offset=offset)


WindowDep = Annotated[Window, Depends(window)]


def paginate(session: Session, statement: SelectOfScalar, win: Window, order_by: Any) -> tuple[list, int]:
    """Rows of `statement` in `win`, in a stable order, and how many there are in all. A page that is
    not full and not empty ends the list, so its total is known without counting (one query, not two,
    for most lists)."""
    rows = list(session.exec(statement.order_by(order_by).offset(win.offset).limit(win.limit)).all())
    if 0 < len(rows) < win.limit or (not rows and win.offset == 0):
        return rows, win.offset + len(rows)
    return rows, session.exec(select(func.count()).select_from(statement.subquery())).one()


def get_or_404(session: Session, model: type[M], row_id: int, what: str) -> M:
    row = session.get(model, row_id)
    if row is None:
        raise NotFound(f"{what} {row_id} not found")
    return row


def apply_update(row: SQLModel, update: SQLModel) -> dict[str, Any]:
    """Copy the fields the client sent onto `row`; returns them for the audit trail."""
    changes = update.model_dump(exclude_unset=True)
    for name, value in changes.items():
        setattr(row, name, value)
    if hasattr(row, "updated_at"):
        row.updated_at = utcnow()
    return changes


def audit(
    session: Session,
    principal: Principal,
    action: str,
    target: SQLModel,
    tenant_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record a change in the same transaction as the change itself."""
    session.add(
        AuditEvent(
            actor=principal.actor,
            action=action,
            target_type=target.__tablename__,
            target_id=str(getattr(target, "id", "")),
            tenant_id=tenant_id,
            detail={k: (v if isinstance(v, int | float | bool | str | None) else str(v)) for k, v in (detail or {}).items()},
        )
    )


def save(
    session: Session,
    principal: Principal,
    row: M,
    action: str,
    tenant_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> M:
    """Write `row` and its audit event in one commit: a change is never stored without its record."""
    session.add(row)
    session.flush()
    audit(session, principal, action, row, tenant_id=tenant_id, detail=detail)
    session.commit()
    return row


def remove(
    session: Session,
    principal: Principal,
    row: SQLModel,
    action: str,
    tenant_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Delete `row` and record who did, in one commit."""
    audit(session, principal, action, row, tenant_id=tenant_id, detail=detail)
    session.delete(row)
    session.commit()
