"""A flush's stored rows equal an independent tally of every batch written, repeated keys included."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel import Session, SQLModel

from collectors.assembly import (
    AssembledBatch,
    BucketCount,
    EdgeCalls,
    FragmentSeen,
    FragmentVisits,
    RequestSample,
    WorkloadName,
)
from collectors.records import Series
from controlplane.collected import store_batch
from controlplane.db import session_scope
from optimizer.vocabulary import FragmentKind

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
WORKLOADS = [WorkloadName("acme", "bot"), WorkloadName("acme", "rag"), WorkloadName("globex", "bot")]
KEYS = ["tool:a", "tool:b", "llm:c"]
CLASSES = ["cpu", "H100-SXM"]

workloads = st.sampled_from(WORKLOADS)
keys = st.sampled_from(KEYS)
minutes = st.integers(0, 2).map(lambda m: T0 + timedelta(minutes=m))
small = st.integers(0, 50)


@st.composite
def batches(draw):
    """A batch whose rows may repeat a key (the store must add them, as it adds across batches)."""
    seen = draw(st.lists(st.tuples(workloads, keys, st.sampled_from(["", "m1", "m2"]), st.integers(0, 600),
                                   st.integers(0, 600)), min_size=1, max_size=6))
    fragments = tuple(
        FragmentSeen(w, k, FragmentKind(k.split(":")[0]), k[k.index(":") + 1 :], model,
                     T0 + timedelta(seconds=min(a, b)), T0 + timedelta(seconds=max(a, b)))
        for w, k, model, a, b in seen
    )
    present = sorted({(f.workload, f.key) for f in fragments})
    ends = st.sampled_from(present)
    visits = tuple(
        FragmentVisits(w, k, dc, m, v, float(lat), ti, to, qv, float(qms))
        for (w, k), dc, m, v, lat, ti, to, qv, qms in draw(st.lists(
            st.tuples(ends, st.sampled_from(CLASSES), minutes, small, small, small, small, small, small), max_size=6))
    )
    buckets = tuple(
        BucketCount(w, k, dc, m, series, b, c)
        for (w, k), dc, m, series, b, c in draw(st.lists(
            st.tuples(ends, st.sampled_from(CLASSES), minutes, st.sampled_from(list(Series)), st.integers(0, 3), small),
            max_size=6))
    )
    edges = []
    for (w, parent), child, calls, nbytes, overlap, tallies in draw(st.lists(
        st.tuples(ends, keys, small, small, small, st.lists(st.tuples(st.integers(1, 3), small), max_size=3)),
        max_size=4,
    )):
        if (w, child) in present:
            edges.append(EdgeCalls(w, parent, child, calls, nbytes, overlap, tuple(tallies)))
    requests = tuple(
        RequestSample(w, m, float(ms), tokens)  # a request's root span is a fragment of its workload
        for w, m, ms, tokens in draw(st.lists(
            st.tuples(st.sampled_from(sorted({w for w, _ in present})), minutes, small, small), max_size=4))
    )
    return AssembledBatch(fragments, visits, tuple(edges), requests, 0, 0, buckets)


def expected(written: list[AssembledBatch]) -> dict:
    """What the store must hold after `written`, tallied here with no code of the store's."""
    frags: dict = {}
    profiles: dict = defaultdict(lambda: [0] * 6)
    buckets: dict = defaultdict(int)
    edges: dict = defaultdict(lambda: [0, 0, 0])
    tallies: dict = defaultdict(int)
    requests: dict = defaultdict(lambda: [0, 0.0, 0])
    for batch in written:
        for f in batch.fragments:
            at = (f.workload, f.key)
            if at not in frags:
                frags[at] = [f.first_seen, f.last_seen, f.model]
            else:
                held = frags[at]
                held[0], held[1] = min(held[0], f.first_seen), max(held[1], f.last_seen)
                held[2] = held[2] if held[2] else f.model
        for v in batch.visits:
            acc = profiles[(v.workload, v.key, v.device_class, v.minute)]
            for i, value in enumerate((v.visits, v.latency_ms_sum, v.tokens_in, v.tokens_out, v.queue_visits,
                                       v.queue_ms_sum)):
                acc[i] += value
        for b in batch.buckets:
            buckets[(b.workload, b.key, b.device_class, b.minute, str(b.series), b.bucket)] += b.count
        for e in batch.edges:
            acc = edges[(e.workload, e.parent_key, e.child_key)]
            acc[0], acc[1], acc[2] = acc[0] + e.calls, acc[1] + e.bytes, acc[2] + e.calls_overlapping
            for calls, visits in e.visits_by_calls:
                tallies[(e.workload, e.parent_key, e.child_key, calls)] += visits
        for r in batch.requests:
            acc = requests[(r.workload, r.minute)]
            acc[0], acc[1], acc[2] = acc[0] + 1, acc[1] + r.duration_ms, acc[2] + r.tokens
    return {
        "fragments": {k: tuple(v) for k, v in frags.items()},
        "profiles": {k: tuple(float(x) for x in v) for k, v in profiles.items()},
        "buckets": dict(buckets),
        "edges": {k: tuple(v) for k, v in edges.items()},
        "tallies": {k: v for k, v in tallies.items()},
        "requests": {k: (v[0], float(v[1]), v[2]) for k, v in requests.items()},
    }


def _utc(value) -> datetime:
    if isinstance(value, str):  # SQLite hands plain SQL's timestamps back as text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def stored(engine) -> dict:
    """The store's rows, read back with plain SQL, keyed as `expected` keys them."""
    with Session(engine) as session:
        def rows(sql):
            return session.execute(text(sql)).all()

        names = {wid: WorkloadName(t, w) for wid, t, w in rows(
            "SELECT w.id, t.name, w.name FROM workload w JOIN tenant t ON t.id = w.tenant_id")}
        frag = {fid: (names[wid], key) for fid, wid, key in rows("SELECT id, workload_id, key FROM fragment")}
        edge_of = {eid: (frag[p][0], frag[p][1], frag[c][1]) for eid, p, c in rows(
            "SELECT id, parent_id, child_id FROM edge")}
        return {
            "fragments": {(names[w], k): (_utc(a), _utc(b), m) for w, k, a, b, m in rows(
                "SELECT workload_id, key, first_seen, last_seen, model FROM fragment")},
            "profiles": {(*frag[f], dc, _utc(m)): tuple(float(x) for x in rest) for f, dc, m, *rest in rows(
                "SELECT fragment_id, device_class, minute, visits, latency_ms_sum, tokens_in, tokens_out, "
                "queue_visits, queue_ms_sum FROM fragment_profile")},
            "buckets": {(*frag[f], dc, _utc(m), s, b): c for f, dc, m, s, b, c in rows(
                "SELECT fragment_id, device_class, minute, series, bucket, count FROM profile_bucket")},
            "edges": {edge_of[e]: (c, b, o) for e, c, b, o in rows(
                "SELECT id, calls, bytes_total, calls_overlapping FROM edge")},
            "tallies": {(*edge_of[e], c): v for e, c, v in rows("SELECT edge_id, calls, visits FROM edge_visit_calls")},
            "requests": {(names[w], _utc(m)): (n, float(lat), tok) for w, m, n, lat, tok in rows(
                "SELECT workload_id, minute, requests, latency_ms_sum, tokens FROM request_stat")},
        }


def _empty(engine) -> None:
    with engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.execute(table.delete())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(written=st.lists(batches(), min_size=1, max_size=3))
def test_stored_rows_equal_an_independent_tally_of_the_batches(engine, written):
    _empty(engine)
    for batch in written:
        with session_scope(engine) as session:
            store_batch(session, batch)
    want = expected(written)
    got = stored(engine)
    assert got == want
