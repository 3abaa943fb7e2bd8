"""The normaliser: which span attributes make which fragment, and where tenant, workload and device come from."""

import pytest

from collectors.normalise import InvalidSpan, normalise_request, normalise_span, sanitise_name
from controlplane.models import FragmentKind
from tests.collectors.otlp_builders import T0_NS, make_request, make_span, span_id, trace_id

CASES = [
    # (case, span name, span attributes, kind, fragment key, model, tokens in, tokens out)
    ("chat, new token names", "chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
     "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30},
     FragmentKind.llm, "llm:gpt-4o", "gpt-4o", 120, 30),
    ("chat, older token names", "chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "llama-3-70b",
     "gen_ai.usage.prompt_tokens": 7, "gen_ai.usage.completion_tokens": 3},
     FragmentKind.llm, "llm:llama-3-70b", "llama-3-70b", 7, 3),
    ("token counts sent as strings", "chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
     "gen_ai.usage.input_tokens": "12", "gen_ai.usage.output_tokens": "x"},
     FragmentKind.llm, "llm:m", "m", 12, 0),
    ("text completion names the response model", "complete", {"gen_ai.operation.name": "text_completion",
     "gen_ai.response.model": "mistral-7b"}, FragmentKind.llm, "llm:mistral-7b", "mistral-7b", 0, 0),
    ("generate_content without a model", "gen", {"gen_ai.operation.name": "generate_content"},
     FragmentKind.llm, "llm:gen", "", 0, 0),
    ("embeddings", "embed", {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "bge-m3",
     "gen_ai.usage.input_tokens": 64}, FragmentKind.embedding, "embedding:bge-m3", "bge-m3", 64, 0),
    ("rerank", "rerank", {"gen_ai.operation.name": "rerank", "gen_ai.request.model": "bge-reranker"},
     FragmentKind.rerank, "rerank:bge-reranker", "bge-reranker", 0, 0),
    ("tool", "execute_tool search", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "web_search"},
     FragmentKind.tool, "tool:web_search", "", 0, 0),
    ("agent", "invoke_agent", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage",
     "gen_ai.request.model": "gpt-4o"}, FragmentKind.agent, "agent:triage", "gpt-4o", 0, 0),
    ("create_agent", "create", {"gen_ai.operation.name": "create_agent", "gen_ai.agent.name": "triage"},
     FragmentKind.agent, "agent:triage", "", 0, 0),
    ("retrieval names its data source", "retrieve", {"gen_ai.operation.name": "retrieval",
     "gen_ai.data_source.id": "kb-docs"}, FragmentKind.retrieval, "retrieval:kb-docs", "", 0, 0),
    ("retrieval without a data source", "vector lookup", {"gen_ai.operation.name": "retrieval"},
     FragmentKind.retrieval, "retrieval:vector lookup", "", 0, 0),
    ("db.system", "SELECT orders", {"db.system": "postgresql", "db.statement": "SELECT 1"},
     FragmentKind.db, "db:postgresql", "", 0, 0),
    ("db.system.name (semconv >= 1.26)", "GET", {"db.system.name": "redis"}, FragmentKind.db, "db:redis", "", 0, 0),
    ("plain span is CPU glue", "parse_request", {"http.method": "POST"},
     FragmentKind.cpu, "cpu:parse_request", "", 0, 0),
    ("unknown GenAI operation is CPU glue", "weird", {"gen_ai.operation.name": "telepathy"},
     FragmentKind.cpu, "cpu:weird", "", 0, 0),
]


@pytest.mark.parametrize(
    ("span_name", "attrs", "kind", "key", "model", "tokens_in", "tokens_out"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_span_attributes_decide_the_fragment(span_name, attrs, kind, key, model, tokens_in, tokens_out):
    record = normalise_span(make_span(span_name, span=1, attrs=attrs), {})
    assert (record.kind, record.key, record.model) == (kind, key, model)
    assert record.key == f"{record.kind.value}:{record.name}"
    assert (record.tokens_in, record.tokens_out) == (tokens_in, tokens_out)


def test_ids_times_and_duration():
    record = normalise_span(make_span("x", trace=7, span=2, parent=1, start_ms=5, duration_ms=12.5), {})
    assert record.trace_id == trace_id(7).hex() and len(record.trace_id) == 32
    assert record.span_id == span_id(2).hex()
    assert record.parent_span_id == span_id(1).hex()
    assert record.start_ns == T0_NS + 5_000_000
    assert record.duration_ms == 12.5
    assert normalise_span(make_span("root", span=1), {}).parent_span_id is None


def test_end_before_start_counts_as_zero_duration():
    span = make_span("x", span=1)
    span.end_time_unix_nano = span.start_time_unix_nano - 1
    assert normalise_span(span, {}).duration_ms == 0


@pytest.mark.parametrize(
    ("resource", "tenant", "workload"),
    [
        ({"heteroplane.tenant": "acme", "heteroplane.workload": "support-bot", "service.name": "ignored"},
         "acme", "support-bot"),
        ({"service.namespace": "Acme Corp", "service.name": "Support_Bot.v2"}, "acme-corp", "support-bot-v2"),
        ({}, "default", "unknown"),
        ({"service.name": "!!!"}, "default", "unknown"),
    ],
)
def test_tenant_and_workload_come_from_the_resource(resource, tenant, workload):
    record = normalise_span(make_span("x", span=1), resource)
    assert (record.tenant, record.workload) == (tenant, workload)


def test_names_are_sanitised_to_dns_labels():
    assert sanitise_name("--My  App__v2--", "x") == "my-app-v2"
    long = sanitise_name("a" * 62 + "-b" * 10, "x")
    assert len(long) <= 63 and not long.endswith("-")
    assert sanitise_name("", "fallback") == "fallback"


def test_device_class_from_span_then_resource_else_empty():
    on_span = make_span("x", span=1, attrs={"heteroplane.device_class": "h100"})
    assert normalise_span(on_span, {"heteroplane.device_class": "l4"}).device_class == "h100"
    assert normalise_span(make_span("x", span=1), {"heteroplane.device_class": "l4"}).device_class == "l4"
    assert normalise_span(make_span("x", span=1), {}).device_class == ""


def test_long_names_keep_the_key_within_its_column():
    record = normalise_span(make_span("x", span=1, attrs={"gen_ai.operation.name": "execute_tool",
                                                            "gen_ai.tool.name": "t" * 500}), {})
    assert len(record.key) == 200 and record.key == f"tool:{record.name}"


@pytest.mark.parametrize("field", ["trace_id", "span_id"])
def test_spans_with_missing_ids_are_invalid(field):
    span = make_span("x", span=1)
    setattr(span, field, b"")
    with pytest.raises(InvalidSpan, match=field):
        normalise_span(span, {})


def test_request_counts_rejected_spans_and_keeps_the_rest():
    bad = make_span("bad", span=2)
    bad.trace_id = bytes(16)
    result = normalise_request(make_request([make_span("good", span=1), bad], {"service.name": "app"}))
    assert [r.name for r in result.records] == ["good"]
    assert result.rejected == 1 and "trace_id" in result.error
    assert result.records[0].workload == "app"
