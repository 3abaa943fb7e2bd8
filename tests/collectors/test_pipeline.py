"""The ingest pipeline into the database: graphs and profiles, merged across collectors, read over the API."""

import random

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from collectors.normalise import normalise_request
from collectors.pipeline import Ingest
from controlplane import collected
from controlplane.app import create_app
from controlplane.auth import mint_token, otlp_authoriser
from controlplane.collected import database_sink
from controlplane.models import Edge, FragmentProfile, ProfileBucket, RequestStat, Role
from controlplane.settings import Settings
from tests.collectors.otlp_builders import agent_loop, make_request, make_span

RESOURCE = {"service.name": "support-bot", "heteroplane.tenant": "acme"}


def records(spans):
    return normalise_request(make_request(spans, RESOURCE)).records


def chat_calls(latencies_ms, trace0=1):
    """One single-span trace per latency: an LLM chat of 300 input and 40 output tokens."""
    return [
        make_span(
            "chat",
            trace=trace0 + i,
            span=1,
            duration_ms=ms,
            start_ms=i,
            attrs={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "llama-3.1-8b",
                "gen_ai.usage.input_tokens": 300,
                "gen_ai.usage.output_tokens": 40,
                "heteroplane.device_class": "L40S",
            },
        )
        for i, ms in enumerate(latencies_ms)
    ]


@pytest.fixture
def api(engine):
    with Session(engine) as session:
        _, token = mint_token(session, "reader", Role.viewer)
        session.commit()
    with TestClient(create_app(engine, Settings())) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def test_a_trace_split_over_batches_in_reverse_is_one_graph(engine, api):
    ingest = Ingest(database_sink(engine))
    spans = agent_loop(tool_calls=4)
    for span in reversed(spans):
        assert ingest.submit(records([span]))
        ingest.flush()  # each batch is written before the next arrives
    graph = api.get("/api/v1/workloads/1/graph").json()
    keys = {f["id"]: f["key"] for f in graph["fragments"]}
    assert {f["key"]: f["visits"] for f in graph["fragments"]} == {"agent:triage": 1, "llm:gpt-4o": 1, "tool:search": 4}
    assert {(keys[e["parent_id"]], keys[e["child_id"]]): e["calls_per_parent_call"] for e in graph["edges"]} == {
        ("agent:triage", "llm:gpt-4o"): 1.0,
        ("agent:triage", "tool:search"): 4.0,
    }


def test_profiles_report_rate_quantiles_and_token_histograms(engine, api):
    rng = random.Random(4)
    latencies = [rng.lognormvariate(5, 0.8) for _ in range(2000)]
    ingest = Ingest(database_sink(engine))
    ingest.submit(records(chat_calls(latencies)))
    ingest.flush()
    # 2,000 calls starting 1 ms apart from 12:00:00, so all of them end by 12:00:03: one minute.
    body = api.get("/api/v1/workloads/1/profiles?minutes=5&until=2026-01-01T12:03:00Z").json()
    profile = body["items"]
    assert len(profile) == 1 and profile[0]["device_class"] == "L40S" and profile[0]["visits"] == 2000
    ordered = sorted(latencies)
    for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        want = ordered[int(q * (len(ordered) - 1))]
        assert abs(profile[0]["latency_ms"][name] - want) <= 0.01 * want
    # 300 input tokens fall in [250, 500): bucket 3; 40 output tokens in [25, 100): bucket 1.
    assert profile[0]["tokens_in"] == {"edges": [0, 25, 100, 250, 500, 1000, 2000], "counts": [0, 0, 0, 2000, 0, 0, 0]}
    assert profile[0]["tokens_out"]["counts"] == [0, 2000, 0, 0, 0, 0, 0]
    assert profile[0]["mean_tokens_in"] == 300
    assert profile[0]["arrival_rate_rps"] == pytest.approx(2000 / 240)  # window 11:59:00 to 12:03:00


def _totals(engine):
    with Session(engine) as session:
        return (
            session.exec(select(func.sum(FragmentProfile.visits))).one(),
            session.exec(select(func.sum(FragmentProfile.latency_ms_sum))).one(),
            sorted(session.exec(select(Edge.calls)).all()),
            sorted(session.exec(select(ProfileBucket.series, ProfileBucket.bucket, ProfileBucket.count)).all()),
            session.exec(select(func.sum(RequestStat.requests))).one(),
        )


def test_two_receivers_on_one_database_add_up_to_the_same_totals_as_one(engine):
    from sqlmodel import SQLModel

    from collectors.receiver import create_receiver_app

    traces = [agent_loop(trace=t, tool_calls=t % 4) for t in range(1, 41)]
    bodies = [make_request(spans, RESOURCE).SerializeToString() for spans in traces]

    def send(receivers):
        """Each trace to one receiver, as an OTel Collector's load-balancing exporter keyed by trace id does."""
        with Session(engine) as session:
            _, token = mint_token(session, "sender", Role.operator)
            session.commit()
        headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {token}"}
        pipelines = [Ingest(database_sink(engine)) for _ in range(receivers)]
        clients = [TestClient(create_receiver_app(otlp_authoriser(engine), ingest, Settings().otlp_max_body_bytes)) for ingest in pipelines]
        for i, body in enumerate(bodies):
            assert clients[i % receivers].post("/v1/traces", content=body, headers=headers).status_code == 200
        for ingest in pipelines:
            ingest.flush()
        return _totals(engine)

    single = send(1)
    SQLModel.metadata.drop_all(engine)
    SQLModel.metadata.create_all(engine)
    assert send(2) == single
    assert single[0] == sum(len(spans) for spans in traces)


def test_a_failed_write_is_retried_once_and_loses_nothing(engine, monkeypatch):
    ingest = Ingest(database_sink(engine))
    real = collected.store_batch
    calls = []

    def flaky(session, batch, *limit):
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        real(session, batch, *limit)

    monkeypatch.setattr(collected, "store_batch", flaky)
    ingest.submit(records(agent_loop(tool_calls=2)))
    with pytest.raises(RuntimeError):
        ingest.flush()
    ingest.submit(records(agent_loop(trace=2, tool_calls=2)))
    ingest.flush()  # the first batch again, then the second
    with Session(engine) as session:
        assert session.exec(select(func.sum(FragmentProfile.visits))).one() == 2 * 4
    assert len(calls) == 3


def test_a_full_queue_refuses_instead_of_growing(engine):
    ingest = Ingest(database_sink(engine), max_queued_batches=2)
    assert ingest.submit(records(agent_loop(trace=1))) and ingest.submit(records(agent_loop(trace=2)))
    assert not ingest.submit(records(agent_loop(trace=3)))
    stats = ingest.stats()
    spans = len(records(agent_loop(trace=1)))
    assert (stats.refused_batches, stats.accepted_spans, stats.refused_spans) == (1, 2 * spans, spans)
    ingest.flush()
    assert ingest.submit(records(agent_loop(trace=3)))


def test_health_exposes_the_window_and_refusals(engine):
    from collectors.window import TraceWindow

    def waiting(trace):  # a tool span whose parent never arrives
        return make_span("execute_tool", trace=trace, span=5, parent=99, attrs={"gen_ai.operation.name": "execute_tool"})

    ingest = Ingest(database_sink(engine), max_queued_batches=1, window=TraceWindow(max_traces=1))
    ingest.submit(records([waiting(7)]))
    assert not ingest.submit(records([waiting(8)]))  # the one-batch queue is full
    ingest.flush()
    ingest.submit(records([waiting(8)]))
    ingest.flush()  # trace 8 opens, so trace 7 (one window slot) is evicted with its waiting span
    with TestClient(create_app(engine, Settings(), ingest)) as client:
        health = client.get("/api/v1/health").json()["ingest"]
    assert (health["refused_batches"], health["open_traces"], health["evicted_traces"], health["orphan_spans"]) == (1, 1, 1, 1)


AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"}
TOOL = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t"}


def under_api(trace, calls, at_once):
    """An API root (span 1) around an agent visit (span 2) that calls a tool `calls` times, at once or in turn."""
    return [
        make_span("api", trace=trace, span=1, duration_ms=1000),
        make_span("agent", trace=trace, span=2, parent=1, duration_ms=900, attrs=AGENT),
        *(make_span("tool", trace=trace, span=10 + i, parent=2, start_ms=10 if at_once else 10 + 40 * i,
                    duration_ms=40, attrs=TOOL) for i in range(calls)),
    ]


def agent_to_tool(engine):
    """The agent -> tool edge as stored: calls, calls overlapping a sibling, {calls made: parent visits}."""
    from controlplane.models import EdgeVisitCalls, Fragment

    with Session(engine) as session:
        keys = {f.key: f.id for f in session.exec(select(Fragment))}
        edge = session.exec(select(Edge).where(Edge.parent_id == keys["agent:a"], Edge.child_id == keys["tool:t"])).one()
        tallies = {row.calls: row.visits for row in session.exec(select(EdgeVisitCalls).where(EdgeVisitCalls.edge_id == edge.id))}
    return edge.calls, edge.calls_overlapping, tallies


def test_visit_tallies_add_up_across_flushes_and_collectors(engine):
    first, second = Ingest(database_sink(engine)), Ingest(database_sink(engine))
    first.submit(records(under_api(1, calls=2, at_once=True)))
    first.flush()
    second.submit(records(under_api(2, calls=3, at_once=False)))
    second.flush()
    assert agent_to_tool(engine) == (5, 2, {2: 1, 3: 1})

    # A visit's calls are stored with the flush that links them; its tally with the flush that closes its trace.
    spans = under_api(3, calls=2, at_once=True)
    first.submit(records(spans[1:]))
    first.flush()
    assert agent_to_tool(engine) == (7, 2, {2: 1, 3: 1})
    first.submit(records(spans[:1]))
    first.flush()
    assert agent_to_tool(engine) == (7, 4, {2: 2, 3: 1})


def test_an_idle_flush_stores_the_tallies_of_the_traces_it_evicts(engine):
    import time

    from collectors.window import TraceWindow

    ingest = Ingest(database_sink(engine), window=TraceWindow(idle_s=0.5))
    ingest.submit(records(under_api(1, calls=2, at_once=True)[1:]))  # the API root never arrives
    ingest.flush()
    assert agent_to_tool(engine) == (2, 0, {})
    time.sleep(0.6)
    ingest.flush()  # nothing new: the stale trace leaves the window, its visit tallied
    assert agent_to_tool(engine) == (2, 2, {2: 1})


def test_a_visit_that_failed_in_an_earlier_batch_than_its_root_fails_the_request(engine):
    """Spans are exported as they end, so a failed child usually arrives before its root."""
    ingest = Ingest(database_sink(engine))
    spans = agent_loop(trace=1, tool_calls=2) + agent_loop(trace=2, tool_calls=2)
    spans[-1].status.code = spans[-1].status.STATUS_CODE_ERROR  # trace 2's last tool call failed
    roots = [s for s in spans if not s.parent_span_id]
    for batch in ([s for s in spans if s.parent_span_id], roots):
        assert ingest.submit(records(batch))
        ingest.flush()
    with Session(engine) as session:
        stat = session.exec(select(RequestStat)).one()
    assert (stat.requests, stat.within_sla) == (2, 1)  # no SLA, so only the failed visit makes a miss
