"""The ingest pipeline: a bounded queue between the receiver and the profile store.

The receiver decodes and normalises on its request thread, then `submit`s records here;
a full queue answers False, which the receiver turns into 503 + Retry-After. One worker
links spans across batches (`TraceWindow`), aggregates what arrived since the last flush
(`assemble`) and adds it to the database every `flush_interval_s`, in one transaction. A
failed write keeps its aggregates and is retried next period; meanwhile the queue fills
and exporters are asked to back off, so nothing accepted is lost. `flush()` drains
everything now (tests, shutdown).

Admission: the receiver reads `depth` and `capacity` before it reads a body, and asks exporters
to come back after `depth / drain_rate_per_s` seconds. The drain rate is the worker's measured
throughput while busy: each drain that finds the queue at least half full takes a sample

    r = batches drained / seconds since the previous drain ended

(one cycle: the wait plus the previous write), smoothed as r̄ ← α·r + (1 − α)·r̄ with
α = `DRAIN_RATE_ALPHA`. A drain that finds the queue mostly empty measures how fast batches
arrive, not how fast they can be written, so it leaves r̄ alone. Until a busy drain was seen,
r̄ = capacity / flush_interval_s: a full queue drains within one interval.
"""

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from collectors.assembly import AssembledBatch, assemble
from collectors.normalise import SpanRecord
from collectors.records import MetricSample
from collectors.window import Links, TraceWindow

log = logging.getLogger(__name__)

DRAIN_RATE_ALPHA = 0.3
"""Weight of the newest busy drain in the drain-rate EWMA."""


@dataclass(frozen=True)
class IngestStats:
    """What the pipeline has done, for /api/v1/health and the benchmarks."""

    queued_batches: int
    accepted_batches: int
    refused_batches: int
    open_traces: int
    evicted_traces: int
    orphan_spans: int
    cross_workload_calls: int
    last_error: str
    accepted_spans: int = 0
    refused_spans: int = 0  # in batches refused whole because the queue was full


class Ingest:
    """Accepts normalised batches; `start()` runs the worker, or call `flush()` yourself (tests)."""

    def __init__(
        self,
        sink: Callable[[AssembledBatch], None] | None,
        max_queued_batches: int = 256,
        flush_interval_s: float = 1.0,
        window: TraceWindow | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink  # writes a batch, all or nothing (controlplane.collected); None: aggregate only
        self.flush_interval_s = flush_interval_s
        self.capacity = max_queued_batches
        self.clock = clock  # monotonic seconds: trace-window ages and the drain rate
        self.window = window or TraceWindow()
        self._queue: queue.Queue[tuple[Sequence[SpanRecord], Sequence[MetricSample]]] = queue.Queue(
            maxsize=max_queued_batches
        )
        self._lock = threading.Lock()  # one drain at a time: the worker's or a caller's flush()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unstored: AssembledBatch | None = None
        self._accepted = self._refused = self._cross = 0
        self._accepted_spans = self._refused_spans = 0
        self._last_error = ""
        self._drain_rate: float | None = None  # batches/s, EWMA over busy drains
        self._last_drain_end = clock()

    @property
    def depth(self) -> int:
        """Batches queued now (approximate under concurrency, as `queue.Queue.qsize` is)."""
        return self._queue.qsize()

    @property
    def full(self) -> bool:
        """Whether a batch submitted now would be refused."""
        return self.depth >= self.capacity

    @property
    def drain_rate_per_s(self) -> float:
        """Batches drained per second while busy (the module docstring's r̄), > 0."""
        if self._drain_rate is None:
            return self.capacity / max(self.flush_interval_s, 1e-3)
        return self._drain_rate

    def submit(self, records: Sequence[SpanRecord]) -> bool:
        """Queue a batch of spans; False when the queue is full (the caller should answer 503)."""
        return self._put((records, ()))

    def submit_metrics(self, samples: Sequence[MetricSample]) -> bool:
        """Queue metric samples; False when the queue is full."""
        return self._put(((), samples))

    def flush(self) -> AssembledBatch | None:
        """Process everything queued so far and write it before returning; returns what was aggregated."""
        with self._lock:
            return self._drain()

    def stats(self) -> IngestStats:
        return IngestStats(
            queued_batches=self._queue.qsize(),
            accepted_batches=self._accepted,
            refused_batches=self._refused,
            accepted_spans=self._accepted_spans,
            refused_spans=self._refused_spans,
            open_traces=self.window.open_traces,
            evicted_traces=self.window.evicted_traces,
            orphan_spans=self.window.orphan_spans,
            cross_workload_calls=self._cross,
            last_error=self._last_error,
        )

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker after writing what is queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()

    def _put(self, item: tuple[Sequence[SpanRecord], Sequence[MetricSample]]) -> bool:
        if not item[0] and not item[1]:
            return True
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._refused += 1
            self._refused_spans += len(item[0])
            return False
        self._accepted += 1
        self._accepted_spans += len(item[0])
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.flush()
            except Exception as exc:  # retried next period; telemetry never crashes the host
                self._last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("ingest flush failed, will retry: %s", self._last_error)

    def _drain(self) -> AssembledBatch | None:
        if self._unstored is not None:
            self._store(self._unstored)  # an earlier failed write goes first, in order
        spans: list[SpanRecord] = []
        samples: list[MetricSample] = []
        links = Links()
        now = self.clock()
        drained = 0
        while True:
            try:
                records, metric_samples = self._queue.get_nowait()
            except queue.Empty:
                break
            drained += 1
            if records:
                self.window.link(records, now, into=links)
                spans.extend(records)
            samples.extend(metric_samples)
        self.window.evict(now, links)
        if not spans and not samples and links.empty:  # an idle flush may still close stale traces
            self._last_drain_end = self.clock()
            return None
        batch = assemble(spans, links, samples)
        self._cross += batch.cross_workload_calls
        self._store(batch)
        self._measure_drain(drained)
        return batch

    def _measure_drain(self, drained: int) -> None:
        end = self.clock()
        cycle_s, self._last_drain_end = end - self._last_drain_end, end
        if 2 * drained < self.capacity or cycle_s <= 0:
            return  # not busy: this drain measured arrivals, not throughput
        sample = drained / cycle_s
        previous = self._drain_rate
        self._drain_rate = sample if previous is None else DRAIN_RATE_ALPHA * sample + (1 - DRAIN_RATE_ALPHA) * previous

    def _store(self, batch: AssembledBatch) -> None:
        if self.sink is None:
            return
        self._unstored = batch
        self.sink(batch)
        self._unstored = None
        self._last_error = ""
