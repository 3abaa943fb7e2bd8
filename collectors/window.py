"""Trace assembly across batches: a bounded window of open traces that turns parent links into edges.

Spans of one trace arrive in many export requests and in any order. For each open trace
the window remembers which fragment each seen span belongs to, and the child calls seen under
each parent span id, with their times. An edge's call (parent fragment -> child fragment) is
counted as soon as both ends are known, whichever arrives first. A trace with no new span for
`idle_s`, or the least recently active trace when more than `max_traces` are open, is evicted;
children still waiting for their parent are counted as orphans (they keep their visits, only
the edge is lost).

When a trace leaves the window (complete, or evicted), each of its parent visits is tallied
once: per child fragment, how many calls the visit made and how many of them overlapped a
sibling call (collectors.fanout). A call arriving after its trace left is an orphan, so the
tallies and the counted calls stay consistent.

Sampled traces: every count is weighted by the span's `weight` (its adjusted count, an integer,
collectors.normalise): a call by the child span's, a tallied parent visit by the parent span's,
bytes by the child's (bytes times weight, capped at COUNT_MAX per call so sums stay in BIGINT).

Not thread-safe: one ingest worker owns it.
"""

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from collectors.fanout import overlapping
from collectors.normalise import COUNT_MAX, SpanRecord

# (tenant, workload) and a fragment key: how the window names one end of an edge.
End = tuple[tuple[str, str], str]
# (workload, parent key, child key): one edge.
EdgeKey = tuple[tuple[str, str], str, str]
# A call seen under a parent span: the child's end, bytes, start and end ns, and weight.
Call = tuple[End, int, int, int, int]
_NONE: dict = {}  # no calls seen under a span (never written to)


@dataclass(slots=True)
class _OpenTrace:
    spans: dict[str, tuple[End, int]] = field(default_factory=dict)  # span id -> (its end, its weight)
    calls: dict[str, dict[str, Call]] = field(default_factory=dict)  # parent span id -> child span id -> call
    last_active_s: float = 0.0
    failed: bool = False  # some span seen so far has status ERROR

    def waiting(self) -> int:
        """Child spans whose parent has not been seen."""
        return sum(len(children) for parent, children in self.calls.items() if parent not in self.spans)


@dataclass(slots=True)
class Links:
    """What one `link` call found.

    `edges`: (workload, parent key, child key) -> [calls, bytes], counted (weighted) as calls are linked.
    `visits`: per edge, calls made n -> parent visits that made exactly n (n >= 1), and
    `overlapping`: per edge, calls that overlapped a sibling; both tallied as traces leave the window.
    `failed_traces`: trace ids whose root span came in, and some span of which (seen so far, in this
    batch or an earlier one) failed: their requests failed, whatever their latency.
    """

    edges: dict[EdgeKey, list[int]] = field(default_factory=dict)
    visits: dict[EdgeKey, dict[int, int]] = field(default_factory=dict)
    overlapping: dict[EdgeKey, int] = field(default_factory=dict)
    cross_workload_calls: int = 0
    failed_traces: set[str] = field(default_factory=set)

    def add(self, parent: End, child: End, nbytes: int, weight: int = 1) -> None:
        """Count one call (standing for `weight` calls) from `parent` to `child` that moved `nbytes`."""
        if parent[0] != child[0]:
            self.cross_workload_calls += 1  # a health figure, like orphan spans: spans seen, not weighted
            return
        if weight != 1:
            nbytes = min(nbytes * weight, COUNT_MAX)
        acc = self.edges.get((child[0], parent[1], child[1]))
        if acc is None:
            self.edges[(child[0], parent[1], child[1])] = [weight, nbytes]
        else:
            acc[0] += weight
            acc[1] += nbytes

    def tally(self, parent: End, children: Iterable[Call], weight: int = 1) -> None:
        """Tally one parent visit (standing for `weight` visits) and its child calls: calls per child
        fragment, and those overlapping a sibling (each weighted by the child's weight).

        Siblings in other workloads count for overlap, though their calls are no edge of this one.
        """
        children = list(children)
        calls: dict[str, int] = {}  # child key -> calls of this visit
        overlapped: dict[str, int] = {}
        for (child, _, _, _, child_weight), overlaps in zip(
            children, overlapping([(c[2], c[3]) for c in children]), strict=True
        ):
            if child[0] == parent[0]:
                calls[child[1]] = calls.get(child[1], 0) + 1
                if overlaps:
                    overlapped[child[1]] = overlapped.get(child[1], 0) + child_weight
        workload, parent_key = parent
        for child_key, n in calls.items():
            per_visit = self.visits.setdefault((workload, parent_key, child_key), {})
            per_visit[n] = per_visit.get(n, 0) + weight
        for child_key, n in overlapped.items():
            edge = (workload, parent_key, child_key)
            self.overlapping[edge] = self.overlapping.get(edge, 0) + n

    @property
    def empty(self) -> bool:
        return not (self.edges or self.visits or self.overlapping)


class TraceWindow:
    """Open traces, bounded in number and in idle time."""

    def __init__(self, max_traces: int = 50_000, idle_s: float = 120.0) -> None:
        self.max_traces = max_traces
        self.idle_s = idle_s
        self._traces: OrderedDict[str, _OpenTrace] = OrderedDict()
        self.evicted_traces = 0
        self.completed_traces = 0
        self.orphan_spans = 0

    @property
    def open_traces(self) -> int:
        return len(self._traces)

    def link(self, records: Iterable[SpanRecord], now_s: float, into: Links | None = None) -> Links:
        """Record `records` (seen at monotonic time `now_s`); what they complete is added to `into`."""
        links = Links() if into is None else into
        traces = self._traces
        rooted: list[str] = []
        for r in records:
            trace = traces.get(r.trace_id)
            if trace is None:
                trace = traces[r.trace_id] = _OpenTrace()
            else:
                traces.move_to_end(r.trace_id)
            trace.last_active_s = now_s
            trace.failed = trace.failed or r.failed
            me: End = ((r.tenant, r.workload), r.key)
            if r.span_id not in trace.spans:  # a span sent twice links its children once
                trace.spans[r.span_id] = (me, r.weight)
                for child, nbytes, _, _, weight in trace.calls.get(r.span_id, _NONE).values():
                    links.add(me, child, nbytes, weight)
            parent_id = r.parent_span_id
            if parent_id is None:
                rooted.append(r.trace_id)
                continue
            siblings = trace.calls.get(parent_id)
            if siblings is None:
                siblings = trace.calls[parent_id] = {}
            elif r.span_id in siblings:
                continue
            siblings[r.span_id] = (me, r.bytes, r.start_ns, r.end_ns, r.weight)
            parent = trace.spans.get(parent_id)
            if parent is not None:
                links.add(parent[0], me, r.bytes, r.weight)
        # Spans are exported when they end, so a trace's root comes with or after its children: once the
        # root is in and nothing waits, the trace is complete and leaves the window. A child arriving in a
        # later batch than its root then becomes an orphan when evicted (counted, visit kept).
        for trace_id in rooted:
            trace = traces.get(trace_id)
            if trace is not None and trace.failed:
                links.failed_traces.add(trace_id)
            if trace is not None and not trace.waiting():
                del traces[trace_id]
                self._close(trace, links)
                self.completed_traces += 1
        self.evict(now_s, links)
        return links

    def evict(self, now_s: float, into: Links) -> int:
        """Drop stale traces and the least recently active beyond `max_traces`, tallying their visits
        into `into`; returns how many went. `now_s=math.inf` closes every open trace."""
        traces = self._traces
        gone = 0
        while traces:
            trace_id, trace = next(iter(traces.items()))
            if len(traces) <= self.max_traces and now_s - trace.last_active_s < self.idle_s:
                break
            del traces[trace_id]
            gone += 1
            self.orphan_spans += trace.waiting()
            self._close(trace, into)
        self.evicted_traces += gone
        return gone

    @staticmethod
    def _close(trace: _OpenTrace, links: Links) -> None:
        for parent_id, children in trace.calls.items():
            parent = trace.spans.get(parent_id)
            if parent is not None:
                links.tally(parent[0], children.values(), parent[1])
