"""A test exporter: DCGM and vLLM metrics under their real names, served on loopback for a real Prometheus.

Each `NodeExporter` plays one GPU host: its dcgm-exporter gauges (host label
spelled `Hostname` as dcgm-exporter does, or `hostname` as some relabellings
do) and one vLLM server whose latency histograms a background thread keeps
feeding, so `rate()` over them is never zero.

By default the exporter is prometheus_client's own `start_http_server`, which
answers Prometheus 2.x's OpenMetrics request with the vLLM names' colons
escaped to underscores (`vllm_num_requests_waiting`, prometheus/client_python#1177),
just as a real vLLM scraped by that Prometheus does; `classic_text=True` serves
the classic text format instead, which keeps `vllm:num_requests_waiting`.

Every request observes the same
mix: 90% at the `fast` value and 10% at the `slow` one, which puts p50 in the
bucket holding `fast` and p95/p99 in the bucket holding `slow`.
"""

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Gauge, Histogram, make_wsgi_app, start_http_server
from prometheus_client.exposition import ThreadingWSGIServer

# vLLM's own bucket edges.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)

TTFT_FAST, TTFT_SLOW = 0.15, 0.6  # buckets (0.1, 0.25] and (0.5, 0.75]
ITL_FAST, ITL_SLOW = 0.03, 0.12  # buckets (0.025, 0.05] and (0.1, 0.15]


@dataclass(frozen=True)
class Gpu:
    hostname: str
    index: int
    util_pct: float
    fb_used_mib: float
    xid: int = 0
    power_w: float = 0.0

    @property
    def uuid(self) -> str:
        return f"GPU-{self.hostname}-{self.index:04d}"


@dataclass(frozen=True)
class VllmServer:
    model: str
    device_class: str | None  # None: the series carry no device_class label
    waiting: float
    running: float
    kv_cache_usage: float
    legacy_itl_name: bool = False  # vllm:time_per_output_token_seconds instead of vllm:inter_token_latency_seconds


class NodeExporter:
    """One host's /metrics on 127.0.0.1, on a private registry."""

    def __init__(self, host_label: str, gpus: list[Gpu], vllm: VllmServer, *, classic_text: bool = False) -> None:
        self.registry = CollectorRegistry()
        dcgm_labels = ("gpu", "UUID", "modelName", host_label)
        for name, field in (
            ("DCGM_FI_DEV_GPU_UTIL", "util_pct"),
            ("DCGM_FI_DEV_FB_USED", "fb_used_mib"),
            ("DCGM_FI_DEV_XID_ERRORS", "xid"),
            ("DCGM_FI_DEV_POWER_USAGE", "power_w"),
        ):
            gauge = Gauge(name, name, dcgm_labels, registry=self.registry)
            for gpu in gpus:
                gauge.labels(str(gpu.index), gpu.uuid, "NVIDIA H100 80GB HBM3", gpu.hostname).set(getattr(gpu, field))

        labels = {"model_name": vllm.model}
        if vllm.device_class is not None:
            labels["device_class"] = vllm.device_class
        for name, value in (
            ("vllm:num_requests_waiting", vllm.waiting),
            ("vllm:num_requests_running", vllm.running),
            ("vllm:kv_cache_usage_perc", vllm.kv_cache_usage),
        ):
            Gauge(name, name, list(labels), registry=self.registry).labels(**labels).set(value)
        itl_name = "vllm:time_per_output_token_seconds" if vllm.legacy_itl_name else "vllm:inter_token_latency_seconds"
        self._ttft = Histogram(
            "vllm:time_to_first_token_seconds", "TTFT", list(labels), buckets=TTFT_BUCKETS, registry=self.registry
        ).labels(**labels)
        self._itl = Histogram(itl_name, "ITL", list(labels), buckets=ITL_BUCKETS, registry=self.registry).labels(
            **labels
        )

        if classic_text:
            self._server = make_server("127.0.0.1", 0, self._text_app(), ThreadingWSGIServer, _QuietHandler)
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
        else:
            self._server, _ = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port: int = self._server.server_port
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, name=f"exporter-{self.port}", daemon=True)
        self._feeder.start()

    def _text_app(self):
        app = make_wsgi_app(self.registry)

        def text_only(environ, start_response):
            environ.pop("HTTP_ACCEPT", None)  # no negotiation: the classic text format, names as registered
            return app(environ, start_response)

        return text_only

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _feed(self) -> None:
        while not self._stop.wait(0.05):
            for i in range(10):
                self._ttft.observe(TTFT_SLOW if i == 0 else TTFT_FAST)
                self._itl.observe(ITL_SLOW if i == 0 else ITL_FAST)

    def stop(self) -> None:
        self._stop.set()
        self._feeder.join()
        self._server.shutdown()
        self._server.server_close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's signature
        pass
