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
and cannot deadlock one another. Each table is written by one statement per flush
whose compiled form is reused (`_execute_upsert`: unnest arrays on PostgreSQL,
executemany on SQLite); rows of one key within a batch are summed first.

Cardinality: a workload holds at most `max_fragments` fragments (the setting
HETEROPLANE_MAX_FRAGMENTS_PER_WORKLOAD); new names past it fold into one overflow
fragment per kind (`fold_past_limit`), decided holding the workload's lock, and
the workload counts the names and visits folded (`fragments_folded`, `visits_folded`).

`store_batch`'s caller owns the transaction (`controlplane.db.session_scope`): nothing in it
commits, so a failure anywhere leaves nothing half-written.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, case, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session

from collectors.assembly import AssembledBatch, FragmentSeen, RequestSample, WorkloadName
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
from optimizer.vocabulary import FragmentKind

# Rows per INSERT: well under SQLite's 32766 and PostgreSQL's 65535 bound parameters.
_CHUNK_ROWS = 1000


MAX_FRAGMENTS_PER_WORKLOAD = 500  # the default of the setting HETEROPLANE_MAX_FRAGMENTS_PER_WORKLOAD
OVERFLOW_NAME = "~overflow"


def database_sink(engine: Engine, max_fragments: int = MAX_FRAGMENTS_PER_WORKLOAD) -> Callable[[AssembledBatch], None]:
    """The Ingest sink that adds each batch to `engine`'s database in one transaction."""

    def sink(batch: AssembledBatch) -> None:
        with session_scope(engine) as session:
            store_batch(session, batch, max_fragments)

    return sink


def store_batch(session: Session, batch: AssembledBatch, max_fragments: int = MAX_FRAGMENTS_PER_WORKLOAD) -> None:
    """Add `batch` to the stored graph, profiles and request stats, creating tenants and workloads it names.

    A workload holds at most `max_fragments` fragments: names past that fold into one overflow
    fragment per kind (`fold_past_limit`), and the workload counts the names and visits folded.
    """
    if batch.empty:
        return
    workload_ids = _workload_ids(session, sorted({f.workload for f in batch.fragments} | {e.workload for e in batch.edges}))
    batch = _fold(session, batch, workload_ids, max_fragments)
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


def overflow_key(key: str) -> str:
    """The overflow fragment a fragment key folds into: one per kind (``tool:~overflow``)."""
    return f"{key.split(':', 1)[0]}:{OVERFLOW_NAME}"


def fold_past_limit(stored: Iterable[str], named: Iterable[str], limit: int) -> dict[str, str]:
    """{key: overflow key} for each of `named` that may not become a fragment of its own.

    `stored` are the workload's fragment keys already written. Overflow keys never count against
    `limit` and never fold; a stored key never folds. The new keys, in sorted order, take what room
    is left (``limit - stored keys that are not overflow``); the rest fold. So the workload holds at
    most ``limit + kinds`` fragments, and the decision depends only on what is stored and what is
    named (the store takes it holding the workload's row lock, so racing flushes decide in turn).
    """
    stored = set(stored)
    held = sum(1 for key in stored if not key.endswith(":" + OVERFLOW_NAME))
    room = max(0, limit - held)
    new = sorted({key for key in named if key not in stored and not key.endswith(":" + OVERFLOW_NAME)})
    return {key: overflow_key(key) for key in new[room:]}


def _fold(
    session: Session, batch: AssembledBatch, workload_ids: dict[WorkloadName, int], limit: int
) -> AssembledBatch:
    """`batch` with the names past each workload's fragment limit folded, and the folding counted."""
    ids = sorted(set(workload_ids.values()))
    # Lock the batch's workloads before reading their fragments: a racing flush waits here and then
    # sees what this one adds. PostgreSQL: their rows, in id order (so flushes cannot deadlock).
    # SQLite: a write takes the database's write lock (pysqlite begins a transaction only then).
    workloads, fragments = Workload.__table__, Fragment.__table__
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(workloads.c.id).where(workloads.c.id.in_(ids)).order_by(workloads.c.id).with_for_update())
    else:
        session.execute(workloads.update().where(workloads.c.id.in_(ids))
                        .values(fragments_folded=workloads.c.fragments_folded))
    stored: dict[int, set[str]] = {wid: set() for wid in ids}
    for wid, key in session.execute(
        select(fragments.c.workload_id, fragments.c.key).where(fragments.c.workload_id.in_(ids))
    ):
        stored[wid].add(key)
    named: dict[int, set[str]] = {wid: set() for wid in ids}
    for f in batch.fragments:
        named[workload_ids[f.workload]].add(f.key)
    folds = {wid: fold_past_limit(stored[wid], named[wid], limit) for wid in ids}
    for e in batch.edges:  # an end neither in this batch nor stored was folded by an earlier flush
        wid = workload_ids[e.workload]
        for key in (e.parent_key, e.child_key):
            if key not in named[wid] and key not in stored[wid] and not key.endswith(":" + OVERFLOW_NAME):
                folds[wid][key] = overflow_key(key)
    if not any(folds.values()):
        return batch
    return _folded_batch(session, batch, workload_ids, folds)


def _folded_batch(
    session: Session, batch: AssembledBatch, workload_ids: dict[WorkloadName, int], folds: dict[int, dict[str, str]]
) -> AssembledBatch:
    def to(workload: WorkloadName, key: str) -> str:
        return folds[workload_ids[workload]].get(key, key)

    names = {n for n in batch.fragments if n.key in folds[workload_ids[n.workload]]}
    fragments = [f for f in batch.fragments if f not in names]
    first = min((f.first_seen for f in batch.fragments), default=None)
    last = max((f.last_seen for f in batch.fragments), default=None)
    overflows: dict[tuple[WorkloadName, str], FragmentSeen] = {}
    for workload in {n for n in workload_ids}:
        for key in set(folds[workload_ids[workload]].values()):
            seen = [f for f in names if f.workload == workload and overflow_key(f.key) == key]
            overflows[(workload, key)] = FragmentSeen(
                workload, key, FragmentKind(key.split(":", 1)[0]), OVERFLOW_NAME, "",
                min((f.first_seen for f in seen), default=first), max((f.last_seen for f in seen), default=last),
            )
    fragments.extend(overflows.values())
    visits = tuple(replace(v, key=to(v.workload, v.key)) for v in batch.visits)
    folded_visits: dict[int, int] = {}
    for v in batch.visits:
        if v.key in folds[workload_ids[v.workload]]:
            folded_visits[workload_ids[v.workload]] = folded_visits.get(workload_ids[v.workload], 0) + v.visits
    folded_names: dict[int, int] = {}
    for f in names:
        folded_names[workload_ids[f.workload]] = folded_names.get(workload_ids[f.workload], 0) + 1
    counts = [
        {"wid": wid, "names": folded_names.get(wid, 0), "visits": folded_visits.get(wid, 0)}
        for wid in sorted(folded_names.keys() | folded_visits.keys())
    ]
    if counts:
        table = Workload.__table__
        session.execute(
            table.update()
            .where(table.c.id == bindparam("wid"))
            .values(fragments_folded=table.c.fragments_folded + bindparam("names"),
                    visits_folded=table.c.visits_folded + bindparam("visits")),
            counts,
        )
    return replace(
        batch,
        fragments=tuple(fragments),
        visits=visits,
        edges=tuple(replace(e, parent_key=to(e.workload, e.parent_key), child_key=to(e.workload, e.child_key))
                    for e in batch.edges),
        buckets=tuple(replace(b, key=to(b.workload, b.key)) for b in batch.buckets),
    )


def _upsert_fragments(
    session: Session, batch: AssembledBatch, workload_ids: dict[WorkloadName, int]
) -> dict[tuple[int, str], int]:
    """Fragment ids keyed by (workload id, key); first/last seen widen to cover the batch."""
    merged: dict[tuple[int, str], dict[str, Any]] = {}
    for f in batch.fragments:
        row = {
            "workload_id": workload_ids[f.workload],
            "key": f.key,
            "kind": str(f.kind),
            "name": f.name,
            "model": f.model,
            "first_seen": f.first_seen,
            "last_seen": f.last_seen,
        }
        held = merged.setdefault((row["workload_id"], row["key"]), row)
        if held is not row:  # one key twice in a batch: one row, as the upsert would leave it
            held["first_seen"] = min(held["first_seen"], row["first_seen"])
            held["last_seen"] = max(held["last_seen"], row["last_seen"])
            held["model"] = held["model"] or row["model"]
    rows = [merged[k] for k in sorted(merged)]
    if not rows:
        return {}
    written = _execute_upsert(session, _FRAGMENTS, rows)
    return {(workload_id, key): row_id for row_id, workload_id, key in written}


@dataclass(frozen=True)
class _Upsert:
    """One table's upsert, as written per flush: insert the rows, or on a `unique` clash add the
    `counters` (or, for `widen`, take the earlier first_seen, the later last_seen, a model where none
    was known); return the `returning` columns of every row written."""

    table: Table
    unique: tuple[str, ...]
    counters: tuple[str, ...] = ()
    widen: bool = False
    returning: tuple[str, ...] = ()


_FRAGMENTS = _Upsert(Fragment.__table__, ("workload_id", "key"), widen=True, returning=("id", "workload_id", "key"))


def _execute_upsert(session: Session, upsert: _Upsert, rows: list[dict[str, Any]]) -> list[tuple]:
    """Write `rows` (distinct `unique` values, sorted) with one statement whose compiled form is reused.

    PostgreSQL: ``INSERT … SELECT * FROM unnest(:col1, :col2, …) ON CONFLICT …``, one array per
    column, so the statement's text is the same for any number of rows and the server parses one
    statement per table per flush. SQLite: the statement is executed over the rows (executemany, or
    multi-row batches where rows are returned); SQLAlchemy compiles it once and caches it. Either way,
    never the old ``.values(chunk)`` per 1,000 rows, which compiled a fresh statement each time.
    """
    dialect = session.get_bind().dialect.name
    statement = _statement(dialect, upsert)
    if dialect == "postgresql":
        names = [c.name for c in upsert.table.c if c.name != "id"]
        result = session.execute(statement, {name: [row[name] for row in rows] for name in names})
    else:
        result = session.execute(statement, rows)
    return [tuple(row) for row in result] if upsert.returning else []


_STATEMENTS: dict[tuple[str, _Upsert], Any] = {}


def _statement(dialect: str, upsert: _Upsert):
    cached = _STATEMENTS.get((dialect, upsert))
    if cached is None:
        cached = _STATEMENTS[(dialect, upsert)] = (
            _postgresql_statement(upsert) if dialect == "postgresql" else _sqlite_statement(upsert)
        )
    return cached


def _sqlite_statement(upsert: _Upsert):
    table = upsert.table
    stmt = sqlite.insert(table)
    new = stmt.excluded
    if upsert.widen:
        set_ = {
            "first_seen": case((new.first_seen < table.c.first_seen, new.first_seen), else_=table.c.first_seen),
            "last_seen": case((new.last_seen > table.c.last_seen, new.last_seen), else_=table.c.last_seen),
            "model": case((table.c.model == "", new.model), else_=table.c.model),
        }
    else:
        set_ = {name: table.c[name] + new[name] for name in upsert.counters}
    stmt = stmt.on_conflict_do_update(index_elements=list(upsert.unique), set_=set_)
    if upsert.returning:
        stmt = stmt.returning(*(table.c[name] for name in upsert.returning))
    return stmt


def _postgresql_statement(upsert: _Upsert):
    """The upsert as SQL text built from the table's own metadata (names and types, never data);
    every value travels as a bound array parameter."""
    table, pg = upsert.table, postgresql.dialect()
    columns = [c for c in table.c if c.name != "id"]
    quote = pg.identifier_preparer.quote
    names = ", ".join(quote(c.name) for c in columns)
    arrays = ", ".join(f"CAST(:{c.name} AS {c.type.compile(dialect=pg)}[])" for c in columns)
    target = quote(table.name)
    if upsert.widen:
        sets = [
            "first_seen = LEAST(t.first_seen, EXCLUDED.first_seen)",
            "last_seen = GREATEST(t.last_seen, EXCLUDED.last_seen)",
            "model = CASE WHEN t.model = '' THEN EXCLUDED.model ELSE t.model END",
        ]
    else:
        sets = [f"{quote(name)} = t.{quote(name)} + EXCLUDED.{quote(name)}" for name in upsert.counters]
    sql = (
        f"INSERT INTO {target} AS t ({names}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT ({', '.join(quote(n) for n in upsert.unique)}) DO UPDATE SET {', '.join(sets)}"
    )
    if upsert.returning:
        sql += " RETURNING " + ", ".join(f"t.{quote(name)}" for name in upsert.returning)
    return text(sql)


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
    the `returning` columns of every row written. Rows of one `unique` value are summed first (one
    statement may not touch a row twice), then written in `unique` order (one lock order for all)."""
    merged: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row[name] for name in unique)
        held = merged.get(key)
        if held is None:
            merged[key] = dict(row)
        else:
            for name in counters:
                held[name] += row[name]
    if not merged:
        return []
    upsert = _Upsert(table, tuple(unique), tuple(counters), returning=tuple(returning))
    return _execute_upsert(session, upsert, [merged[k] for k in sorted(merged)])


def _upsert_edges(
    session: Session,
    batch: AssembledBatch,
    workload_ids: dict[WorkloadName, int],
    fragment_ids: dict[tuple[int, str], int],
) -> None:
    """Edges' counters, then the tallies of parent visits per edge and calls made."""
    rows = []
    tallies: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (parent id, child id) -> [(calls, visits)]
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
            tallies.setdefault(ends, []).extend(e.visits_by_calls)
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
            "series": str(b.series),
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


