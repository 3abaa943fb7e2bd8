"""The Prometheus puller: device and model telemetry from DCGM exporter and vLLM metrics.

Three layers, in the order a pull runs them:

1. Queries (PromQL, instant, evaluated at the pull's `now`):
   - devices: the DCGM gauges DCGM_FI_DEV_GPU_UTIL (%), DCGM_FI_DEV_FB_USED
     (MiB), DCGM_FI_DEV_XID_ERRORS (last XID code, 0 when healthy) and
     DCGM_FI_DEV_POWER_USAGE (W), one
     series per device, identified by the labels `gpu` (index) and `Hostname`
     (dcgm-exporter's spelling) or `hostname` (a common relabelling);
   - models: vLLM's queue depth and running requests summed, and KV-cache use
     averaged, `by (model_name, device_class)`; TTFT and inter-token latency
     quantiles q ∈ {0.5, 0.95, 0.99} from the histograms,
     ``histogram_quantile(q, sum by (le, model_name, device_class) (rate(<name>_bucket[window])))``.
     Inter-token latency is `vllm:inter_token_latency_seconds`, or on older
     vLLM `vllm:time_per_output_token_seconds` (PromQL `or` prefers the former);
     every vLLM name is also tried as `vllm_…` (see `_vllm`).
2. Parsing: pure functions from the result lists Prometheus answers to frozen
   `DeviceSample` / `ModelSample` values. A series missing its identifying
   labels or holding a non-number is skipped, never raised.
3. Storing: one transaction upserts the minute's `DeviceTelemetry` and
   `ModelTelemetry` rows (latest reading wins) and sets telemetry's word on each
   known `Device`, its XID and when it was read (the device is unhealthy while
   its XID is not 0; the actuator's readiness and the operator's cordon are
   theirs to set). Hosts with no `Node` of that name are counted and ignored,
   never created.

`PrometheusPuller.run_forever` repeats this every `interval_s`. No failure
stops it: Prometheus unreachable makes the status "down", a query Prometheus
rejects (HTTP 4xx/5xx) or answers with something that is not its API makes it
"degraded" while the other queries still count, and anything else a pull
raises is logged and makes it "degraded". Each change of status is logged once.
"""

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from optimizer.vocabulary import to_utc

logger = logging.getLogger(__name__)

# What Prometheus answers for an instant query: [{"metric": {label: value}, "value": [ts, "1.5"]}, ...]
PromResult = Sequence[Mapping[str, Any]]

QUANTILES = (0.5, 0.95, 0.99)
_MODEL_LABELS = "model_name, device_class"


# ---------------------------------------------------------------------------- values


@dataclass(frozen=True)
class DeviceSample:
    """One device's reading; a field is None when its metric was not reported."""

    hostname: str
    index: int
    uuid: str = ""
    utilisation: float | None = None  # fraction busy, 0..1
    memory_used_mib: float | None = None
    xid: int | None = None  # last XID error code, 0 when healthy
    power_w: float | None = None  # power draw, watts


@dataclass(frozen=True)
class ModelSample:
    """One model on one device class ('' when unlabelled); latencies in seconds, None without traffic."""

    model: str
    device_class: str = ""
    queue_depth: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None  # 0..1
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    ttft_p99: float | None = None
    itl_p50: float | None = None
    itl_p95: float | None = None
    itl_p99: float | None = None


@dataclass(frozen=True)
class PullReport:
    """What one pull found and changed."""

    devices: int = 0
    models: int = 0
    unknown_hosts: tuple[str, ...] = ()  # reported hosts with no Node of that name
    unknown_devices: int = 0  # devices of a known Node with no Device of that index
    unhealthy_devices: int = 0  # known devices whose XID is non-zero
    failed_queries: tuple[str, ...] = ()


State = Literal["ok", "degraded", "down"]


@dataclass(frozen=True)
class PullerStatus:
    """The puller's health as `/api/v1/health` reports it."""

    state: State
    message: str = ""
    last_success_at: datetime | None = None
    last_error_at: datetime | None = None

    def component(self) -> str:
        """'ok', or '<state>: <message>' — the value of the health endpoint's `components["prometheus"]`."""
        return "ok" if self.state == "ok" else f"{self.state}: {self.message}"


# ---------------------------------------------------------------------------- queries


def device_queries() -> dict[str, str]:
    """The DCGM gauges, by the DeviceSample field each fills."""
    return {
        "utilisation": "DCGM_FI_DEV_GPU_UTIL",
        "memory_used_mib": "DCGM_FI_DEV_FB_USED",
        "xid": "DCGM_FI_DEV_XID_ERRORS",
        "power_w": "DCGM_FI_DEV_POWER_USAGE",
    }


def _vllm(*names: str, template: str = "{}") -> str:
    """`template` over each vLLM metric name in both spellings, joined with `or` (the first found wins).

    prometheus_client (vLLM's exporter library) writes `vllm:x` as `vllm_x` when
    Prometheus negotiates OpenMetrics 1.0 with underscore escaping, as 2.x does
    (prometheus/client_python#1177), so a fleet may store either name. `or`
    matches on labels without the metric name, so a series found under both
    spellings counts once.
    """
    return " or ".join(template.format(spelling) for name in names for spelling in (name, name.replace(":", "_")))


def model_queries(window: str) -> dict[str, str]:
    """The vLLM queries, by the ModelSample field each fills; `window` is the PromQL range of rate()."""
    rate = f"rate({{}}[{window}])"
    ttft = _vllm("vllm:time_to_first_token_seconds_bucket", template=rate)
    itl = _vllm("vllm:inter_token_latency_seconds_bucket", "vllm:time_per_output_token_seconds_bucket", template=rate)
    queries = {
        "queue_depth": f"sum by ({_MODEL_LABELS}) ({_vllm('vllm:num_requests_waiting')})",
        "running": f"sum by ({_MODEL_LABELS}) ({_vllm('vllm:num_requests_running')})",
        "kv_cache_usage": f"avg by ({_MODEL_LABELS}) ({_vllm('vllm:kv_cache_usage_perc')})",
    }
    for q in QUANTILES:
        suffix = f"p{round(q * 100)}"
        queries[f"ttft_{suffix}"] = f"histogram_quantile({q}, sum by (le, {_MODEL_LABELS}) ({ttft}))"
        queries[f"itl_{suffix}"] = f"histogram_quantile({q}, sum by (le, {_MODEL_LABELS}) ({itl}))"
    return queries


# ---------------------------------------------------------------------------- parsing (pure)


def _number(series: Mapping[str, Any]) -> float | None:
    """The series' value, or None for a missing, non-numeric, NaN or infinite one."""
    try:
        value = float(series["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _device_key(labels: Mapping[str, str]) -> tuple[str, int] | None:
    hostname = labels.get("Hostname") or labels.get("hostname")
    try:
        index = int(labels["gpu"])
    except (KeyError, ValueError):
        return None
    return (hostname, index) if hostname and index >= 0 else None


def parse_device_samples(
    utilisation: PromResult, memory_used_mib: PromResult, xid: PromResult, power_w: PromResult = ()
) -> tuple[DeviceSample, ...]:
    """Devices from the DCGM results, joined on (host, gpu index), sorted by that key."""
    fields: dict[tuple[str, int], dict[str, Any]] = {}
    for name, result in (("utilisation", utilisation), ("memory_used_mib", memory_used_mib), ("xid", xid),
                         ("power_w", power_w)):
        for series in result:
            labels = series.get("metric", {})
            key = _device_key(labels)
            value = _number(series)
            if key is None or value is None:
                continue
            device = fields.setdefault(key, {})
            device.setdefault("uuid", labels.get("UUID", ""))
            device[name] = value
    samples = []
    for (hostname, index), f in sorted(fields.items()):
        util = f.get("utilisation")
        xid_value = f.get("xid")
        samples.append(
            DeviceSample(
                hostname=hostname,
                index=index,
                uuid=f["uuid"],
                utilisation=None if util is None else min(max(util / 100.0, 0.0), 1.0),
                memory_used_mib=f.get("memory_used_mib"),
                xid=None if xid_value is None else int(xid_value),
                power_w=f.get("power_w"),
            )
        )
    return tuple(samples)


def parse_model_samples(results: Mapping[str, PromResult]) -> tuple[ModelSample, ...]:
    """Models from the vLLM results keyed as `model_queries` keys them, joined on (model, device class)."""
    fields: dict[tuple[str, str], dict[str, float]] = {}
    for name, result in results.items():
        for series in result:
            labels = series.get("metric", {})
            model = labels.get("model_name")
            value = _number(series)
            if not model or value is None:
                continue
            fields.setdefault((model, labels.get("device_class", "")), {})[name] = value
    return tuple(ModelSample(model=m, device_class=dc, **f) for (m, dc), f in sorted(fields.items()))


def redacted(url: str) -> str:
    """`url` without credentials (``http://user:secret@host`` -> ``http://***@host``), for logs and health."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------------------- the puller (I/O)


Store = Callable[[datetime, Sequence[DeviceSample], Sequence[ModelSample]], PullReport]
"""Writes one reading (at, device samples, model samples) and says what it found: the control
plane's `controlplane.collected.readings_store`."""


class PrometheusPuller:
    """Pulls device and model telemetry from Prometheus every `interval_s` and hands each reading to
    `store` (None: parse only, as in tests of the pulling itself)."""

    def __init__(
        self,
        store: Store | None,
        url: str,
        interval_s: float = 15.0,
        window: str = "1m",
        *,
        timeout_s: float = 5.0,
        on_status: Callable[[PullerStatus], None] | None = None,
    ) -> None:
        self.store = store
        self.url = url.rstrip("/")
        self.display_url = redacted(self.url)  # what logs and /api/v1/health may show
        self.interval_s = interval_s
        self.window = window
        self._queries = device_queries() | model_queries(window)
        self._on_status = on_status
        self._unknown_hosts: tuple[str, ...] = ()
        # No retries inside a pull: the loop is the retry, and a dead server must not stall it.
        self._prom = PrometheusConnect(url=self.url, retry=Retry(total=0, raise_on_status=False), timeout=timeout_s)
        self._status = PullerStatus(state="degraded", message="no pull yet")

    @property
    def status(self) -> PullerStatus:
        return self._status

    def health_component(self) -> str:
        """'ok', 'degraded: <why>' or 'down: <why>', for `app.state.components["prometheus"]`."""
        return self._status.component()

    def pull_once(self, now: datetime) -> PullReport:
        """Query, parse and store one reading at `now`; Prometheus failures set the status, never raise."""
        at = to_utc(now)
        results: dict[str, PromResult] = {}
        failures: dict[str, str] = {}
        for name, query in self._queries.items():
            try:
                results[name] = self._prom.custom_query(query, params={"time": at.timestamp()})
            except requests.RequestException as exc:  # unreachable: every other query would fail the same way
                self._set_status("down", f"{self.display_url} unreachable ({type(exc).__name__})", at)
                return PullReport(failed_queries=tuple(self._queries))
            except PrometheusApiClientException as exc:
                failures[name] = _short(str(exc))
            except (ValueError, KeyError, TypeError) as exc:  # a 200 whose body is not Prometheus' API
                failures[name] = f"not a Prometheus API answer ({type(exc).__name__})"

        devices = parse_device_samples(*(results.get(name, ()) for name in device_queries()))
        models = parse_model_samples({k: v for k, v in results.items() if k not in device_queries()})
        stored = self.store(at, devices, models) if self.store is not None else PullReport(len(devices), len(models))
        report = replace(stored, failed_queries=tuple(failures))
        self._note_unknown_hosts(report.unknown_hosts)

        if failures:
            first = next(iter(failures))
            self._set_status(
                "degraded",
                f"{len(failures)} of {len(results) + len(failures)} queries failed; {first}: {failures[first]}",
                at,
            )
        elif not devices and not models:
            self._set_status("ok", "no DCGM or vLLM series", at)
        else:
            self._set_status("ok", "", at)
        return report

    def run_forever(self, stop_event: threading.Event) -> None:
        """Pull every `interval_s` until `stop_event` is set; nothing a pull raises ends the loop."""
        while not stop_event.is_set():
            try:
                self.pull_once(datetime.now(UTC))
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one bad pull
                self._set_status("degraded", f"pull failed: {type(exc).__name__}: {_short(str(exc))}", datetime.now(UTC), exc)
            stop_event.wait(self.interval_s)

    def close(self) -> None:
        self._prom.close()

    def _set_status(self, state: State, message: str, at: datetime, exc: BaseException | None = None) -> None:
        previous = self._status
        ok = state == "ok"
        self._status = PullerStatus(
            state=state,
            message=message,
            last_success_at=at if ok else previous.last_success_at,
            last_error_at=previous.last_error_at if ok else at,
        )
        if (state, message) == (previous.state, previous.message):
            return
        if ok:
            logger.info("Prometheus puller ok%s", f": {message}" if message else "")
        else:
            logger.warning("Prometheus puller %s: %s", state, message, exc_info=exc)
        if self._on_status is not None:
            try:
                self._on_status(self._status)
            except Exception:  # a broken listener must not break the loop that reports to it
                logger.exception("Prometheus puller status listener failed")

    def _note_unknown_hosts(self, hosts: tuple[str, ...]) -> None:
        if hosts and hosts != self._unknown_hosts:
            logger.warning("Prometheus reports hosts with no node of that name (ignored): %s", ", ".join(hosts))
        self._unknown_hosts = hosts


def _short(message: str, limit: int = 200) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"
