"""The load driver: replays the sample apps' traces against the fleet and emits their OTLP spans.

Each request walks its app's graph. Every visit is served by the fleet, which
says how long it took; spans get explicit start and end timestamps from those
latencies, so nothing sleeps for a span's duration. A request's spans are
emitted when the request would have finished (live mode) or at once (`run`).

Span attributes follow the OTel GenAI semantic conventions, so the collectors
derive each fragment's key (see apps.py) from them; `heteroplane.device_class`
says which device class served the visit (for a fragment split into prefill and
decode pools, the class that decoded it), and `heteroplane.prefill_device_class`,
on split visits only, which class prefilled it. Visits of model fragments carry
`gen_ai.latency.time_in_queue` (seconds), as vLLM's request spans do: how long the
visit waited for a replica (for a split visit, for a prefill replica). Resource attributes:
service.name, heteroplane.tenant, heteroplane.workload.
"""

import csv
import heapq
import io
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from controlplane.simfleet.apps import App, Call, Fragment, Kind, Step, Trace
from controlplane.simfleet.physics import Visit

log = logging.getLogger(__name__)

PROVIDER = "vllm"  # gen_ai.provider.name of the self-hosted model servers
UNAVAILABLE_S = 0.001  # how long a call to a fragment with no running replica takes to fail
_GAP_S = 0.0002  # glue between consecutive calls of one parent
_MAX_WAIT_S = 0.5  # longest the live loop sleeps before looking at the stop flag again


class Server(Protocol):
    """What the driver needs from the fleet."""

    apps: tuple[App, ...]

    def serve(
        self, app: App, fragment: Fragment, input_tokens: int, output_tokens: int, at: float, rng: random.Random
    ) -> Visit | None: ...


@dataclass(frozen=True)
class TraceRow:
    offset_s: float  # since the sample's first request
    context_tokens: int
    generated_tokens: int


@cache
def load_trace(name: Trace) -> tuple[TraceRow, ...]:
    """The packaged sample of one Azure LLM inference trace (see data/ATTRIBUTION.md)."""
    return parse_trace(resources.files("controlplane.simfleet").joinpath("data", f"{name.value}.csv").read_text())


def read_trace(path: Path) -> tuple[TraceRow, ...]:
    """A whole Azure LLM inference trace file (TIMESTAMP, ContextTokens, GeneratedTokens), e.g. the
    hour in ../shared/data/azure-llm-2023, for replays longer than the packaged samples."""
    return parse_trace(path.read_text())


def parse_trace(text: str) -> tuple[TraceRow, ...]:
    """Rows of an Azure LLM inference trace CSV, offsets from its first request."""
    rows = []
    start = None
    for record in csv.DictReader(io.StringIO(text)):
        at = datetime.strptime(record["TIMESTAMP"][:26], "%Y-%m-%d %H:%M:%S.%f")
        start = start or at
        rows.append(TraceRow((at - start).total_seconds(), int(record["ContextTokens"]),
                             int(record["GeneratedTokens"])))
    return tuple(rows)


class _Arrivals:
    """One app's requests, looping its trace: when each arrives and which rows give its token counts."""

    def __init__(self, app: App, rows: Sequence[TraceRow] | None = None) -> None:
        self.app = app
        self._rows = rows or load_trace(app.trace)
        last = self._rows[-1].offset_s
        self._period = last + last / max(len(self._rows) - 1, 1)  # loop after one mean gap
        self._cursor = 0  # next unused row
        self._arrival = 0  # requests started (steady apps)

    def next_offset(self) -> float:
        """Trace time of the next request."""
        if self.app.steady_rps:
            return self._arrival / self.app.steady_rps
        loops, i = divmod(self._cursor, len(self._rows))
        return self._rows[i].offset_s + loops * self._period

    def start_request(self) -> None:
        self._arrival += 1

    def take_row(self) -> TraceRow:
        row = self._rows[self._cursor % len(self._rows)]
        self._cursor += 1
        return row


@dataclass
class _Replay:
    """A stepped replay's state (`LoadDriver.run_until`): the schedule and the request it stopped at."""

    schedule: Iterator[tuple[float, App, "_Arrivals"]]
    tracers: dict[str, trace.Tracer]
    start_s: float
    warp: Callable[[float], float]
    next: tuple[float, App, "_Arrivals"] | None = None


@dataclass
class _SpanPlan:
    """A span to emit: fully timed before any span object exists."""

    name: str
    kind: SpanKind
    attributes: dict[str, str | int]
    start_s: float
    end_s: float = 0.0
    error: str = ""
    children: list["_SpanPlan"] = field(default_factory=list)


def _attributes(app: App, call: Call, input_tokens: int, output_tokens: int) -> tuple[str, SpanKind, dict]:
    """Span name, kind and attributes that make the collectors derive `call.fragment.key`."""
    f = call.fragment
    if f.kind is Kind.llm:
        return f"chat {f.name}", SpanKind.CLIENT, {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": PROVIDER, "gen_ai.request.model": f.name,
            "gen_ai.response.model": f.name, "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens}
    if f.kind in (Kind.embedding, Kind.rerank):
        operation = "embeddings" if f.kind is Kind.embedding else "rerank"
        return f"{operation} {f.name}", SpanKind.CLIENT, {
            "gen_ai.operation.name": operation, "gen_ai.provider.name": PROVIDER, "gen_ai.request.model": f.name,
            "gen_ai.usage.input_tokens": input_tokens}
    if f.kind is Kind.tool:
        return f"execute_tool {f.name}", SpanKind.INTERNAL, {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": f.name, "gen_ai.tool.type": "function"}
    if f.kind is Kind.agent:
        return f"invoke_agent {f.name}", SpanKind.INTERNAL, {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": f.name, "gen_ai.provider.name": PROVIDER}
    if f.kind is Kind.retrieval:
        return f"retrieval {f.name}", SpanKind.CLIENT, {
            "gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": f.name}
    if f.kind is Kind.db:
        return f"{call.operation} {call.collection}".strip() or f.name, SpanKind.CLIENT, {
            "db.system": f.name, "db.system.name": f.name, "db.operation.name": call.operation,
            "db.collection.name": call.collection}
    kind = SpanKind.SERVER if call is app.root else SpanKind.INTERNAL
    return f.name, kind, {}


class LoadDriver:
    """Replays every app of `fleet` in real time (x `speedup`), or runs requests synchronously in simulated time.

    `traces` replaces the packaged trace samples (e.g. by `read_trace` of a whole trace file).
    """

    def __init__(self, fleet: Server, *, seed: int = 0, speedup: float = 1.0,
                 traces: Mapping[Trace, Sequence[TraceRow]] | None = None) -> None:
        self.fleet = fleet
        self.speedup = speedup
        self.traces = dict(traces or {})
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._processors: list[SpanProcessor] = []
        self.requests = 0  # requests started so far
        self._replay: _Replay | None = None

    # --- modes ------------------------------------------------------------------------------

    def run(self, n: int, exporter: SpanExporter, *, start_s: float | None = None) -> int:
        """Run the first `n` requests (all apps, in arrival order) into `exporter` at once; returns spans emitted.

        No threads, no sleeping: arrivals are placed at `start_s` (default: now)
        plus their trace offset / speedup, and every span is exported before this returns.
        """
        processors = [SimpleSpanProcessor(exporter) for _ in self.fleet.apps]
        tracers = self._tracers(processors)
        start = time.time() if start_s is None else start_s
        emitted = 0
        for offset, app, arrivals in itertools.islice(self._schedule(), n):
            plan = self._plan_request(app, arrivals, start + offset / self.speedup)
            emitted += self._emit(tracers[app.workload], plan, None)
        return emitted

    def run_until(self, until_s: float, exporter: SpanExporter, *, start_s: float,
                  warp: Callable[[float], float] | None = None) -> int:
        """Run, in arrival order, every request arriving before `until_s` that earlier calls did not run;
        returns how many. Resumable: a replay in steps (a closed loop changing the fleet between them).

        Simulated time, as `run`: a request whose trace offset is `o` arrives at `start_s + warp(o)`
        (`warp`, monotonic, reshapes the arrival rate; default o / speedup). The first call fixes
        `exporter`, `start_s` and `warp` for the whole replay.
        """
        if self._replay is None:
            processors = [SimpleSpanProcessor(exporter) for _ in self.fleet.apps]
            shift = warp or (lambda offset: offset / self.speedup)
            self._replay = _Replay(self._schedule(), self._tracers(processors), start_s, shift)
        replay, started = self._replay, 0
        while True:
            if replay.next is None:
                replay.next = next(replay.schedule)
            offset, app, arrivals = replay.next
            at = replay.start_s + replay.warp(offset)
            if at >= until_s:
                return started
            replay.next = None
            self._emit(replay.tracers[app.workload], self._plan_request(app, arrivals, at), None)
            started += 1

    def start(self, endpoint: str | None, headers: Mapping[str, str] | None = None) -> None:
        """Replay live in a background thread, exporting to `endpoint` over OTLP/HTTP (None: spans are dropped)."""
        if self._thread is not None:
            return
        if endpoint:
            url = endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"
            self._processors = [
                BatchSpanProcessor(OTLPSpanExporter(endpoint=url, headers=dict(headers or {}), timeout=3),
                                   schedule_delay_millis=1000)
                for _ in self.fleet.apps
            ]
        tracers = self._tracers(self._processors)
        self._stop.clear()
        self._thread = threading.Thread(target=self._live, args=(tracers,), name="simfleet-driver", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop replaying, flush what was emitted, shut the exporters down; returns within about `timeout_s`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        # Flush and shut the apps' processors down side by side, and give up waiting after `timeout_s`:
        # an unreachable collector must not hold up the demo's exit.
        closers = [threading.Thread(target=p.shutdown, name="simfleet-flush", daemon=True) for p in self._processors]
        for closer in closers:
            closer.start()
        deadline = time.monotonic() + timeout_s
        for closer in closers:
            closer.join(max(0.0, deadline - time.monotonic()))
        self._processors = []

    # --- internals --------------------------------------------------------------------------

    def _tracers(self, processors: Sequence[SpanProcessor]) -> dict[str, trace.Tracer]:
        tracers = {}
        for i, app in enumerate(self.fleet.apps):
            resource = Resource.create(
                {"service.name": app.workload, "heteroplane.tenant": app.tenant, "heteroplane.workload": app.workload})
            # stop() owns the processors' lifecycle; no atexit hook keeps every provider alive.
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            if i < len(processors):
                provider.add_span_processor(processors[i])
            tracers[app.workload] = provider.get_tracer("heteroplane.simfleet")
        return tracers

    def _schedule(self) -> Iterator[tuple[float, App, _Arrivals]]:
        """All apps' requests merged in trace-time order, forever."""
        streams = [_Arrivals(app, self.traces.get(app.trace)) for app in self.fleet.apps]
        heap = [(arrivals.next_offset(), i, arrivals) for i, arrivals in enumerate(streams)]
        heapq.heapify(heap)
        while heap:
            offset, i, arrivals = heap[0]
            yield offset, arrivals.app, arrivals  # the consumer plans the request, which consumes rows
            heapq.heapreplace(heap, (arrivals.next_offset(), i, arrivals))

    def _live(self, tracers: dict[str, trace.Tracer]) -> None:
        start = time.time()
        schedule = self._schedule()
        pending: list[tuple[float, int, _SpanPlan, str]] = []  # requests planned, emitted when they end
        seq = itertools.count()
        offset, app, arrivals = next(schedule)
        while not self._stop.is_set():
            due = start + offset / self.speedup
            next_event = min(due, pending[0][0]) if pending else due
            now = time.time()
            if next_event > now:
                self._stop.wait(min(next_event - now, _MAX_WAIT_S))
            elif pending and pending[0][0] <= due:
                _, _, plan, workload = heapq.heappop(pending)
                self._safe_emit(tracers[workload], plan)
            else:
                plan = self._plan_request(app, arrivals, due)
                heapq.heappush(pending, (plan.end_s, next(seq), plan, app.workload))
                offset, app, arrivals = next(schedule)
        for _, _, plan, workload in sorted(pending):  # what already started still reaches the collector
            self._safe_emit(tracers[workload], plan)

    def _safe_emit(self, tracer: trace.Tracer, plan: _SpanPlan) -> None:
        try:
            self._emit(tracer, plan, None)
        except Exception:  # telemetry must never take the fleet down
            log.exception("simfleet: emitting a trace failed")

    def _plan_request(self, app: App, arrivals: _Arrivals, at: float) -> _SpanPlan:
        arrivals.start_request()
        self.requests += 1
        row = arrivals.take_row()
        plan = self._plan_call(app, app.root, at, row.context_tokens, row.generated_tokens, arrivals)
        assert plan is not None  # the root always runs
        return plan

    def _plan_call(
        self, app: App, call: Call, at: float, context: int, generated: int, arrivals: _Arrivals
    ) -> _SpanPlan | None:
        if call.probability < 1.0 and self._rng.random() >= call.probability:
            return None
        model_kind = call.fragment.model is not None
        tokens_in = call.tokens.input_tokens(context) if model_kind else 0
        tokens_out = call.tokens.output_tokens(generated) if call.fragment.kind is Kind.llm else 0
        name, kind, attributes = _attributes(app, call, tokens_in, tokens_out)
        plan = _SpanPlan(name, kind, attributes, at)
        visit = self.fleet.serve(app, call.fragment, tokens_in, tokens_out, at, self._rng)
        if visit is None:
            plan.error, plan.end_s = "unavailable", at + UNAVAILABLE_S
            return plan
        attributes["heteroplane.device_class"] = visit.device_class
        if visit.prefill_class:
            attributes["heteroplane.prefill_device_class"] = visit.prefill_class
        if model_kind:  # served by a model server, which says how long the visit queued, as vLLM does
            attributes["gen_ai.latency.time_in_queue"] = visit.wait_s
        if not call.children:
            plan.end_s = at + visit.latency_s
            return plan
        # A parent's own work is split around its calls: half before, half after.
        t = at + visit.latency_s / 2
        for step in call.children:
            t = self._plan_step(app, step, plan, t, context, generated, arrivals) + _GAP_S
        plan.end_s = t + visit.latency_s / 2
        return plan

    def _plan_step(
        self, app: App, step: Step, parent: _SpanPlan, at: float, context: int, generated: int, arrivals: _Arrivals
    ) -> float:
        """Plan `step` under `parent` from `at`; returns when it ends."""
        if isinstance(step, Call):
            child = self._plan_call(app, step, at, context, generated, arrivals)
            if child is None:
                return at
            parent.children.append(child)
            return child.end_s
        t = at
        for i in range(self._rng.randint(step.min_iterations, step.max_iterations)):
            if i:  # each further turn of the loop is a further request of the trace
                row = arrivals.take_row()
                context, generated = row.context_tokens + i * step.context_growth_tokens, row.generated_tokens
            for call in step.body:
                t = self._plan_step(app, call, parent, t, context, generated, arrivals) + _GAP_S
        return t

    def _emit(self, tracer: trace.Tracer, plan: _SpanPlan, parent: trace.Span | None) -> int:
        # An explicit empty context makes a root span whatever the caller's current context is.
        context = trace.set_span_in_context(parent) if parent is not None else Context()
        span = tracer.start_span(plan.name, context=context, kind=plan.kind, attributes=plan.attributes,
                                 start_time=int(plan.start_s * 1e9))
        if plan.error:
            span.set_attribute("error.type", plan.error)
            span.set_status(Status(StatusCode.ERROR, f"no running replica of {plan.name}"))
        emitted = 1 + sum(self._emit(tracer, child, span) for child in plan.children)
        span.end(end_time=int(plan.end_s * 1e9))
        return emitted
