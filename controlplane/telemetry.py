"""heteroplane's own metrics, in the Prometheus format served at GET /metrics.

Three sources, each read where it is cheapest:

- the reconciler's cycles, counted as they end (`ReconcilerMetrics`, the reconciler's observer):
  durations, solve times, the last optimality gap, outcomes, infeasible cycles, unmet SLAs, and
  whether this process leads;
- the ingest pipeline, read from `Ingest.stats()` at scrape time (`IngestCollector`): nothing is
  added to the receiver's hot path;
- the database, queried at scrape time (`DatabaseCollector`): placements and migrations by state, and
  the replicas the latest applied placement wants per fragment and device class. That last metric is
  what a KEDA ScaledObject or an HPA on external metrics acts on, so its labels are the names an
  operator writes (tenant, workload, fragment key, device class), never internal ids.

Each process keeps its own registries, never prometheus_client's global one, so that tests can build
as many apps as they like. `Telemetry.registry` holds what the process's loops do (reconciler,
ingest, the process itself); `database_registry` what any process can read from the database. With
API worker processes (controlplane.workers) the loops run in the main process: it publishes its
registry's text beside the status file, and a worker's /metrics is that text followed by its own
database registry's, so each family appears once.
"""

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from collectors.pipeline import Ingest
from controlplane.models import (
    Migration,
    MigrationState,
    Placement,
    PlacementState,
)
from controlplane.policy import Action
from controlplane.queries import placement_in_force, priced_items

if TYPE_CHECKING:
    from controlplane.reconciler import CycleReport

log = logging.getLogger(__name__)

# A cycle is bounded by the solver's time limit (5 s by default) and at most two solves, plus its queries.
CYCLE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
SOLVE_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FAILED_ACTION = "none"  # the action label of a cycle that raised before deciding anything
WHOLE = "whole"  # the phase label of whole replicas (Phase.whole is "", which Prometheus reads as no label)


class ReconcilerMetrics:
    """The reconciler's cycles as metrics: a `controlplane.reconciler.CycleObserver`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.cycle_seconds = Histogram(
            "heteroplane_reconcile_cycle_seconds", "Wall time of one reconciler cycle, failed ones included.",
            buckets=CYCLE_BUCKETS_S, registry=registry)
        self.solve_seconds = Histogram(
            "heteroplane_solve_seconds", "Solve time of the plan a reconciler cycle decided on.",
            buckets=SOLVE_BUCKETS_S, registry=registry)
        self.gap = Gauge(
            "heteroplane_solve_gap_ratio",
            "Relative optimality gap of the latest feasible plan: ($/h - lower bound) / ($/h); 0 when proven optimal.",
            registry=registry)
        self.cycles = Counter(
            "heteroplane_reconcile_cycles", "Reconciler cycles by what they decided and whether they completed "
            f"(a failed cycle has action {FAILED_ACTION!r}).", ["action", "outcome"], registry=registry)
        self.infeasible = Counter(
            "heteroplane_infeasible_cycles", "Cycles that found no plan at all, not even a degraded one.",
            registry=registry)
        self.unmet = Gauge(
            "heteroplane_unmet_slas", "SLAs the latest cycle's plan does not meet (GET /api/v1/health names them).",
            registry=registry)
        self.last_success = Gauge(
            "heteroplane_reconcile_last_success_timestamp_seconds", "When the latest cycle that completed ended.",
            registry=registry)
        self.leader = Gauge(
            "heteroplane_leader",
            "1 while this process runs the reconciler. Until leader election arrives, the process that runs the "
            "loop is the leader; the election will set this gauge instead.", registry=registry)
        for action in Action:  # every series exists from the start, so rate() sees the first cycle
            self.cycles.labels(action.value, "ok")
        self.cycles.labels(FAILED_ACTION, "error")

    def leading(self, running: bool) -> None:
        self.leader.set(1 if running else 0)

    def cycle_finished(self, report: "CycleReport", seconds: float) -> None:
        self.cycle_seconds.observe(seconds)
        self.solve_seconds.observe(report.solve_time_s)
        self.cycles.labels(report.action.value, "ok").inc()
        if report.feasible:
            self.gap.set(report.gap)
        else:
            self.infeasible.inc()
        self.unmet.set(len(report.shortfalls))
        self.last_success.set(time.time())

    def cycle_failed(self, error: Exception, seconds: float) -> None:
        self.cycle_seconds.observe(seconds)
        self.cycles.labels(FAILED_ACTION, "error").inc()


class IngestCollector(Collector):
    """The OTLP ingest pipeline's statistics, read at scrape time."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def collect(self) -> Iterator[Metric]:
        stats = self.ingest.stats()
        yield GaugeMetricFamily("heteroplane_ingest_queue_batches", "Batches waiting in the ingest queue.",
                                value=stats.queued_batches)
        for name, what, accepted, refused in (
            ("heteroplane_ingest_batches_total", "OTLP batches", stats.accepted_batches, stats.refused_batches),
            ("heteroplane_ingest_spans_total", "Spans", stats.accepted_spans, stats.refused_spans),
        ):
            family = CounterMetricFamily(
                name, f"{what} queued for ingest (accepted) or refused whole with 503 (queue full).", labels=["outcome"])
            family.add_metric(["accepted"], accepted)
            family.add_metric(["refused"], refused)
            yield family
        yield GaugeMetricFamily("heteroplane_ingest_open_traces", "Traces held open waiting for more spans.",
                                value=stats.open_traces)
        yield CounterMetricFamily("heteroplane_ingest_evicted_traces_total",
                                  "Open traces closed early to keep the trace window bounded.",
                                  value=stats.evicted_traces)
        yield CounterMetricFamily("heteroplane_ingest_orphan_spans_total",
                                  "Spans whose parent never arrived before their trace closed.", value=stats.orphan_spans)
        yield GaugeMetricFamily("heteroplane_ingest_write_failing",
                                "1 while the latest write of aggregates to the database failed (retried each flush).",
                                value=1 if stats.last_error else 0)


class DatabaseCollector(Collector):
    """Placements, migrations and the desired replicas, from the database at scrape time: three short
    queries on one short session; a database that does not answer gives heteroplane_database_up 0."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("heteroplane_database_up", "1 when the database answered this scrape's queries.")
        try:
            families = list(self._read())
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> Iterable[Metric]:
        with Session(self.engine) as session:
            placements = _counts(session.exec(select(Placement.state, func.count()).group_by(Placement.state)).all())
            migrations = _counts(session.exec(select(Migration.state, func.count()).group_by(Migration.state)).all())
            applied = placement_in_force(session)
            replicas = [] if applied is None else priced_items(session, applied.id)
        yield _by_state("heteroplane_placements", "Placement versions by state.", PlacementState, placements)
        yield _by_state("heteroplane_migrations", "Migrations (one move each) by state.", MigrationState, migrations)
        version = GaugeMetricFamily("heteroplane_placement_applied_version",
                                    "Version of the placement in force (the latest applied); absent before the first.")
        if applied is not None:
            version.add_metric([], applied.version)
        yield version
        desired = GaugeMetricFamily(
            "heteroplane_desired_replicas",
            "Replicas the placement in force wants of each fragment on each device class (phase: whole, prefill "
            "or decode); what an autoscaler on external metrics acts on.",
            labels=["tenant", "workload", "fragment", "device_class", "phase"])
        for item in replicas:
            desired.add_metric([item.tenant, item.workload, item.fragment_key, item.device_class, item.phase or WHOLE],
                               item.replicas)
        yield desired


def _counts(rows: Iterable[tuple[object, int]]) -> dict[str, int]:
    return {str(state): count for state, count in rows}


def _by_state(name: str, documentation: str, states: Iterable[object], counts: dict[str, int]) -> GaugeMetricFamily:
    """One series per state, zeros included, so a state that empties reads 0 rather than vanishing."""
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    for state in states:
        family.add_metric([str(state)], counts.get(str(state), 0))
    return family


class Telemetry:
    """What this process's loops do, in one registry: the reconciler's cycles (`reconciler` is the
    observer to give a Reconciler), the ingest pipeline when `ingest` is given, and the process's own
    CPU and memory."""

    def __init__(self, ingest: Ingest | None = None) -> None:
        self.registry = CollectorRegistry()
        self.reconciler = ReconcilerMetrics(self.registry)
        ProcessCollector(registry=self.registry)
        if ingest is not None:
            self.registry.register(IngestCollector(ingest))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def database_registry(engine: Engine) -> CollectorRegistry:
    """A registry of what any process reads from the database (`DatabaseCollector`)."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(engine))
    return registry


def main_status(stale: bool) -> bytes:
    """An API worker's line on the main process's metrics: 1 when they are missing or older than
    controlplane.workers.STALE_AFTER_S, and so left out of this scrape."""
    registry = CollectorRegistry()
    Gauge("heteroplane_main_status_stale",
          "1 when the main process's metrics (reconciler, ingest) are stale and left out of this scrape.",
          registry=registry).set(1 if stale else 0)
    return generate_latest(registry)
