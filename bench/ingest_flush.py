"""Time to store one flush touching 1,000 distinct fragments, old write path against new.

    .venv/bin/python bench/ingest_flush.py [--fragments 1000] [--flushes 10] [--url postgresql+psycopg://...]

A flush is one `AssembledBatch`: `--fragments` fragments of one workload, one visit row and
three distribution buckets each, and a chain of edges between them (one with visit tallies).
Each timed flush writes a workload not yet stored (every row is an insert) and then the same
batch again (every row an update that adds), so both halves of the upsert are timed.

The baseline is the write path as it was: every 1,000-row chunk built as
``insert(...).values(chunk).on_conflict_do_update(...)``, which SQLAlchemy compiles afresh each
time. The new path executes one cached statement per table over all the flush's rows. Both run
in the same process on the same fresh PostgreSQL database (created and dropped here).

Then one flush of 100,000 distinct tool names for one workload and a second tenant's small batch,
with the default fragment limit: the names fold into one overflow fragment, so it stores ~500 rows.

The figure printed last is the new path's median flush time, and its ratio to the baseline's.
"""

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import case, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

import controlplane.models  # noqa: E402, F401  (registers every table)
from collectors.assembly import (  # noqa: E402
    AssembledBatch,
    BucketCount,
    EdgeCalls,
    FragmentSeen,
    FragmentVisits,
    RequestSample,
    WorkloadName,
)
from collectors.records import Series  # noqa: E402
from controlplane import collected  # noqa: E402
from controlplane.db import dialect_insert, make_engine, session_scope  # noqa: E402
from controlplane.models import Fragment  # noqa: E402
from optimizer.vocabulary import FragmentKind  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MINUTE = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
NO_LIMIT = 10**9


def flush(workload: WorkloadName, fragments: int) -> AssembledBatch:
    keys = [f"tool:step_{i:05d}" for i in range(fragments)]
    return AssembledBatch(
        fragments=tuple(
            FragmentSeen(workload, k, FragmentKind.tool, k[5:], "", MINUTE, MINUTE + timedelta(seconds=1)) for k in keys
        ),
        visits=tuple(FragmentVisits(workload, k, "cpu", MINUTE, 3, 12.5, 0, 0) for k in keys),
        edges=tuple(
            EdgeCalls(workload, keys[i], keys[i + 1], 2, 100, 1, ((2, 1),) if i % 10 == 0 else ())
            for i in range(fragments - 1)
        ),
        requests=(RequestSample(workload, MINUTE, 40.0, 10),),
        orphan_spans=0,
        cross_workload_calls=0,
        buckets=tuple(
            BucketCount(workload, k, "cpu", MINUTE, Series.latency_ms, b, 1) for k in keys for b in (3, 4, 5)
        ),
    )


# --- the baseline: the write path before the statements were cached -----------------------------

def _old_chunks(rows):
    for start in range(0, len(rows), 1000):
        yield rows[start : start + 1000]


def _old_upsert_fragments(session, batch, workload_ids):
    table = Fragment.__table__
    rows = [
        {"workload_id": workload_ids[f.workload], "key": f.key, "kind": f.kind, "name": f.name, "model": f.model,
         "first_seen": f.first_seen, "last_seen": f.last_seen}
        for f in batch.fragments
    ]
    rows.sort(key=lambda row: (row["workload_id"], row["key"]))
    ids = {}
    for chunk in _old_chunks(rows):
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


def _old_additive_upsert(session, table, unique, counters, rows, returning=()):
    rows.sort(key=lambda row: tuple(row[name] for name in unique))
    written = []
    for chunk in _old_chunks(rows):
        stmt = dialect_insert(session, table).values(chunk)
        stmt = stmt.on_conflict_do_update(
            index_elements=unique, set_={name: table.c[name] + stmt.excluded[name] for name in counters}
        )
        if returning:
            written.extend(tuple(r) for r in session.execute(stmt.returning(*(table.c[n] for n in returning))))
        else:
            session.execute(stmt)
    return written


class OldPath:
    """`collected`'s upserts swapped for the old ones while in use."""

    def __enter__(self):
        self.saved = collected._upsert_fragments, collected._additive_upsert
        collected._upsert_fragments, collected._additive_upsert = _old_upsert_fragments, _old_additive_upsert

    def __exit__(self, *exc):
        collected._upsert_fragments, collected._additive_upsert = self.saved


# --- timing --------------------------------------------------------------------------------------

def timed_flushes(engine, tag: str, fragments: int, count: int) -> list[float]:
    """Seconds per flush: each a fresh workload's batch (inserts) and then the same batch again (adds)."""
    out = []
    for n in range(count):
        batch = flush(WorkloadName("bench", f"{tag}-{n}"), fragments)
        for _ in range(2):
            start = time.perf_counter()
            with session_scope(engine) as session:
                collected.store_batch(session, batch, NO_LIMIT)  # the write path, not the fragment limit
            out.append(time.perf_counter() - start)
    return out


noisy_name = WorkloadName("noisy", "flood")


def flood_seconds(engine, names: int) -> float:
    """One flush: `names` distinct tool names for one workload (folded past the default fragment
    limit) and a second tenant's two-fragment batch."""
    keys = [f"tool:n{i:06d}" for i in range(names)]
    noisy = AssembledBatch(
        fragments=tuple(FragmentSeen(noisy_name, k, FragmentKind.tool, k[5:], "", MINUTE, MINUTE) for k in keys),
        visits=tuple(FragmentVisits(noisy_name, k, "cpu", MINUTE, 1, 5.0, 0, 0) for k in keys),
        edges=(), requests=(), orphan_spans=0, cross_workload_calls=0,
    )
    quiet = flush(WorkloadName("quiet", "bot"), 2)
    both = AssembledBatch(
        fragments=noisy.fragments + quiet.fragments, visits=noisy.visits + quiet.visits, edges=quiet.edges,
        requests=quiet.requests, orphan_spans=0, cross_workload_calls=0, buckets=quiet.buckets,
    )
    start = time.perf_counter()
    with session_scope(engine) as session:
        collected.store_batch(session, both)  # the default limit
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fragments", type=int, default=1000)
    parser.add_argument("--flushes", type=int, default=10)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    admin = make_engine(args.admin_url).execution_options(isolation_level="AUTOCOMMIT")
    name = f"heteroplane_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        engine = make_engine(make_url(args.admin_url).set(database=name).render_as_string(hide_password=False))
        SQLModel.metadata.create_all(engine)
        timed_flushes(engine, "warm", args.fragments, 1)  # connections, the new path's one compile
        with OldPath():
            timed_flushes(engine, "warm-old", args.fragments, 1)
            old = timed_flushes(engine, "old", args.fragments, args.flushes)
        new = timed_flushes(engine, "new", args.fragments, args.flushes)
        flood = flood_seconds(engine, 100_000)
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    for label, times in (("old (compile per chunk)", old), ("new (cached statement)", new)):
        ms = sorted(t * 1000 for t in times)
        print(f"{label:26s} median {statistics.median(ms):7.1f} ms  min {ms[0]:7.1f}  max {ms[-1]:7.1f}  ({len(ms)} flushes)")
    print(f"one flush of 100,000 distinct names (folded past {collected.MAX_FRAGMENTS_PER_WORKLOAD}) and another "
          f"tenant's batch: {flood:.2f} s")
    new_ms, old_ms = statistics.median(new) * 1000, statistics.median(old) * 1000
    print(f"flush of {args.fragments} distinct fragments on PostgreSQL: {new_ms:.1f} ms, {new_ms / old_ms:.3f}x the old path's {old_ms:.1f} ms")


if __name__ == "__main__":
    main()
