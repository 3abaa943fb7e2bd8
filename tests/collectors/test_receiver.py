"""The OTLP/HTTP trace receiver as an exporter sees it: status codes, response bodies, and what ends up stored.

The receiver queues batches on the `ingest` fixture (no worker); `stored_graph` flushes it first.
"""

import gzip
import json

import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, func, select

import controlplane.auth
from collectors.pipeline import Ingest
from collectors.receiver import create_receiver_app
from controlplane.auth import otlp_authoriser
from controlplane.collected import database_sink
from controlplane.models import Edge, Fragment, FragmentProfile, Tenant, Workload
from tests.collectors.otlp_builders import agent_loop, make_request, make_span, span_id, to_otlp_json, trace_id

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def post(client, body: bytes, token: str | None, content_type: str = PROTOBUF, **headers: str):
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/v1/traces", content=body, headers={"Content-Type": content_type, **headers})


def stored_graph(engine, ingest) -> tuple[set[str], int]:
    """The fragment keys stored and the total of edge calls, once what the receiver queued is written."""
    ingest.flush()
    with Session(engine) as session:
        keys = set(session.exec(select(Fragment.key)))
        calls = session.exec(select(func.coalesce(func.sum(Edge.calls), 0))).one()
    return keys, calls


AGENT_KEYS = {"agent:triage", "llm:gpt-4o", "tool:search"}


def test_protobuf_export_is_stored(client, engine, ingest, admin_token):
    response = post(client, make_request(agent_loop(tool_calls=3)).SerializeToString(), admin_token)

    assert response.status_code == 200
    assert response.headers["content-type"] == PROTOBUF
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert not parsed.HasField("partial_success")
    # agent -> llm once, agent -> tool three times.
    assert stored_graph(engine, ingest) == (AGENT_KEYS, 4)


def test_json_export_with_hex_ids_is_stored(client, engine, ingest, admin_token):
    body = to_otlp_json(make_request(agent_loop(tool_calls=2)))
    assert b'"traceId": "00000000000000000000000000000001"' in body

    response = post(client, body, admin_token, JSON)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON
    assert response.json() == {}
    # Edges exist only if parent ids were decoded from hex to the same bytes as span ids.
    assert stored_graph(engine, ingest) == (AGENT_KEYS, 3)


def test_json_with_snake_case_names_and_unknown_fields(client, engine, ingest, admin_token):
    body = b"""{"resource_spans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "bot"}}]},
      "scope_spans": [{"spans": [{"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
        "name": "parse", "startTimeUnixNano": "1767268800000000000", "endTimeUnixNano": "1767268800005000000",
        "kind": 1, "futureField": true}]}]}]}"""

    assert post(client, body, admin_token, JSON).status_code == 200
    assert stored_graph(engine, ingest) == ({"cpu:parse"}, 0)


def test_gzip_body_is_decompressed(client, engine, ingest, admin_token):
    body = gzip.compress(make_request(agent_loop()).SerializeToString())

    response = post(client, body, admin_token, **{"Content-Encoding": "gzip"})

    assert response.status_code == 200
    assert stored_graph(engine, ingest)[0] == AGENT_KEYS


def test_invalid_spans_are_reported_as_partial_success(client, engine, ingest, admin_token):
    bad = make_span("bad", span=2)
    bad.span_id = b"\x01\x02"
    response = post(client, make_request([make_span("good", span=1), bad]).SerializeToString(), admin_token)

    assert response.status_code == 200
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert parsed.partial_success.rejected_spans == 1
    assert "span_id" in parsed.partial_success.error_message
    assert stored_graph(engine, ingest)[0] == {"cpu:good"}


@pytest.mark.parametrize(
    ("content_type", "extra_headers"),
    [("text/plain", {}), ("application/protobuf-but-not", {}), (PROTOBUF, {"Content-Encoding": "br"})],
)
def test_unsupported_content_is_415(client, admin_token, content_type, extra_headers):
    response = post(client, make_request(agent_loop()).SerializeToString(), admin_token, content_type, **extra_headers)
    assert response.status_code == 415


@pytest.mark.parametrize(
    ("content_type", "body", "headers"),
    [
        (PROTOBUF, b"\xff\xfe garbage \x00\x01", {}),
        (JSON, b"{not json", {}),
        (JSON, b'{"resourceSpans": "nope"}', {}),
        (JSON, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', {}),
        (PROTOBUF, b"\x1f\x8b not really gzip", {"Content-Encoding": "gzip"}),
        (PROTOBUF, gzip.compress(b"x" * 100)[:-6], {"Content-Encoding": "gzip"}),
    ],
    ids=["protobuf-garbage", "json-syntax", "json-shape", "json-bad-hex-id", "gzip-garbage", "gzip-truncated"],
)
def test_malformed_bodies_are_400_with_a_status_body(client, engine, ingest, admin_token, content_type, body, headers):
    response = post(client, body, admin_token, content_type, **headers)

    assert response.status_code == 400
    if content_type == JSON:
        assert json_format.Parse(response.content, Status()).message
    else:
        assert Status.FromString(response.content).message
    assert stored_graph(engine, ingest) == (set(), 0)


def test_body_over_the_limit_is_413(client, settings, admin_token):
    spans = [make_span("x" * 200, trace=t, span=1) for t in range(1, 2000)]
    body = make_request(spans).SerializeToString()
    assert len(body) > settings.otlp_max_body_bytes

    assert post(client, body, admin_token).status_code == 413


def test_gzip_bomb_is_413_not_inflated_in_full(client, settings, admin_token):
    body = gzip.compress(b"\x00" * (settings.otlp_max_body_bytes * 10))
    assert len(body) < settings.otlp_max_body_bytes

    assert post(client, body, admin_token, **{"Content-Encoding": "gzip"}).status_code == 413


@pytest.mark.parametrize("token", [None, "hp_not-a-real-token"], ids=["missing", "unknown"])
def test_without_a_valid_token_is_401(client, engine, ingest, token):
    response = post(client, make_request(agent_loop()).SerializeToString(), token)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert stored_graph(engine, ingest) == (set(), 0)


def test_viewer_token_is_403(client, engine, ingest, viewer_token):
    assert post(client, make_request(agent_loop()).SerializeToString(), viewer_token).status_code == 403
    assert stored_graph(engine, ingest) == (set(), 0)


def test_tenant_scoped_token_writes_into_its_own_tenant(client, engine, ingest, scoped_token, scoped_tenant):
    claims_other = {"heteroplane.tenant": "acme", "heteroplane.workload": "support-bot"}
    body = make_request(agent_loop(), claims_other).SerializeToString()

    assert post(client, body, scoped_token).status_code == 200

    ingest.flush()
    with Session(engine) as session:
        assert session.exec(select(Tenant.name)).all() == ["globex"]
        workload = session.exec(select(Workload)).one()
    assert (workload.name, workload.tenant_id) == ("support-bot", scoped_tenant.id)


def test_unavailable_token_store_is_503_with_retry_after(client, admin_token, monkeypatch):
    def locked(*args, **kwargs):
        raise OperationalError("SELECT ...", {}, Exception("database is locked"))

    monkeypatch.setattr(controlplane.auth, "authenticate", locked)  # the authoriser the receiver is handed
    response = post(client, make_request(agent_loop()).SerializeToString(), admin_token)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert Status.FromString(response.content).code == 14  # UNAVAILABLE: the exporter retries


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_full_ingest_queue_is_503_with_retry_after_and_nothing_queued(engine, settings, admin_token, content_type):
    full = Ingest(database_sink(engine), max_queued_batches=1)  # never started: nothing drains the queue
    request = make_request(agent_loop())
    body = request.SerializeToString() if content_type == PROTOBUF else to_otlp_json(request)
    with TestClient(create_receiver_app(otlp_authoriser(engine), full, settings.otlp_max_body_bytes)) as client:
        first = post(client, body, admin_token, content_type)
        second = post(client, body, admin_token, content_type)

    assert first.status_code == 200
    assert second.status_code == 503
    assert second.headers["retry-after"] == "1"
    assert second.headers["content-type"] == content_type
    assert "queue is full" in parse_status(second, content_type).message
    # Only the first batch was queued, so flushing writes its 5 visits once.
    full.flush()
    assert visits(engine) == 5


def test_the_app_owns_and_flushes_an_ingest_it_made(engine, settings, admin_token):
    with TestClient(create_receiver_app(otlp_authoriser(engine), Ingest(database_sink(engine)), settings.otlp_max_body_bytes,
                                         owns_ingest=True)) as client:
        assert post(client, make_request(agent_loop()).SerializeToString(), admin_token).status_code == 200
    # Leaving the app's lifespan stopped its ingest worker, which wrote what was queued.
    assert visits(engine) == 5


def test_healthz(client):
    assert client.get("/healthz").status_code == 200


def parse_status(response, content_type: str) -> Status:
    if content_type == JSON:
        return json_format.Parse(response.content, Status())
    return Status.FromString(response.content)


def visits(engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.coalesce(func.sum(FragmentProfile.visits), 0))).one()


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_errors_reply_in_the_request_content_type(client, admin_token, viewer_token, content_type):
    for token, body, status in [
        (admin_token, b"{]" if content_type == JSON else b"\xff\xff", 400),
        (None, b"", 401),
        (viewer_token, b"", 403),
    ]:
        response = post(client, body, token, content_type)
        assert response.status_code == status
        assert response.headers["content-type"] == content_type
        assert parse_status(response, content_type).message


def test_refused_content_type_replies_in_json(client, admin_token):
    response = post(client, b"hello", admin_token, "text/plain")

    assert response.status_code == 415
    assert response.headers["content-type"] == JSON
    assert "Content-Type" in parse_status(response, JSON).message


def test_content_type_parameters_are_ignored(client, engine, ingest, admin_token):
    body = to_otlp_json(make_request(agent_loop()))

    response = post(client, body, admin_token, "application/json; charset=utf-8")

    assert response.status_code == 200
    assert stored_graph(engine, ingest)[0] == AGENT_KEYS


def test_identity_content_encoding_is_accepted(client, admin_token):
    body = make_request(agent_loop()).SerializeToString()
    assert post(client, body, admin_token, **{"Content-Encoding": "identity"}).status_code == 200


def test_json_int64_as_numbers_or_strings_and_enums_as_integers_or_names(client, engine, ingest, admin_token):
    def span(n: int, times: tuple, kind) -> dict:
        return {
            "traceId": "0af7651916cd43dd8448eb211c80319c",
            "spanId": f"{n:016x}",
            "name": f"step{n}",
            "startTimeUnixNano": times[0],
            "endTimeUnixNano": times[1],
            "kind": kind,
            "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": times[0] and 7}}],
        }

    t0 = 1_767_268_800_000_000_000
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            span(1, (str(t0), str(t0 + 4_000_000)), 1),
                            span(2, (t0, t0 + 6_000_000), "SPAN_KIND_SERVER"),
                        ]
                    }
                ],
            }
        ]
    }

    response = post(client, json.dumps(document).encode(), admin_token, JSON)

    assert response.status_code == 200, response.text
    assert response.json() == {}
    ingest.flush()
    with Session(engine) as session:
        latency = dict(session.exec(select(Fragment.key, FragmentProfile.latency_ms_sum).join(Fragment)).all())
    assert latency == {"cpu:step1": pytest.approx(4.0), "cpu:step2": pytest.approx(6.0)}


def test_json_hex_ids_in_span_links_are_converted_and_bad_ones_dropped(client, engine, ingest, admin_token):
    request = make_request([make_span("a", span=1), make_span("b", span=2)])
    request.resource_spans[0].scope_spans[0].spans[0].links.add(trace_id=trace_id(9), span_id=span_id(9))
    document = json.loads(to_otlp_json(request))
    links = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["links"]
    assert links[0]["spanId"] == "0000000000000009"
    links.append({"traceId": "not-hex", "spanId": "also not hex"})  # unused by us: dropped, not a 400

    response = post(client, json.dumps(document).encode(), admin_token, JSON)

    assert response.status_code == 200, response.text
    assert stored_graph(engine, ingest)[0] == {"cpu:a", "cpu:b"}


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_partial_success_counts_in_both_content_types(client, engine, ingest, admin_token, content_type):
    spans = [make_span("good", span=1), make_span("bad", span=2), make_span("bad", span=3)]
    spans[1].trace_id = b""
    spans[2].span_id = b"\x00" * 8
    request = make_request(spans)
    body = request.SerializeToString() if content_type == PROTOBUF else to_otlp_json(request)

    response = post(client, body, admin_token, content_type)

    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    if content_type == JSON:
        parsed = json_format.Parse(response.content, ExportTraceServiceResponse())
    else:
        parsed = ExportTraceServiceResponse.FromString(response.content)
    assert parsed.partial_success.rejected_spans == 2
    assert parsed.partial_success.error_message
    assert stored_graph(engine, ingest)[0] == {"cpu:good"}


@pytest.mark.parametrize("depth", [200, 1_500])
def test_deeply_nested_json_attribute_is_400_not_500(client, engine, ingest, admin_token, depth):
    value = '{"intValue": "1"}'
    for _ in range(depth):
        value = '{"arrayValue": {"values": [' + value + "]}}"
    body = (
        '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0af7651916cd43dd8448eb211c80319c", '
        '"spanId": "b7ad6b7169203331", "name": "deep", "attributes": [{"key": "k", "value": ' + value + "}]}]}]}]}"
    ).encode()

    response = post(client, body, admin_token, JSON)

    assert response.status_code == 400
    assert parse_status(response, JSON).message
    assert stored_graph(engine, ingest) == (set(), 0)


def test_deeply_nested_protobuf_attribute_is_400_not_500(client, engine, ingest, admin_token):
    # Hand-encoded: the protobuf library itself refuses to build a message this deep.
    value = AnyValue(int_value=1).SerializeToString()
    for _ in range(500):
        value = field(5, field(1, value))  # AnyValue.array_value -> ArrayValue.values
    span = make_span("deep", span=1).SerializeToString() + field(9, field(1, b"k") + field(2, value))
    body = field(1, field(2, field(2, span)))  # request.resource_spans -> scope_spans -> spans

    response = post(client, body, admin_token)

    assert response.status_code == 400
    assert stored_graph(engine, ingest) == (set(), 0)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint((number << 3) | 2) + varint(len(payload)) + payload


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_empty_export_is_200(client, admin_token):
    response = post(client, b"", admin_token)
    assert response.status_code == 200
    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
