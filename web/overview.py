"""The overview page's numbers: cost, cost per token, utilisation, SLA attainment, placement and fleet.

`overview()` reads the database and returns one `OverviewData`; it has no clock of its own
(the caller passes `now`) and no knowledge of HTTP.

Times are aware UTC datetimes. Definitions, per minute m of the window (the `minutes` last minutes up to and including the
minute `now` falls in):

- metered $/hour(m)        = Σ UsageRecord.cost_usd(m) × 60
- $/1M tokens(m)           = Σ cost_usd(m) / Σ tokens(m) × 10⁶   (None when no tokens)
- busy fraction(class, m)  = Σ device_seconds_busy / Σ device_seconds_allocated
- allocated devices(c, m)  = Σ device_seconds_allocated / 60       (mean devices held in m)
- SLA attainment(w, m)     = Σ within_sla / Σ requests             (None when no requests)
- placement $/hour(m)      = $/hour of the placement in force at the end of m (latest applied_at ≤ m + 1 min)

A placement item costs replicas × slices / slices_per_device × the class's $/hour: a replica
taking 2 of a device's 7 slices pays 2/7 of the device. The headline metered $/hour averages
the last `RECENT_MINUTES` complete minutes, so a half-written current minute does not drag it down.

Tenant-scoped principals see only their tenant's usage, requests and placement items. The
fleet (nodes and healthy capacity) is shared infrastructure, not any tenant's data, so every
principal sees it.
"""

from collections import defaultdict
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import Session, select

from controlplane.auth import Principal
from controlplane.db import int_sum
from controlplane.models import (
    Device,
    DeviceClass,
    Fragment,
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
from controlplane.models._common import minute_of, to_utc

RECENT_MINUTES = 5
_MINUTE = timedelta(minutes=1)


class Headline(BaseModel):
    """The figures at the top of the page."""

    placement_version: int | None
    placement_usd_per_hour: float
    metered_usd_per_hour: float
    usd_per_million_tokens: float | None
    window_cost_usd: float
    window_tokens: int
    window_requests: int
    sla_attainment: float | None


class CostSeries(BaseModel):
    """Cost over the window, one value per minute (None where there is nothing to divide)."""

    placement_usd_per_hour: list[float | None]
    metered_usd_per_hour: list[float]
    usd_per_million_tokens: list[float | None]


class ClassUtilisation(BaseModel):
    """How busy one device class is, and how much of it is held against what is healthy."""

    device_class: str
    busy_fraction: list[float | None]
    allocated_devices: list[float]
    window_busy_fraction: float | None
    placed_devices: float
    healthy_devices: int


class WorkloadSla(BaseModel):
    """Share of one workload's requests that met its SLA, per minute and over the window."""

    workload: str
    tenant: str
    target: float | None
    attainment: list[float | None]
    window_attainment: float | None
    requests: int
    within_sla: int


class PlacementRow(BaseModel):
    """One line of the current placement."""

    workload: str
    fragment: str
    kind: str
    device_class: str
    pool: str  # "" for whole replicas, "prefill" or "decode" for a split fragment's pools
    replicas: int
    slices: int
    usd_per_hour: float


class FleetRow(BaseModel):
    """Nodes and devices of one device class."""

    device_class: str
    vendor: str
    nodes: int
    healthy_nodes: int
    devices: int
    healthy_devices: int
    usd_per_device_hour: float


class OverviewData(BaseModel):
    """Everything the overview page shows; also the JSON body of GET /ui/data/overview."""

    generated_at: datetime
    tenant: str | None
    minutes: list[datetime]
    headline: Headline
    cost: CostSeries
    utilisation: list[ClassUtilisation]
    sla: list[WorkloadSla]
    placements: list[PlacementRow]
    fleet: list[FleetRow]


def _ratio(num: float, den: float, scale: float = 1.0) -> float | None:
    return num / den * scale if den else None


def overview(session: Session, principal: Principal, now: datetime, minutes: int = 30) -> OverviewData:
    """The overview as `principal` may see it, over the `minutes` minutes ending at `now` (naive means UTC)."""
    now = to_utc(now)
    last = minute_of(now)
    axis = [last - (minutes - 1 - i) * _MINUTE for i in range(minutes)]
    index = {m: i for i, m in enumerate(axis)}
    start, end = axis[0], last + _MINUTE
    tenant_id = principal.tenant_id

    classes = {c.id: c for c in session.exec(select(DeviceClass).order_by(DeviceClass.name)).all()}
    fleet = _fleet(session, classes)
    healthy = {r.device_class: r.healthy_devices for r in fleet}

    cost, tokens = [0.0] * minutes, [0] * minutes
    alloc: dict[int, list[float]] = defaultdict(lambda: [0.0] * minutes)
    busy: dict[int, list[float]] = defaultdict(lambda: [0.0] * minutes)
    usage = (
        select(
            UsageRecord.minute,
            UsageRecord.device_class_id,
            func.sum(UsageRecord.cost_usd),
            int_sum(UsageRecord.tokens),
            func.sum(UsageRecord.device_seconds_allocated),
            func.sum(UsageRecord.device_seconds_busy),
        )
        .where(UsageRecord.minute >= start, UsageRecord.minute < end)
        .group_by(UsageRecord.minute, UsageRecord.device_class_id)
    )
    if tenant_id is not None:
        usage = usage.where(UsageRecord.tenant_id == tenant_id)
    for minute, class_id, c, t, a, b in session.exec(usage).all():
        i = index[minute_of(minute)]
        cost[i] += c or 0.0
        tokens[i] += t or 0
        alloc[class_id][i] += a or 0.0
        busy[class_id][i] += b or 0.0

    current, rows, placed = _current_placement(session, tenant_id, classes)
    placement_cost = _placement_cost_series(session, tenant_id, classes, axis)
    sla = _sla(session, tenant_id, axis, index, start, end)

    recent = [cost[index[m]] for m in axis if last - RECENT_MINUTES * _MINUTE <= m < last]
    window_requests = sum(w.requests for w in sla)
    window_within = sum(w.within_sla for w in sla)
    shown = [cid for cid, dc in classes.items() if cid in alloc or cid in placed or dc.name in healthy]

    return OverviewData(
        generated_at=now,
        tenant=session.get(Tenant, tenant_id).name if tenant_id is not None else None,
        minutes=axis,
        headline=Headline(
            placement_version=current.version if current else None,
            placement_usd_per_hour=sum(r.usd_per_hour for r in rows),
            metered_usd_per_hour=sum(recent) * 60 / RECENT_MINUTES,
            usd_per_million_tokens=_ratio(sum(cost), sum(tokens), 1e6),
            window_cost_usd=sum(cost),
            window_tokens=sum(tokens),
            window_requests=window_requests,
            sla_attainment=_ratio(window_within, window_requests),
        ),
        cost=CostSeries(
            placement_usd_per_hour=placement_cost,
            metered_usd_per_hour=[c * 60 for c in cost],
            usd_per_million_tokens=[_ratio(c, t, 1e6) for c, t in zip(cost, tokens, strict=True)],
        ),
        utilisation=[
            ClassUtilisation(
                device_class=classes[cid].name,
                busy_fraction=[_ratio(b, a) for b, a in zip(busy[cid], alloc[cid], strict=True)],
                allocated_devices=[a / 60 for a in alloc[cid]],
                window_busy_fraction=_ratio(sum(busy[cid]), sum(alloc[cid])),
                placed_devices=placed.get(cid, 0.0),
                healthy_devices=healthy.get(classes[cid].name, 0),
            )
            for cid in shown
        ],
        sla=sla,
        placements=rows,
        fleet=fleet,
    )


def _fleet(session: Session, classes: dict[int, DeviceClass]) -> list[FleetRow]:
    """Nodes and devices per class. A device is healthy when its node is and its Device row (if any) is."""
    unhealthy = dict(
        session.exec(
            select(Device.node_id, func.count()).where(Device.healthy == False).group_by(Device.node_id)  # noqa: E712
        ).all()
    )
    rows = {
        cid: FleetRow(
            device_class=dc.name, vendor=dc.vendor, nodes=0, healthy_nodes=0, devices=0, healthy_devices=0,
            usd_per_device_hour=dc.usd_per_hour,
        )
        for cid, dc in classes.items()
    }
    for node in session.exec(select(Node)).all():
        row = rows[node.device_class_id]
        row.nodes += 1
        row.devices += node.device_count
        if node.healthy:
            row.healthy_nodes += 1
            row.healthy_devices += max(0, node.device_count - unhealthy.get(node.id, 0))
    return [row for row in rows.values() if row.nodes]


def _applied():
    """Placements that were actually applied: proposed (dry-run, awaiting approval) and failed ones never ran."""
    return select(Placement).where(Placement.state == PlacementState.applied)


def _items(session: Session, placement_id: int, tenant_id: int | None):
    query = (
        select(PlacementItem, Fragment, Workload)
        .join(Fragment, Fragment.id == PlacementItem.fragment_id)
        .join(Workload, Workload.id == Fragment.workload_id)
        .where(PlacementItem.placement_id == placement_id)
        .order_by(Workload.name, Fragment.key, PlacementItem.phase, PlacementItem.device_class_id)
    )
    if tenant_id is not None:
        query = query.where(Workload.tenant_id == tenant_id)
    return session.exec(query).all()


def _current_placement(
    session: Session, tenant_id: int | None, classes: dict[int, DeviceClass]
) -> tuple[Placement | None, list[PlacementRow], dict[int, float]]:
    """The highest placement version, its rows, and the devices it places per class."""
    current = session.exec(_applied().order_by(Placement.version.desc()).limit(1)).first()
    rows: list[PlacementRow] = []
    placed: dict[int, float] = defaultdict(float)
    if current is None:
        return None, rows, placed
    for item, fragment, workload in _items(session, current.id, tenant_id):
        dc = classes[item.device_class_id]
        rows.append(
            PlacementRow(
                workload=workload.name,
                fragment=fragment.key,
                kind=fragment.kind,
                device_class=dc.name,
                pool=item.phase,
                replicas=item.replicas,
                slices=item.slices,
                usd_per_hour=dc.usd_per_hour_for(item.replicas, item.slices),
            )
        )
        placed[dc.id] += dc.devices_for(item.replicas, item.slices)
    return current, rows, placed


def _placement_cost_series(
    session: Session, tenant_id: int | None, classes: dict[int, DeviceClass], axis: list[datetime]
) -> list[float | None]:
    """$/hour of the placement in force at the end of each minute; None before the first placement."""
    end = axis[-1] + _MINUTE
    in_window = session.exec(
        _applied().where(Placement.applied_at >= axis[0], Placement.applied_at < end).order_by(Placement.applied_at)
    ).all()
    before = session.exec(
        _applied().where(Placement.applied_at < axis[0]).order_by(Placement.applied_at.desc()).limit(1)
    ).first()
    versions = ([before] if before else []) + list(in_window)
    priced = [
        (
            p.applied_at,
            sum(classes[i.device_class_id].usd_per_hour_for(i.replicas, i.slices) for i, _, _ in _items(session, p.id, tenant_id)),
        )
        for p in versions
    ]
    series: list[float | None] = []
    k, value = 0, None
    for m in axis:
        while k < len(priced) and priced[k][0] < m + _MINUTE:
            value = priced[k][1]
            k += 1
        series.append(value)
    return series


def _sla(
    session: Session, tenant_id: int | None, axis: list[datetime], index: dict[datetime, int], start: datetime, end: datetime
) -> list[WorkloadSla]:
    query = (
        select(Workload, Tenant.name, RequestStat.minute, RequestStat.requests, RequestStat.within_sla)
        .join(Workload, Workload.id == RequestStat.workload_id)
        .join(Tenant, Tenant.id == Workload.tenant_id)
        .where(RequestStat.minute >= start, RequestStat.minute < end)
        .order_by(Workload.name, RequestStat.minute)
    )
    if tenant_id is not None:
        query = query.where(Workload.tenant_id == tenant_id)
    requests: dict[int, list[int]] = {}
    within: dict[int, list[int]] = {}
    names: dict[int, tuple[str, str]] = {}
    for workload, tenant_name, minute, n, ok in session.exec(query).all():
        requests.setdefault(workload.id, [0] * len(axis))
        within.setdefault(workload.id, [0] * len(axis))
        names[workload.id] = (workload.name, tenant_name)
        i = index[minute_of(minute)]
        requests[workload.id][i] += n
        within[workload.id][i] += ok
    targets = dict(session.exec(select(Sla.workload_id, Sla.attainment_target).where(Sla.workload_id.in_(list(names)))).all())
    return [
        WorkloadSla(
            workload=names[wid][0],
            tenant=names[wid][1],
            target=targets.get(wid),
            attainment=[_ratio(ok, n) for ok, n in zip(within[wid], requests[wid], strict=True)],
            window_attainment=_ratio(sum(within[wid]), sum(requests[wid])),
            requests=sum(requests[wid]),
            within_sla=sum(within[wid]),
        )
        for wid in names
    ]
