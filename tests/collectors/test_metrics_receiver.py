"""`POST /v1/metrics` as an exporter sees it: GenAI histograms in, profile buckets stored, OTLP replies out."""

import gzip
import json

import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from sqlmodel import Session, func, select

from collectors.metrics_decode import (
    OPERATION_DURATION,
    TIME_PER_OUTPUT_TOKEN,
    TIME_TO_FIRST_TOKEN,
    TOKEN_USAGE,
)
from collectors.pipeline import Ingest
from collectors.receiver import create_receiver_app
from controlplane.auth import otlp_authoriser
from controlplane.collected import database_sink
from controlplane.models import Fragment, ProfileBucket, Tenant, Workload
from tests.collectors.otlp_builders import (
    CHAT,
    CUMULATIVE,
    exponential_point,
    histogram_metric,
    histogram_point,
    make_metrics_request,
    span_id,
    to_otlp_json,
    trace_id,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
RESOURCE = {"heteroplane.tenant": "acme", "service.name": "support-bot"}


def post(client, body: bytes, token: str | None, content_type: str = PROTOBUF, **headers: str):
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/v1/metrics", content=body, headers={"Content-Type": content_type, **headers})


def encode(request, content_type: str) -> bytes:
    return request.SerializeToString() if content_type == PROTOBUF else to_otlp_json(request)


def parse_reply(response, content_type: str, message):
    assert response.headers["content-type"] == content_type
    if content_type == JSON:
        return json_format.Parse(response.content, message)
    return type(message).FromString(response.content)


def stored_counts(engine, ingest) -> dict[tuple[str, str], int]:
    """Observations stored per (fragment key, series), once what the receiver queued is written."""
    ingest.flush()
    with Session(engine) as session:
        rows = session.exec(
            select(Fragment.key, ProfileBucket.series, func.sum(ProfileBucket.count))
            .join(Fragment, Fragment.id == ProfileBucket.fragment_id)
            .group_by(Fragment.key, ProfileBucket.series)
        ).all()
    return {(key, series): int(count) for key, series, count in rows}


def genai_request():
    return make_metrics_request([
        histogram_metric(TOKEN_USAGE, [
            histogram_point([25, 100], [1, 2, 3], {**CHAT, "gen_ai.token.type": "input"}),
            histogram_point([25, 100], [0, 4, 0], {**CHAT, "gen_ai.token.type": "output"}),
        ], unit="{token}"),
        histogram_metric(OPERATION_DURATION, [histogram_point([0.5, 1.0], [1, 1, 1])]),
        histogram_metric(TIME_TO_FIRST_TOKEN, [exponential_point(2, -8, [1, 1])]),
        histogram_metric(TIME_PER_OUTPUT_TOKEN, [histogram_point([0.01, 0.05], [0, 5, 0])]),
        histogram_metric("process.cpu.time", [histogram_point([1.0], [9, 9])]),  # not ours: ignored
    ], RESOURCE)


GENAI_COUNTS = {
    ("llm:gpt-4o", "tokens_in"): 6,
    ("llm:gpt-4o", "tokens_out"): 4,
    ("llm:gpt-4o", "latency_ms"): 3,
    ("llm:gpt-4o", "ttft_ms"): 2,
    ("llm:gpt-4o", "tpot_ms"): 5,
}


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_genai_histograms_feed_the_profiles(client, engine, ingest, admin_token, content_type):
    response = post(client, encode(genai_request(), content_type), admin_token, content_type)

    assert response.status_code == 200, response.text
    assert not parse_reply(response, content_type, ExportMetricsServiceResponse()).HasField("partial_success")
    assert stored_counts(engine, ingest) == GENAI_COUNTS
    with Session(engine) as session:
        assert session.exec(select(Workload.name).join(Tenant).where(Tenant.name == "acme")).one() == "support-bot"


def test_gzip_metrics(client, engine, ingest, admin_token):
    body = gzip.compress(genai_request().SerializeToString())
    assert post(client, body, admin_token, **{"Content-Encoding": "gzip"}).status_code == 200
    assert stored_counts(engine, ingest) == GENAI_COUNTS


def test_json_int64_as_strings_or_numbers_enums_as_integers_or_names_and_exemplar_ids(
    client, engine, ingest, admin_token
):
    t0 = 1_767_268_800_000_000_000

    def metric(name: str, temporality, count, bucket_counts) -> dict:
        return {"name": name, "unit": "s", "futureField": {"x": 1}, "histogram": {
            "aggregationTemporality": temporality,
            "dataPoints": [{
                "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                               {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}}],
                "startTimeUnixNano": str(t0), "timeUnixNano": t0 + 60 * 10**9,
                "count": count, "explicitBounds": [0.5, 1.0], "bucketCounts": bucket_counts,
                "exemplars": [
                    {"timeUnixNano": str(t0), "asDouble": 0.2, "traceId": "0af7651916cd43dd8448eb211c80319c",
                     "spanId": "b7ad6b7169203331"},
                    {"timeUnixNano": str(t0), "asDouble": 0.3, "traceId": "not hex", "spanId": ""},
                ],
            }],
        }}

    document = {"resourceMetrics": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "bot"}}]}, "scopeMetrics": [{"metrics": [
            metric(OPERATION_DURATION, 1, "3", ["1", "1", "1"]),
            metric(TIME_TO_FIRST_TOKEN, "AGGREGATION_TEMPORALITY_DELTA", 2, [2, 0, 0]),
        ]}]}]}

    response = post(client, json.dumps(document).encode(), admin_token, JSON)

    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert stored_counts(engine, ingest) == {("llm:gpt-4o", "latency_ms"): 3, ("llm:gpt-4o", "ttft_ms"): 2}


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_invalid_points_are_partial_success_and_the_rest_stored(client, engine, ingest, admin_token, content_type):
    request = make_metrics_request([histogram_metric(OPERATION_DURATION, [
        histogram_point([0.5, 1.0], [1, 1]),  # one bucket count short
        histogram_point([0.5, 1.0], [2, 0, 0]),
        histogram_point([1.0, 0.5], [1, 1, 1]),  # bounds out of order
    ])])

    response = post(client, encode(request, content_type), admin_token, content_type)

    assert response.status_code == 200
    partial = parse_reply(response, content_type, ExportMetricsServiceResponse()).partial_success
    assert partial.rejected_data_points == 2
    assert "bucket_counts has 2 entries" in partial.error_message
    assert stored_counts(engine, ingest) == {("llm:gpt-4o", "latency_ms"): 2}


def test_cumulative_stream_stores_its_growth(client, engine, ingest, admin_token):
    def export(counts, end_ms):
        point = histogram_point([1.0], counts, end_ms=end_ms)  # started at T0, before this receiver
        request = make_metrics_request([histogram_metric(OPERATION_DURATION, [point], temporality=CUMULATIVE)])
        assert post(client, request.SerializeToString(), admin_token).status_code == 200

    export([5, 1], 60_000)
    assert stored_counts(engine, ingest) == {}
    export([8, 2], 120_000)
    assert stored_counts(engine, ingest) == {("llm:gpt-4o", "latency_ms"): 4}


def test_tenant_scoped_token_writes_metrics_into_its_own_tenant(client, engine, ingest, scoped_token):
    assert post(client, genai_request().SerializeToString(), scoped_token).status_code == 200

    stored_counts(engine, ingest)
    with Session(engine) as session:
        assert session.exec(select(Tenant.name)).all() == ["globex"]


def _json_negative_count() -> bytes:
    document = json.loads(to_otlp_json(genai_request()))
    document["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][1]["histogram"]["dataPoints"][0]["count"] = "-3"
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("status", "content_type", "body", "headers", "token"),
    [
        (400, PROTOBUF, b"\x0a\xff\xff\xff\xff\x0f", {}, "admin"),
        (400, JSON, b'{"resourceMetrics": {}}', {}, "admin"),
        (400, JSON, _json_negative_count(), {}, "admin"),  # counts are unsigned in OTLP
        (400, PROTOBUF, gzip.compress(b"abc")[:-3], {"Content-Encoding": "gzip"}, "admin"),
        (401, JSON, b"{}", {}, None),
        (403, PROTOBUF, b"", {}, "viewer"),
        (413, PROTOBUF, gzip.compress(b"\x00" * 200_000), {"Content-Encoding": "gzip"}, "admin"),
        (415, JSON, b"{}", {"Content-Encoding": "zstd"}, "admin"),
    ],
    ids=["protobuf-truncated", "json-shape", "json-negative-count", "gzip-truncated", "no-token", "viewer",
         "decompressed-too-large", "encoding"],
)
def test_refusals_reply_with_a_status_in_the_request_content_type(
    client, engine, ingest, admin_token, viewer_token, status, content_type, body, headers, token
):
    token = {"admin": admin_token, "viewer": viewer_token, None: None}[token]

    response = post(client, body, token, content_type, **headers)

    assert response.status_code == status
    assert parse_reply(response, content_type, Status()).message
    assert stored_counts(engine, ingest) == {}


def test_wrong_content_type_is_415(client, admin_token):
    response = post(client, genai_request().SerializeToString(), admin_token, "application/grpc")

    assert response.status_code == 415
    assert parse_reply(response, JSON, Status()).message


def test_full_ingest_queue_is_503_with_retry_after(engine, settings, admin_token):
    full = Ingest(database_sink(engine), max_queued_batches=1)  # never started: nothing drains the queue
    body = genai_request().SerializeToString()
    with TestClient(create_receiver_app(otlp_authoriser(engine), full, settings.otlp_max_body_bytes)) as client:
        assert post(client, body, admin_token).status_code == 200
        response = post(client, body, admin_token)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert Status.FromString(response.content).code == 14  # UNAVAILABLE
    assert stored_counts(engine, full) == GENAI_COUNTS  # the first export only


def test_exemplar_ids_from_protobuf_are_ignored(client, engine, ingest, admin_token):
    request = genai_request()
    point = request.resource_metrics[0].scope_metrics[0].metrics[1].histogram.data_points[0]
    point.exemplars.add(as_double=0.7, trace_id=trace_id(1), span_id=span_id(1))
    assert post(client, to_otlp_json(request), admin_token, JSON).status_code == 200
    assert stored_counts(engine, ingest) == GENAI_COUNTS


def test_metric_profiles_are_readable_through_the_rest_api(client, engine, ingest, admin_token):
    from fastapi.testclient import TestClient

    from controlplane.app import create_app
    from controlplane.settings import Settings

    assert post(client, genai_request().SerializeToString(), admin_token).status_code == 200
    ingest.flush()
    with TestClient(create_app(engine, Settings())) as api:
        headers = {"Authorization": f"Bearer {admin_token}"}
        workload = api.get("/api/v1/workloads", headers=headers).json()["items"][0]
        body = api.get(
            f"/api/v1/workloads/{workload['id']}/profiles?minutes=5&until=2026-01-01T12:02:00Z", headers=headers
        ).json()
    (profile,) = body["items"]
    assert profile["fragment_key"] == "llm:gpt-4o" and profile["visits"] == 0  # metrics carry no visits
    assert (profile["ttft_ms"]["count"], profile["tpot_ms"]["count"], profile["latency_ms"]["count"]) == (2, 5, 3)
    # Time per output token: 5 values in the (0.01 s, 0.05 s] bucket, represented by its midpoint, 30 ms.
    assert profile["tpot_ms"]["p50"] == pytest.approx(30, rel=0.01)
    # Input tokens: 1 below 25, 2 in [25, 100), 3 at 100 or more (represented by the last bound, 100).
    assert profile["tokens_in"]["counts"][:3] == [1, 2, 3]
