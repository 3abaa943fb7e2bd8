"""The fleet's /metrics: DCGM and vLLM names a Prometheus puller can read."""

import urllib.request

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from controlplane.actuators.base import DesiredPlacement, ReplicaSet
from controlplane.simfleet import LoadDriver, SimulatedFleet

DCGM = {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_FI_DEV_POWER_USAGE"}


@pytest.fixture(scope="module")
def scraped():
    start = 1_700_000_000.0
    fleet = SimulatedFleet(seed=2, metrics_port=0, metrics_addr="127.0.0.1", clock=lambda: start + 30.0)
    fleet.apply(DesiredPlacement(1, (ReplicaSet("globex", "doc-pipeline", "llm:llama-3.1-8b-instruct", "L40S", 2),)))
    LoadDriver(fleet, seed=2).run(120, InMemorySpanExporter(), start_s=start)
    fleet.start()  # no OTLP endpoint: serves /metrics, replays traffic whose spans go nowhere
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{fleet.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        fleet.stop()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(families, name):
    return [s for s in families[name].samples if s.name == name]


def test_dcgm_gauges_per_device_with_dcgm_labels(scraped):
    assert DCGM <= set(scraped)
    util = samples(scraped, "DCGM_FI_DEV_GPU_UTIL")
    assert len(util) == 16 + 8 + 8 + 8  # every device of the inventory
    for s in util:
        assert {"gpu", "UUID", "modelName", "Hostname", "device_class"} <= set(s.labels)
        assert 0 <= s.value <= 100
    assert {s.labels["modelName"] for s in util if s.labels["device_class"] == "H100-SXM"} == {"NVIDIA H100 80GB HBM3"}
    assert len({s.labels["UUID"] for s in util}) == len(util)


def test_utilisation_and_memory_follow_the_placement(scraped):
    util = {(s.labels["Hostname"], s.labels["gpu"]): s.value for s in samples(scraped, "DCGM_FI_DEV_GPU_UTIL")}
    used = {(s.labels["Hostname"], s.labels["gpu"]): s.value for s in samples(scraped, "DCGM_FI_DEV_FB_USED")}
    assert util[("sim-h100-0", "0")] > 0  # llama-70b's first replica
    assert util[("sim-l40s-0", "0")] > 0 and util[("sim-l40s-0", "1")] > 0  # the 8B model, moved here
    assert util[("sim-gaudi2-0", "0")] == 0 and used[("sim-gaudi2-0", "0")] == 0  # nothing placed
    free = {(s.labels["Hostname"], s.labels["gpu"]): s.value for s in samples(scraped, "DCGM_FI_DEV_FB_FREE")}
    assert used[("sim-l40s-0", "0")] + free[("sim-l40s-0", "0")] == pytest.approx(48 * 1024, abs=1)


def test_vllm_metrics_per_llm_replica_set(scraped):
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        series = {(s.labels["model_name"], s.labels["device_class"]) for s in samples(scraped, name)}
        assert ("llama-3.1-70b-instruct", "H100-SXM") in series
        assert ("llama-3.1-8b-instruct", "L40S") in series
    kv = [s.value for s in samples(scraped, "vllm:kv_cache_usage_perc")]
    assert all(0 <= v <= 1 for v in kv) and max(kv) > 0
    ttft_count = {s.labels["model_name"]: s.value for s in scraped["vllm:time_to_first_token_seconds"].samples
                  if s.name.endswith("_count")}
    assert ttft_count["llama-3.1-70b-instruct"] > 0
    itl = scraped["vllm:inter_token_latency_seconds"].samples
    assert any(s.name.endswith("_bucket") and s.labels["le"] == "+Inf" and s.value > 0 for s in itl)
    prompt = {s.labels["model_name"]: s.value for s in scraped["vllm:prompt_tokens"].samples
              if s.name == "vllm:prompt_tokens_total"}
    generation = [s for s in scraped["vllm:generation_tokens"].samples if s.name == "vllm:generation_tokens_total"]
    assert prompt["qwen2.5-coder-32b"] > 0 and generation


def test_metrics_stay_off_the_global_registry():
    SimulatedFleet()
    assert not any(name.startswith(("DCGM_", "vllm:")) for name in REGISTRY._names_to_collectors)
