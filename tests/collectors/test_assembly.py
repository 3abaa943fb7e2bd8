"""Trace assembly: fragments are stable across visits, edges count calls, roots become requests."""

from datetime import UTC, datetime

import pytest

from collectors.assembly import WorkloadName, assemble, ns_to_datetime
from collectors.normalise import normalise_request
from tests.collectors.otlp_builders import T0_NS, agent_loop, make_request, make_span

BOT = WorkloadName("default", "support-bot")
NOON = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def records(spans, resource=None):
    return normalise_request(make_request(spans, resource)).records


def test_agent_calling_a_tool_n_times_is_one_fragment_with_n_visits_and_one_edge():
    batch = assemble(records(agent_loop(tool_calls=4)))

    assert [f.key for f in batch.fragments] == ["agent:triage", "llm:gpt-4o", "tool:search"]
    tool = next(v for v in batch.visits if v.key == "tool:search")
    assert (tool.visits, tool.latency_ms_sum) == (4, 4 * 40.0)
    assert {(e.parent_key, e.child_key): e.calls for e in batch.edges} == {
        ("agent:triage", "llm:gpt-4o"): 1,
        ("agent:triage", "tool:search"): 4,
    }
    assert all(e.workload == BOT for e in batch.edges)
    assert batch.orphan_spans == 0


def test_each_root_span_is_one_request_with_its_traces_tokens():
    batch = assemble(records(agent_loop(trace=1) + agent_loop(trace=2, tool_calls=1)))

    assert len(batch.requests) == 2
    # Each trace: one chat of 100 input + 20 output tokens; the root lasts 500 ms.
    assert [(r.workload, r.minute, r.duration_ms, r.tokens) for r in batch.requests] == [(BOT, NOON, 500.0, 120)] * 2


def test_traces_merge_into_the_same_fragments_and_edges():
    batch = assemble(records(agent_loop(trace=1, tool_calls=2) + agent_loop(trace=2, tool_calls=3)))

    assert len(batch.fragments) == 3
    assert {(e.parent_key, e.child_key): e.calls for e in batch.edges}[("agent:triage", "tool:search")] == 5


def test_a_span_whose_parent_is_in_another_batch_is_a_visit_without_an_edge():
    # First cut: no window across batches, so the tool span's parent (span 1) is unknown here.
    batch = assemble(records([make_span("execute_tool", span=5, parent=1, attrs={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"})]))

    assert [(v.key, v.visits) for v in batch.visits] == [("tool:search", 1)]
    assert batch.edges == () and batch.requests == ()
    assert batch.orphan_spans == 1


def test_visits_are_split_by_device_class_and_by_minute_of_span_end():
    spans = [
        make_span("chat", span=1, attrs={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                         "heteroplane.device_class": "h100", "gen_ai.usage.output_tokens": 5}),
        make_span("chat", span=2, attrs={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                         "heteroplane.device_class": "l4", "gen_ai.usage.output_tokens": 7}),
        # Starts at 12:00:59.990 and ends at 12:01:00.010: it belongs to the minute it ends in.
        make_span("chat", span=3, start_ms=59_990, duration_ms=20, attrs={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "heteroplane.device_class": "l4"}),
    ]
    visits = {(v.device_class, v.minute): (v.visits, v.tokens_out) for v in assemble(records(spans)).visits}
    assert visits == {
        ("h100", NOON): (1, 5),
        ("l4", NOON): (1, 7),
        ("l4", datetime(2026, 1, 1, 12, 1, tzinfo=UTC)): (1, 0),
    }


def test_calls_across_workloads_are_not_edges():
    root = make_request([make_span("handle", span=1)], {"service.name": "frontend"})
    child = make_request([make_span("lookup", span=2, parent=1)], {"service.name": "backend"})
    root.resource_spans.extend(child.resource_spans)
    batch = assemble(normalise_request(root).records)

    assert batch.edges == ()
    assert batch.cross_workload_calls == 1
    assert {f.workload.workload for f in batch.fragments} == {"frontend", "backend"}


def test_fragment_sightings_span_the_batch():
    batch = assemble(records(agent_loop(tool_calls=3)))
    tool = next(f for f in batch.fragments if f.key == "tool:search")
    # Tool calls start at 210, 260, 310 ms and last 40 ms.
    assert tool.first_seen == datetime(2026, 1, 1, 12, 0, 0, 210_000, tzinfo=UTC)
    assert tool.last_seen == datetime(2026, 1, 1, 12, 0, 0, 350_000, tzinfo=UTC)


def test_span_times_are_aware_utc_datetimes():
    assert ns_to_datetime(T0_NS + 1_500_999) == datetime(2026, 1, 1, 12, 0, 0, 1_500, tzinfo=UTC)


def test_empty_batch():
    batch = assemble([])
    assert batch.empty and batch.requests == ()


def test_queue_time_sums_over_the_visits_that_report_it():
    spans = [make_span("chat", span=i + 1, start_ms=10 * i, duration_ms=500, attrs={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
        **({"gen_ai.latency.time_in_queue": 0.1 * i} if i else {})}) for i in range(3)]

    (chat,) = assemble(records(spans)).visits

    assert (chat.visits, chat.queue_visits, chat.queue_ms_sum) == (3, 2, pytest.approx(300.0))
