"""The OTLP/HTTP receiver as an exporter sees it: status codes, response bodies, and what ends up stored."""

import gzip

import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, func, select

from collectors import receiver
from controlplane.models import Edge, Fragment, Tenant, Workload
from tests.collectors.otlp_builders import agent_loop, make_request, make_span, to_otlp_json

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def post(client, body: bytes, token: str | None, content_type: str = PROTOBUF, **headers: str):
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/v1/traces", content=body, headers={"Content-Type": content_type, **headers})


def stored_graph(engine) -> tuple[set[str], int]:
    """The fragment keys stored and the total of edge calls."""
    with Session(engine) as session:
        keys = set(session.exec(select(Fragment.key)))
        calls = session.exec(select(func.coalesce(func.sum(Edge.calls), 0))).one()
    return keys, calls


AGENT_KEYS = {"agent:triage", "llm:gpt-4o", "tool:search"}


def test_protobuf_export_is_stored(client, engine, admin_token):
    response = post(client, make_request(agent_loop(tool_calls=3)).SerializeToString(), admin_token)

    assert response.status_code == 200
    assert response.headers["content-type"] == PROTOBUF
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert not parsed.HasField("partial_success")
    # agent -> llm once, agent -> tool three times.
    assert stored_graph(engine) == (AGENT_KEYS, 4)


def test_json_export_with_hex_ids_is_stored(client, engine, admin_token):
    body = to_otlp_json(make_request(agent_loop(tool_calls=2)))
    assert b'"traceId": "00000000000000000000000000000001"' in body

    response = post(client, body, admin_token, JSON)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON
    assert response.json() == {}
    # Edges exist only if parent ids were decoded from hex to the same bytes as span ids.
    assert stored_graph(engine) == (AGENT_KEYS, 3)


def test_json_with_snake_case_names_and_unknown_fields(client, engine, admin_token):
    body = b"""{"resource_spans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "bot"}}]},
      "scope_spans": [{"spans": [{"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
        "name": "parse", "startTimeUnixNano": "1767268800000000000", "endTimeUnixNano": "1767268800005000000",
        "kind": 1, "futureField": true}]}]}]}"""

    assert post(client, body, admin_token, JSON).status_code == 200
    assert stored_graph(engine) == ({"cpu:parse"}, 0)


def test_gzip_body_is_decompressed(client, engine, admin_token):
    body = gzip.compress(make_request(agent_loop()).SerializeToString())

    response = post(client, body, admin_token, **{"Content-Encoding": "gzip"})

    assert response.status_code == 200
    assert stored_graph(engine)[0] == AGENT_KEYS


def test_invalid_spans_are_reported_as_partial_success(client, engine, admin_token):
    bad = make_span("bad", span=2)
    bad.span_id = b"\x01\x02"
    response = post(client, make_request([make_span("good", span=1), bad]).SerializeToString(), admin_token)

    assert response.status_code == 200
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert parsed.partial_success.rejected_spans == 1
    assert "span_id" in parsed.partial_success.error_message
    assert stored_graph(engine)[0] == {"cpu:good"}


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
def test_malformed_bodies_are_400_with_a_status_body(client, engine, admin_token, content_type, body, headers):
    response = post(client, body, admin_token, content_type, **headers)

    assert response.status_code == 400
    if content_type == JSON:
        assert json_format.Parse(response.content, Status()).message
    else:
        assert Status.FromString(response.content).message
    assert stored_graph(engine) == (set(), 0)


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
def test_without_a_valid_token_is_401(client, engine, token):
    response = post(client, make_request(agent_loop()).SerializeToString(), token)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert stored_graph(engine) == (set(), 0)


def test_viewer_token_is_403(client, engine, viewer_token):
    assert post(client, make_request(agent_loop()).SerializeToString(), viewer_token).status_code == 403
    assert stored_graph(engine) == (set(), 0)


def test_tenant_scoped_token_writes_into_its_own_tenant(client, engine, scoped_token, scoped_tenant):
    claims_other = {"heteroplane.tenant": "acme", "heteroplane.workload": "support-bot"}
    body = make_request(agent_loop(), claims_other).SerializeToString()

    assert post(client, body, scoped_token).status_code == 200

    with Session(engine) as session:
        assert session.exec(select(Tenant.name)).all() == ["globex"]
        workload = session.exec(select(Workload)).one()
    assert (workload.name, workload.tenant_id) == ("support-bot", scoped_tenant.id)


def test_unavailable_database_is_503_with_retry_after(client, admin_token, monkeypatch):
    def locked(*args, **kwargs):
        raise OperationalError("INSERT ...", {}, Exception("database is locked"))

    monkeypatch.setattr(receiver, "store_batch", locked)
    response = post(client, make_request(agent_loop()).SerializeToString(), admin_token)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_healthz(client):
    assert client.get("/healthz").status_code == 200
