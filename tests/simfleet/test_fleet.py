"""The simulated fleet as an Actuator: apply, observe, inventory, capacity, faults."""

import random
import threading

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controlplane.actuators.base import Actuator, DesiredPlacement, ReplicaSet
from controlplane.simfleet import LoadDriver, SimulatedFleet
from controlplane.simfleet.apps import APPS, RAG_CHATBOT, Kind
from controlplane.simfleet.fleet import TAU_S
from optimizer.types import Phase

LLM70 = ("acme", "rag-chatbot", "llm:llama-3.1-70b-instruct")


def placement(version, *sets):
    return DesiredPlacement(version, tuple(ReplicaSet(*s) for s in sets))


def sets_of(fleet, fragment):
    return {(rs.device_class, rs.replicas, rs.slices) for rs in fleet.observe().replica_sets
            if (rs.tenant, rs.workload, rs.fragment_key) == fragment}


def test_it_is_an_actuator():
    fleet: Actuator = SimulatedFleet()
    assert fleet.observe().version is None


def test_inventory_has_the_heterogeneous_nodes():
    nodes = SimulatedFleet().inventory()
    by_class = {}
    for n in nodes:
        by_class[n.device_class] = by_class.get(n.device_class, 0) + n.devices
        assert n.healthy_devices == n.devices
    assert by_class == {"H100-SXM": 16, "L40S": 8, "Gaudi2": 8, "CPU-EPYC-64C": 8}
    assert {"sim-h100-0", "sim-h100-1", "sim-l40s-0", "sim-gaudi2-0", "sim-cpu-3"} <= {n.name for n in nodes}


def test_before_any_placement_every_app_fragment_runs_on_its_initial_deployment():
    observed = SimulatedFleet().observe()
    keys = {(rs.tenant, rs.workload, rs.fragment_key) for rs in observed.replica_sets}
    assert keys == {(app.tenant, app.workload, f.key) for app in APPS for f in app.fragments()}
    assert {rs.device_class for rs in observed.replica_sets if rs.fragment_key.startswith("llm:")} == {"H100-SXM"}
    assert {rs.device_class for rs in observed.replica_sets if rs.fragment_key.startswith("tool:")} == {"CPU-EPYC-64C"}


def test_apply_then_observe_shows_the_placement():
    fleet = SimulatedFleet()
    result = fleet.apply(placement(1, (*LLM70, "Gaudi2", 3, 2), (*LLM70, "H100-SXM", 1, 14)))
    assert result.ok, result.message
    observed = fleet.observe()
    assert observed.version == 1
    assert sets_of(fleet, LLM70) == {("Gaudi2", 3, 2), ("H100-SXM", 1, 14)}
    # fragments the placement does not name keep their initial deployment
    assert sets_of(fleet, ("acme", "coding-agent", "llm:qwen2.5-coder-32b")) == {("H100-SXM", 2, 7)}


def test_applying_the_same_version_twice_changes_nothing():
    fleet = SimulatedFleet()
    desired = placement(4, (*LLM70, "Gaudi2", 4, 2))
    assert fleet.apply(desired).ok
    before = fleet.observe()
    again = fleet.apply(desired)
    assert again.ok and "already applied" in again.message
    assert fleet.observe() == before


def test_same_version_with_other_content_and_older_versions_are_refused():
    fleet = SimulatedFleet()
    assert fleet.apply(placement(4, (*LLM70, "Gaudi2", 4, 2))).ok
    conflicting = fleet.apply(placement(4, (*LLM70, "Gaudi2", 3, 2)))
    older = fleet.apply(placement(3, (*LLM70, "Gaudi2", 2, 2)))
    assert not conflicting.ok and "new version" in conflicting.message
    assert not older.ok and "older" in older.message
    assert sets_of(fleet, LLM70) == {("Gaudi2", 4, 2)}


def test_placement_over_capacity_is_rejected_and_nothing_changes():
    fleet = SimulatedFleet()
    before = fleet.observe()
    # 9 Gaudi2 devices asked, 8 exist
    result = fleet.apply(placement(1, (*LLM70, "Gaudi2", 9, 1)))
    assert not result.ok
    assert "Gaudi2 needs 9 slices but has 8" in result.message
    assert fleet.observe() == before


def test_capacity_counts_initial_deployments_of_unnamed_fragments():
    fleet = SimulatedFleet()
    # the initial deployments already hold 56 + 14 + 1 + 1 + 1 + 2 = 75 of 112 H100 slices; 70B's 56 are freed
    # by naming it, so 112 - 19 = 93 slices are left for it
    assert fleet.apply(placement(1, (*LLM70, "H100-SXM", 93, 1))).ok
    result = fleet.apply(placement(2, (*LLM70, "H100-SXM", 94, 1)))
    assert not result.ok and "H100-SXM needs 113 slices but has 112" in result.message


def test_unknown_class_and_bad_counts_are_rejected():
    fleet = SimulatedFleet()
    unknown = fleet.apply(placement(1, (*LLM70, "TPU-v5e", 1, 1)))
    negative = fleet.apply(placement(1, (*LLM70, "L40S", -1, 1)))
    duplicate = fleet.apply(placement(1, (*LLM70, "L40S", 1, 1), (*LLM70, "L40S", 2, 1)))
    assert not unknown.ok and "TPU-v5e" in unknown.message and "L40S" in unknown.message
    assert not negative.ok and ">= 0" in negative.message
    assert not duplicate.ok and "twice" in duplicate.message
    assert fleet.observe().version is None


def test_traffic_follows_the_placement():
    fleet = SimulatedFleet(seed=3)
    assert fleet.apply(placement(1, (*LLM70, "Gaudi2", 4, 2))).ok
    exporter = InMemorySpanExporter()
    LoadDriver(fleet, seed=3).run(40, exporter, start_s=1_000.0)
    classes = {s.attributes["heteroplane.device_class"] for s in exporter.get_finished_spans()
               if s.attributes.get("gen_ai.request.model") == "llama-3.1-70b-instruct"}
    assert classes == {"Gaudi2"}


def test_a_failed_device_leaves_the_inventory_evicts_replicas_and_reports_its_xid():
    fleet = SimulatedFleet()
    assert fleet.apply(placement(1, (*LLM70, "Gaudi2", 8, 1))).ok
    fleet.fail_device("sim-gaudi2-0", 3)
    gaudi = next(n for n in fleet.inventory() if n.name == "sim-gaudi2-0")
    assert (gaudi.devices, gaudi.healthy_devices) == (8, 7)
    assert sets_of(fleet, LLM70) == {("Gaudi2", 7, 1)}
    xids = {(d.hostname, d.index): d.xid for d in fleet.device_stats()}
    assert xids[("sim-gaudi2-0", 3)] == 79 and xids[("sim-gaudi2-0", 2)] == 0
    fleet.repair_device("sim-gaudi2-0", 3)
    assert sets_of(fleet, LLM70) == {("Gaudi2", 8, 1)}


def test_fragment_without_running_replicas_fails_its_visits():
    fleet = SimulatedFleet()
    assert fleet.apply(placement(1, (*LLM70, "L40S", 0, 1))).ok
    assert sets_of(fleet, LLM70) == set()
    exporter = InMemorySpanExporter()
    LoadDriver(fleet).run(10, exporter, start_s=1_000.0)
    failed = [s for s in exporter.get_finished_spans() if s.attributes.get("error.type") == "unavailable"]
    assert failed and all(s.attributes["gen_ai.request.model"] == "llama-3.1-70b-instruct" for s in failed)


def test_concurrent_applies_and_observes_are_consistent():
    fleet = SimulatedFleet()
    errors = []

    def writer(start):
        for v in range(start, start + 200, 2):
            fleet.apply(placement(v, (*LLM70, "Gaudi2", 1 + v % 4, 2)))

    def reader():
        for _ in range(300):
            observed = fleet.observe()
            if observed.version is not None and sets_of(fleet, LLM70) == set():
                errors.append(observed)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 2)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = fleet.observe()
    replicas = {rs.replicas for rs in final.replica_sets if rs.fragment_key == LLM70[2]}
    assert replicas == {1 + final.version % 4}


def test_device_classes_agree_with_the_optimizer_catalog():
    # The sim's physics is its own ground truth, but the optimizer's placements must fit its inventory.
    from controlplane.simfleet.devices import DEVICE_CLASSES
    from optimizer.catalog import by_name

    for sim in DEVICE_CLASSES:
        assert by_name(sim.name).slices_per_device == sim.slices_per_device


# --- split fragments: a prefill pool and a decode pool --------------------------------------------------------

LLAMA_70B = next(f for f in RAG_CHATBOT.fragments() if f.kind is Kind.llm)
EMBED = ("acme", "rag-chatbot", "embedding:bge-large-en")


def pools_of(fleet, fragment):
    return {(rs.device_class, rs.replicas, rs.slices, rs.phase) for rs in fleet.observe().replica_sets
            if (rs.tenant, rs.workload, rs.fragment_key) == fragment}


def busy(fleet):
    return {c.device_class: c.busy for c in fleet.class_utilisation()}


def test_a_split_placement_runs_both_pools_and_counts_both_against_capacity():
    fleet = SimulatedFleet()
    result = fleet.apply(placement(1, (*LLM70, "H100-SXM", 1, 14, Phase.prefill),
                                   (*LLM70, "Gaudi2", 3, 2, Phase.decode)))
    assert result.ok, result.message
    assert pools_of(fleet, LLM70) == {("H100-SXM", 1, 14, Phase.prefill), ("Gaudi2", 3, 2, Phase.decode)}
    # 3 decode replicas x 2 slices hold 6 of the 8 Gaudi2 devices
    assert {c.device_class: c.allocated for c in fleet.class_utilisation()}["Gaudi2"] == 6
    # a prefill pool on Gaudi2 beside it: 2 x 2 + 3 x 2 = 10 slices of 8
    over = fleet.apply(placement(2, (*LLM70, "Gaudi2", 2, 2, Phase.prefill), (*LLM70, "Gaudi2", 3, 2, Phase.decode)))
    assert not over.ok and "Gaudi2 needs 10 slices but has 8" in over.message
    # both pools on one class are two replica sets
    assert fleet.apply(placement(3, (*LLM70, "Gaudi2", 1, 2, Phase.prefill), (*LLM70, "Gaudi2", 3, 2, Phase.decode))).ok
    assert pools_of(fleet, LLM70) == {("Gaudi2", 1, 2, Phase.prefill), ("Gaudi2", 3, 2, Phase.decode)}


def test_a_phase_given_as_a_plain_string_is_understood():
    fleet = SimulatedFleet()
    assert fleet.apply(placement(1, (*LLM70, "H100-SXM", 1, 14, "prefill"), (*LLM70, "Gaudi2", 1, 2, "decode"))).ok
    assert {rs.phase for rs in fleet.observe().replica_sets if rs.fragment_key == LLM70[2]} == {
        Phase.prefill, Phase.decode}
    assert all(isinstance(rs.phase, Phase) for rs in fleet.observe().replica_sets)


@pytest.mark.parametrize(("sets", "expected"), [
    pytest.param([(*LLM70, "Gaudi2", 2, 2, "prefil"), (*LLM70, "H100-SXM", 1, 14, Phase.decode)],
                 ["acme/rag-chatbot/llm:llama-3.1-70b-instruct/Gaudi2", "phase must be one of", "'prefil'"],
                 id="unknown phase"),
    pytest.param([(*EMBED, "H100-SXM", 1, 1, Phase.prefill), (*EMBED, "H100-SXM", 1, 1, Phase.decode)],
                 ["acme/rag-chatbot/embedding:bge-large-en/H100-SXM", "only LLM fragments"],
                 id="pools for an embedding model"),
    pytest.param([(*LLM70, "Gaudi2", 2, 2), (*LLM70, "H100-SXM", 1, 14, Phase.prefill),
                  (*LLM70, "Gaudi2", 1, 2, Phase.decode)],
                 ["acme/rag-chatbot/llm:llama-3.1-70b-instruct", "both whole replicas and pools"],
                 id="whole and pools"),
    pytest.param([(*LLM70, "Gaudi2", 2, 2, Phase.prefill)],
                 ["acme/rag-chatbot/llm:llama-3.1-70b-instruct/Gaudi2 (prefill pool)", "no decode pool"],
                 id="prefill only"),
    pytest.param([(*LLM70, "H100-SXM", 0, 14, Phase.prefill), (*LLM70, "Gaudi2", 2, 2, Phase.decode)],
                 ["has a decode pool", "no prefill pool"],
                 id="prefill pool without replicas"),
])
def test_bad_pools_are_refused_and_nothing_changes(sets, expected):
    fleet = SimulatedFleet()
    assert fleet.apply(placement(1, (*LLM70, "Gaudi2", 4, 2))).ok
    before = fleet.observe()
    result = fleet.apply(placement(2, *sets))
    assert not result.ok
    for words in expected:
        assert words in result.message
    assert fleet.observe() == before


def test_pools_replace_whole_replicas_named_with_none():
    fleet = SimulatedFleet()
    assert fleet.apply(placement(1, (*LLM70, "Gaudi2", 4, 2))).ok
    # the old whole set is kept at 0 replicas while the pools take over: nothing of it runs, so no mix
    assert fleet.apply(placement(2, (*LLM70, "Gaudi2", 0, 2), (*LLM70, "H100-SXM", 1, 14, Phase.prefill),
                                 (*LLM70, "Gaudi2", 2, 2, Phase.decode))).ok
    assert pools_of(fleet, LLM70) == {("H100-SXM", 1, 14, Phase.prefill), ("Gaudi2", 2, 2, Phase.decode)}


def test_split_visits_keep_both_pools_busy_and_report_the_decode_class():
    now = 1_000.0
    fleet = SimulatedFleet(clock=lambda: now)
    # prefill on 4 L40S (one replica, 4 slices), decode on 2 replicas of 2 Gaudi2 each
    assert fleet.apply(placement(1, (*LLM70, "L40S", 1, 4, Phase.prefill), (*LLM70, "Gaudi2", 2, 2, Phase.decode))).ok
    assert busy(fleet) == {"H100-SXM": 0.0, "L40S": 0.0, "Gaudi2": 0.0, "CPU-EPYC-64C": 0.0}
    rng = random.Random(4)
    visits = [fleet.serve(RAG_CHATBOT, LLAMA_70B, 1000, 200, now, rng) for _ in range(10)]
    assert {(v.prefill_class, v.device_class) for v in visits} == {("L40S", "Gaudi2")}
    # a visit's occupancy lands on every device of the replica it used: 4 L40S devices per prefill replica,
    # 2 Gaudi2 devices per decode replica; all at `now`, so the busy rate is their sum over TAU_S
    after = busy(fleet)
    assert after["L40S"] == pytest.approx(4 * sum(v.prefill_occupancy_s for v in visits) / TAU_S)
    assert after["Gaudi2"] == pytest.approx(2 * sum(v.occupancy_s for v in visits) / TAU_S)
    assert after["L40S"] > 0 and after["Gaudi2"] > 0 and after["H100-SXM"] == 0.0
    labels = {"model_name": "llama-3.1-70b-instruct", "tenant": "acme", "workload": "rag-chatbot"}
    tokens = fleet.metrics.registry.get_sample_value
    assert tokens("vllm:generation_tokens_total", {**labels, "device_class": "Gaudi2"}) == 2000
    assert tokens("vllm:generation_tokens_total", {**labels, "device_class": "L40S"}) is None


def test_pools_on_one_class_report_one_vllm_series():
    now = 1_000.0
    fleet = SimulatedFleet(clock=lambda: now)
    assert fleet.apply(placement(1, (*LLM70, "Gaudi2", 2, 2, Phase.prefill), (*LLM70, "Gaudi2", 2, 2, Phase.decode))).ok
    rng = random.Random(5)
    for _ in range(20):
        fleet.serve(RAG_CHATBOT, LLAMA_70B, 1000, 200, now, rng)
    rows = [s for s in fleet.llm_stats() if s.model_name == "llama-3.1-70b-instruct"]
    assert [(s.device_class, s.tenant, s.workload) for s in rows] == [("Gaudi2", "acme", "rag-chatbot")]
    assert rows[0].running > 0 and 0 < rows[0].kv_cache_usage <= 1


def test_a_split_fragment_that_lost_its_decode_pool_fails_its_visits():
    fleet = SimulatedFleet()
    assert fleet.apply(placement(1, (*LLM70, "H100-SXM", 1, 14, Phase.prefill),
                                 (*LLM70, "Gaudi2", 1, 2, Phase.decode))).ok
    for index in range(7):  # one healthy Gaudi2 left: too few for a 2-slice decode replica
        fleet.fail_device("sim-gaudi2-0", index)
    assert pools_of(fleet, LLM70) == {("H100-SXM", 1, 14, Phase.prefill)}
    assert fleet.serve(RAG_CHATBOT, LLAMA_70B, 1000, 200, 1_000.0, random.Random(0)) is None
    fleet.repair_device("sim-gaudi2-0", 0)
    assert fleet.serve(RAG_CHATBOT, LLAMA_70B, 1000, 200, 1_000.0, random.Random(0)).device_class == "Gaudi2"


def test_kv_cache_usage_is_the_running_requests_kv_over_the_replicas_memory():
    now = 1_000.0
    fleet = SimulatedFleet(clock=lambda: now)
    assert fleet.apply(placement(1, (*LLM70, "H100-SXM", 1, 14))).ok  # one replica on two H100s
    rng = random.Random(6)
    for _ in range(30):
        fleet.serve(RAG_CHATBOT, LLAMA_70B, 100, 20, now, rng)
    (row,) = [s for s in fleet.llm_stats() if s.model_name == "llama-3.1-70b-instruct"]
    # KV memory: 0.9 x 2 x 80 GiB = 154.62 GB less 141.2 GB of weights = 13.42 GB. A request of 100 + 20 / 2
    # tokens holds 110 x 327,680 B = 36.0 MB of it: 0.268% each. 372 of them would fit, but a batch is at most
    # 64, so counting batch slots (running / 64) would report 5.8 times the KV cache really in use.
    assert row.running > 0
    assert row.kv_cache_usage == pytest.approx(row.running * 110 * 327_680 / (0.9 * 160 * 2**30 - 141.2e9), rel=1e-6)
    assert row.kv_cache_usage < row.running / 64
