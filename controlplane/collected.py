"""What the collectors collect, written to the database: the control plane's side of the ingest
pipeline and the Prometheus puller (collectors/ import nothing of the control plane: they are
handed these writers by the composition root).

Profiles: `store_batch` adds one assembled batch, all or nothing; `database_sink(engine)` is the
`Ingest` sink that does so in a transaction of its own. Fleet readings: `store_samples` upserts a
Prometheus reading's per-minute telemetry and device health; `readings_store(engine)` is the
puller's `store`.

Every counter is written as ``INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n``
(SQLite and PostgreSQL both support it), so any number of collectors can write
the same rows concurrently and the database holds the sum. Rows are written in
sorted order so concurrent PostgreSQL writers take row locks in the same order
and cannot deadlock one another.

`store_batch`'s caller owns the transaction (`controlplane.db.session_scope`): nothing in it
commits, so a failure anywhere leaves nothing half-written.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Table, case, select, tuple_
from sqlalchemy.engine import Engine
from sqlmodel import Session

from collectors.assembly import AssembledBatch, RequestSample, WorkloadName
from collectors.prometheus import DeviceSample, ModelSample, PullReport
from controlplane.db import dialect_insert, session_scope, upsert_latest
from controlplane.models import (
    Device,
    DeviceTelemetry,
    Edge,
    EdgeVisitCalls,
    Fragment,
    FragmentProfile,
    ModelTelemetry,
    Node,
    ProfileBucket,
    RequestStat,
    Sla,
    Tenant,
    Workload,
)
from controlplane.models._common import minute_of, to_utc, utcnow

# Rows per INSERT: well under SQLite's 32766 and PostgreSQL's 65535 bound parameters.
_CHUNK_ROWS = 1000


def database_sink(engine: Engine) -> Callable[[AssembledBatch], None]:
    """The Ingest sink that adds each batch to `engine`'s database in one transaction."""

    def sink(batch: AssembledBatch) -> None:
        with session_scope(engine) as session:
            store_batch(session, batch)

    return sink


def store_batch(session: Session, batch: AssembledBatch) -> None:
    """Add `batch` to the stored graph, profiles and request stats, creating tenants and workloads it names."""
    if batch.empty:
        return
    workload_ids = _workload_ids(session, sorted({f.workload for f in batch.fragments} | {e.workload for e in batch.edges}))
    fragment_ids = _upsert_fragments(session, batch, workload_ids)
    _add_edge_ends(session, batch, workload_ids, fragment_ids)
    _upsert_edges(session, batch, workload_ids, fragment_ids)
    _upsert_profiles(session, batch, workload_ids, fragment_ids)
    _upsert_buckets(session, batch, workload_ids, fragment_ids)
    _upsert_request_stats(session, batch.requests, workload_ids)


def _chunks(rows: Sequence[dict[str, Any]]) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), _CHUNK_ROWS):
        yield rows[start : start + _CHUNK_ROWS]


def _workload_ids(session: Session, names: Sequence[WorkloadName]) -> dict[WorkloadName, int]:
    """Ids of the named workloads, creating missing tenants and workloads (race-safe: insert, ignore, re-read)."""
    tenant_ids = _get_or_create(
        session,
        Tenant.__table__,
        ["name"],
        [{"name": t, "display_name": "", "created_at": utcnow()} for t in sorted({n.tenant for n in names})],
    )
    keyed = _get_or_create(
        session,
        Workload.__table__,
        ["tenant_id", "name"],
        [
            {"tenant_id": tenant_ids[(n.tenant,)], "name": n.workload, "description": "", "created_at": utcnow()}
            for n in names
        ],
    )
    return {n: keyed[(tenant_ids[(n.tenant,)], n.workload)] for n in names}


def _get_or_create(
    session: Session, table: Table, unique: list[str], rows: list[dict[str, Any]]
) -> dict[tuple, int]:
    """Row ids keyed by the `unique` columns' values; rows not yet stored are inserted first."""
    cols = [table.c[name] for name in unique]

    def read() -> dict[tuple, int]:
        found: dict[tuple, int] = {}
        wanted = [tuple(row[name] for name in unique) for row in rows]
        for start in range(0, len(wanted), _CHUNK_ROWS):
            stmt = select(table.c.id, *cols).where(tuple_(*cols).in_(wanted[start : start + _CHUNK_ROWS]))
            for row_id, *values in session.execute(stmt):
                found[tuple(values)] = row_id
        return found

    found = read()
    missing = [row for row in rows if tuple(row[name] for name in unique) not in found]
    for chunk in _chunks(missing):
        session.execute(dialect_insert(session, table).values(chunk).on_conflict_do_nothing(index_elements=unique))
    return read() if missing else found


def _upsert_fragments(
    session: Session, batch: AssembledBatch, workload_ids: dict[WorkloadName, int]
) -> dict[tuple[int, str], int]:
    """Fragment ids keyed by (workload id, key); first/last seen widen to cover the batch."""
    table = Fragment.__table__
    rows = [
        {
            "workload_id": workload_ids[f.workload],
            "key": f.key,
            "kind": f.kind,
            "name": f.name,
            "model": f.model,
            "first_seen": f.first_seen,
            "last_seen": f.last_seen,
        }
        for f in batch.fragments
    ]
    rows.sort(key=lambda row: (row["workload_id"], row["key"]))
    ids: dict[tuple[int, str], int] = {}
    for chunk in _chunks(rows):
        stmt = dialect_insert(session, table).values(chunk)
        new = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["workload_id", "key"],
            set_={
                "first_seen": case((new.first_seen < table.c.first_seen, new.first_seen), else_=table.c.first_seen),
                "last_seen": case((new.last_seen > table.c.last_seen, new.last_seen), else_=table.c.last_seen),
                "model": case((table.c.model == "", new.model), else_=table.c.model),
            },
        ).returning(table.c.id, table.c.workload_id, table.c.key)
        for row_id, workload_id, key in session.execute(stmt):
            ids[(workload_id, key)] = row_id
    return ids


def _add_edge_ends(
    session: Session,
    batch: AssembledBatch,
    workload_ids: dict[WorkloadName, int],
    fragment_ids: dict[tuple[int, str], int],
) -> None:
    """Ids of edge ends stored by an earlier flush: the trace window may link a span seen long before."""
    missing = {
        (workload_ids[e.workload], key)
        for e in batch.edges
        for key in (e.parent_key, e.child_key)
        if (workload_ids[e.workload], key) not in fragment_ids
    }
    if not missing:
        return
    table = Fragment.__table__
    for row_id, workload_id, key in session.execute(
        select(table.c.id, table.c.workload_id, table.c.key).where(tuple_(table.c.workload_id, table.c.key).in_(sorted(missing)))
    ):
        fragment_ids[(workload_id, key)] = row_id
    unknown = missing - set(fragment_ids)
    if unknown:  # cannot happen while flushes are written in order; never write a dangling edge
        raise RuntimeError(f"edge ends were never stored as fragments: {sorted(unknown)[:5]}")


def _additive_upsert(
    session: Session, table: Table, unique: list[str], counters: list[str], rows: list[dict], returning: Sequence[str] = ()
) -> list[tuple]:
    """Insert `rows`, or add their `counters` to the stored row with the same `unique` values; returns
    the `returning` columns of every row written."""
    rows.sort(key=lambda row: tuple(row[name] for name in unique))
    written: list[tuple] = []
    for chunk in _chunks(rows):
        stmt = dialect_insert(session, table).values(chunk)
        stmt = stmt.on_conflict_do_update(
            index_elements=unique,
            set_={name: table.c[name] + stmt.excluded[name] for name in counters},
        )
        if returning:
            written.extend(tuple(row) for row in session.execute(stmt.returning(*(table.c[name] for name in returning))))
        else:
            session.execute(stmt)
    return written


def _upsert_edges(
    session: Session,
    batch: AssembledBatch,
    workload_ids: dict[WorkloadName, int],
    fragment_ids: dict[tuple[int, str], int],
) -> None:
    """Edges' counters, then the tallies of parent visits per edge and calls made."""
    rows = []
    tallies: dict[tuple[int, int], tuple[tuple[int, int], ...]] = {}  # (parent id, child id) -> (calls, visits)
    for e in batch.edges:
        workload_id = workload_ids[e.workload]
        ends = (fragment_ids[(workload_id, e.parent_key)], fragment_ids[(workload_id, e.child_key)])
        rows.append(
            {
                "workload_id": workload_id,
                "parent_id": ends[0],
                "child_id": ends[1],
                "calls": e.calls,
                "bytes_total": e.bytes,
                "calls_overlapping": e.calls_overlapping,
            }
        )
        if e.visits_by_calls:
            tallies[ends] = e.visits_by_calls
    edge_ids = _additive_upsert(
        session, Edge.__table__, ["parent_id", "child_id"], ["calls", "bytes_total", "calls_overlapping"], rows,
        returning=("parent_id", "child_id", "id"),
    )
    _additive_upsert(
        session,
        EdgeVisitCalls.__table__,
        ["edge_id", "calls"],
        ["visits"],
        [
            {"edge_id": edge_id, "calls": calls, "visits": visits}
            for parent_id, child_id, edge_id in edge_ids
            for calls, visits in tallies.get((parent_id, child_id), ())
        ],
    )


def _upsert_profiles(
    session: Session,
    batch: AssembledBatch,
    workload_ids: dict[WorkloadName, int],
    fragment_ids: dict[tuple[int, str], int],
) -> None:
    rows = [
        {
            "fragment_id": fragment_ids[(workload_ids[v.workload], v.key)],
            "device_class": v.device_class,
            "minute": v.minute,
            "visits": v.visits,
            "latency_ms_sum": v.latency_ms_sum,
            "tokens_in": v.tokens_in,
            "tokens_out": v.tokens_out,
            "queue_visits": v.queue_visits,
            "queue_ms_sum": v.queue_ms_sum,
        }
        for v in batch.visits
    ]
    _additive_upsert(
        session,
        FragmentProfile.__table__,
        ["fragment_id", "device_class", "minute"],
        ["visits", "latency_ms_sum", "tokens_in", "tokens_out", "queue_visits", "queue_ms_sum"],
        rows,
    )


def _upsert_buckets(
    session: Session,
    batch: AssembledBatch,
    workload_ids: dict[WorkloadName, int],
    fragment_ids: dict[tuple[int, str], int],
) -> None:
    rows = [
        {
            "fragment_id": fragment_ids[(workload_ids[b.workload], b.key)],
            "device_class": b.device_class,
            "minute": b.minute,
            "series": b.series.value,
            "bucket": b.bucket,
            "count": b.count,
        }
        for b in batch.buckets
    ]
    _additive_upsert(
        session,
        ProfileBucket.__table__,
        ["fragment_id", "device_class", "minute", "series", "bucket"],
        ["count"],
        rows,
    )


def _upsert_request_stats(
    session: Session, requests: Iterable[RequestSample], workload_ids: dict[WorkloadName, int]
) -> None:
    """Requests per workload and minute; within SLA when none of its visits failed and it was no slower
    than the workload's p99 bound (or the workload has no SLA)."""
    requests = list(requests)
    if not requests:
        return
    ids = sorted({workload_ids[r.workload] for r in requests})
    p99 = dict(session.execute(select(Sla.workload_id, Sla.p99_ms).where(Sla.workload_id.in_(ids))).all())
    sums: dict[tuple[int, datetime], dict[str, Any]] = {}
    for r in requests:
        workload_id = workload_ids[r.workload]
        row = sums.setdefault(
            (workload_id, r.minute),
            {"workload_id": workload_id, "minute": r.minute, "requests": 0, "within_sla": 0, "latency_ms_sum": 0.0,
             "tokens": 0},
        )
        bound = p99.get(workload_id)
        row["requests"] += r.weight
        row["within_sla"] += r.weight * int(not r.failed and (bound is None or r.duration_ms <= bound))
        row["latency_ms_sum"] += r.duration_ms * r.weight
        row["tokens"] += r.tokens
    _additive_upsert(
        session,
        RequestStat.__table__,
        ["workload_id", "minute"],
        ["requests", "within_sla", "latency_ms_sum", "tokens"],
        list(sums.values()),
    )


def readings_store(engine: Engine) -> Callable[[datetime, Sequence[DeviceSample], Sequence[ModelSample]], PullReport]:
    """The Prometheus puller's `store`: each reading in one transaction of its own."""

    def store(now: datetime, devices: Sequence[DeviceSample], models: Sequence[ModelSample]) -> PullReport:
        with session_scope(engine) as session:
            return store_samples(session, now, devices, models)

    return store


def store_samples(
    session: Session, now: datetime, devices: Sequence[DeviceSample], models: Sequence[ModelSample]
) -> PullReport:
    """Upsert the minute's telemetry rows and set each known device's health; the caller commits."""
    stamp = {"minute": minute_of(now), "updated_at": to_utc(now)}
    upsert_latest(
        session,
        DeviceTelemetry.__table__,
        ["minute", "hostname", "index"],
        [asdict(d) | stamp for d in devices],
    )
    upsert_latest(
        session,
        ModelTelemetry.__table__,
        ["minute", "model", "device_class"],
        [asdict(m) | stamp for m in models],
    )
    unknown_hosts, unknown_devices, unhealthy = _apply_device_health(session, devices, to_utc(now))
    return PullReport(
        devices=len(devices),
        models=len(models),
        unknown_hosts=unknown_hosts,
        unknown_devices=unknown_devices,
        unhealthy_devices=unhealthy,
    )


def _apply_device_health(
    session: Session, samples: Sequence[DeviceSample], now: datetime
) -> tuple[tuple[str, ...], int, int]:
    """Set xid_errors and xid_at on each known Device with an XID reading, and re-derive its health;
    (unknown hosts, unknown devices, devices whose XID is not 0)."""
    hosts = sorted({s.hostname for s in samples})
    if not hosts:
        return (), 0, 0
    known_hosts = set(session.execute(select(Node.name).where(Node.name.in_(hosts))).scalars())
    stmt = select(Node.name, Device).join(Device, Device.node_id == Node.id).where(Node.name.in_(hosts))
    devices = {(name, device.index): device for name, device in session.execute(stmt)}
    unknown_devices = unhealthy = 0
    for sample in samples:
        device = devices.get((sample.hostname, sample.index))
        if device is None:
            unknown_devices += sample.hostname in known_hosts
        elif sample.xid is not None:
            device.xid_errors, device.xid_at = sample.xid, now
            device.refresh_health()
            session.add(device)
        unhealthy += device is not None and device.xid_errors != 0
    return tuple(h for h in hosts if h not in known_hosts), unknown_devices, unhealthy


