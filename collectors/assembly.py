"""Trace assembly: a batch of span records becomes fragment visits, edges and end-to-end requests.

Pure: values in, values out. Every aggregate is additive, so the store can add a
batch to whatever other collectors have already written.

First-cut limitation: a batch is assembled on its own. A span whose parent span
is not in the same batch (the parent arrived, or will arrive, in another export
request) still counts as a visit of its fragment, but yields no edge; a windowed
assembler that holds open traces across batches replaces this later. Likewise a
request's tokens are those of its trace's spans within the batch.

Edges join fragments of one workload (`Edge` has a single workload); a call
from one workload's span into another workload's span is counted in
`AssembledBatch.cross_workload_calls` and not stored as an edge.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from collectors.normalise import SpanRecord
from controlplane.models._common import minute_of
from controlplane.models.workloads import FragmentKind

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


@dataclass(frozen=True, slots=True)
class EdgeCalls:
    """Calls from a parent fragment to a child fragment of the same workload."""

    workload: WorkloadName
    parent_key: str
    child_key: str
    calls: int


@dataclass(frozen=True, slots=True)
class RequestSample:
    """One end-to-end request: a root span and the tokens its trace spent."""

    workload: WorkloadName
    minute: datetime
    duration_ms: float
    tokens: int


@dataclass(frozen=True, slots=True)
class AssembledBatch:
    """Everything one batch adds to the profiles, sorted so writers lock rows in one order."""

    fragments: tuple[FragmentSeen, ...]
    visits: tuple[FragmentVisits, ...]
    edges: tuple[EdgeCalls, ...]
    requests: tuple[RequestSample, ...]
    orphan_spans: int
    cross_workload_calls: int

    @property
    def empty(self) -> bool:
        return not self.fragments


def ns_to_datetime(ns: int) -> datetime:
    """Unix nanoseconds as an aware UTC datetime (microsecond precision, as the database keeps)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def assemble(records: Sequence[SpanRecord]) -> AssembledBatch:
    """Fragment visits, edges and requests of one batch of span records."""
    by_span = {(r.trace_id, r.span_id): r for r in records}
    edges: dict[tuple[WorkloadName, str, str], int] = defaultdict(int)
    orphans = cross = 0
    for record in records:
        if record.parent_span_id is None:
            continue
        parent = by_span.get((record.trace_id, record.parent_span_id))
        if parent is None:
            orphans += 1
        elif _workload(parent) != _workload(record):
            cross += 1
        else:
            edges[(_workload(record), parent.key, record.key)] += 1
    return AssembledBatch(
        fragments=_fragments(records),
        visits=_visits(records),
        edges=tuple(
            EdgeCalls(workload=w, parent_key=p, child_key=c, calls=n) for (w, p, c), n in sorted(edges.items())
        ),
        requests=_requests(records),
        orphan_spans=orphans,
        cross_workload_calls=cross,
    )


def _workload(record: SpanRecord) -> WorkloadName:
    return WorkloadName(record.tenant, record.workload)


def _fragments(records: Iterable[SpanRecord]) -> tuple[FragmentSeen, ...]:
    seen: dict[tuple[WorkloadName, str], FragmentSeen] = {}
    for r in records:
        ident = (_workload(r), r.key)
        first, last = ns_to_datetime(r.start_ns), ns_to_datetime(r.end_ns)
        old = seen.get(ident)
        if old is not None:
            first, last = min(first, old.first_seen), max(last, old.last_seen)
        seen[ident] = FragmentSeen(
            workload=ident[0],
            key=r.key,
            kind=r.kind,
            name=r.name,
            model=(old.model if old is not None and old.model else r.model),
            first_seen=first,
            last_seen=last,
        )
    return tuple(seen[ident] for ident in sorted(seen))


def _visits(records: Iterable[SpanRecord]) -> tuple[FragmentVisits, ...]:
    # visits, latency_ms_sum, tokens_in, tokens_out
    sums: dict[tuple[WorkloadName, str, str, datetime], list[int | float]] = defaultdict(lambda: [0, 0.0, 0, 0])
    for r in records:
        acc = sums[(_workload(r), r.key, r.device_class, minute_of(ns_to_datetime(r.end_ns)))]
        acc[0] += 1
        acc[1] += r.duration_ms
        acc[2] += r.tokens_in
        acc[3] += r.tokens_out
    return tuple(
        FragmentVisits(
            workload=w, key=k, device_class=d, minute=m, visits=v, latency_ms_sum=lat, tokens_in=ti, tokens_out=to
        )
        for (w, k, d, m), (v, lat, ti, to) in sorted(sums.items())
    )


def _requests(records: Sequence[SpanRecord]) -> tuple[RequestSample, ...]:
    tokens_by_trace: dict[str, int] = defaultdict(int)
    for r in records:
        tokens_by_trace[r.trace_id] += r.tokens_in + r.tokens_out
    roots = sorted((r for r in records if r.parent_span_id is None), key=lambda r: (r.start_ns, r.span_id))
    samples = []
    for root in roots:
        # A well-formed trace has one root; should one carry several, its tokens are counted once, on the first.
        tokens = tokens_by_trace.pop(root.trace_id, 0)
        samples.append(
            RequestSample(
                workload=_workload(root),
                minute=minute_of(ns_to_datetime(root.end_ns)),
                duration_ms=root.duration_ms,
                tokens=tokens,
            )
        )
    return tuple(samples)
