"""Aggregation: span records (and metric samples) become additive profile rows.

Pure: values in, values out. `assemble` turns what one flush collected into fragments,
per-minute visits, distribution buckets (latency sketch, token histograms), edges and
end-to-end requests. Edges come from a `TraceWindow` that links spans across batches;
without one, spans are linked within the records given (a parent in another batch is
then an orphan: a visit, but no edge). An edge also carries the tallies of parent visits
whose traces left the window (calls that overlapped a sibling, calls per visit), which may
come a flush after its calls.

Every aggregate is additive, so the store can add a batch to whatever other collectors
have already written. Edges join fragments of one workload (`Edge` has a single
workload); calls between workloads are counted in `cross_workload_calls`.

Sampled traces: each record counts `r.weight` times (its adjusted count as an unbiased integer,
collectors.normalise): visits, latency and queue sums, tokens, latency and token buckets, edge
calls and bytes (collectors.window), and requests (`RequestSample.weight`). A weighted count
stays an exact integer; weighted tokens are capped at COUNT_MAX per span, as unweighted ones are.

Hostile numbers: a record's duration, queue wait, tokens and bytes are finite and >= 0 (the
normaliser bounds them), so every sum here is; metric samples' values only choose a bucket
(`collectors.sketch` maps NaN and Inf to a bucket too) and their counts are bounded integers.

Hot path: one pass per record with integer minute keys; datetimes are built once per key.
"""

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from collectors.normalise import COUNT_MAX, SpanRecord
from collectors.records import MetricSample, Series
from collectors.sketch import latency_bucket, token_bucket
from collectors.window import Links, TraceWindow
from optimizer.vocabulary import FragmentKind, minute_of

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_MINUTE = 60_000_000_000
_TOKEN_KINDS = frozenset({FragmentKind.llm, FragmentKind.embedding, FragmentKind.rerank})
_TOKEN_SERIES = frozenset({Series.tokens_in, Series.tokens_out})


@dataclass(frozen=True, slots=True, order=True)
class WorkloadName:
    """A workload as telemetry names it, before the store resolves it to ids."""

    tenant: str
    workload: str


@dataclass(frozen=True, slots=True)
class FragmentSeen:
    """A fragment present in the batch, with the span times that bound its sightings."""

    workload: WorkloadName
    key: str
    kind: FragmentKind
    name: str
    model: str
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class FragmentVisits:
    """Visits of one fragment on one device class ending in one minute, summed."""

    workload: WorkloadName
    key: str
    device_class: str
    minute: datetime
    visits: int
    latency_ms_sum: float
    tokens_in: int
    tokens_out: int
    queue_visits: int = 0  # visits whose span said how long they queued
    queue_ms_sum: float = 0.0  # and the sum of those waits


@dataclass(frozen=True, slots=True)
class EdgeCalls:
    """Calls from a parent fragment to a child fragment of the same workload, the bytes they moved,
    and, from the parent visits tallied (collectors.fanout), calls that overlapped a sibling call and
    (calls made, parent visits that made exactly that many) pairs."""

    workload: WorkloadName
    parent_key: str
    child_key: str
    calls: int
    bytes: int = 0
    calls_overlapping: int = 0
    visits_by_calls: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class BucketCount:
    """Observations of one distribution series of a fragment on a class in a minute, in one bucket."""

    workload: WorkloadName
    key: str
    device_class: str
    minute: datetime
    series: Series
    bucket: int
    count: int


@dataclass(frozen=True, slots=True)
class RequestSample:
    """One end-to-end request: a root span and the tokens its trace spent."""

    workload: WorkloadName
    minute: datetime
    duration_ms: float
    tokens: int  # the trace's tokens times `weight`, at most COUNT_MAX (as stored: weighted already)
    failed: bool = False  # some visit of the trace failed (span status ERROR): the request missed its SLA
    weight: int = 1  # requests this one stands for (the root span's weight under sampling)


@dataclass(frozen=True, slots=True)
class AssembledBatch:
    """Everything one batch adds to the profiles, sorted so writers lock rows in one order."""

    fragments: tuple[FragmentSeen, ...]
    visits: tuple[FragmentVisits, ...]
    edges: tuple[EdgeCalls, ...]
    requests: tuple[RequestSample, ...]
    orphan_spans: int
    cross_workload_calls: int
    buckets: tuple[BucketCount, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.fragments and not self.edges


def ns_to_datetime(ns: int) -> datetime:
    """Unix nanoseconds as an aware UTC datetime (microsecond precision, as the database keeps)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def assemble(
    records: Sequence[SpanRecord],
    links: Links | None = None,
    samples: Sequence[MetricSample] = (),
) -> AssembledBatch:
    """Fragments, visits, buckets, edges and requests of `records` and metric `samples`.

    `links` are the edges a `TraceWindow` found for these records; None links the records
    among themselves only.
    """
    orphans = 0
    if links is None:
        window = TraceWindow(max_traces=len(records) + 1)
        links = window.link(records, now_s=0.0)
        window.evict(math.inf, links)  # the records are all there is: close every trace
        orphans = window.orphan_spans
    # Hot loop: keys are plain tuples ((tenant, workload), ...); dataclasses are built once per key below.
    seen: dict[tuple[tuple[str, str], str], list] = {}  # -> [kind, name, model, first_ns, last_ns]
    # (wl, key, class, minute) -> [visits, latency, tokens in, tokens out, queued visits, queue ms]
    visits: dict[tuple, list] = {}
    buckets: dict[tuple, int] = defaultdict(int)  # (wl, key, class, minute, series, bucket) -> count
    lat, tin_s, tout_s = Series.latency_ms, Series.tokens_in, Series.tokens_out
    for r in records:
        wl = (r.tenant, r.workload)
        key = r.key
        _see(seen, wl, key, r.kind, r.name, r.model, r.start_ns, r.end_ns)
        where = (wl, key, r.device_class, r.end_ns // _NS_PER_MINUTE)
        w = r.weight
        if w == 1:
            latency, tokens_in, tokens_out, queue_ms = r.duration_ms, r.tokens_in, r.tokens_out, r.queue_ms
        else:
            latency = r.duration_ms * w
            tokens_in, tokens_out = min(r.tokens_in * w, COUNT_MAX), min(r.tokens_out * w, COUNT_MAX)
            queue_ms = None if r.queue_ms is None else r.queue_ms * w
        acc = visits.get(where)
        if acc is None:
            acc = visits[where] = [w, latency, tokens_in, tokens_out, 0, 0.0]
        else:
            acc[0] += w
            acc[1] += latency
            acc[2] += tokens_in
            acc[3] += tokens_out
        if queue_ms is not None:
            acc[4] += w
            acc[5] += queue_ms
        buckets[(*where, lat, latency_bucket(r.duration_ms))] += w
        if r.kind in _TOKEN_KINDS:
            buckets[(*where, tin_s, token_bucket(r.tokens_in))] += w
            buckets[(*where, tout_s, token_bucket(r.tokens_out))] += w
    for m in samples:
        wl = (m.tenant, m.workload)
        _see(seen, wl, m.fragment_key, FragmentKind(m.kind), m.name, m.model, m.end_ns, m.end_ns)
        series = Series(m.series)
        bucket = token_bucket(m.value) if series in _TOKEN_SERIES else latency_bucket(m.value)
        buckets[(wl, m.fragment_key, m.device_class, m.end_ns // _NS_PER_MINUTE, series, bucket)] += m.count
    names = {wl: WorkloadName(*wl) for wl in {k[0] for k in seen}}
    minutes: dict[int, datetime] = {}

    def minute_at(index: int) -> datetime:
        value = minutes.get(index)
        if value is None:
            value = minutes[index] = _EPOCH + timedelta(minutes=index)
        return value

    return AssembledBatch(
        fragments=tuple(
            FragmentSeen(names[wl], key, kind, name, model, ns_to_datetime(first), ns_to_datetime(last))
            for (wl, key), (kind, name, model, first, last) in sorted(seen.items())
        ),
        visits=tuple(
            FragmentVisits(names[wl], key, dc, minute_at(m), v, latency, ti, to, qv, queue)
            for (wl, key, dc, m), (v, latency, ti, to, qv, queue) in sorted(visits.items())
        ),
        edges=_edges(links),
        requests=_requests(records, links.failed_traces),
        orphan_spans=orphans,
        cross_workload_calls=links.cross_workload_calls,
        buckets=tuple(
            BucketCount(names[wl], key, dc, minute_at(m), series, bucket, count)
            for (wl, key, dc, m, series, bucket), count in sorted(buckets.items())
        ),
    )


def _edges(links: Links) -> tuple[EdgeCalls, ...]:
    """Every edge `links` counted calls on or tallied visits of (a trace may close a flush after its calls)."""
    edges = []
    for key in sorted(links.edges.keys() | links.visits.keys()):
        calls, nbytes = links.edges.get(key, (0, 0))
        wl, parent, child = key
        edges.append(
            EdgeCalls(WorkloadName(*wl), parent, child, calls, nbytes, links.overlapping.get(key, 0),
                      tuple(sorted(links.visits.get(key, {}).items())))
        )
    return tuple(edges)


def _see(seen: dict, wl: tuple[str, str], key: str, kind, name: str, model: str, start_ns: int, end_ns: int) -> None:
    acc = seen.get((wl, key))
    if acc is None:
        seen[(wl, key)] = [kind, name, model, start_ns, end_ns]
        return
    if not acc[2] and model:
        acc[2] = model
    if start_ns < acc[3]:
        acc[3] = start_ns
    if end_ns > acc[4]:
        acc[4] = end_ns


def _requests(records: Sequence[SpanRecord], failed_traces: set[str]) -> tuple[RequestSample, ...]:
    """One sample per root span; failed when a span of its trace failed, in these records or, by
    `failed_traces` (the trace window's word), in an earlier batch."""
    tokens_by_trace: dict[str, int] = defaultdict(int)
    failed = set(failed_traces)
    for r in records:
        tokens_by_trace[r.trace_id] += r.tokens_in + r.tokens_out
        if r.failed:
            failed.add(r.trace_id)
    roots = sorted((r for r in records if r.parent_span_id is None), key=lambda r: (r.start_ns, r.span_id))
    samples = []
    for root in roots:
        # A well-formed trace has one root; should one carry several, its tokens are counted once, on the first.
        tokens = min(tokens_by_trace.pop(root.trace_id, 0) * root.weight, COUNT_MAX)
        samples.append(
            RequestSample(
                workload=WorkloadName(root.tenant, root.workload),
                minute=minute_of(ns_to_datetime(root.end_ns)),
                duration_ms=root.duration_ms,
                tokens=tokens,
                failed=root.trace_id in failed,
                weight=root.weight,
            )
        )
    return tuple(samples)
