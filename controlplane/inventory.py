"""Keeping the actuator's view of nodes and devices in the database, without overwriting anyone else's.

The actuator owns `Node.ready`, `Node.reported_at` and `Device.ready`; telemetry owns the XID
columns and the operator the cordons. Every writer sets its own columns and re-derives the
effective `healthy` (see `Node.refresh_health`, `Device.refresh_health`).
"""

import logging
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, select

from controlplane.actuators.base import NodeInventory
from controlplane.models import Device, DeviceClass, Node
from controlplane.models._common import utcnow

log = logging.getLogger(__name__)


def healthy_devices_per_node(session: Session) -> dict[int, list[int]]:
    """Healthy devices on each node of each device class (by class id, nodes in id order), counting
    a device only when it and its node are healthy: the capacity planning and metering use."""
    per_node: dict[int, list[int]] = {}
    for class_id, _, count in session.exec(
        select(Node.device_class_id, Node.id, func.count(Device.id))
        .join(Device, Device.node_id == Node.id)
        .where(Node.healthy, Device.healthy)
        .group_by(Node.device_class_id, Node.id)
        .order_by(Node.device_class_id, Node.id)
    ).all():
        per_node.setdefault(class_id, []).append(int(count))
    return per_node


def sync_devices(session: Session, node: Node, not_ready: Collection[int] | None = None) -> None:
    """Make the node's device rows match `device_count`; with `not_ready`, set each device's readiness
    (the actuator's column): ready exactly when its index is not in `not_ready`."""
    devices = list(session.exec(select(Device).where(Device.node_id == node.id).order_by(Device.index)).all())
    for index in range(len(devices), node.device_count):
        device = Device(node_id=node.id, index=index)
        session.add(device)
        devices.append(device)
    for device in devices[node.device_count :]:
        session.delete(device)
    if not_ready is not None:
        for device in devices[: node.device_count]:
            device.ready = device.index not in not_ready
            device.refresh_health()


def sync_inventory(session: Session, inventory: tuple[NodeInventory, ...], now: datetime | None = None) -> int:
    """Create or update a node per reported one, and mark lost the nodes it reported before but no
    longer does; nodes of an unknown device class are skipped and logged. Returns nodes synced."""
    now = now or utcnow()
    class_ids = dict(session.exec(select(DeviceClass.name, DeviceClass.id)).all())
    nodes = {n.name: n for n in session.exec(select(Node)).all()}
    synced = 0
    for reported in inventory:
        class_id = class_ids.get(reported.device_class)
        if class_id is None:
            log.warning("node %s reports unknown device class %r; add it to the catalog", reported.name, reported.device_class)
            continue
        node = nodes.get(reported.name)
        if node is None:
            node = Node(name=reported.name, device_class_id=class_id, device_count=reported.devices)
            session.add(node)
            session.flush()
        node.device_class_id = class_id
        node.device_count = reported.devices
        node.ready = reported.ready
        node.reported_at = now
        node.refresh_health()
        sync_devices(session, node, reported.unhealthy_indices())
        synced += 1
    reported_names = {r.name for r in inventory}
    for name, node in nodes.items():
        # A node the actuator never reported was registered by an operator: its absence says nothing.
        if name not in reported_names and node.reported_at is not None and node.ready:
            log.warning("node %s is no longer reported by the actuator; marking it lost", name)
            node.ready = False
            node.refresh_health()
    return synced
