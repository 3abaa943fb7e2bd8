"""Keeping the database's nodes and devices in step with what the actuator reports."""

import logging

from sqlmodel import Session, select

from controlplane.actuators.base import NodeInventory
from controlplane.models import Device, DeviceClass, Node

log = logging.getLogger(__name__)


def sync_devices(session: Session, node: Node, healthy: int | None = None) -> None:
    """Make the node's device rows match `device_count`; with `healthy`, the first that many are healthy."""
    devices = list(session.exec(select(Device).where(Device.node_id == node.id).order_by(Device.index)).all())
    for index in range(len(devices), node.device_count):
        device = Device(node_id=node.id, index=index)
        session.add(device)
        devices.append(device)
    for device in devices[node.device_count :]:
        session.delete(device)
    if healthy is not None:
        for device in devices[: node.device_count]:
            device.healthy = device.index < healthy


def sync_inventory(session: Session, inventory: tuple[NodeInventory, ...]) -> int:
    """Create or update a node per reported one; nodes of an unknown device class are skipped and logged."""
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
        node.healthy = reported.healthy_devices > 0
        sync_devices(session, node, reported.healthy_devices)
        synced += 1
    return synced
