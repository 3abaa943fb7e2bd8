"""Fleet endpoints: device classes (the priced catalog, which every token reads), nodes and their devices
(fleet-wide tokens only)."""

from fastapi import APIRouter, status
from sqlmodel import Session, select

from controlplane.api.common import (
    DeviceIndex,
    Id,
    IdFilter,
    Page,
    WindowDep,
    apply_update,
    audit,
    get_or_404,
    paginate,
    remove,
    save,
)
from controlplane.api.routing import OneHopRoute
from controlplane.calibration import public_by_class
from controlplane.deps import Admin, Operator, SessionDep, Viewer, fleet_reader, fleet_writer
from controlplane.errors import Conflict, NotFound
from controlplane.inventory import sync_devices
from controlplane.models import Device, DeviceClass, Node
from controlplane.models.fleet import (
    DeviceClassCreate,
    DeviceClassPublic,
    DeviceClassUpdate,
    DevicePublic,
    DeviceUpdate,
    NodeCreate,
    NodePublic,
    NodeUpdate,
)

router = APIRouter(tags=["fleet"], route_class=OneHopRoute)
NODE_INVENTORY = "node inventory"


def _public(session: Session, rows: list[DeviceClass]) -> list[DeviceClassPublic]:
    """The classes as the API shows them, each with its latest calibration (null when never calibrated)."""
    calibrated = public_by_class(session, (r.id for r in rows))
    return [DeviceClassPublic.model_validate(r, update={"calibration": calibrated.get(r.id)}) for r in rows]


@router.get("/device-classes", response_model=Page[DeviceClassPublic])
def list_device_classes(session: SessionDep, _: Viewer, win: WindowDep):
    items, total = paginate(session, select(DeviceClass), win, DeviceClass.id)
    return Page(items=_public(session, items), total=total, limit=win.limit, offset=win.offset)


@router.get("/device-classes/{device_class_id}", response_model=DeviceClassPublic)
def get_device_class(device_class_id: Id, session: SessionDep, _: Viewer):
    """One class; `calibration` says what a node of it achieved (`heteroplane calibrate`), and when."""
    return _public(session, [get_or_404(session, DeviceClass, device_class_id, "device class")])[0]


@router.post("/device-classes", response_model=DeviceClassPublic, status_code=status.HTTP_201_CREATED)
def create_device_class(body: DeviceClassCreate, session: SessionDep, principal: Admin):
    fleet_writer(principal)
    if session.exec(select(DeviceClass).where(DeviceClass.name == body.name)).first():
        raise Conflict(f"a device class named {body.name!r} already exists", field="name")
    row = DeviceClass.model_validate(body)
    return save(session, principal, row, "device_class.create", detail=body.model_dump())


@router.patch("/device-classes/{device_class_id}", response_model=DeviceClassPublic)
def update_device_class(device_class_id: Id, body: DeviceClassUpdate, session: SessionDep, principal: Admin):
    fleet_writer(principal)
    row = get_or_404(session, DeviceClass, device_class_id, "device class")
    return _public(session, [save(session, principal, row, "device_class.update", detail=apply_update(row, body))])[0]


@router.delete("/device-classes/{device_class_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_device_class(device_class_id: Id, session: SessionDep, principal: Admin):
    fleet_writer(principal)
    row = get_or_404(session, DeviceClass, device_class_id, "device class")
    if session.exec(select(Node.id).where(Node.device_class_id == device_class_id)).first():
        raise Conflict("nodes of this device class still exist; delete or move them first", field="device_class_id")
    remove(session, principal, row, "device_class.delete", detail={"name": row.name})


@router.get("/nodes", response_model=Page[NodePublic])
def list_nodes(session: SessionDep, principal: Viewer, win: WindowDep, device_class_id: IdFilter = None):
    fleet_reader(principal, NODE_INVENTORY)
    statement = select(Node)
    if device_class_id is not None:
        statement = statement.where(Node.device_class_id == device_class_id)
    items, total = paginate(session, statement, win, Node.id)
    return Page(items=items, total=total, limit=win.limit, offset=win.offset)


@router.get("/nodes/{node_id}", response_model=NodePublic)
def get_node(node_id: Id, session: SessionDep, principal: Viewer):
    fleet_reader(principal, NODE_INVENTORY)
    return get_or_404(session, Node, node_id, "node")


@router.get("/nodes/{node_id}/devices", response_model=list[DevicePublic])
def list_node_devices(node_id: Id, session: SessionDep, principal: Viewer):
    fleet_reader(principal, NODE_INVENTORY)
    get_or_404(session, Node, node_id, "node")
    return session.exec(select(Device).where(Device.node_id == node_id).order_by(Device.index)).all()


@router.post("/nodes", response_model=NodePublic, status_code=status.HTTP_201_CREATED)
def create_node(body: NodeCreate, session: SessionDep, principal: Operator):
    fleet_writer(principal)
    get_or_404(session, DeviceClass, body.device_class_id, "device class")
    if session.exec(select(Node).where(Node.name == body.name)).first():
        raise Conflict(f"a node named {body.name!r} already exists", field="name")
    row = Node.model_validate(body.model_dump(include={"name", "device_class_id", "device_count"}))
    row.cordoned = bool(body.cordon())
    row.refresh_health()
    session.add(row)
    session.flush()
    sync_devices(session, row)
    audit(session, principal, "node.create", row, detail=body.model_dump())
    session.commit()
    return row


@router.patch("/nodes/{node_id}", response_model=NodePublic)
def update_node(node_id: Id, body: NodeUpdate, session: SessionDep, principal: Operator):
    fleet_writer(principal)
    row = get_or_404(session, Node, node_id, "node")
    changes = body.model_dump(exclude_unset=True, exclude={"cordoned", "healthy"})
    if "device_count" in changes:
        row.device_count = changes["device_count"]
    cordon = body.cordon()
    if cordon is not None:  # the operator's column only: the actuator's and telemetry's stay theirs
        row.cordoned = changes["cordoned"] = cordon
        row.refresh_health()
    sync_devices(session, row)
    return save(session, principal, row, "node.update", detail=changes)


@router.patch("/nodes/{node_id}/devices/{index}", response_model=DevicePublic)
def update_device(node_id: Id, index: DeviceIndex, body: DeviceUpdate, session: SessionDep, principal: Operator):
    """Cordon or uncordon one device: the operator's word, which no sync or telemetry undoes."""
    fleet_writer(principal)
    get_or_404(session, Node, node_id, "node")
    row = session.exec(select(Device).where(Device.node_id == node_id, Device.index == index)).first()
    if row is None:
        raise NotFound(f"node {node_id} has no device {index}", field="index")
    row.cordoned = body.cordoned
    row.refresh_health()
    return save(session, principal, row, "device.update", detail={"node_id": node_id, "index": index,
                                                                    "cordoned": body.cordoned})


@router.delete("/nodes/{node_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_node(node_id: Id, session: SessionDep, principal: Operator):
    fleet_writer(principal)
    row = get_or_404(session, Node, node_id, "node")
    remove(session, principal, row, "node.delete", detail={"name": row.name})
