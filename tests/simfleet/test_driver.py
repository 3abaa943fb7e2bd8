"""The load driver: spans a collector can turn into fragments, graphs and profiles."""

import gzip
import socket
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controlplane.actuators.base import DesiredPlacement, ReplicaSet
from controlplane.simfleet import APPS, LoadDriver, SimulatedFleet
from controlplane.simfleet.apps import Trace
from controlplane.simfleet.driver import load_trace
from optimizer.types import Phase


def fragment_key(attributes, name):
    """The collectors' rule (OTel GenAI semconv) for a span's fragment key."""
    op = attributes.get("gen_ai.operation.name")
    model = attributes.get("gen_ai.request.model")
    if op == "chat" and model:
        return f"llm:{model}"
    if op == "embeddings" and model:
        return f"embedding:{model}"
    if op == "rerank" and model:
        return f"rerank:{model}"
    if op == "execute_tool":
        return f"tool:{attributes['gen_ai.tool.name']}"
    if op == "invoke_agent":
        return f"agent:{attributes['gen_ai.agent.name']}"
    if op == "retrieval":
        return f"retrieval:{attributes['gen_ai.data_source.id']}"
    if "db.system" in attributes:
        return f"db:{attributes['db.system']}"
    return f"cpu:{name}"


@pytest.fixture(scope="module")
def spans():
    exporter = InMemorySpanExporter()
    LoadDriver(SimulatedFleet(seed=7), seed=7).run(150, exporter, start_s=1_700_000_000.0)
    return exporter.get_finished_spans()


def by_trace(spans):
    traces = defaultdict(list)
    for s in spans:
        traces[s.context.trace_id].append(s)
    return traces


def test_every_app_fragment_appears_under_its_collector_key(spans):
    seen = defaultdict(set)
    for s in spans:
        seen[s.resource.attributes["heteroplane.workload"]].add(fragment_key(s.attributes, s.name))
    assert seen == {app.workload: {f.key for f in app.fragments()} for app in APPS}


def test_resource_attributes_name_service_tenant_and_workload(spans):
    keys = ("service.name", "heteroplane.tenant", "heteroplane.workload")
    resources_seen = {tuple(s.resource.attributes.get(k) for k in keys) for s in spans}
    assert resources_seen == {(app.workload, app.tenant, app.workload) for app in APPS}


def test_llm_spans_carry_genai_attributes_and_the_device_class(spans):
    llm = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert llm
    for s in llm:
        assert s.attributes["gen_ai.provider.name"] == "vllm"
        assert s.attributes["gen_ai.usage.input_tokens"] > 0
        assert s.attributes["gen_ai.usage.output_tokens"] >= 0
        assert s.attributes["heteroplane.device_class"] == "H100-SXM"  # the initial deployment
    assert all("heteroplane.device_class" in s.attributes for s in spans)


def test_model_spans_say_how_long_they_queued_as_vllm_does(spans):
    model = [s for s in spans if "gen_ai.request.model" in s.attributes]
    assert model
    for s in model:
        queued_s = s.attributes["gen_ai.latency.time_in_queue"]
        assert 0 <= queued_s <= (s.end_time - s.start_time) / 1e9
    assert any(s.attributes["gen_ai.latency.time_in_queue"] > 0 for s in model)  # the fleet is loaded
    assert not any("gen_ai.latency.time_in_queue" in s.attributes for s in spans if s not in model)


def test_split_llm_spans_name_the_decode_class_and_the_prefill_class():
    fleet = SimulatedFleet(seed=3)
    llm70 = ("acme", "rag-chatbot", "llm:llama-3.1-70b-instruct")
    assert fleet.apply(DesiredPlacement(1, (ReplicaSet(*llm70, "L40S", 1, 4, Phase.prefill),
                                            ReplicaSet(*llm70, "Gaudi2", 2, 2, Phase.decode)))).ok
    exporter = InMemorySpanExporter()
    LoadDriver(fleet, seed=3).run(40, exporter, start_s=1_000.0)
    spans = exporter.get_finished_spans()
    split = [s for s in spans if s.attributes.get("gen_ai.request.model") == "llama-3.1-70b-instruct"]
    assert split
    assert {(s.attributes["heteroplane.device_class"], s.attributes["heteroplane.prefill_device_class"])
            for s in split} == {("Gaudi2", "L40S")}
    assert not any("heteroplane.prefill_device_class" in s.attributes for s in spans if s not in split)


def test_token_counts_come_from_the_trace(spans):
    conv = load_trace(Trace.conv)
    chatbot_llm = [s for s in sorted(spans, key=lambda s: s.start_time)
                   if s.attributes.get("gen_ai.request.model") == "llama-3.1-70b-instruct"]
    first = chatbot_llm[0].attributes
    assert (first["gen_ai.usage.input_tokens"], first["gen_ai.usage.output_tokens"]) == (
        conv[0].context_tokens, conv[0].generated_tokens)


def test_each_request_is_one_well_formed_trace(spans):
    for trace_spans in by_trace(spans).values():
        ids = {s.context.span_id: s for s in trace_spans}
        roots = [s for s in trace_spans if s.parent is None]
        assert len(roots) == 1
        for s in trace_spans:
            assert s.start_time < s.end_time
            if s.parent is not None:
                parent = ids[s.parent.span_id]  # the parent is in the same trace
                assert parent.start_time <= s.start_time and s.end_time <= parent.end_time


def test_chatbot_graph_shape(spans):
    trace_spans = next(t for t in by_trace(spans).values()
                       if t[0].resource.attributes["service.name"] == "rag-chatbot")
    ids = {s.context.span_id: s for s in trace_spans}
    edges = {(fragment_key(ids[s.parent.span_id].attributes, ids[s.parent.span_id].name),
              fragment_key(s.attributes, s.name)) for s in trace_spans if s.parent}
    assert edges == {
        ("cpu:api", "embedding:bge-large-en"),
        ("cpu:api", "retrieval:vector-search"),
        ("retrieval:vector-search", "db:postgresql"),
        ("cpu:api", "rerank:bge-reranker-large"),
        ("cpu:api", "llm:llama-3.1-70b-instruct"),
    }


def test_coding_agent_loops_llm_then_tools(spans):
    agent_traces = [t for t in by_trace(spans).values()
                    if t[0].resource.attributes["service.name"] == "coding-agent"]
    assert len(agent_traces) >= 3
    for trace_spans in agent_traces:
        counts = Counter(fragment_key(s.attributes, s.name) for s in trace_spans)
        assert counts["agent:coder"] == 1
        assert 3 <= counts["llm:qwen2.5-coder-32b"] <= 6
        assert counts["tool:run_tests"] == counts["llm:qwen2.5-coder-32b"]  # every turn runs the tests
        ordered = [fragment_key(s.attributes, s.name) for s in sorted(trace_spans, key=lambda s: s.start_time)]
        assert ordered[0] == "agent:coder" and ordered[1] == "llm:qwen2.5-coder-32b"


def test_the_sample_apps_call_in_turn_so_no_edge_reads_as_concurrent(spans):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from collectors.assembly import assemble
    from collectors.normalise import normalise_request

    batch = assemble(normalise_request(encode_spans(spans)).records)
    edges = {(e.workload.workload, e.parent_key, e.child_key): e for e in batch.edges}
    assert edges and all(e.calls_overlapping == 0 for e in edges.values())
    # The coding agent's loop runs its model 3 to 6 times a visit, in turn: that many calls per visit.
    loop = edges[("coding-agent", "agent:coder", "llm:qwen2.5-coder-32b")]
    assert {calls for calls, _ in loop.visits_by_calls} <= {3, 4, 5, 6}
    assert sum(visits for _, visits in loop.visits_by_calls) == sum(
        1 for s in spans if s.name.startswith("invoke_agent") and s.attributes.get("gen_ai.agent.name") == "coder")


def test_same_seed_same_latencies():
    def durations(seed):
        exporter = InMemorySpanExporter()
        LoadDriver(SimulatedFleet(seed=seed), seed=seed).run(60, exporter, start_s=1_000.0)
        return [(s.name, s.end_time - s.start_time) for s in exporter.get_finished_spans()]

    assert durations(5) == durations(5)
    assert durations(5) != durations(6)


def test_packaged_sample_is_small_and_attributed():
    data = resources.files("controlplane.simfleet").joinpath("data")
    sizes = sum(len(data.joinpath(f"{t.value}.csv").read_bytes()) for t in Trace)
    assert sizes < 200_000
    assert "CC-BY 4.0" in data.joinpath("ATTRIBUTION.md").read_text()
    assert len(load_trace(Trace.code)) == len(load_trace(Trace.conv)) == 1500


class _Receiver(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.requests.append((self.path, self.headers.get("Authorization"), message))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, *args):
        pass


def stops(fleet: SimulatedFleet) -> bool:
    """stop() returns instead of hanging on exporter retries (the demo's Ctrl-C depends on it).

    A hang detector, not a speed check: the OTel exporter's own retries would run for minutes.
    """
    thread = threading.Thread(target=fleet.stop)
    thread.start()
    thread.join(timeout=30)
    return not thread.is_alive()


def test_live_mode_sends_otlp_with_the_bearer_token_and_stops_promptly():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.requests = []
    fleet = SimulatedFleet(seed=1, speedup=20.0, otlp_endpoint=f"http://127.0.0.1:{server.server_port}",
                           otlp_headers={"Authorization": "Bearer sim-token"})
    try:
        fleet.start()
        time.sleep(1.5)
        assert stops(fleet)
    finally:
        server.shutdown()
        server.server_close()
    assert _Receiver.requests
    assert {(path, auth) for path, auth, _ in _Receiver.requests} == {("/v1/traces", "Bearer sim-token")}
    services = set()
    for _, _, message in _Receiver.requests:
        for resource_spans in message.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            services.add(attributes["service.name"])
    assert "rag-chatbot" in services


def test_stop_is_prompt_when_the_collector_is_unreachable():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fleet = SimulatedFleet(speedup=20.0, otlp_endpoint=f"http://127.0.0.1:{port}/v1/traces")
    fleet.start()
    time.sleep(1.2)  # past the first batch export, which fails and retries
    assert stops(fleet)
