"""End to end: the official OTel SDK and OTLP/HTTP exporter talk to the receiver served by uvicorn."""

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlmodel import Session, select

from collectors.receiver import create_receiver_app
from controlplane.app import create_app
from controlplane.auth import otlp_authoriser
from controlplane.models import Edge, Fragment, FragmentProfile, Tenant, Workload
from controlplane.runtime import ServerThread

RESOURCE = Resource.create(
    {"service.name": "support-bot", "heteroplane.tenant": "acme", "heteroplane.device_class": "l40s"}
)


@pytest.fixture
def receiver_url(engine, settings, ingest) -> Iterator[str]:
    """The receiver listening on a free loopback port, in a background thread; `ingest.flush()` stores."""
    server = ServerThread(create_receiver_app(otlp_authoriser(engine), ingest, settings.otlp_max_body_bytes), "127.0.0.1", 0, "otlp")
    server.start()
    yield f"http://127.0.0.1:{server.port}/v1/traces"
    server.stop()


def run_agent(provider: TracerProvider, tool_calls: int) -> None:
    """What an instrumented agent emits: an agent span around a chat and repeated tool calls."""
    tracer = provider.get_tracer("test-agent")
    now = time.time_ns()  # the chat started 300 ms ago, so that its 250 ms queue wait fits in its span
    with tracer.start_as_current_span("invoke_agent triage", start_time=now - 400_000_000, attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"}):
        with tracer.start_as_current_span("chat gpt-4o", start_time=now - 300_000_000, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20,
            "gen_ai.latency.time_in_queue": 0.25}):
            pass
        for _ in range(tool_calls):
            with tracer.start_as_current_span("execute_tool search", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}):
                pass


def test_official_exporter_batch_builds_the_graph(engine, ingest, receiver_url, admin_token):
    recorded = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    run_agent(provider, tool_calls=3)
    exporter = OTLPSpanExporter(
        endpoint=receiver_url, headers={"authorization": f"Bearer {admin_token}"}, compression=Compression.Gzip
    )

    # One export request holding the whole trace, as a BatchSpanProcessor would send it.
    assert exporter.export(recorded.get_finished_spans()) == SpanExportResult.SUCCESS
    exporter.shutdown()

    ingest.flush()
    with Session(engine) as session:
        workload = session.exec(select(Workload).join(Tenant).where(Tenant.name == "acme")).one()
        assert workload.name == "support-bot"
        fragments = {f.id: f for f in session.exec(select(Fragment).where(Fragment.workload_id == workload.id))}
        keys = {f.id: f.key for f in fragments.values()}
        edges = {(keys[e.parent_id], keys[e.child_id]): e.calls for e in session.exec(select(Edge))}
        profiles = {keys[p.fragment_id]: p for p in session.exec(select(FragmentProfile))}
    assert sorted(keys.values()) == ["agent:triage", "llm:gpt-4o", "tool:search"]
    assert edges == {("agent:triage", "llm:gpt-4o"): 1, ("agent:triage", "tool:search"): 3}
    assert (profiles["tool:search"].device_class, profiles["tool:search"].visits) == ("l40s", 3)
    # vLLM's queue time (seconds) arrives in milliseconds; spans that do not report it count for nothing.
    chat, tool = profiles["llm:gpt-4o"], profiles["tool:search"]
    assert (chat.queue_visits, chat.queue_ms_sum) == (1, pytest.approx(250.0))
    assert (tool.queue_visits, tool.queue_ms_sum) == (0, 0.0)


def test_span_at_a_time_export_records_visits(engine, ingest, receiver_url, admin_token):
    exporter = OTLPSpanExporter(endpoint=receiver_url, headers={"authorization": f"Bearer {admin_token}"})
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    run_agent(provider, tool_calls=2)
    provider.shutdown()

    ingest.flush()
    with Session(engine) as session:
        keys = {f.id: f.key for f in session.exec(select(Fragment))}
        visits = {keys[p.fragment_id]: p.visits for p in session.exec(select(FragmentProfile))}
        edges = {(keys[e.parent_id], keys[e.child_id]): e.calls for e in session.exec(select(Edge))}
    assert visits == {"agent:triage": 1, "llm:gpt-4o": 1, "tool:search": 2}
    # Each span came in its own request; the ingest queue still assembles them into one trace.
    assert edges == {("agent:triage", "llm:gpt-4o"): 1, ("agent:triage", "tool:search"): 2}


def test_exporter_with_a_viewer_token_fails(receiver_url, viewer_token):
    recorded = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    run_agent(provider, tool_calls=1)
    exporter = OTLPSpanExporter(endpoint=receiver_url, headers={"authorization": f"Bearer {viewer_token}"})

    assert exporter.export(recorded.get_finished_spans()) == SpanExportResult.FAILURE
    exporter.shutdown()


def test_exported_graph_is_readable_through_the_rest_api(engine, settings, ingest, receiver_url, admin_token):
    recorded = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    run_agent(provider, tool_calls=3)
    exporter = OTLPSpanExporter(endpoint=receiver_url, headers={"authorization": f"Bearer {admin_token}"})
    assert exporter.export(recorded.get_finished_spans()) == SpanExportResult.SUCCESS
    exporter.shutdown()
    ingest.flush()

    with TestClient(create_app(engine, settings)) as api:
        headers = {"Authorization": f"Bearer {admin_token}"}
        workload = api.get("/api/v1/workloads", headers=headers).json()["items"][0]
        fragments = api.get(f"/api/v1/workloads/{workload['id']}/fragments", headers=headers).json()["items"]
        edges = api.get(f"/api/v1/workloads/{workload['id']}/edges", headers=headers).json()["items"]
    by_id = {f["id"]: f for f in fragments}
    assert {f["key"]: f["visits"] for f in fragments} == {"agent:triage": 1, "llm:gpt-4o": 1, "tool:search": 3}
    # The chat's span said it queued 250 ms; the others said nothing. No capacity is measured yet.
    assert {f["key"]: f["mean_queue_ms"] for f in fragments} == {
        "agent:triage": None, "llm:gpt-4o": pytest.approx(250.0), "tool:search": None}
    assert all(f["capacity_per_replica"] == {} for f in fragments)
    # The agent called the tool 3 times in its one visit: 3 calls per parent call.
    calls = {(by_id[e["parent_id"]]["key"], by_id[e["child_id"]]["key"]): e["calls_per_parent_call"] for e in edges}
    assert calls == {("agent:triage", "llm:gpt-4o"): 1.0, ("agent:triage", "tool:search"): 3.0}


def fan_out(provider: TracerProvider, searches: int, at_ns: int) -> None:
    """An agent visit that chats, then runs `searches` tool calls at once (explicit times, as a fan-out has)."""
    tracer = provider.get_tracer("test-agent")
    ms = 1_000_000
    agent = tracer.start_span("invoke_agent triage", start_time=at_ns, attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"})
    inside = trace.set_span_in_context(agent)
    chat = tracer.start_span("chat gpt-4o", context=inside, start_time=at_ns + ms, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"})
    chat.end(end_time=at_ns + 200 * ms)
    for i in range(searches):
        search = tracer.start_span("execute_tool search", context=inside, start_time=at_ns + (200 + i) * ms,
                                   attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"})
        search.end(end_time=at_ns + 300 * ms)
    agent.end(end_time=at_ns + 310 * ms)


def test_fanned_out_calls_read_as_concurrent_with_their_p99_per_visit(
    engine, settings, ingest, receiver_url, admin_token, scoped_token
):
    recorded = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    fan_out(provider, searches=3, at_ns=time.time_ns())
    fan_out(provider, searches=2, at_ns=time.time_ns() + 10**9)
    exporter = OTLPSpanExporter(endpoint=receiver_url, headers={"authorization": f"Bearer {admin_token}"})
    assert exporter.export(recorded.get_finished_spans()) == SpanExportResult.SUCCESS
    exporter.shutdown()
    ingest.flush()

    with TestClient(create_app(engine, settings)) as api:
        headers = {"Authorization": f"Bearer {admin_token}"}
        workload = api.get("/api/v1/workloads", headers=headers).json()["items"][0]
        keys = {f["id"]: f["key"] for f in api.get(f"/api/v1/workloads/{workload['id']}/fragments",
                                                   headers=headers).json()["items"]}
        edges = api.get(f"/api/v1/workloads/{workload['id']}/edges", headers=headers).json()["items"]
        graph = api.get(f"/api/v1/workloads/{workload['id']}/graph", headers=headers).json()["edges"]
        other_tenant = api.get(f"/api/v1/workloads/{workload['id']}/edges",
                               headers={"Authorization": f"Bearer {scoped_token}"})
    read = {(keys[e["parent_id"]], keys[e["child_id"]]): (e["concurrent"], e["calls_p99"]) for e in edges}
    # Searches overlap one another, never the chat that ended as they began. Of the two visits, one
    # searched three times, one twice: the p99 visit (rank ceil(0.99 x 2) = 2) searched three times.
    assert read == {("agent:triage", "llm:gpt-4o"): (False, 1.0), ("agent:triage", "tool:search"): (True, 3.0)}
    assert {(keys[e["parent_id"]], keys[e["child_id"]]): (e["concurrent"], e["calls_p99"]) for e in graph} == read
    assert other_tenant.status_code == 404
