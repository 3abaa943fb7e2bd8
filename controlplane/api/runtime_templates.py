"""Runtime templates: what a workload's replicas run, set per workload or per fragment, and what each
fragment's replicas run once resolved (controlplane.containers)."""

from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlmodel import Session, select

from controlplane.actuators.base import Container
from controlplane.api.common import Id, Page, WindowDep, audit, paginate
from controlplane.api.routing import OneHopRoute
from controlplane.api.workloads import visible_workload
from controlplane.auth import Principal
from controlplane.containers import resolve
from controlplane.deps import Operator, SessionDep, Viewer
from controlplane.errors import NotFound
from controlplane.models import Fragment, RuntimeTemplate, Workload
from controlplane.models._common import utcnow
from controlplane.models.runtime_templates import ContainerPublic, RuntimeTemplateIn, RuntimeTemplatePublic
from optimizer.types import Phase

router = APIRouter(tags=["workloads"], route_class=OneHopRoute)

PHASE_QUERY = Query(description="The pool whose replicas to show: '' (whole replicas), 'prefill' or 'decode'.")


@router.get("/workloads/{workload_id}/runtime-template", response_model=RuntimeTemplatePublic,
            summary="The workload's runtime template")
def get_workload_template(workload_id: Id, session: SessionDep, principal: Viewer):
    visible_workload(session, principal, workload_id)
    return stored(session, workload_id, None)


@router.put("/workloads/{workload_id}/runtime-template", response_model=RuntimeTemplatePublic,
            summary="Set the workload's runtime template (for every fragment without its own)")
def put_workload_template(workload_id: Id, body: RuntimeTemplateIn, session: SessionDep, principal: Operator):
    workload = visible_workload(session, principal, workload_id)
    return replace(session, principal, workload, None, body)


@router.delete("/workloads/{workload_id}/runtime-template", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove the workload's runtime template")
def delete_workload_template(workload_id: Id, session: SessionDep, principal: Operator):
    workload = visible_workload(session, principal, workload_id)
    drop(session, principal, workload, None)


@router.get("/fragments/{fragment_id}/runtime-template",
            response_model=RuntimeTemplatePublic, summary="A fragment's own runtime template")
def get_fragment_template(fragment_id: Id, session: SessionDep, principal: Viewer):
    workload = visible_fragment(session, principal, fragment_id)
    return stored(session, workload.id, fragment_id)


@router.put("/fragments/{fragment_id}/runtime-template",
            response_model=RuntimeTemplatePublic,
            summary="Set a fragment's own runtime template (it replaces the workload's for this fragment)")
def put_fragment_template(fragment_id: Id, body: RuntimeTemplateIn, session: SessionDep, principal: Operator):
    workload = visible_fragment(session, principal, fragment_id)
    return replace(session, principal, workload, fragment_id, body)


@router.delete("/fragments/{fragment_id}/runtime-template",
               status_code=status.HTTP_204_NO_CONTENT, summary="Remove a fragment's own runtime template")
def delete_fragment_template(fragment_id: Id, session: SessionDep, principal: Operator):
    workload = visible_fragment(session, principal, fragment_id)
    drop(session, principal, workload, fragment_id)


@router.get("/workloads/{workload_id}/containers", response_model=Page[ContainerPublic],
            summary="What each fragment's replicas run, resolved from the templates")
def list_containers(workload_id: Id, session: SessionDep, principal: Viewer, win: WindowDep,
                    phase: Annotated[Phase, PHASE_QUERY] = Phase.whole):
    visible_workload(session, principal, workload_id)
    fragments, total = paginate(session, select(Fragment).where(Fragment.workload_id == workload_id), win,
                                Fragment.id)
    templates = templates_of(session, workload_id)
    items = [container_view(fragment, *resolve(fragment.kind, fragment.model, phase, templates.get(fragment.id),
                                               templates.get(None)))
             for fragment in fragments]
    return Page(items=items, total=total, limit=win.limit, offset=win.offset)


def container_view(fragment: Fragment, source: str, container: Container | None) -> ContainerPublic:
    if container is None:
        return ContainerPublic(fragment_id=fragment.id, fragment_key=fragment.key, source=source)
    return ContainerPublic(
        fragment_id=fragment.id, fragment_key=fragment.key, source=source, image=container.image,
        command=list(container.command), args=list(container.args), env=dict(container.env),
        secret_env=dict(container.secret_env), ports=list(container.ports), cpu_millicores=container.cpu_millicores,
        memory_mib=container.memory_mib, model=container.model)


def templates_of(session: Session, workload_id: int) -> dict[int | None, RuntimeTemplate]:
    """A workload's templates by fragment id (None: the workload's own)."""
    rows = session.exec(select(RuntimeTemplate).where(RuntimeTemplate.workload_id == workload_id)).all()
    return {row.fragment_id: row for row in rows}


def visible_fragment(session: Session, principal: Principal, fragment_id: int) -> Workload:
    """The fragment's workload; 404 alike for a missing fragment and another tenant's."""
    fragment = session.get(Fragment, fragment_id)
    workload = session.get(Workload, fragment.workload_id) if fragment is not None else None
    if workload is None or not principal.can_see_tenant(workload.tenant_id):
        raise NotFound(f"fragment {fragment_id} not found")
    return workload


def find(session: Session, workload_id: int, fragment_id: int | None) -> RuntimeTemplate | None:
    statement = select(RuntimeTemplate).where(RuntimeTemplate.workload_id == workload_id)
    statement = statement.where(RuntimeTemplate.fragment_id.is_(None) if fragment_id is None
                                else RuntimeTemplate.fragment_id == fragment_id)
    return session.exec(statement).first()


def stored(session: Session, workload_id: int, fragment_id: int | None) -> RuntimeTemplate:
    row = find(session, workload_id, fragment_id)
    if row is None:
        whose = f"workload {workload_id}" if fragment_id is None else f"fragment {fragment_id}"
        raise NotFound(f"{whose} has no runtime template of its own")
    return row


def replace(session: Session, principal: Principal, workload: Workload, fragment_id: int | None,
            body: RuntimeTemplateIn) -> RuntimeTemplate:
    """Create or replace the template, with its audit event, in one commit. The audit records env
    names but not values: an operator may have put something sensitive there despite the advice."""
    row = find(session, workload.id, fragment_id)
    if row is None:
        row = RuntimeTemplate(workload_id=workload.id, fragment_id=fragment_id, image=body.image)
    for name, value in body.model_dump().items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    audit(session, principal, "runtime_template.put", row, tenant_id=workload.tenant_id,
          detail={"fragment_id": fragment_id, "image": body.image, "env": ",".join(sorted(body.env))})
    session.commit()
    return row


def drop(session: Session, principal: Principal, workload: Workload, fragment_id: int | None) -> None:
    row = stored(session, workload.id, fragment_id)
    audit(session, principal, "runtime_template.delete", row, tenant_id=workload.tenant_id,
          detail={"fragment_id": fragment_id})
    session.delete(row)
    session.commit()
