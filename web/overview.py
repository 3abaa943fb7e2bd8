"""The overview page's numbers: cost, cost per token, utilisation, SLA attainment, placement and fleet.

`overview()` reads the database and returns one `OverviewData`; it has no clock of its own
(the caller passes `now`) and no knowledge of HTTP.

Times are aware UTC datetimes. The window is a `Range`: n buckets of k minutes each, the last ending
where the minute `now` falls in begins, so the minute still being written is never charted (its
usage and requests are partial). Per bucket b (minutes [b, b + k)):

- metered $/hour(b)        = Σ UsageRecord.cost_usd(b) × 60 / k
- $/1M tokens(b)           = Σ cost_usd(b) / Σ tokens(b) × 10⁶   (None when no tokens)
- busy fraction(class, b)  = Σ device_seconds_busy / Σ device_seconds_allocated
- allocated devices(c, b)  = Σ device_seconds_allocated / (60 k)  (mean devices held in b)
- SLA attainment(w, b)     = Σ within_sla / Σ requests             (None when no requests)
- placement $/hour(b)      = $/hour of the placement in force at the end of b (latest applied_at < b + k)

A placement item costs replicas × slices / slices_per_device × the class's $/hour: a replica
taking 2 of a device's 7 slices pays 2/7 of the device. Devices are counted in whole GPUs (or CPU
sockets), never slices: the placement in force occupies, per class, the fewest devices its replicas
pack onto (optimizer.packing.min_devices). The headline metered $/hour averages the last
`RECENT_MINUTES` complete minutes.

Tenant-scoped principals see only their tenant's usage, requests and placement items. The
fleet (nodes and healthy capacity) is shared infrastructure, not any tenant's data, so every
principal sees it.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import Session, select

from controlplane.auth import Principal
from controlplane.db import int_sum
from controlplane.models import DeviceClass, RequestStat, Tenant, UsageRecord, Workload
from controlplane.models._common import minute_of, to_utc
from controlplane.queries import (
    PricedItem,
    applied_between,
    fleet_by_class,
    placement_in_force,
    priced_items,
    priced_items_by_placement,
    sla_targets,
)
from optimizer.packing import min_devices
from optimizer.types import ClassCapacity

RECENT_MINUTES = 5
_MINUTE = timedelta(minutes=1)


class Range(StrEnum):
    """The overview's window, picked on the page."""

    m30 = "30m"
    h6 = "6h"
    h24 = "24h"
    d7 = "7d"


@dataclass(frozen=True)
class Buckets:
    count: int
    minutes: int  # per bucket


BUCKETS = {
    Range.m30: Buckets(30, 1),
    Range.h6: Buckets(72, 5),
    Range.h24: Buckets(96, 15),
    Range.d7: Buckets(168, 60),
}
RANGE_LABELS = {Range.m30: "30 min", Range.h6: "6 h", Range.h24: "24 h", Range.d7: "7 d"}


class Headline(BaseModel):
    """The figures at the top of the page."""

    placement_version: int | None
    placement_usd_per_hour: float
    placement_devices: int
    metered_usd_per_hour: float
    usd_per_million_tokens: float | None
    window_cost_usd: float
    window_tokens: int
    window_requests: int
    sla_attainment: float | None


class CostSeries(BaseModel):
    """Cost over the window, one value per bucket (None where there is nothing to divide)."""

    placement_usd_per_hour: list[float | None]
    metered_usd_per_hour: list[float]
    usd_per_million_tokens: list[float | None]


class ClassUtilisation(BaseModel):
    """How busy one device class is, and how much of it is held against what is healthy."""

    device_class: str
    busy_fraction: list[float | None]
    allocated_devices: list[float]
    window_busy_fraction: float | None
    placed_devices: int
    healthy_devices: int


class WorkloadSla(BaseModel):
    """Share of one workload's requests that met its SLA, per bucket and over the window."""

    workload: str
    tenant: str
    target: float | None
    attainment: list[float | None]
    breached: list[bool]  # the bucket's attainment fell below the target
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
    """Nodes and devices (whole GPUs or CPU sockets) of one device class."""

    device_class: str
    vendor: str
    nodes: int
    healthy_nodes: int
    devices: int
    healthy_devices: int
    placed_devices: int
    usd_per_device_hour: float


class OverviewData(BaseModel):
    """Everything the overview page shows; also the JSON body of GET /ui/data/overview."""

    generated_at: datetime
    tenant: str | None
    range: Range
    bucket_minutes: int
    minutes: list[datetime]  # each bucket's start
    headline: Headline
    cost: CostSeries
    utilisation: list[ClassUtilisation]
    sla: list[WorkloadSla]
    placements: list[PlacementRow]
    fleet: list[FleetRow]


def _ratio(num: float, den: float, scale: float = 1.0) -> float | None:
    return num / den * scale if den else None


def overview(session: Session, principal: Principal, now: datetime, window: Range = Range.m30) -> OverviewData:
    """The overview as `principal` may see it, over `window` up to the minute `now` falls in (naive means UTC)."""
    now = to_utc(now)
    size = BUCKETS[window]
    step = size.minutes * _MINUTE
    end = minute_of(now)  # the minute in progress is left out
    start = end - size.count * step
    axis = [start + i * step for i in range(size.count)]
    tenant_id = principal.tenant_id

    def bucket(minute: datetime) -> int:
        return int((minute_of(minute) - start) // step)

    n = size.count
    cost, tokens, recent = [0.0] * n, [0] * n, 0.0
    alloc: dict[int, list[float]] = defaultdict(lambda: [0.0] * n)
    busy: dict[int, list[float]] = defaultdict(lambda: [0.0] * n)
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
        i = bucket(minute)
        cost[i] += c or 0.0
        tokens[i] += t or 0
        alloc[class_id][i] += a or 0.0
        busy[class_id][i] += b or 0.0
        if minute_of(minute) >= end - RECENT_MINUTES * _MINUTE:
            recent += c or 0.0

    classes = {c.id: c for c in session.exec(select(DeviceClass).order_by(DeviceClass.name)).all()}
    current = placement_in_force(session)
    items = priced_items(session, current.id, tenant_id) if current is not None else []
    placed = _placed_devices(items, classes)
    fleet = [
        FleetRow(device_class=f.device_class, vendor=f.vendor, nodes=f.nodes, healthy_nodes=f.healthy_nodes,
                 devices=f.devices, healthy_devices=f.healthy_devices, placed_devices=placed.get(f.device_class_id, 0),
                 usd_per_device_hour=f.usd_per_device_hour)
        for f in fleet_by_class(session)
    ]
    healthy = {r.device_class: r.healthy_devices for r in fleet}
    sla = _sla(session, tenant_id, start, end, bucket, n)
    window_requests = sum(w.requests for w in sla)
    window_within = sum(w.within_sla for w in sla)
    shown = [cid for cid, dc in classes.items() if cid in alloc or cid in placed or dc.name in healthy]
    minutes_per_bucket = size.minutes

    return OverviewData(
        generated_at=now,
        tenant=session.get(Tenant, tenant_id).name if tenant_id is not None else None,
        range=window,
        bucket_minutes=minutes_per_bucket,
        minutes=axis,
        headline=Headline(
            placement_version=current.version if current else None,
            placement_usd_per_hour=sum(i.usd_per_hour for i in items),
            placement_devices=sum(placed.values()),
            metered_usd_per_hour=recent * 60 / RECENT_MINUTES,
            usd_per_million_tokens=_ratio(sum(cost), sum(tokens), 1e6),
            window_cost_usd=sum(cost),
            window_tokens=sum(tokens),
            window_requests=window_requests,
            sla_attainment=_ratio(window_within, window_requests),
        ),
        cost=CostSeries(
            placement_usd_per_hour=_placement_cost_series(session, tenant_id, axis, step),
            metered_usd_per_hour=[c * 60 / minutes_per_bucket for c in cost],
            usd_per_million_tokens=[_ratio(c, t, 1e6) for c, t in zip(cost, tokens, strict=True)],
        ),
        utilisation=[
            ClassUtilisation(
                device_class=classes[cid].name,
                busy_fraction=[_ratio(b, a) for b, a in zip(busy[cid], alloc[cid], strict=True)],
                allocated_devices=[a / (60 * minutes_per_bucket) for a in alloc[cid]],
                window_busy_fraction=_ratio(sum(busy[cid]), sum(alloc[cid])),
                placed_devices=placed.get(cid, 0),
                healthy_devices=healthy.get(classes[cid].name, 0),
            )
            for cid in shown
        ],
        sla=sla,
        placements=[
            PlacementRow(workload=i.workload, fragment=i.fragment_key, kind=i.fragment_kind, device_class=i.device_class,
                         pool=i.phase, replicas=i.replicas, slices=i.slices, usd_per_hour=i.usd_per_hour)
            for i in sorted(items, key=lambda i: (i.workload, i.fragment_key, i.phase, i.device_class_id))
        ],
        fleet=fleet,
    )


def _placed_devices(items: list[PricedItem], classes: dict[int, DeviceClass]) -> dict[int, int]:
    """Per class id, the whole devices the items occupy: the fewest their replicas pack onto."""
    replicas: dict[int, Counter[int]] = defaultdict(Counter)
    for item in items:
        replicas[item.device_class_id][item.slices] += item.replicas
    out = {}
    for cid, counts in replicas.items():
        dc = classes[cid]
        # Occupancy, not capacity: as many devices as the replicas could need, whatever is healthy now.
        roomy = ClassCapacity(dc.name, dc.usd_per_hour, sum(counts.values()) * max(counts) or 1, dc.slices_per_device)
        if (devices := min_devices(roomy, counts)) is not None and devices:
            out[cid] = devices
    return out


def _placement_cost_series(
    session: Session, tenant_id: int | None, axis: list[datetime], step: timedelta
) -> list[float | None]:
    """$/hour of the placement in force at the end of each bucket; None before the first placement.
    Only those placements are priced (at most one per bucket, however many came and went)."""
    placements = applied_between(session, axis[0], axis[-1] + step)
    in_force: list[int | None] = []
    k = -1
    for b in axis:
        while k + 1 < len(placements) and to_utc(placements[k + 1].applied_at) < b + step:
            k += 1
        in_force.append(placements[k].id if k >= 0 else None)
    wanted = sorted({pid for pid in in_force if pid is not None})
    items = priced_items_by_placement(session, wanted, tenant_id)
    cost = {pid: sum(i.usd_per_hour for i in items.get(pid, [])) for pid in wanted}
    return [cost[pid] if pid is not None else None for pid in in_force]


def _sla(session: Session, tenant_id: int | None, start: datetime, end: datetime, bucket, n: int) -> list[WorkloadSla]:
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
    for workload, tenant_name, minute, count, ok in session.exec(query).all():
        requests.setdefault(workload.id, [0] * n)
        within.setdefault(workload.id, [0] * n)
        names[workload.id] = (workload.name, tenant_name)
        i = bucket(minute)
        requests[workload.id][i] += count
        within[workload.id][i] += ok
    targets = sla_targets(session, names)
    out = []
    for wid in names:
        attainment = [_ratio(ok, count) for ok, count in zip(within[wid], requests[wid], strict=True)]
        target = targets.get(wid)
        out.append(
            WorkloadSla(
                workload=names[wid][0],
                tenant=names[wid][1],
                target=target,
                attainment=attainment,
                breached=[target is not None and a is not None and a < target for a in attainment],
                window_attainment=_ratio(sum(within[wid]), sum(requests[wid])),
                requests=sum(requests[wid]),
                within_sla=sum(within[wid]),
            )
        )
    return out
