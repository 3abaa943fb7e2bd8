"""Metering: a ledger of device time, tokens and cost per minute, written forward from a watermark.

What a minute bills
-------------------
Usage of a minute is a pure function of what ran during it (the actuator's observations,
controlplane.observed: what it reported running, not what the database asked for) and of the
telemetry observed in it. For every item i = (fragment f, device class c, phase p) that ran during
minute m, p being '' for whole replicas or prefill / decode for the pools of a split LLM fragment:

    replica_s(i, m) = Σ over observations in force during m of replicas(i) × overlap     [replica-seconds]
    allocated(i, m) = Σ of replicas(i) × slices(i) / slices_per_device(c) × overlap        [device-seconds]
    share(i, m)     = allocated / replica_s      the device share of one replica (1/7 on 1 of 7 slices)
    busy(i, m)      = min(allocated, visits(i, m) × busy_per_visit(f, c, p) × share)       [device-seconds]
    cost(i, m)      = allocated / 3600 × usd_per_hour(c)

busy_per_visit(f, c, p) is the performance model's replica-seconds per visit of that phase (the
operating point's share of a second: 1 / replica throughput at full load). Telemetry reports each
visit on the class that served it, for a split visit the class that decoded it, so:

- visits seen on class c go to f's whole or decode item on c (the one holding more device-seconds
  when both run there, mid-split); when none runs on c, to f's whole or decode item holding most;
- every visit a decode item served was prefilled by one of f's prefill items: those visits are
  spread over them in proportion to their device-seconds.

Tokens go with the visits (prefill items carry none), typed by the fragment's kind: an LLM's input
and output tokens, an embedding model's or a reranker's tokens (input and output together).

Idle capacity is one line per device class and minute, no tenant's:

    idle(c, m) = max(0, healthy(c) × seconds(m) − Σ allocated(i, m) over the items of class c)
    cost       = idle / 3600 × usd_per_hour(c)

healthy(c) counts the devices of class c that are healthy on a healthy node
(controlplane.inventory). The fleet's past health is not stored, so every minute is priced at the
capacity known when it is metered: a minute metered late (after a gap) counts the fleet as it is then.

The ledger
----------
A closed minute (one that ended before now) is written once. `meter` writes the minutes after the
watermark (the last closed minute written, the one row of metering_watermark), at most
`max_minutes` of them per call so that a week-long gap does not stall a cycle (the next call
continues), and moves the watermark in the same transaction: a crash writes nothing, a restart or
a slow cycle continues where the watermark stands, and each (minute, fragment, class, phase) has
exactly one row. The open minute (the one `now` falls in) is written provisionally, up to `now`,
once the ledger has caught up, and rewritten at every call until it closes; then it is written for
good like any closed minute. GET /costs reports minutes as written and says where the final ones
end (`final_until`). A new database's ledger starts at the minute of its first observation, or at
the current minute when nothing has run yet.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func
from sqlmodel import Session, select

from controlplane.db import dialect_insert
from controlplane.models import (
    DeviceClass,
    Fragment,
    FragmentKind,
    FragmentProfile,
    IdleRecord,
    MeteringWatermark,
    Observation,
    UsageRecord,
    Workload,
)
from controlplane.models._common import minute_of, to_utc
from controlplane.observed import items_of
from controlplane.queries import healthy_devices_per_class
from optimizer.types import Phase

MINUTE = timedelta(minutes=1)
MAX_MINUTES_PER_CALL = 240
"""Closed minutes one call writes at most: four hours of gap caught up per reconcile cycle."""

_SERVING = (Phase.whole, Phase.decode)  # the phases telemetry reports a visit's class for

Item = tuple[int, int, str]  # (fragment id, device class id, phase)


@dataclass(frozen=True)
class Interval:
    """What ran from `start` to `end`: (fragment id, class id, phase) -> (replicas, slices)."""

    start: datetime
    end: datetime
    items: dict[Item, tuple[int, int]]


@dataclass(frozen=True)
class Seen:
    """What telemetry saw of one fragment on one device class during one minute."""

    visits: int
    tokens_in: int = 0
    tokens_out: int = 0


@dataclass(frozen=True)
class UsageLine:
    minute: datetime
    fragment_id: int
    device_class_id: int
    phase: str
    allocated_s: float  # device-seconds
    busy_s: float  # device-seconds
    tokens_in: int
    tokens_out: int
    cost_usd: float


@dataclass(frozen=True)
class IdleLine:
    minute: datetime
    device_class_id: int
    healthy_s: float
    allocated_s: float
    idle_s: float
    cost_usd: float


def usage_for_minute(
    minute: datetime,
    now: datetime,
    intervals: list[Interval],
    classes: dict[int, DeviceClass],
    observed: dict[tuple[int, str], Seen],  # (fragment id, class name) -> what telemetry saw
    busy_per_visit_s: dict[tuple[int, str, str], float],  # (fragment id, class name, phase) -> replica-s
) -> list[UsageLine]:
    """The usage lines of one minute, up to `now` if the minute is still open."""
    end = min(minute + MINUTE, now)
    allocated: dict[Item, float] = defaultdict(float)
    replica_s: dict[Item, float] = defaultdict(float)
    for interval in intervals:
        overlap = (min(end, interval.end) - max(minute, interval.start)).total_seconds()
        if overlap <= 0:
            continue
        for (fid, cid, phase), (replicas, slices) in interval.items.items():
            allocated[(fid, cid, phase)] += classes[cid].devices_for(replicas, slices) * overlap
            replica_s[(fid, cid, phase)] += replicas * overlap
    by_name = {c.name: cid for cid, c in classes.items()}
    visits: dict[Item, float] = defaultdict(float)
    tokens: dict[Item, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for (fid, cls_name), seen in sorted(observed.items()):
        key = _server(fid, by_name.get(cls_name), allocated)
        if key is None:
            continue
        visits[key] += seen.visits
        tin, tout = tokens[key]
        tokens[key] = (tin + seen.tokens_in, tout + seen.tokens_out)
    decoded: dict[int, float] = defaultdict(float)
    prefill_pool: dict[int, float] = defaultdict(float)
    for (fid, _, phase), n in visits.items():
        if phase == Phase.decode:
            decoded[fid] += n
    for (fid, _, phase), seconds in allocated.items():
        if phase == Phase.prefill:
            prefill_pool[fid] += seconds
    for key, seconds in allocated.items():
        if key[2] == Phase.prefill:
            visits[key] = decoded[key[0]] * seconds / prefill_pool[key[0]]
    lines = []
    for (fid, cid, phase), seconds in sorted(allocated.items()):
        cls = classes[cid]
        share = seconds / replica_s[(fid, cid, phase)]
        per_visit = busy_per_visit_s.get((fid, cls.name, phase), 0.0)
        busy = min(seconds, visits[(fid, cid, phase)] * per_visit * share)
        tin, tout = tokens[(fid, cid, phase)]
        lines.append(UsageLine(minute, fid, cid, phase, seconds, busy, tin, tout, seconds / 3600 * cls.usd_per_hour))
    return lines


def _server(fid: int, cid: int | None, allocated: dict[Item, float]) -> Item | None:
    """The item credited with visits of fragment `fid` seen on class `cid`: its whole or decode item
    on that class, else its whole or decode item holding most device-seconds; None if it has none."""
    serving = sorted(key for key in allocated if key[0] == fid and key[2] in _SERVING)
    candidates = [key for key in serving if key[1] == cid] or serving
    return max(candidates, key=allocated.__getitem__) if candidates else None


def idle_for_minute(
    minute: datetime,
    now: datetime,
    classes: dict[int, DeviceClass],
    healthy_devices: dict[int, int],  # class id -> healthy devices
    lines: list[UsageLine],
) -> list[IdleLine]:
    """One idle line per device class with healthy devices: its capacity no replica held, up to `now`."""
    seconds = (min(minute + MINUTE, now) - minute).total_seconds()
    allocated: dict[int, float] = defaultdict(float)
    for line in lines:
        allocated[line.device_class_id] += line.allocated_s
    idle = []
    for cid, devices in sorted(healthy_devices.items()):
        if devices <= 0 or seconds <= 0:
            continue
        healthy_s = devices * seconds
        idle_s = max(0.0, healthy_s - allocated[cid])
        idle.append(IdleLine(minute, cid, healthy_s, allocated[cid], idle_s, idle_s / 3600 * classes[cid].usd_per_hour))
    return idle


def meter(
    session: Session,
    now: datetime,
    busy_per_visit_s: dict[tuple[int, str, str], float],
    max_minutes: int = MAX_MINUTES_PER_CALL,
) -> int:
    """Write the closed minutes after the watermark (at most `max_minutes`) for good and, once caught
    up, the open minute provisionally; returns the usage and idle lines written (the caller commits)."""
    now = to_utc(now)
    open_minute = minute_of(now)
    watermark = _watermark(session, open_minute)
    mark = to_utc(watermark.last_closed_minute)
    closed = [mark + k * MINUTE for k in range(1, max_minutes + 1) if mark + k * MINUTE < open_minute]
    caught_up = (closed[-1] if closed else mark) + MINUTE == open_minute
    minutes = closed + ([open_minute] if caught_up else [])
    if not minutes:
        return 0
    first, last = minutes[0], minutes[-1]
    classes = {c.id: c for c in session.exec(select(DeviceClass)).all()}
    owners = {
        fid: (wid, tid, FragmentKind(kind))
        for fid, kind, wid, tid in session.exec(
            select(Fragment.id, Fragment.kind, Workload.id, Workload.tenant_id)
            .join(Workload, Workload.id == Fragment.workload_id)
        ).all()
    }
    class_ids = {c.name: cid for cid, c in classes.items()}
    healthy = {class_ids[name]: n for name, n in healthy_devices_per_class(session).items() if name in class_ids}
    intervals = _intervals(session, first, last + MINUTE, now)
    observed: dict[datetime, dict[tuple[int, str], Seen]] = defaultdict(dict)
    for minute, fid, cls, v, tin, tout in session.exec(
        select(FragmentProfile.minute, FragmentProfile.fragment_id, FragmentProfile.device_class,
               FragmentProfile.visits, FragmentProfile.tokens_in, FragmentProfile.tokens_out)
        .where(FragmentProfile.minute >= first, FragmentProfile.minute <= last)
    ).all():
        observed[to_utc(minute)][(fid, cls)] = Seen(int(v), int(tin), int(tout))
    session.exec(delete(UsageRecord).where(UsageRecord.minute >= first, UsageRecord.minute <= last))
    session.exec(delete(IdleRecord).where(IdleRecord.minute >= first, IdleRecord.minute <= last))
    usage_rows, idle_rows = [], []
    for minute in minutes:
        lines = usage_for_minute(minute, now, intervals, classes, observed.get(minute, {}), busy_per_visit_s)
        usage_rows += [_usage_row(line, *owners[line.fragment_id]) for line in lines if line.fragment_id in owners]
        idle_rows += [
            {"minute": i.minute, "device_class_id": i.device_class_id, "device_seconds_healthy": i.healthy_s,
             "device_seconds_allocated": i.allocated_s, "device_seconds_idle": i.idle_s, "cost_usd": i.cost_usd}
            for i in idle_for_minute(minute, now, classes, healthy, lines)
        ]
    if usage_rows:
        session.execute(UsageRecord.__table__.insert(), usage_rows)
    if idle_rows:
        session.execute(IdleRecord.__table__.insert(), idle_rows)
    if closed:
        watermark.last_closed_minute = closed[-1]
        session.add(watermark)
    return len(usage_rows) + len(idle_rows)


def final_until(session: Session) -> datetime | None:
    """The end of the last minute the ledger wrote for good; None before it wrote any."""
    mark = session.exec(select(MeteringWatermark.last_closed_minute).where(MeteringWatermark.id == 1)).first()
    return to_utc(mark) + MINUTE if mark is not None else None


def _usage_row(line: UsageLine, workload_id: int, tenant_id: int, kind: FragmentKind) -> dict:
    tokens = line.tokens_in + line.tokens_out
    return {
        "minute": line.minute,
        "tenant_id": tenant_id,
        "workload_id": workload_id,
        "fragment_id": line.fragment_id,
        "device_class_id": line.device_class_id,
        "phase": line.phase,
        "device_seconds_allocated": line.allocated_s,
        "device_seconds_busy": line.busy_s,
        "tokens": tokens,
        "llm_input_tokens": line.tokens_in if kind is FragmentKind.llm else 0,
        "llm_output_tokens": line.tokens_out if kind is FragmentKind.llm else 0,
        "embedding_tokens": tokens if kind is FragmentKind.embedding else 0,
        "rerank_tokens": tokens if kind is FragmentKind.rerank else 0,
        "cost_usd": line.cost_usd,
    }


def _watermark(session: Session, open_minute: datetime) -> MeteringWatermark:
    """The ledger's watermark row, locked for this transaction (PostgreSQL: a second metering process
    waits, then sees the minutes this one wrote); created at the first observation's minute, or at
    the open minute when nothing has run, for a new database."""
    query = select(MeteringWatermark).where(MeteringWatermark.id == 1).with_for_update()
    row = session.exec(query).first()
    if row is not None:
        return row
    first_seen = session.exec(select(func.min(Observation.observed_at))).one()
    start = min(minute_of(first_seen), open_minute) if first_seen is not None else open_minute
    insert = dialect_insert(session, MeteringWatermark.__table__)
    session.exec(insert.values(id=1, last_closed_minute=start - MINUTE).on_conflict_do_nothing())
    return session.exec(query).one()


def _intervals(session: Session, since: datetime, until: datetime, now: datetime) -> list[Interval]:
    """What the actuator reported running at any time in [since, until): each observation until the
    next one (the last until `now`)."""
    before = session.exec(
        select(Observation).where(Observation.observed_at < since)
        .order_by(Observation.observed_at.desc(), Observation.id.desc())
    ).first()
    within = session.exec(
        select(Observation).where(Observation.observed_at >= since, Observation.observed_at < until)
        .order_by(Observation.observed_at, Observation.id)
    ).all()
    after = session.exec(
        select(Observation.observed_at).where(Observation.observed_at >= until)
        .order_by(Observation.observed_at, Observation.id)
    ).first()
    observed = ([before] if before else []) + list(within)
    ends = [to_utc(o.observed_at) for o in observed[1:]] + [to_utc(after) if after is not None else now]
    return [
        Interval(to_utc(o.observed_at), end, items_of(session, o.id))
        for o, end in zip(observed, ends, strict=True)
        if end > since
    ]
