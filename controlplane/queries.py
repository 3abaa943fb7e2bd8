"""The read model: the questions the API, the console and the planner ask of the database, each
answered once.

Every function here is a query and nothing else: it takes a Session, returns table rows or frozen
dataclasses, and neither writes nor commits. Callers decide what a principal may see; a function
that filters by tenant says so in its signature (`tenant_id`, None for the whole fleet).

Prices follow the catalog's rule (DeviceClass.usd_per_hour_for): an item of r replicas of s slices
on a class of S slices per device at $p per device-hour costs r · s / S · p per hour and holds
r · s / S devices' worth of slices. Health follows the owners' rule (models.fleet): a device is
usable when its own row and its node are both `healthy`.
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import case, func, literal
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from controlplane.chargeback import Allocation, Idle, Tokens
from controlplane.db import epoch_seconds, int_sum
from controlplane.models import (
    Device,
    DeviceClass,
    DeviceTelemetry,
    Fragment,
    IdleRecord,
    KernelSelection,
    Migration,
    MigrationState,
    Node,
    Placement,
    PlacementItem,
    PlacementState,
    RequestStat,
    Sla,
    Tenant,
    UsageRecord,
    Workload,
)

# ---- placements ------------------------------------------------------------------------------------


def newest_placement(
    session: Session, state: PlacementState | None = None, before_version: int | None = None
) -> Placement | None:
    """The placement of the highest version, of `state` when given (any state otherwise), below
    `before_version` when given. With state `applied` it is the placement in force: proposed,
    recorded, failed and rejected ones never ran, and an applying one has not finished."""
    statement = select(Placement)
    if state is not None:
        statement = statement.where(Placement.state == state)
    if before_version is not None:
        statement = statement.where(Placement.version < before_version)
    return session.exec(statement.order_by(Placement.version.desc()).limit(1)).first()


def placement_in_force(session: Session) -> Placement | None:
    """The newest applied placement: what the fleet runs (or is being brought back to)."""
    return newest_placement(session, PlacementState.applied)


def placement_of_version(session: Session, version: int) -> Placement | None:
    return session.exec(select(Placement).where(Placement.version == version)).first()


def open_proposals(session: Session) -> list[Placement]:
    """Placements awaiting an operator's decision, newest first (the reconciler keeps at most one
    open; an older one left `proposed` can no longer be decided, see api.placements)."""
    statement = select(Placement).where(Placement.state == PlacementState.proposed)
    return list(session.exec(statement.order_by(Placement.version.desc())).all())


def placement_history(session: Session, limit: int, offset: int = 0) -> list[Placement]:
    """Placements newest first, `limit` of them after skipping `offset`."""
    statement = select(Placement).order_by(Placement.version.desc()).offset(offset).limit(limit)
    return list(session.exec(statement).all())


def recently_decided(session: Session, limit: int) -> list[Placement]:
    """Placements an operator approved, rejected or rolled back to, most recent decision first."""
    statement = select(Placement).where(Placement.decided_at.is_not(None))
    return list(session.exec(statement.order_by(Placement.decided_at.desc(), Placement.version.desc()).limit(limit)).all())


def applied_between(session: Session, start: datetime, end: datetime) -> list[Placement]:
    """The placements that came into force in [start, end), in the order they did, preceded by the
    one in force at `start` (the latest applied before it), when there is one."""
    applied = select(Placement).where(Placement.state == PlacementState.applied)
    before = session.exec(
        applied.where(Placement.applied_at < start).order_by(Placement.applied_at.desc()).limit(1)
    ).first()
    within = session.exec(
        applied.where(Placement.applied_at >= start, Placement.applied_at < end).order_by(Placement.applied_at)
    ).all()
    return ([before] if before is not None else []) + list(within)


@dataclass(frozen=True)
class PricedItem:
    """One placement item with the names it is shown by and its price: replicas of one fragment on
    one device class (and pool)."""

    fragment_id: int
    fragment_key: str
    fragment_kind: str
    workload_id: int
    workload: str
    tenant_id: int
    tenant: str
    device_class_id: int
    device_class: str
    phase: str  # "" for whole replicas, "prefill" or "decode" for a split fragment's pools
    replicas: int
    slices: int  # per replica
    usd_per_hour: float
    devices: float  # devices' worth of slices held: replicas × slices / slices per device


def priced_items(session: Session, placement_id: int, tenant_id: int | None = None) -> list[PricedItem]:
    """The items of placement `placement_id` (only tenant `tenant_id`'s workloads' when given), by
    workload id, fragment id, pool and class id."""
    return priced_items_by_placement(session, [placement_id], tenant_id).get(placement_id, [])


def priced_items_by_placement(
    session: Session, placement_ids: Sequence[int], tenant_id: int | None = None
) -> dict[int, list[PricedItem]]:
    """`priced_items` of several placements in one query, by placement id (one without items is absent)."""
    statement = (
        select(PlacementItem, Fragment, Workload, Tenant, DeviceClass)
        .join(Fragment, Fragment.id == PlacementItem.fragment_id)
        .join(Workload, Workload.id == Fragment.workload_id)
        .join(Tenant, Tenant.id == Workload.tenant_id)
        .join(DeviceClass, DeviceClass.id == PlacementItem.device_class_id)
        .where(PlacementItem.placement_id.in_(list(placement_ids)))
        .order_by(PlacementItem.placement_id, Workload.id, Fragment.id, PlacementItem.phase, DeviceClass.id)
    )
    if tenant_id is not None:
        statement = statement.where(Workload.tenant_id == tenant_id)
    out: dict[int, list[PricedItem]] = defaultdict(list)
    for item, fragment, workload, tenant, device_class in session.exec(statement).all():
        out[item.placement_id].append(PricedItem(
            fragment_id=fragment.id, fragment_key=fragment.key, fragment_kind=str(fragment.kind),
            workload_id=workload.id, workload=workload.name, tenant_id=tenant.id, tenant=tenant.name,
            device_class_id=device_class.id, device_class=device_class.name, phase=item.phase,
            replicas=item.replicas, slices=item.slices,
            usd_per_hour=device_class.usd_per_hour_for(item.replicas, item.slices),
            devices=device_class.devices_for(item.replicas, item.slices),
        ))
    return dict(out)


@dataclass(frozen=True)
class MigrationLine:
    """One move of a placement, with the names it is shown by."""

    id: int
    workload_id: int
    workload: str
    tenant_id: int
    fragment_key: str
    from_device_class: str | None  # None: replicas added
    to_device_class: str | None  # None: replicas removed
    phase: str
    replicas: int
    state: MigrationState
    reason: str  # speaks of its own workload only (controlplane.policy.WorkloadVerdict)


def migrations_of(session: Session, placement_id: int, tenant_id: int | None = None) -> list[MigrationLine]:
    """The moves of placement `placement_id` (only tenant `tenant_id`'s workloads' when given), in order."""
    source, target = aliased(DeviceClass), aliased(DeviceClass)
    statement = (
        select(Migration, Fragment.key, Workload, source.name, target.name)
        .join(Fragment, Fragment.id == Migration.fragment_id)
        .join(Workload, Workload.id == Fragment.workload_id)
        .outerjoin(source, source.id == Migration.from_device_class_id)
        .outerjoin(target, target.id == Migration.to_device_class_id)
        .where(Migration.placement_id == placement_id)
        .order_by(Migration.id)
    )
    if tenant_id is not None:
        statement = statement.where(Workload.tenant_id == tenant_id)
    return [
        MigrationLine(id=m.id, workload_id=w.id, workload=w.name, tenant_id=w.tenant_id, fragment_key=key,
                      from_device_class=a, to_device_class=b, phase=m.phase, replicas=m.replicas,
                      state=MigrationState(m.state), reason=m.reason)
        for m, key, w, a, b in session.exec(statement).all()
    ]


# ---- the fleet -------------------------------------------------------------------------------------


def healthy_devices_per_node(session: Session) -> dict[str, tuple[int, ...]]:
    """Per device class name, the usable devices of each node that has any, by node id: the capacity
    the planner may place on (a node's devices hold its multi-device replicas, so nodes stay apart)."""
    per_node: dict[str, list[int]] = defaultdict(list)
    for name, _, count in session.exec(
        select(DeviceClass.name, Node.id, func.count(Device.id))
        .join(Node, Node.device_class_id == DeviceClass.id)
        .join(Device, Device.node_id == Node.id)
        .where(Node.healthy, Device.healthy)
        .group_by(DeviceClass.name, Node.id)
        .order_by(DeviceClass.name, Node.id)
    ).all():
        per_node[name].append(int(count))
    return {name: tuple(counts) for name, counts in per_node.items()}


def healthy_devices_per_class(session: Session) -> dict[str, int]:
    """Per device class name, its usable devices (classes without any are absent)."""
    return {name: sum(counts) for name, counts in healthy_devices_per_node(session).items()}


@dataclass(frozen=True)
class ClassFleet:
    """The nodes and devices of one device class, and how many of each are usable."""

    device_class_id: int
    device_class: str
    vendor: str
    usd_per_device_hour: float
    slices_per_device: int
    nodes: int
    healthy_nodes: int
    devices: int
    healthy_devices: int


def fleet_by_class(session: Session) -> list[ClassFleet]:
    """Every device class that has nodes, by name, with its node and device counts."""
    healthy = healthy_devices_per_class(session)
    counts = {
        class_id: (int(nodes), int(healthy_nodes or 0), int(devices or 0))
        for class_id, nodes, healthy_nodes, devices in session.exec(
            select(Node.device_class_id, func.count(Node.id), func.sum(case((Node.healthy, 1), else_=0)),
                   func.sum(Node.device_count))
            .group_by(Node.device_class_id)
        ).all()
    }
    return [
        ClassFleet(
            device_class_id=dc.id, device_class=dc.name, vendor=dc.vendor, usd_per_device_hour=dc.usd_per_hour,
            slices_per_device=dc.slices_per_device, nodes=counts[dc.id][0], healthy_nodes=counts[dc.id][1],
            devices=counts[dc.id][2], healthy_devices=healthy.get(dc.name, 0),
        )
        for dc in session.exec(select(DeviceClass).order_by(DeviceClass.name)).all()
        if dc.id in counts
    ]


@dataclass(frozen=True)
class DeviceState:
    """One device: its health as each owner sets it, and its latest DCGM reading (None: none lately)."""

    node: str
    device_class: str
    index: int
    node_healthy: bool
    ready: bool
    cordoned: bool
    xid_errors: int
    healthy: bool
    memory_gib: float  # the class's memory per device
    utilisation: float | None  # 0..1
    memory_used_mib: float | None
    power_w: float | None
    read_at: datetime | None


def device_states(session: Session, since: datetime) -> list[DeviceState]:
    """Every device of every node, by node name and index, with its newest telemetry row from `since` on."""
    newest = (
        select(DeviceTelemetry.hostname, DeviceTelemetry.index, func.max(DeviceTelemetry.minute).label("minute"))
        .where(DeviceTelemetry.minute >= since)
        .group_by(DeviceTelemetry.hostname, DeviceTelemetry.index)
        .subquery()
    )
    readings = {
        (row.hostname, row.index): row
        for row in session.exec(
            select(DeviceTelemetry).join(
                newest,
                (DeviceTelemetry.hostname == newest.c.hostname) & (DeviceTelemetry.index == newest.c.index)
                & (DeviceTelemetry.minute == newest.c.minute),
            )
        ).all()
    }
    out = []
    for node, device, dc in session.exec(
        select(Node, Device, DeviceClass)
        .join(Device, Device.node_id == Node.id)
        .join(DeviceClass, DeviceClass.id == Node.device_class_id)
        .order_by(Node.name, Device.index)
    ).all():
        reading = readings.get((node.name, device.index))
        out.append(DeviceState(
            node=node.name, device_class=dc.name, index=device.index, node_healthy=node.healthy, ready=device.ready,
            cordoned=device.cordoned, xid_errors=device.xid_errors, healthy=device.healthy and node.healthy,
            memory_gib=dc.memory_gib, utilisation=reading.utilisation if reading else None,
            memory_used_mib=reading.memory_used_mib if reading else None,
            power_w=reading.power_w if reading else None,
            read_at=reading.updated_at if reading else None,
        ))
    return out


# ---- workloads -------------------------------------------------------------------------------------


def sla_targets(session: Session, workload_ids) -> dict[int, float]:
    """Per workload id of `workload_ids` that has an SLA, the share of its requests that must meet it."""
    return dict(
        session.exec(select(Sla.workload_id, Sla.attainment_target).where(Sla.workload_id.in_(list(workload_ids)))).all()
    )


@dataclass(frozen=True)
class RequestTotals:
    """A workload's end-to-end requests over a window, and how many met its SLA."""

    requests: int
    within_sla: int

    @property
    def share(self) -> float | None:
        return self.within_sla / self.requests if self.requests else None


def requests_within_sla(
    session: Session, workload_ids: Sequence[int], since: datetime, until: datetime
) -> dict[int, RequestTotals]:
    """Per workload of `workload_ids` with requests in minutes [since, until), its totals."""
    return {
        wid: RequestTotals(int(n or 0), int(ok or 0))
        for wid, n, ok in session.exec(
            select(RequestStat.workload_id, int_sum(RequestStat.requests), int_sum(RequestStat.within_sla))
            .where(RequestStat.workload_id.in_(list(workload_ids)), RequestStat.minute >= since,
                   RequestStat.minute < until)
            .group_by(RequestStat.workload_id)
        ).all()
    }


# ---- chargeback --------------------------------------------------------------------------------------


def _bucket(session: Session, column, step_s: int | None):
    """The SQL expression of a row's bucket: its index since 1970 in steps of `step_s` seconds, or 0 for
    the whole range (no step)."""
    return epoch_seconds(session, column) // step_s if step_s is not None else literal(0)


def _bucket_start(index: int, since: datetime, step_s: int | None) -> datetime:
    return datetime.fromtimestamp(int(index) * step_s, UTC) if step_s is not None else since


def usage_allocations(session: Session, since: datetime, until: datetime, step_s: int | None,
                      tenant_id: int | None = None) -> list[Allocation]:
    """The metering ledger's usage per item (fragment, device class, phase) and bucket in [since, until),
    in buckets of `step_s` seconds aligned to UTC (one bucket starting at `since` without a step);
    only `tenant_id`'s when given."""
    bucket = _bucket(session, UsageRecord.minute, step_s).label("bucket")
    u = UsageRecord
    statement = (
        select(bucket, u.tenant_id, u.workload_id, u.fragment_id, Fragment.kind, u.device_class_id, u.phase,
               func.sum(u.cost_usd), func.sum(u.device_seconds_allocated), func.sum(u.device_seconds_busy),
               int_sum(u.tokens), int_sum(u.llm_input_tokens), int_sum(u.llm_output_tokens),
               int_sum(u.embedding_tokens), int_sum(u.rerank_tokens))
        .join(Fragment, Fragment.id == u.fragment_id)
        .where(u.minute >= since, u.minute < until)
        .group_by(bucket, u.tenant_id, u.workload_id, u.fragment_id, Fragment.kind, u.device_class_id, u.phase)
        .order_by(bucket, u.fragment_id, u.device_class_id, u.phase)
    )
    if tenant_id is not None:
        statement = statement.where(u.tenant_id == tenant_id)
    return [
        Allocation(_bucket_start(b, since, step_s), tid, wid, fid, str(kind), cid, phase, float(cost or 0),
                   float(alloc or 0), float(busy or 0), Tokens(*(int(t or 0) for t in tokens)))
        for b, tid, wid, fid, kind, cid, phase, cost, alloc, busy, *tokens in session.exec(statement).all()
    ]


def idle_capacity(session: Session, since: datetime, until: datetime, step_s: int | None) -> list[Idle]:
    """The ledger's idle capacity per device class and bucket in [since, until), bucketed as
    usage_allocations. Idle belongs to no tenant: callers decide who may see it."""
    bucket = _bucket(session, IdleRecord.minute, step_s).label("bucket")
    statement = (
        select(bucket, IdleRecord.device_class_id, func.sum(IdleRecord.cost_usd),
               func.sum(IdleRecord.device_seconds_idle))
        .where(IdleRecord.minute >= since, IdleRecord.minute < until)
        .group_by(bucket, IdleRecord.device_class_id)
        .order_by(bucket, IdleRecord.device_class_id)
    )
    return [Idle(_bucket_start(b, since, step_s), cid, float(cost or 0), float(seconds or 0))
            for b, cid, cost, seconds in session.exec(statement).all()]


def _names_of(session: Session, id_column, name_column, ids: Iterable[int]) -> dict[int, str]:
    wanted = set(ids)
    if not wanted:
        return {}
    return dict(session.exec(select(id_column, name_column).where(id_column.in_(wanted))).all())


def tenant_names(session: Session, ids: Iterable[int]) -> dict[int, str]:
    """Each of the tenants `ids`' name (only those: nothing of anyone else)."""
    return _names_of(session, Tenant.id, Tenant.name, ids)


def workload_names(session: Session, ids: Iterable[int]) -> dict[int, str]:
    return _names_of(session, Workload.id, Workload.name, ids)


def device_class_names(session: Session, ids: Iterable[int]) -> dict[int, str]:
    return _names_of(session, DeviceClass.id, DeviceClass.name, ids)


def fragment_keys(session: Session, ids: Iterable[int]) -> dict[int, str]:
    """Each of the fragments `ids`' key (workload-unique: kind and model or tool name)."""
    return _names_of(session, Fragment.id, Fragment.key, ids)


def device_classes_by_id(session: Session) -> dict[int, DeviceClass]:
    return {c.id: c for c in session.exec(select(DeviceClass)).all()}


def kernel_speedups_by_class(session: Session, device_classes: Iterable[str]) -> dict[str, dict[str, float]]:
    """Class name -> op -> the speedup of the kernels selected for that class (a class name, as given
    to `heteroplane kernels ... --device-class`) over the eager reference, in one query: per op the
    geometric mean over its stored (dtype, shape bucket) rows, each 1.0 where the reference was kept,
    so that a kernel twice as fast in one bucket and half as fast in another counts as no gain. Classes
    and ops never measured are absent (callers take 1.0)."""
    wanted = set(device_classes)
    if not wanted:
        return {}
    logs: dict[tuple[str, str], list[float]] = defaultdict(list)
    rows = session.exec(select(KernelSelection.device_class, KernelSelection.op, KernelSelection.speedup)
                        .where(KernelSelection.device_class.in_(wanted))).all()
    for device_class, op, speedup in rows:
        logs[device_class, op].append(math.log(speedup) if speedup > 0 else 0.0)
    found: dict[str, dict[str, float]] = defaultdict(dict)
    for (device_class, op), v in sorted(logs.items()):
        found[device_class][op] = math.exp(sum(v) / len(v))
    return dict(found)


def kernel_speedups(session: Session, device_class: str) -> dict[str, float]:
    """Op -> speedup of the kernels selected for one class (kernel_speedups_by_class)."""
    return kernel_speedups_by_class(session, (device_class,)).get(device_class, {})
