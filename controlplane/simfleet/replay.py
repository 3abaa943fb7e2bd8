"""The closed-loop harness: a controller runs the simulated fleet through a compressed day, in simulated time.

Simulated time advances period by period. In each period the load driver replays the requests that
arrive in it (`LoadDriver.run_until`) through the fleet as the controller has left it; scheduled
faults strike at their instant within the period. Each request's spans reach the collectors when the
request ends, as a live OTLP exporter would send them: encoded by the OpenTelemetry OTLP encoder, then
normalised, assembled and stored by the same code the OTLP receiver runs (`normalise_request`,
`Ingest`), into the harness's own database. At the period's end the controller acts, reading the
simulated clock. Nothing sleeps: a day of a few thousand requests an hour costs seconds of Python.

Load. Each app's Azure trace (../shared/data/azure-llm-2023 when present, else the packaged samples)
is time-warped: trace time is consumed at `rate x LoadCurve.multiplier(t)` trace seconds per simulated
second, so arrivals keep the trace's own burstiness and token counts while their rate follows a 24-hour
curve compressed into `day_s` simulated seconds (peak:trough `peak_to_trough`, plus a sharp burst).

Measured per period, over the requests that arrived in it: requests; requests within SLA (root span
no longer than the workload's p99 SLA and no failed visit anywhere in the trace); LLM tokens (input +
output of the chat visits that were served); cost (each class's allocated devices, as the fleet packs
the replicas it runs, x the catalog's $/h, integrated over the period, faults included); and whether
the controller changed what runs (placements) and in how many fragments.
"""

import bisect
import math
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

import controlplane.models  # noqa: F401  (registers every table for create_all)
from collectors.normalise import normalise_request
from collectors.pipeline import Ingest
from controlplane.actuators.base import ApplyResult, DesiredPlacement, ReplicaSet
from controlplane.collected import database_sink
from controlplane.db import make_engine
from controlplane.seed import seed_catalog
from controlplane.simfleet.apps import APPS, App, Fragment, Trace
from controlplane.simfleet.devices import CPU, DEFAULT_LAYOUT, NodeLayout
from controlplane.simfleet.driver import LoadDriver, TraceRow, read_trace
from controlplane.simfleet.fleet import SimulatedFleet
from controlplane.simfleet.physics import Visit
from optimizer.catalog import by_name

START_S = datetime(2026, 1, 5, tzinfo=UTC).timestamp()  # simulated epoch: a Monday, 00:00 UTC
DAY_S = 86_400.0
AZURE_TRACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "azure-llm-2023"

FragmentId = tuple[str, str, str]  # tenant, workload, fragment key


@dataclass(frozen=True)
class LoadCurve:
    """The arrival-rate multiplier over a compressed day: a diurnal cosine with mean 1, lowest at
    `trough_hour`, `peak_to_trough` times higher twelve hours later, times `burst_factor` for
    `burst_hours` from `burst_hour` (a sharp step up and down). Hours are of the compressed day."""

    day_s: float = 3600.0
    peak_to_trough: float = 5.0
    trough_hour: float = 4.0
    burst_hour: float = 10.0
    burst_hours: float = 0.6
    burst_factor: float = 2.0

    def multiplier(self, t_s: float) -> float:
        hour = (t_s / self.day_s * 24.0) % 24.0
        low = 2.0 / (self.peak_to_trough + 1.0)  # makes the diurnal part's daily mean 1
        diurnal = low * (1 + (self.peak_to_trough - 1) * (1 - math.cos(2 * math.pi * (hour - self.trough_hour) / 24)) / 2)
        burst = self.burst_factor if self.burst_hour <= hour < self.burst_hour + self.burst_hours else 1.0
        return diurnal * burst


class TimeWarp:
    """Trace offset (s) -> simulated seconds since the start, for a trace consumed at `rate` x the
    curve's multiplier: the inverse of T(t) = rate x integral_0^t multiplier, tabulated every `step_s`."""

    def __init__(self, curve: LoadCurve, rate: float, horizon_s: float, step_s: float = 1.0) -> None:
        self.step_s = step_s
        self.cumulative = [0.0]
        for i in range(math.ceil(horizon_s / step_s) + 1):
            self.cumulative.append(self.cumulative[-1] + rate * curve.multiplier((i + 0.5) * step_s) * step_s)

    def __call__(self, offset: float) -> float:
        i = bisect.bisect_right(self.cumulative, offset) - 1
        if i >= len(self.cumulative) - 1:
            return math.inf  # past the horizon: never arrives
        low, high = self.cumulative[i], self.cumulative[i + 1]
        return (i + (offset - low) / (high - low)) * self.step_s


@dataclass(frozen=True)
class FailDevices:
    """At `at_s` (since the start), `fraction` of `device_class`'s healthy devices fail (at least one):
    those that hold the most memory (running replicas) first, so the fault bites. None: the
    accelerator class with the most devices allocated then."""

    at_s: float
    device_class: str | None = None
    fraction: float = 0.1


@dataclass(frozen=True)
class LoseNode:
    """At `at_s`, every device of `node` fails; None picks the accelerator node holding the most memory."""

    at_s: float
    node: str | None = None


Fault = FailDevices | LoseNode


@dataclass(frozen=True)
class FaultRecord:
    at_s: float
    devices: tuple[tuple[str, int], ...]  # (node, index) of each failed device
    what: str
    affected: tuple[FragmentId, ...]  # fragments that lost running replicas to it
    exposed: tuple[FragmentId, ...]  # fragments running on the failed devices' class when it struck


@dataclass(frozen=True)
class FragmentLoad:
    """A fragment's visits in one period and their mean tokens (what an autoscaler's metrics see)."""

    fragment: FragmentId
    visits: int
    tokens_in: float
    tokens_out: float


@dataclass(frozen=True)
class WorkloadPeriod:
    workload: str
    requests: int
    within_sla: int


@dataclass(frozen=True)
class PeriodResult:
    index: int
    start_s: float  # since the run's start
    requests: int
    within_sla: int
    failed_requests: int  # requests with at least one failed visit
    llm_tokens: int
    cost_usd: float
    placement_changed: bool  # the controller changed what runs at this period's end
    fragments_changed: int
    shortfall: tuple[tuple[FragmentId, int], ...]  # after the controller acted: replicas it asked for that do not run
    workloads: tuple[WorkloadPeriod, ...]
    loads: tuple[FragmentLoad, ...]


@dataclass(frozen=True)
class RunResult:
    controller: str
    config: "ReplayConfig"
    periods: tuple[PeriodResult, ...]
    faults: tuple[FaultRecord, ...]
    wall_s: float

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.periods)

    @property
    def sla_share(self) -> float:
        return sum(p.within_sla for p in self.periods) / max(1, self.requests)

    @property
    def cost_usd(self) -> float:
        return sum(p.cost_usd for p in self.periods)

    @property
    def llm_tokens(self) -> int:
        return sum(p.llm_tokens for p in self.periods)

    @property
    def usd_per_million_tokens(self) -> float:
        return self.cost_usd / (self.llm_tokens / 1e6) if self.llm_tokens else math.inf

    @property
    def placements(self) -> int:
        return sum(p.placement_changed for p in self.periods)

    @property
    def placements_per_hour(self) -> float:
        """Per hour of simulated time."""
        return self.placements / (self.config.run_s / 3600.0)

    @property
    def placements_per_day(self) -> float:
        """Per compressed day."""
        return self.placements / (self.config.run_s / self.config.curve.day_s)

    def workload_requests(self, workload: str, periods: slice = slice(None)) -> int:
        return sum(w.requests for p in self.periods[periods] for w in p.workloads if w.workload == workload)

    def workload_share(self, workload: str, periods: slice = slice(None)) -> float:
        rows = [w for p in self.periods[periods] for w in p.workloads if w.workload == workload]
        return sum(w.within_sla for w in rows) / max(1, sum(w.requests for w in rows))


@dataclass(frozen=True)
class ReplayConfig:
    """One closed-loop run: `run_s` simulated seconds in periods of `period_s`, the load curve (its
    `day_s` is the compression: 86,400 / day_s day-seconds per simulated second), trace seconds per
    simulated second at multiplier 1 (`rate`), the apps and their p99 SLAs (ms, by workload)."""

    run_s: float = 3600.0
    period_s: float = 60.0
    curve: LoadCurve = field(default_factory=LoadCurve)
    rate: float = 1.0
    seed: int = 7
    apps: tuple[App, ...] = APPS
    sla_ms: tuple[tuple[str, float], ...] = (("rag-chatbot", 20_000.0), ("coding-agent", 30_000.0),
                                             ("doc-pipeline", 15_000.0))
    traces_dir: Path | None = AZURE_TRACES  # None or missing: the packaged samples
    layout: tuple[NodeLayout, ...] = DEFAULT_LAYOUT
    database_url: str = ""  # empty: a fresh SQLite file in a temporary directory

    @property
    def periods(self) -> int:
        return math.ceil(self.run_s / self.period_s - 1e-9)


def _replicas(sets: Sequence[ReplicaSet]) -> dict[tuple[str, str, str, str, str], int]:
    """Replicas by (tenant, workload, fragment key, class, phase)."""
    return {(rs.tenant, rs.workload, rs.fragment_key, rs.device_class, str(rs.phase)): rs.replicas for rs in sets}


def shortfall(desired: DesiredPlacement | None, running: Sequence[ReplicaSet]) -> dict[FragmentId, int]:
    """Replicas the last applied placement asks for that do not run (e.g. evicted by a fault and not
    re-placed), by fragment; empty when everything it asks for runs."""
    if desired is None:
        return {}
    have = _replicas(running)
    out: dict[FragmentId, int] = defaultdict(int)
    for key, n in _replicas(desired.replica_sets).items():
        if have.get(key, 0) < n:
            out[key[:3]] += n - have.get(key, 0)
    return dict(out)


class RecordingActuator:
    """The fleet as an Actuator that remembers the last placement applied through it (everything else
    is the fleet's own), so the harness can tell what a controller asked for from what runs."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet
        self.desired: DesiredPlacement | None = None

    def apply(self, desired: DesiredPlacement) -> ApplyResult:
        result = self.fleet.apply(desired)
        if result.ok:
            self.desired = desired
        return result

    def __getattr__(self, name: str):
        return getattr(self.fleet, name)


class Loop(Protocol):
    """What a controller may use: the fleet through the Actuator protocol (and the sim's physics where an
    autoscaler would read metrics), the harness's database, and the simulated clock."""

    fleet: RecordingActuator  # the SimulatedFleet, applying through the Actuator protocol
    engine: Engine | None
    config: ReplayConfig

    def now(self) -> datetime: ...


class Controller(Protocol):
    """Decides what the fleet runs; `act` runs at the end of every period with that period's loads."""

    name: str
    reads_telemetry: bool  # False: the harness skips the collectors (a controller that never reads the database)

    def start(self, loop: Loop) -> None: ...

    def act(self, loop: Loop, loads: Sequence[FragmentLoad]) -> None: ...


def load_traces(directory: Path | None) -> dict[Trace, tuple[TraceRow, ...]]:
    """The whole Azure traces in `directory` (code.csv, conv.csv), or {} (the driver's packaged samples)."""
    if directory is None or not all((directory / f"{t.value}.csv").is_file() for t in Trace):
        return {}
    return {t: read_trace(directory / f"{t.value}.csv") for t in Trace}


class _Counting:
    """The driver's Server: serves on the fleet and counts each fragment's visits and tokens."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet, self.apps = fleet, fleet.apps
        self.visits: dict[FragmentId, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])

    def serve(self, app: App, fragment: Fragment, input_tokens: int, output_tokens: int, at: float, rng) -> Visit | None:
        acc = self.visits[app.tenant, app.workload, fragment.key]
        acc[0] += 1
        acc[1] += input_tokens
        acc[2] += output_tokens
        return self.fleet.serve(app, fragment, input_tokens, output_tokens, at, rng)

    def take(self) -> tuple[FragmentLoad, ...]:
        out = tuple(FragmentLoad(fid, int(v), tin / v, tout / v) for fid, (v, tin, tout) in sorted(self.visits.items()))
        self.visits.clear()
        return out


@dataclass
class _Request:
    start_s: float
    end_s: float
    workload: str
    failed: bool
    llm_tokens: int
    spans: list[ReadableSpan]


class _Requests(SpanExporter):
    """Collects each request's spans; a request is complete when its root span is exported (spans are
    exported as they end, children first). `deliver` hands the requests ended by then to the collectors."""

    def __init__(self, ingest: Ingest | None) -> None:
        self.ingest = ingest
        self._open: dict[int, list[ReadableSpan]] = defaultdict(list)
        self.done: list[_Request] = []  # in arrival order; measured, not yet delivered
        self._undelivered: list[_Request] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            trace_spans = self._open[span.context.trace_id]
            trace_spans.append(span)
            if span.parent is not None:
                continue
            del self._open[span.context.trace_id]
            failed = any(s.status.status_code is StatusCode.ERROR for s in trace_spans)
            tokens = sum(int(s.attributes.get("gen_ai.usage.input_tokens", 0)) +
                         int(s.attributes.get("gen_ai.usage.output_tokens", 0))
                         for s in trace_spans
                         if s.attributes.get("gen_ai.operation.name") == "chat" and s.status.status_code is not StatusCode.ERROR)
            request = _Request(span.start_time / 1e9, span.end_time / 1e9,
                               str(span.resource.attributes.get("heteroplane.workload", "")), failed, tokens,
                               trace_spans if self.ingest is not None else [])
            self.done.append(request)
            if self.ingest is not None:
                self._undelivered.append(request)
        return SpanExportResult.SUCCESS

    def deliver(self, until_s: float) -> None:
        """Spans of requests ended by `until_s` through the OTLP encoding, normalisation and ingest."""
        if self.ingest is None:
            return
        ready = [r for r in self._undelivered if r.end_s <= until_s]
        self._undelivered = [r for r in self._undelivered if r.end_s > until_s]
        if ready:
            request = encode_spans([s for r in ready for s in r.spans])
            if not self.ingest.submit(normalise_request(request).records):
                raise RuntimeError("the ingest queue is full; the harness flushes every period, so this is a bug")
        self.ingest.flush()


class ClosedLoop:
    """One controller over one replay (module docstring); `run()` returns what was measured."""

    def __init__(self, controller: Controller, config: ReplayConfig, faults: Sequence[Fault] = (),
                 fleet_factory: Callable[..., SimulatedFleet] = SimulatedFleet) -> None:
        self.controller, self.config = controller, config
        self.faults = tuple(sorted(faults, key=lambda f: f.at_s))
        self.now_s = START_S
        self.fleet = RecordingActuator(
            fleet_factory(seed=config.seed, apps=config.apps, layout=config.layout, clock=lambda: self.now_s))
        self.engine: Engine | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_s, UTC)

    def run(self) -> RunResult:
        started = time.perf_counter()
        config = self.config
        ingest = None
        if self.controller.reads_telemetry:
            self.engine = self._database()
            ingest = Ingest(database_sink(self.engine))
        requests = _Requests(ingest)
        server = _Counting(self.fleet)
        driver = LoadDriver(server, seed=config.seed, traces=load_traces(config.traces_dir))
        warp = TimeWarp(config.curve, config.rate, config.run_s + config.period_s)
        sla = dict(config.sla_ms)
        self.controller.start(self)
        pending, records, periods = list(self.faults), [], []
        try:
            for k in range(config.periods):
                t0, t1 = START_S + k * config.period_s, START_S + min(config.run_s, (k + 1) * config.period_s)
                cost, since = 0.0, t0
                while pending and START_S + pending[0].at_s < t1:
                    fault = pending.pop(0)
                    at = max(t0, START_S + fault.at_s)
                    driver.run_until(at, requests, start_s=START_S, warp=warp)
                    cost += self._cost(at - since)
                    self.now_s = since = at
                    records.append(self._strike(fault, at - START_S))
                driver.run_until(t1, requests, start_s=START_S, warp=warp)
                cost += self._cost(t1 - since)
                self.now_s = t1
                requests.deliver(t1)
                loads = server.take()
                before = self.fleet.observe().replica_sets
                self.controller.act(self, loads)
                after = self.fleet.observe().replica_sets
                periods.append(self._period(k, requests.done, sla, cost, loads, before, after))
                requests.done = []
        finally:
            if self.engine is not None:
                self.engine.dispose()
            if self._tmp is not None:
                self._tmp.cleanup()
        return RunResult(self.controller.name, config, tuple(periods), tuple(records), time.perf_counter() - started)

    # --- internals --------------------------------------------------------------------------

    def _database(self) -> Engine:
        url = self.config.database_url
        if not url:
            self._tmp = tempfile.TemporaryDirectory(prefix="heteroplane-replay-")
            url = f"sqlite:///{self._tmp.name}/replay.db"
        engine = make_engine(url)
        SQLModel.metadata.create_all(engine)
        with Session(engine) as session:
            seed_catalog(session)
            session.commit()
        return engine

    def _cost(self, seconds: float) -> float:
        """$ of what the fleet runs now, held for `seconds`: allocated devices x the catalog's $/h."""
        return sum(c.allocated * by_name(c.device_class).usd_per_hour for c in self.fleet.class_utilisation()) * seconds / 3600

    def _strike(self, fault: Fault, at_s: float) -> FaultRecord:
        stats = [d for d in self.fleet.device_stats() if d.xid == 0]
        if isinstance(fault, FailDevices):
            cls = fault.device_class or max(
                (c for c in self.fleet.class_utilisation() if c.device_class != CPU),
                key=lambda c: (c.allocated, c.device_class)).device_class
            pool = sorted((d for d in stats if d.device_class == cls),
                          key=lambda d: (-d.memory_used_mib, d.hostname, d.index))
            chosen = pool[: max(1, math.ceil(fault.fraction * len(pool)))]
            what = f"{len(chosen)} of {len(pool)} healthy {cls} devices fail"
        else:
            node = fault.node
            if node is None:
                used: dict[str, float] = defaultdict(float)
                for d in stats:
                    if d.device_class != CPU:
                        used[d.hostname] += d.memory_used_mib
                node = max(sorted(used), key=used.__getitem__)
            chosen = [d for d in stats if d.hostname == node]
            what = f"node {node} is lost ({len(chosen)} devices)"
        before = _replicas(self.fleet.observe().replica_sets)
        fail_node = getattr(self.fleet, "fail_node", None)
        if isinstance(fault, LoseNode) and fail_node is not None:
            fail_node(chosen[0].hostname)
        else:
            for d in chosen:
                self.fleet.fail_device(d.hostname, d.index)
        after = _replicas(self.fleet.observe().replica_sets)
        affected = tuple(sorted({k[:3] for k, n in before.items() if after.get(k, 0) < n}))
        exposed = tuple(sorted({k[:3] for k in before if k[3] == chosen[0].device_class}))
        return FaultRecord(at_s, tuple((d.hostname, d.index) for d in chosen), what, affected, exposed)

    def _period(self, k: int, done: list[_Request], sla: dict[str, float], cost: float,
                loads: tuple[FragmentLoad, ...], before, after) -> PeriodResult:
        by_workload: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in done:
            ok = not r.failed and (r.end_s - r.start_s) * 1000 <= sla.get(r.workload, math.inf)
            by_workload[r.workload][0] += 1
            by_workload[r.workload][1] += ok
        changed = {(rs.tenant, rs.workload, rs.fragment_key) for rs in set(before) ^ set(after)}
        return PeriodResult(
            index=k,
            start_s=k * self.config.period_s,
            requests=len(done),
            within_sla=sum(v[1] for v in by_workload.values()),
            failed_requests=sum(r.failed for r in done),
            llm_tokens=sum(r.llm_tokens for r in done),
            cost_usd=cost,
            placement_changed=bool(changed),
            fragments_changed=len(changed),
            shortfall=tuple(sorted(shortfall(self.fleet.desired, after).items())),
            workloads=tuple(WorkloadPeriod(w, n, ok) for w, (n, ok) in sorted(by_workload.items())),
            loads=loads,
        )
