"""The normaliser: ids, times, tenant, workload, device, bytes, and that no span attribute can crash it.

Which attributes make which fragment, dialect by dialect, is in test_dialects.py.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

from collectors.normalise import (
    _KNOWN_ATTRS,
    COUNT_MAX,
    KEY_MAX,
    MODEL_MAX,
    InvalidSpan,
    SpanRecord,
    normalise_request,
    normalise_span,
    sanitise_name,
)
from tests.collectors.otlp_builders import T0_NS, key_values, make_request, make_span, span_id, trace_id


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
        (
            {"heteroplane.tenant": "acme", "heteroplane.workload": "support-bot", "service.name": "ignored"},
            "acme",
            "support-bot",
        ),
        ({"service.namespace": "Acme Corp", "service.name": "Support_Bot.v2"}, "acme-corp", "support-bot-v2"),
        ({}, "default", "unknown"),
        ({"service.name": "!!!"}, "default", "unknown"),
    ],
)
def test_tenant_and_workload_come_from_the_resource(resource, tenant, workload):
    record = normalise_span(make_span("x", span=1), resource)
    assert (record.tenant, record.workload) == (tenant, workload)


def test_each_resource_names_its_own_spans():
    request = make_request([make_span("a", span=1)], {"heteroplane.tenant": "acme", "service.name": "bot"})
    other = request.resource_spans.add()
    other.resource.attributes.extend(key_values({"service.name": "indexer", "heteroplane.device_class": "L4"}))
    other.scope_spans.add().spans.append(make_span("b", span=2))
    records = normalise_request(request).records
    assert [(r.tenant, r.workload, r.device_class) for r in records] == [
        ("acme", "bot", ""),
        ("default", "indexer", "L4"),
    ]


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


def test_array_attributes_are_ignored():
    span = make_span("chat", span=1, attrs={"gen_ai.operation.name": "chat"})
    array = AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="gpt-4o")]))
    span.attributes.append(KeyValue(key="gen_ai.request.model", value=array))
    record = normalise_span(span, {})
    assert (record.key, record.model) == ("llm:chat", "")


def test_long_names_keep_the_key_within_its_column():
    record = normalise_span(
        make_span("x", span=1, attrs={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t" * 500}), {}
    )
    assert len(record.key) == 200 and record.key == f"tool:{record.name}"


def test_nul_characters_never_reach_a_stored_name():
    # PostgreSQL text holds no NUL: one in a tool, model or span name failed every flush that carried it,
    # and the pipeline retried that flush for ever, so no tenant's spans were stored any more.
    tool = make_span("execute_tool x\x00", span=1, attrs={"gen_ai.operation.name": "execute_tool",
                                                           "gen_ai.tool.name": "grep\x00 -r", "heteroplane.device_class": "h1\x0000"})
    chat = make_span("chat\x00", span=2, attrs={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt\x00-4o"})
    plain = make_span("\x00work\x00", span=3)
    records = [normalise_span(span, {}) for span in (tool, chat, plain)]
    assert [(r.key, r.model, r.device_class) for r in records] == [
        ("tool:grep -r", "", "h100"), ("llm:gpt-4o", "gpt-4o", ""), ("cpu:work", "", "")]


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


# (case, attributes, bytes)
BYTES = [
    (
        "HTTP request and response bodies",
        {"http.request.method": "POST", "http.request.body.size": 1200, "http.response.body.size": 800},
        2000,
    ),
    (
        "older HTTP content lengths",
        {"http.method": "POST", "http.request_content_length": 100, "http.response_content_length": "50"},
        150,
    ),
    ("current names win over older ones", {"http.request.body.size": 10, "http.request_content_length": 999}, 10),
    ("a message body", {"messaging.system": "kafka", "messaging.message.body.size": 4096}, 4096),
    ("heteroplane.bytes says it all", {"heteroplane.bytes": 7, "http.request.body.size": 1200}, 7),
    ("unknown", {"gen_ai.operation.name": "chat"}, 0),
    ("junk and negative values count 0", {"http.request.body.size": "big", "http.response.body.size": -3}, 0),
    ("absurdly large is capped", {"http.request.body.size": 2**62, "http.response.body.size": 2**62}, COUNT_MAX),
]


@pytest.mark.parametrize(("attrs", "moved"), [row[1:] for row in BYTES], ids=[row[0] for row in BYTES])
def test_bytes_moved_on_the_call(attrs, moved):
    assert normalise_span(make_span("call", span=1, attrs=attrs), {}).bytes == moved


QUEUE = [
    ("vLLM's seconds in milliseconds", {"gen_ai.latency.time_in_queue": 0.125}, 125.0),
    ("an int and a numeric string", {"gen_ai.latency.time_in_queue": "2"}, 2000.0),
    ("no wait is a wait of 0", {"gen_ai.latency.time_in_queue": 0}, 0.0),
    ("not said", {"gen_ai.operation.name": "chat"}, None),
    ("negative", {"gen_ai.latency.time_in_queue": -0.5}, None),
    ("not a number", {"gen_ai.latency.time_in_queue": "soon"}, None),
    ("NaN", {"gen_ai.latency.time_in_queue": float("nan")}, None),
    ("infinite", {"gen_ai.latency.time_in_queue": float("inf")}, None),
    ("a bool", {"gen_ai.latency.time_in_queue": True}, None),
    # The span lasts 3 s: a request waits inside its span, so a longer wait is the span's duration.
    ("longer than the span", {"gen_ai.latency.time_in_queue": 4}, 3000.0),
    ("1e306 s, Inf in milliseconds", {"gen_ai.latency.time_in_queue": 1e306}, 3000.0),
    ("the largest double", {"gen_ai.latency.time_in_queue": "1.7976931348623157e308"}, 3000.0),
]


@pytest.mark.parametrize(("attrs", "queue_ms"), [row[1:] for row in QUEUE], ids=[row[0] for row in QUEUE])
def test_queue_time_before_the_model_server_ran_the_visit(attrs, queue_ms):
    assert normalise_span(make_span("chat", span=1, duration_ms=3000, attrs=attrs), {}).queue_ms == queue_ms


def test_rpc_bytes_from_message_events():
    span = make_span("inventory.Stock/Reserve", span=1, attrs={"rpc.system": "grpc"})
    for name, attrs in [
        (
            "message",
            {"rpc.message.type": "SENT", "rpc.message.uncompressed_size": 100, "rpc.message.compressed_size": 60},
        ),
        ("message", {"rpc.message.type": "RECEIVED", "rpc.message.compressed_size": 40}),
        ("exception", {"rpc.message.uncompressed_size": 5000}),  # not a message event
    ]:
        span.events.add(name=name, time_unix_nano=T0_NS).attributes.extend(key_values(attrs))
    assert normalise_span(span, {}).bytes == 140


# Attribute maps drawn from the names the normaliser reads, with values of any type OTLP allows.
_values = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["chat", "LLM", "tool", "workflow", "embedding", "12", "1e400", "nan", "-inf", " ", ""]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
_attribute_maps = st.dictionaries(st.sampled_from(sorted(_KNOWN_ATTRS)) | st.text(max_size=20), _values, max_size=16)


@settings(max_examples=400, deadline=None)
@given(
    attrs=_attribute_maps,
    name=st.text(max_size=300),
    kind=st.integers(min_value=0, max_value=6),
    ids=st.tuples(st.binary(min_size=15, max_size=17), st.binary(min_size=7, max_size=9)),
    event_attrs=st.lists(_attribute_maps, max_size=2),
)
def test_no_attribute_map_breaks_the_normaliser(attrs, name, kind, ids, event_attrs):
    span = make_span(name, span=1, attrs=attrs)
    span.kind, span.trace_id, span.span_id = kind, *ids
    for event in event_attrs:
        span.events.add(name="message").attributes.extend(key_values(event))
    try:
        record = normalise_span(span, attrs)
    except InvalidSpan:
        return
    assert isinstance(record, SpanRecord)
    assert record.name and record.key == f"{record.kind.value}:{record.name}" and len(record.key) <= KEY_MAX
    assert len(record.model) <= MODEL_MAX
    assert all(0 <= n <= COUNT_MAX for n in (record.tokens_in, record.tokens_out, record.bytes))
