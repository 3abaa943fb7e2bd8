"""The Prometheus puller: parsing without a server, then against a real Prometheus scraping a test exporter."""

import bisect
import logging
import math
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient
from sqlmodel import select

from collectors.prometheus import (
    DeviceSample,
    ModelSample,
    PrometheusPuller,
    PullerStatus,
    model_queries,
    parse_device_samples,
    parse_model_samples,
)
from controlplane.app import create_app
from controlplane.collected import readings_store, store_samples
from controlplane.composition import build
from controlplane.db import session_scope
from controlplane.models import Device, DeviceClass, DeviceTelemetry, ModelTelemetry, Node
from controlplane.models._common import utcnow
from controlplane.settings import Settings
from tests.collectors.prom_exporter import (
    ITL_BUCKETS,
    ITL_FAST,
    ITL_SLOW,
    TTFT_BUCKETS,
    TTFT_FAST,
    TTFT_SLOW,
    Gpu,
    NodeExporter,
    VllmServer,
)
from tests.support import free_port, missing_component, wait_until

PROMETHEUS = "/usr/bin/prometheus"
T0 = datetime(2026, 3, 1, 12, 30, 10, tzinfo=UTC)


def series(value: str, **labels: str) -> dict:
    return {"metric": labels, "value": [1772368210.0, value]}


# ---------------------------------------------------------------------------- parsing, no server


def test_devices_join_the_dcgm_gauges_under_either_host_label():
    samples = parse_device_samples(
        utilisation=[
            series("75", gpu="0", UUID="GPU-a0", Hostname="node-a"),
            series("20", gpu="1", UUID="GPU-a1", Hostname="node-a"),
            series("50", gpu="0", UUID="GPU-b0", hostname="node-b"),
            series("99", gpu="0", UUID="GPU-x"),  # no host label: skipped
            series("99", Hostname="node-a"),  # no gpu label: skipped
        ],
        memory_used_mib=[series("40000", gpu="0", Hostname="node-a"), series("NaN", gpu="1", Hostname="node-a")],
        xid=[series("0", gpu="0", Hostname="node-a"), series("79", gpu="1", Hostname="node-a")],
        power_w=[series("412.5", gpu="0", Hostname="node-a")],
    )
    assert samples == (
        DeviceSample("node-a", 0, "GPU-a0", utilisation=0.75, memory_used_mib=40000.0, xid=0, power_w=412.5),
        DeviceSample("node-a", 1, "GPU-a1", utilisation=0.20, memory_used_mib=None, xid=79),
        DeviceSample("node-b", 0, "GPU-b0", utilisation=0.50, memory_used_mib=None, xid=None),
    )


def test_models_join_gauges_and_quantiles_and_drop_quantiles_without_traffic():
    samples = parse_model_samples(
        {
            "queue_depth": [series("3", model_name="llama", device_class="h100"), series("1", model_name="qwen")],
            "kv_cache_usage": [series("0.42", model_name="llama", device_class="h100")],
            "ttft_p95": [series("0.6", model_name="llama", device_class="h100"), series("NaN", model_name="qwen")],
            "itl_p50": [series("+Inf", model_name="llama", device_class="h100"), series("0.03", device_class="l4")],
        }
    )
    assert samples == (
        ModelSample("llama", "h100", queue_depth=3.0, kv_cache_usage=0.42, ttft_p95=0.6),
        ModelSample("qwen", "", queue_depth=1.0),
    )


def test_status_component_is_what_the_health_endpoint_shows():
    assert PullerStatus("ok", "no DCGM or vLLM series").component() == "ok"
    assert PullerStatus("down", "http://x unreachable").component() == "down: http://x unreachable"


def test_the_composition_root_runs_a_puller_only_with_a_url(tmp_path):
    off = build(Settings(data_dir=tmp_path, api_workers=1))
    assert off.puller is None
    off.stop()
    on = build(Settings(data_dir=tmp_path, api_workers=1, prometheus_url="http://127.0.0.1:9090/",
                        prometheus_interval_s=5))
    assert (on.puller.url, on.puller.interval_s, on.puller.window) == ("http://127.0.0.1:9090", 5, "1m")
    on.stop()


def test_vllm_queries_try_both_itl_names_in_both_spellings():
    query = model_queries("30s")["itl_p99"]
    inner = (
        "rate(vllm:inter_token_latency_seconds_bucket[30s]) or rate(vllm_inter_token_latency_seconds_bucket[30s])"
        " or rate(vllm:time_per_output_token_seconds_bucket[30s]) or rate(vllm_time_per_output_token_seconds_bucket[30s])"
    )
    assert query == f"histogram_quantile(0.99, sum by (le, model_name, device_class) ({inner}))"


# ---------------------------------------------------------------------------- storing, no server


def seed_fleet(engine) -> None:
    """node-a with devices 0 (stale XID 48) and 1, node-b with device 0 only; no stray-host."""
    with session_scope(engine) as session:
        h100 = DeviceClass(
            name="h100",
            vendor="nvidia",
            bf16_tflops=989,
            memory_gib=80,
            memory_gbps=3350,
            fabric="nvlink",
            usd_per_hour=2.5,
        )
        session.add(h100)
        session.flush()
        a = Node(name="node-a", device_class_id=h100.id, device_count=2)
        b = Node(name="node-b", device_class_id=h100.id, device_count=2)
        session.add_all([a, b])
        session.flush()
        session.add_all(
            [
                Device(node_id=a.id, index=0, healthy=False, xid_errors=48),
                Device(node_id=a.id, index=1),
                Device(node_id=b.id, index=0),
            ]
        )


def device_health(engine) -> dict[tuple[str, int], tuple[bool, int]]:
    with session_scope(engine) as session:
        rows = session.exec(select(Node.name, Device).join(Device, Device.node_id == Node.id)).all()
        return {(name, d.index): (d.healthy, d.xid_errors) for name, d in rows}


def test_store_keeps_the_latest_reading_of_each_minute(engine):
    seed_fleet(engine)
    with session_scope(engine) as session:
        store_samples(session, T0, [DeviceSample("node-a", 1, "u", 0.1, 10.0, 79)], [ModelSample("m", ttft_p50=0.2)])
    with session_scope(engine) as session:
        report = store_samples(
            session,
            T0 + timedelta(seconds=30),
            [DeviceSample("node-a", 1, "u", 0.9, 20.0, 0), DeviceSample("stray-host", 0), DeviceSample("node-b", 5)],
            [ModelSample("m", ttft_p50=0.3)],
        )
    assert (report.devices, report.models, report.unknown_hosts, report.unknown_devices) == (3, 1, ("stray-host",), 1)
    assert report.unhealthy_devices == 0  # node-a/1 now reads XID 0; node-a/0 was not reported
    with session_scope(engine) as session:
        devices = session.exec(select(DeviceTelemetry).order_by(DeviceTelemetry.hostname)).all()
        models = session.exec(select(ModelTelemetry)).all()
    assert [(d.hostname, d.index, d.utilisation, d.memory_used_mib, d.xid) for d in devices] == [
        ("node-a", 1, 0.9, 20.0, 0),
        ("node-b", 5, None, None, None),
        ("stray-host", 0, None, None, None),
    ]
    assert devices[0].minute == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    assert [(m.model, m.device_class, m.ttft_p50) for m in models] == [("m", "", 0.3)]
    assert device_health(engine) == {("node-a", 0): (False, 48), ("node-a", 1): (True, 0), ("node-b", 0): (True, 0)}


# ---------------------------------------------------------------------------- a real Prometheus


def prometheus_query(url: str, query: str) -> list[dict]:
    answer = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=2).json()
    return answer["data"]["result"] if answer.get("status") == "success" else []


@contextmanager
def prometheus_server(directory: Path, targets: list[str]) -> Iterator[str]:
    """A real Prometheus on a free loopback port scraping `targets` every second; yields its URL."""
    if shutil.which(PROMETHEUS) is None:
        missing_component("Prometheus", f"{PROMETHEUS} is missing: apt-get install prometheus")
    directory.mkdir(parents=True)
    config = directory / "prometheus.yml"
    lines = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s"]
    if targets:
        lines += ["scrape_configs:", "  - job_name: gpu-nodes", "    static_configs:", f"      - targets: {targets}"]
    config.write_text("\n".join(lines) + "\n")
    url = f"http://127.0.0.1:{free_port()}"
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{(directory / 'prometheus.log').read_text()}")
        try:
            return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(ready, "prometheus answering /-/ready", polls=150, interval=0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def fleet_prometheus(tmp_path_factory) -> Iterator[str]:
    """Prometheus scraping two GPU hosts, each with its dcgm-exporter and a vLLM server; ready to answer rates."""
    if shutil.which(PROMETHEUS) is None:
        missing_component("Prometheus", f"{PROMETHEUS} is missing: apt-get install prometheus")
    exporters = [
        # dcgm-exporter's own spelling; this exporter also reports a host heteroplane does not know.
        NodeExporter(
            "Hostname",
            [Gpu("node-a", 0, 75, 40000, power_w=412.5), Gpu("node-a", 1, 20, 1000, xid=79), Gpu("stray-host", 0, 10, 10)],
            VllmServer("llama-8b", "h100", waiting=3, running=8, kv_cache_usage=0.42),
        ),
        # A relabelled host; an older vLLM without device_class, naming ITL time_per_output_token, whose
        # exporter keeps the colons of its names (the other's reach Prometheus as vllm_…).
        NodeExporter(
            "hostname",
            [Gpu("node-b", 0, 50, 2048), Gpu("node-b", 1, 0, 0)],
            VllmServer("qwen-7b", None, waiting=0, running=2, kv_cache_usage=0.1, legacy_itl_name=True),
            classic_text=True,
        ),
    ]
    try:
        with prometheus_server(tmp_path_factory.mktemp("prom") / "fleet", [e.target for e in exporters]) as url:
            # Ready when both targets are up and every latency quantile has two rate() points behind it.
            queries = model_queries("1m")
            wait_until(
                lambda: len(prometheus_query(url, "up == 1")) == 2
                and all(
                    sum(_finite(s) for s in prometheus_query(url, queries[name])) == 2
                    for name in ("ttft_p50", "itl_p50")
                ),
                "Prometheus scraping both test exporters, two rate() points behind every latency quantile",
                polls=100,
                interval=0.25,
            )
            yield url
    finally:
        for exporter in exporters:
            exporter.stop()


def bucket(value: float, edges: tuple[float, ...]) -> int:
    """The index of the histogram bucket (upper edge inclusive) holding `value`."""
    return bisect.bisect_left(edges, value)


def _finite(s: dict) -> bool:
    return math.isfinite(float(s["value"][1]))


@pytest.fixture(scope="module")
def empty_prometheus(tmp_path_factory) -> Iterator[str]:
    """A real Prometheus with nothing to scrape."""
    with prometheus_server(tmp_path_factory.mktemp("prom") / "empty", []) as url:
        yield url


@pytest.fixture
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused


def test_device_readings_under_both_host_labels_are_stored(engine, fleet_prometheus):
    seed_fleet(engine)
    report = PrometheusPuller(readings_store(engine), fleet_prometheus).pull_once(utcnow())

    assert report.failed_queries == ()
    assert (report.devices, report.unknown_hosts, report.unknown_devices) == (5, ("stray-host",), 1)
    with session_scope(engine) as session:
        rows = session.exec(select(DeviceTelemetry)).all()
    assert {(r.hostname, r.index): (r.uuid, r.utilisation, r.memory_used_mib, r.xid, r.power_w) for r in rows} == {
        ("node-a", 0): ("GPU-node-a-0000", 0.75, 40000.0, 0, 412.5),
        ("node-a", 1): ("GPU-node-a-0001", 0.20, 1000.0, 79, 0.0),
        ("stray-host", 0): ("GPU-stray-host-0000", 0.10, 10.0, 0, 0.0),
        ("node-b", 0): ("GPU-node-b-0000", 0.50, 2048.0, 0, 0.0),
        ("node-b", 1): ("GPU-node-b-0001", 0.0, 0.0, 0, 0.0),
    }


def test_xid_marks_exactly_that_device_unhealthy_and_clears_a_stale_one(engine, fleet_prometheus):
    seed_fleet(engine)
    report = PrometheusPuller(readings_store(engine), fleet_prometheus).pull_once(utcnow())

    assert report.unhealthy_devices == 1
    assert device_health(engine) == {("node-a", 0): (True, 0), ("node-a", 1): (False, 79), ("node-b", 0): (True, 0)}
    with session_scope(engine) as session:
        assert session.exec(select(Node.name).order_by(Node.name)).all() == ["node-a", "node-b"]  # none created


def test_model_queue_kv_and_latency_quantiles(engine, fleet_prometheus):
    puller = PrometheusPuller(readings_store(engine), fleet_prometheus)
    now = utcnow()
    assert puller.pull_once(now).models == 2
    puller.pull_once(now)  # the same minute again: overwritten, not added

    with session_scope(engine) as session:
        rows = {(r.model, r.device_class): r for r in session.exec(select(ModelTelemetry)).all()}
    assert set(rows) == {("llama-8b", "h100"), ("qwen-7b", "")}
    llama, qwen = rows[("llama-8b", "h100")], rows[("qwen-7b", "")]
    assert (llama.queue_depth, llama.running, llama.kv_cache_usage) == (3, 8, 0.42)
    assert (qwen.queue_depth, qwen.running, qwen.kv_cache_usage) == (0, 2, 0.1)
    for row in (llama, qwen):  # qwen's ITL comes from the older time_per_output_token name
        # 90% of observations at FAST, 10% at SLOW: p50 lies in FAST's bucket, p95 and p99 in SLOW's.
        assert bucket(row.ttft_p50, TTFT_BUCKETS) == bucket(TTFT_FAST, TTFT_BUCKETS)
        assert (
            bucket(row.ttft_p95, TTFT_BUCKETS) == bucket(row.ttft_p99, TTFT_BUCKETS) == bucket(TTFT_SLOW, TTFT_BUCKETS)
        )
        assert bucket(row.itl_p50, ITL_BUCKETS) == bucket(ITL_FAST, ITL_BUCKETS)
        assert bucket(row.itl_p95, ITL_BUCKETS) == bucket(row.itl_p99, ITL_BUCKETS) == bucket(ITL_SLOW, ITL_BUCKETS)
        assert row.ttft_p50 < row.ttft_p95 <= row.ttft_p99 and row.itl_p50 < row.itl_p95 <= row.itl_p99
    assert puller.status.state == "ok" and puller.health_component() == "ok"


def test_a_query_prometheus_rejects_degrades_but_keeps_the_rest(engine, fleet_prometheus):
    puller = PrometheusPuller(readings_store(engine), fleet_prometheus, window="1x")  # not a PromQL duration: HTTP 400
    report = puller.pull_once(utcnow())

    assert set(report.failed_queries) == {f"{m}_p{p}" for m in ("ttft", "itl") for p in (50, 95, 99)}
    assert report.devices == 5 and report.models == 2  # the gauges still came through
    assert puller.status.state == "degraded"
    assert puller.health_component().startswith("degraded: 6 of 13 queries failed; ttft_p50: HTTP Status Code 400")


def test_empty_results_are_ok_with_no_samples(engine, empty_prometheus):
    puller = PrometheusPuller(readings_store(engine), empty_prometheus)
    report = puller.pull_once(utcnow())

    assert (report.devices, report.models, report.failed_queries) == (0, 0, ())
    assert puller.status == PullerStatus("ok", "no DCGM or vLLM series", puller.status.last_success_at, None)
    assert puller.health_component() == "ok"


def test_prometheus_down_is_reported_once_and_never_raised(dead_url, caplog):
    changes: list[PullerStatus] = []
    puller = PrometheusPuller(None, dead_url, on_status=changes.append)  # never reaches the database
    with caplog.at_level(logging.WARNING, logger="collectors.prometheus"):
        puller.pull_once(utcnow())
        puller.pull_once(utcnow())

    assert puller.status.state == "down" and puller.status.last_success_at is None
    assert puller.health_component() == f"down: {dead_url} unreachable (ConnectionError)"
    assert [s.state for s in changes] == ["down"]
    assert len(caplog.records) == 1


def _count_pulls(puller: PrometheusPuller, fail_first: int = 0) -> list[datetime]:
    """Wrap `pull_once` to record each call; the first `fail_first` calls raise."""
    calls: list[datetime] = []
    real = puller.pull_once

    def pull_once(now):
        calls.append(now)
        if len(calls) <= fail_first:
            raise RuntimeError("disk full")
        return real(now)

    puller.pull_once = pull_once
    return calls


def _run_until(puller: PrometheusPuller, calls: list, count: int) -> None:
    """Run the loop in a thread until it has pulled `count` times, then stop it and check it stopped."""
    stop = threading.Event()
    thread = threading.Thread(target=puller.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(calls) >= count, f"{count} pulls", polls=500, interval=0.02)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_the_loop_keeps_pulling_while_prometheus_is_down(dead_url):
    changes: list[PullerStatus] = []
    puller = PrometheusPuller(None, dead_url, interval_s=0.05, on_status=changes.append)
    _run_until(puller, _count_pulls(puller), count=4)
    assert [s.state for s in changes] == ["down"]  # four failed pulls, one change
    assert puller.status.last_error_at is not None


def test_the_loop_survives_pulls_that_raise_and_recovers(engine, fleet_prometheus):
    changes: list[PullerStatus] = []
    puller = PrometheusPuller(readings_store(engine), fleet_prometheus, interval_s=0.05, on_status=changes.append)
    _run_until(puller, _count_pulls(puller, fail_first=2), count=3)
    assert [s.component() for s in changes] == ["degraded: pull failed: RuntimeError: disk full", "ok"]
    assert changes[1].last_error_at < changes[1].last_success_at


def test_health_endpoint_shows_the_puller(engine, tmp_path, dead_url, fleet_prometheus):
    app = create_app(engine, Settings(data_dir=tmp_path))
    with TestClient(app) as client:
        puller = PrometheusPuller(readings_store(engine), dead_url)
        puller.pull_once(utcnow())
        app.state.components["prometheus"] = puller.health_component()
        down = client.get("/api/v1/health")

        puller = PrometheusPuller(readings_store(engine), fleet_prometheus)
        puller.pull_once(utcnow())
        app.state.components["prometheus"] = puller.health_component()
        ok = client.get("/api/v1/health")

    assert down.status_code == 503
    assert down.json()["status"] == "degraded"
    assert down.json()["components"] == {"prometheus": f"down: {dead_url} unreachable (ConnectionError)"}
    assert ok.status_code == 200 and ok.json()["components"] == {"prometheus": "ok"}


def test_credentials_in_the_url_never_reach_logs_or_health():
    from collectors.prometheus import PrometheusPuller, redacted

    assert redacted("http://ops:s3cret@prom.internal:9090/") == "http://***@prom.internal:9090/"
    assert redacted("http://prom.internal:9090") == "http://prom.internal:9090"
    puller = PrometheusPuller(None, "http://ops:s3cret@127.0.0.1:1", interval_s=1, timeout_s=0.5)
    puller.pull_once(datetime.now(UTC))
    assert puller.status.state == "down" and "s3cret" not in puller.health_component()
    puller.close()
