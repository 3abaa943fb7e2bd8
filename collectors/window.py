"""Trace assembly across batches: a bounded window of open traces that turns parent links into edges.

Spans of one trace arrive in many export requests and in any order. For each open trace
the window remembers which fragment each seen span belongs to, and which seen spans wait
for a parent not seen yet. An edge (parent fragment -> child fragment) is emitted as soon as
both ends are known, whichever arrives first. A trace with no new span for `idle_s`, or the
least recently active trace when more than `max_traces` are open, is evicted; its waiting
children are counted as orphans (they keep their visits, only the edge is lost).

Not thread-safe: one ingest worker owns it.
"""

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from collectors.normalise import SpanRecord

# (tenant, workload) and a fragment key: how the window names one end of an edge.
End = tuple[tuple[str, str], str]


@dataclass(slots=True)
class _OpenTrace:
    spans: dict[str, End] = field(default_factory=dict)
    waiting: dict[str, list[tuple[End, int]]] = field(default_factory=dict)  # parent span id -> (child, bytes)
    last_active_s: float = 0.0


@dataclass(slots=True)
class Links:
    """Edges found by one `link` call: (workload, parent key, child key) -> [calls, bytes]."""

    edges: dict[tuple[tuple[str, str], str, str], list[int]] = field(default_factory=dict)
    cross_workload_calls: int = 0

    def add(self, parent: End, child: End, nbytes: int) -> None:
        if parent[0] != child[0]:
            self.cross_workload_calls += 1
            return
        acc = self.edges.get((child[0], parent[1], child[1]))
        if acc is None:
            self.edges[(child[0], parent[1], child[1])] = [1, nbytes]
        else:
            acc[0] += 1
            acc[1] += nbytes


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
        """Record `records` (seen at monotonic time `now_s`); the edges they complete are added to `into`."""
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
            me: End = ((r.tenant, r.workload), r.key)
            trace.spans[r.span_id] = me
            for child, nbytes in trace.waiting.pop(r.span_id, ()):
                links.add(me, child, nbytes)
            parent_id = r.parent_span_id
            if parent_id is None:
                rooted.append(r.trace_id)
            else:
                parent = trace.spans.get(parent_id)
                if parent is not None:
                    links.add(parent, me, r.bytes)
                else:
                    trace.waiting.setdefault(parent_id, []).append((me, r.bytes))
        # Spans are exported when they end, so a trace's root comes with or after its children: once the
        # root is in and nothing waits, the trace is complete and leaves the window. A child arriving in a
        # later batch than its root then becomes an orphan when evicted (counted, visit kept).
        for trace_id in rooted:
            trace = traces.get(trace_id)
            if trace is not None and not trace.waiting:
                del traces[trace_id]
                self.completed_traces += 1
        self.evict(now_s)
        return links

    def evict(self, now_s: float) -> int:
        """Drop stale traces and the least recently active beyond `max_traces`; returns how many went."""
        traces = self._traces
        gone = 0
        while traces:
            trace_id, trace = next(iter(traces.items()))
            if len(traces) <= self.max_traces and now_s - trace.last_active_s < self.idle_s:
                break
            del traces[trace_id]
            gone += 1
            self.orphan_spans += sum(len(children) for children in trace.waiting.values())
        self.evicted_traces += gone
        return gone
