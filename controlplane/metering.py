"""Metering: device time, tokens and cost per minute per fragment and device class.

Usage of a minute is a pure function of the placements in force during it and of the
telemetry observed in it, so the reconciler recomputes the open minute and the one
before it every cycle and overwrites them: re-running is harmless, nothing is counted twice.

    allocated(f, c, m) = sum over placements p in force during m of
                         replicas(p, f, c) * slices(p, f, c) / slices_per_device(c) * overlap(p, m)   [s]
    busy(f, c, m)      = min(allocated, visits(f, c, m) * busy_per_visit(f, c) * device share)
    cost(f, c, m)      = allocated / 3600 * usd_per_hour(c)
where busy_per_visit is the performance model's device time per visit (1 / replica
throughput at full load); visits whose class is unknown count on the fragment's largest allocation.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, select

from controlplane.models import (
    DeviceClass,
    Fragment,
    FragmentProfile,
    Placement,
    PlacementItem,
    PlacementState,
    UsageRecord,
    Workload,
)
from controlplane.models._common import minute_of, to_utc

MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Interval:
    """A placement in force from `start` to `end`: (fragment id, class id, phase) -> (replicas, slices).
    A split fragment's prefill and decode pools on one class are two items, billed together."""

    start: datetime
    end: datetime
    items: dict[tuple[int, int, str], tuple[int, int]]


@dataclass(frozen=True)
class UsageLine:
    minute: datetime
    fragment_id: int
    device_class_id: int
    allocated_s: float
    busy_s: float
    tokens: int
    cost_usd: float


def usage_for_minute(
    minute: datetime,
    now: datetime,
    intervals: list[Interval],
    classes: dict[int, DeviceClass],
    observed: dict[tuple[int, str], tuple[int, int]],  # (fragment id, class name) -> (visits, tokens)
    busy_per_visit_s: dict[tuple[int, str], float],
) -> list[UsageLine]:
    """The usage lines of one minute, up to `now` if the minute is still open."""
    end = min(minute + MINUTE, now)
    allocated: dict[tuple[int, int], float] = defaultdict(float)
    for interval in intervals:
        overlap = (min(end, interval.end) - max(minute, interval.start)).total_seconds()
        if overlap <= 0:
            continue
        for (fid, cid, _phase), (replicas, slices) in interval.items.items():
            allocated[(fid, cid)] += classes[cid].devices_for(replicas, slices) * overlap
    by_name = {c.name: cid for cid, c in classes.items()}
    visits: dict[tuple[int, int], int] = defaultdict(int)
    tokens: dict[tuple[int, int], int] = defaultdict(int)
    for (fid, cls_name), (n, t) in observed.items():
        cid = by_name.get(cls_name)
        if (fid, cid) not in allocated:
            candidates = [key for key in allocated if key[0] == fid]
            if not candidates:
                continue
            cid = max(candidates, key=allocated.__getitem__)[1]
        visits[(fid, cid)] += n
        tokens[(fid, cid)] += t
    lines = []
    for (fid, cid), seconds in sorted(allocated.items()):
        cls = classes[cid]
        per_visit = busy_per_visit_s.get((fid, cls.name), 0.0)
        busy = min(seconds, visits[(fid, cid)] * per_visit)
        lines.append(
            UsageLine(minute, fid, cid, seconds, busy, tokens[(fid, cid)], seconds / 3600 * cls.usd_per_hour)
        )
    return lines


def meter(session: Session, now: datetime, busy_per_visit_s: dict[tuple[int, str], float]) -> int:
    """Recompute and overwrite the usage of the open minute and the one before it; returns lines written."""
    now = to_utc(now)
    minutes = [minute_of(now) - MINUTE, minute_of(now)]
    classes = {c.id: c for c in session.exec(select(DeviceClass)).all()}
    intervals = _intervals(session, minutes[0], now)
    owners = {
        fid: (wid, tid)
        for fid, wid, tid in session.exec(
            select(Fragment.id, Workload.id, Workload.tenant_id).join(Workload, Workload.id == Fragment.workload_id)
        ).all()
    }
    session.exec(delete(UsageRecord).where(UsageRecord.minute.in_(minutes)))
    written = 0
    for minute in minutes:
        observed = {
            (fid, cls): (int(v), int(tin) + int(tout))
            for fid, cls, v, tin, tout in session.exec(
                select(
                    FragmentProfile.fragment_id,
                    FragmentProfile.device_class,
                    FragmentProfile.visits,
                    FragmentProfile.tokens_in,
                    FragmentProfile.tokens_out,
                ).where(FragmentProfile.minute == minute)
            ).all()
        }
        for line in usage_for_minute(minute, now, intervals, classes, observed, busy_per_visit_s):
            if line.fragment_id not in owners:
                continue
            workload_id, tenant_id = owners[line.fragment_id]
            session.add(
                UsageRecord(
                    minute=minute,
                    tenant_id=tenant_id,
                    workload_id=workload_id,
                    fragment_id=line.fragment_id,
                    device_class_id=line.device_class_id,
                    device_seconds_allocated=line.allocated_s,
                    device_seconds_busy=line.busy_s,
                    tokens=line.tokens,
                    cost_usd=line.cost_usd,
                )
            )
            written += 1
    return written


def _intervals(session: Session, since: datetime, now: datetime) -> list[Interval]:
    """Applied placements in force at any time since `since`, each from its `applied_at` until the
    next one was applied (not from `created_at`: an approved proposal may wait hours to be applied)."""
    is_applied = select(Placement).where(Placement.state == PlacementState.applied)
    before = session.exec(is_applied.where(Placement.applied_at < since).order_by(Placement.version.desc())).first()
    recent = session.exec(is_applied.where(Placement.applied_at >= since).order_by(Placement.version)).all()
    applied = ([before] if before else []) + list(recent)
    intervals = []
    for index, placement in enumerate(applied):
        end = to_utc(applied[index + 1].applied_at) if index + 1 < len(applied) else now
        if end <= since:
            continue
        items = {
            (i.fragment_id, i.device_class_id, i.phase): (i.replicas, i.slices)
            for i in session.exec(select(PlacementItem).where(PlacementItem.placement_id == placement.id)).all()
        }
        intervals.append(Interval(to_utc(placement.applied_at), end, items))
    return intervals
