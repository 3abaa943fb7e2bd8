"""Prometheus metrics of the simulated fleet, under the names real exporters use.

DCGM exporter names, one series per device (labels gpu, UUID, modelName,
Hostname, device_class):

    DCGM_FI_DEV_GPU_UTIL     busy %, 0-100
    DCGM_FI_DEV_FB_USED      MiB used (weights and KV cache of the replicas on it)
    DCGM_FI_DEV_FB_FREE      MiB free
    DCGM_FI_DEV_XID_ERRORS   last XID error code, 0 when healthy
    DCGM_FI_DEV_POWER_USAGE  watts

Simplification: Gaudi2 and CPU devices expose the same DCGM names (a real
fleet would run habanalabs' exporter and node_exporter), so one query covers
the whole sim fleet; `device_class` and `modelName` tell them apart, and for
a CPU "device" (one socket) FB_* is its share of host memory.

vLLM names, one series per LLM fragment and device class (labels model_name,
device_class, tenant, workload; a split fragment's prefill and decode pools on
one class report together, as one server's series would): gauges vllm:num_requests_running, vllm:num_requests_waiting,
vllm:kv_cache_usage_perc (0-1); histograms vllm:time_to_first_token_seconds,
vllm:inter_token_latency_seconds; counters vllm:prompt_tokens_total,
vllm:generation_tokens_total.

Gauges are computed at scrape time from the fleet's state; histograms and
counters are fed as the fleet serves visits. Everything lives on a private
CollectorRegistry, never the global one.
"""

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from threading import Lock, Thread
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

DCGM_LABELS = ("gpu", "UUID", "modelName", "Hostname", "device_class")
VLLM_LABELS = ("model_name", "device_class", "tenant", "workload")

# vLLM's own bucket edges.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)


@dataclass(frozen=True)
class DeviceStats:
    """One device as DCGM would report it."""

    hostname: str
    index: int
    uuid: str
    model_name: str
    device_class: str
    utilisation: float  # 0..1
    memory_used_mib: float
    memory_total_mib: float
    power_w: float
    xid: int = 0


@dataclass(frozen=True)
class LlmStats:
    """One LLM fragment on one device class as vLLM would report it (summed over its replicas, of both pools)."""

    tenant: str
    workload: str
    model_name: str
    device_class: str
    running: float
    waiting: float
    kv_cache_usage: float  # 0..1


class StatsSource(Protocol):
    """What the scrape-time gauges read: the fleet's current state."""

    def device_stats(self) -> tuple[DeviceStats, ...]: ...

    def llm_stats(self) -> tuple[LlmStats, ...]: ...


class _GaugeCollector(Collector):
    def __init__(self, source: StatsSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        devices = self._source.device_stats()
        families = {
            name: GaugeMetricFamily(name, doc, labels=DCGM_LABELS)
            for name, doc in (
                ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."),
                ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)."),
                ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)."),
                ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered."),
                ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)."),
            )
        }
        for d in devices:
            labels = (str(d.index), d.uuid, d.model_name, d.hostname, d.device_class)
            families["DCGM_FI_DEV_GPU_UTIL"].add_metric(labels, round(100 * d.utilisation, 2))
            families["DCGM_FI_DEV_FB_USED"].add_metric(labels, round(d.memory_used_mib))
            families["DCGM_FI_DEV_FB_FREE"].add_metric(labels, round(d.memory_total_mib - d.memory_used_mib))
            families["DCGM_FI_DEV_XID_ERRORS"].add_metric(labels, d.xid)
            families["DCGM_FI_DEV_POWER_USAGE"].add_metric(labels, round(d.power_w, 1))
        yield from families.values()

        running = GaugeMetricFamily("vllm:num_requests_running", "Number of requests in model execution batches.",
                                    labels=VLLM_LABELS)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                                    labels=VLLM_LABELS)
        kv = GaugeMetricFamily("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
                               labels=VLLM_LABELS)
        for s in self._source.llm_stats():
            labels = (s.model_name, s.device_class, s.tenant, s.workload)
            running.add_metric(labels, s.running)
            waiting.add_metric(labels, s.waiting)
            kv.add_metric(labels, s.kv_cache_usage)
        yield from (running, waiting, kv)


class _WeightedHistogram(Collector):
    """A labelled histogram that takes many equal observations in one call.

    The sim knows a request's inter-token gaps are all equal, so it adds them
    as one weighted observation instead of hundreds of `Histogram.observe` calls.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self._name, self._doc, self._buckets = name, documentation, buckets
        self._lock = Lock()
        self._series: dict[tuple[str, ...], tuple[list[float], list[float]]] = {}  # counts per bucket, [sum]

    def observe(self, labels: tuple[str, ...], value: float, count: int = 1) -> None:
        with self._lock:
            counts, total = self._series.setdefault(labels, ([0.0] * (len(self._buckets) + 1), [0.0]))
            counts[bisect.bisect_left(self._buckets, value)] += count
            total[0] += value * count

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._doc, labels=VLLM_LABELS)
        with self._lock:
            for labels, (counts, total) in self._series.items():
                cumulative, buckets = 0.0, []
                for edge, count in zip((*map(str, self._buckets), "+Inf"), counts, strict=True):
                    cumulative += count
                    buckets.append((edge, cumulative))
                family.add_metric(list(labels), buckets, total[0])
        yield family


class FleetMetrics:
    """The fleet's Prometheus registry, the per-visit vLLM instruments, and the /metrics server."""

    def __init__(self, source: StatsSource) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_GaugeCollector(source))
        self._ttft = _WeightedHistogram("vllm:time_to_first_token_seconds",
                                        "Histogram of time to first token in seconds.", TTFT_BUCKETS)
        self._itl = _WeightedHistogram("vllm:inter_token_latency_seconds",
                                       "Histogram of inter-token latency in seconds.", ITL_BUCKETS)
        self.registry.register(self._ttft)
        self.registry.register(self._itl)
        self._prompt = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", VLLM_LABELS,
                               registry=self.registry)
        self._generation = Counter("vllm:generation_tokens", "Number of generation tokens processed.", VLLM_LABELS,
                                   registry=self.registry)
        self._server: tuple[WSGIServer, Thread] | None = None

    def observe_llm(
        self,
        *,
        tenant: str,
        workload: str,
        model_name: str,
        device_class: str,
        ttft_s: float,
        itl_s: float,
        prompt_tokens: int,
        generation_tokens: int,
    ) -> None:
        """Record one served LLM request."""
        labels = (model_name, device_class, tenant, workload)
        self._ttft.observe(labels, ttft_s)
        if generation_tokens > 1:  # vLLM observes every gap between tokens
            self._itl.observe(labels, itl_s, generation_tokens - 1)
        self._prompt.labels(*labels).inc(prompt_tokens)
        self._generation.labels(*labels).inc(generation_tokens)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics on `port` (0 picks a free one); returns the bound port."""
        if self._server is None:
            self._server = start_http_server(port, addr=addr, registry=self.registry)
        return self._server[0].server_port

    def stop(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._server = None
