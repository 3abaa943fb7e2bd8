"""Fuzzing the OTLP receiver: hostile bodies never give a 5xx, never raise, never store part of a batch.

Bodies are random bytes, and valid protobuf and OTLP JSON exports of both signals, truncated,
bit-flipped or with values swapped for random JSON (wrong types, huge numbers, deep nesting),
each sent plain or gzipped. After each request the ingest queue is flushed and the store is
compared with what the reply says was accepted: every accepted span is one more visit, every
accepted metric observation one more bucket count, and a refused request adds nothing.

SQLite only: the property is about the receiver, and one database keeps the examples quick.
"""

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from sqlmodel import Session, SQLModel, func, select

from collectors.otlp_codec import decode_body, parse_message
from collectors.pipeline import Ingest
from collectors.receiver import create_receiver_app
from controlplane.auth import mint_token, otlp_authoriser
from controlplane.collected import database_sink
from controlplane.db import make_engine, session_scope
from controlplane.models import FragmentProfile, ProfileBucket, Role
from tests.collectors.otlp_builders import (
    CHAT,
    CUMULATIVE,
    agent_loop,
    exponential_point,
    histogram_metric,
    histogram_point,
    make_metrics_request,
    make_request,
    to_otlp_json,
)
from tests.collectors.test_metrics_receiver import genai_request

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_BODY = 64 * 1024
FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


class RecordingIngest(Ingest):
    """The real ingest queue, also counting the metric observations the receiver hands it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.observations = 0

    def submit_metrics(self, samples) -> bool:
        accepted = super().submit_metrics(samples)
        if accepted:
            self.observations += sum(s.count for s in samples)
        return accepted


@dataclass
class Receiver:
    client: TestClient
    ingest: RecordingIngest
    engine: object
    token: str


@pytest.fixture(scope="module")
def receiver(tmp_path_factory) -> Iterator[Receiver]:
    path = tmp_path_factory.mktemp("fuzz")
    engine = make_engine(f"sqlite:///{path / 'fuzz.db'}")
    SQLModel.metadata.create_all(engine)
    with session_scope(engine) as session:
        _, token = mint_token(session, "fuzz", Role.admin)
    ingest = RecordingIngest(database_sink(engine), max_queued_batches=100_000)  # never full here: 503 would be a bug
    app = create_receiver_app(otlp_authoriser(engine), ingest, MAX_BODY)
    with TestClient(app) as client:
        yield Receiver(client, ingest, engine, token)
    engine.dispose()


def _valid_traces() -> list[ExportTraceServiceRequest]:
    return [make_request(agent_loop(trace=t, tool_calls=t)) for t in (1, 2, 5)]


def _valid_metrics() -> list[ExportMetricsServiceRequest]:
    cumulative = make_metrics_request([
        histogram_metric("gen_ai.client.operation.duration", [histogram_point([0.1, 1.0], [1, 2, 3], start_ms=9e12)],
                         temporality=CUMULATIVE),
        histogram_metric("gen_ai.server.time_to_first_token", [exponential_point(3, -20, [1, 0, 4], CHAT)]),
    ])
    return [genai_request(), cumulative]


SEEDS = [("/v1/traces", r) for r in _valid_traces()] + [("/v1/metrics", r) for r in _valid_metrics()]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _paths(node, prefix=()) -> Iterator[tuple]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _replace(node, path: tuple, value):
    if not path:
        return value
    node[path[0]] = _replace(node[path[0]], path[1:], value)
    return node


@st.composite
def protobuf_bodies(draw) -> tuple[str, str, bytes]:
    endpoint, request = draw(st.sampled_from(SEEDS))
    body = bytearray(request.SerializeToString())
    mutation = draw(st.sampled_from(["intact", "truncate", "flip", "splice"]))
    if mutation == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif mutation == "flip":
        for _ in range(draw(st.integers(1, 8))):
            body[draw(st.integers(0, len(body) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif mutation == "splice":
        at = draw(st.integers(0, len(body)))
        body[at:at] = draw(st.binary(max_size=16))
    return endpoint, PROTOBUF, bytes(body)


@st.composite
def json_bodies(draw) -> tuple[str, str, bytes]:
    endpoint, request = draw(st.sampled_from(SEEDS))
    document = json.loads(to_otlp_json(request))
    mutation = draw(st.sampled_from(["intact", "replace", "deep", "text"]))
    if mutation == "replace":
        paths = list(_paths(document))
        for _ in range(draw(st.integers(1, 3))):
            document = _replace(document, draw(st.sampled_from(paths)), draw(json_values))
            paths = list(_paths(document))
    elif mutation == "deep":
        depth = draw(st.integers(50, 3000))
        if depth > 400:  # past the json module's own nesting limit: raw text is enough
            return endpoint, JSON, b"[" * depth + b"]" * depth
        deep = {"intValue": "1"}
        for _ in range(depth):
            deep = {"arrayValue": {"values": [deep]}}
        paths = [path for path in _paths(document) if path[-1:] == ("value",)]  # attribute values
        document = _replace(document, draw(st.sampled_from(paths)), deep)
    text = json.dumps(document).encode()
    if mutation == "text":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.binary(max_size=8)) + text[at + draw(st.integers(0, 8)):]
    return endpoint, JSON, text


def _sent(endpoint: str, content_type: str, body: bytes) -> int:
    """Spans (or 0 for metrics) in a body the receiver accepted, counted by the protobuf library alone."""
    if endpoint != "/v1/traces":
        return 0
    request = parse_message(decode_body(body, None, MAX_BODY), content_type, ExportTraceServiceRequest())
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def _totals(engine) -> tuple[int, int]:
    with Session(engine) as session:
        visits = session.exec(select(func.coalesce(func.sum(FragmentProfile.visits), 0))).one()
        counts = session.exec(select(func.coalesce(func.sum(ProfileBucket.count), 0))).one()
    return int(visits), int(counts)


def check(receiver: Receiver, endpoint: str, content_type: str, body: bytes, gzipped: bool) -> None:
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {receiver.token}"}
    wire = gzip.compress(body) if gzipped else body
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    visits_before, counts_before = _totals(receiver.engine)
    observations_before = receiver.ingest.observations

    response = receiver.client.post(endpoint, content=wire, headers=headers)
    receiver.ingest.flush()

    assert response.status_code in (200, 400, 413), (response.status_code, response.content[:300])
    visits, counts = _totals(receiver.engine)
    if response.status_code != 200:
        assert (visits, counts) == (visits_before, counts_before)
        return
    if endpoint == "/v1/traces":
        reply = _reply(response, content_type, ExportTraceServiceResponse())
        accepted = _sent(endpoint, content_type, body) - reply.partial_success.rejected_spans
        assert visits - visits_before == accepted
    else:
        _reply(response, content_type, ExportMetricsServiceResponse())
        assert counts - counts_before == receiver.ingest.observations - observations_before
        assert visits == visits_before


def _reply(response, content_type: str, message):
    assert response.headers["content-type"] == content_type
    if content_type == JSON:
        return json_format.Parse(response.content, message)
    return type(message).FromString(response.content)


@FUZZ
@given(body=protobuf_bodies(), gzipped=st.booleans())
def test_mutated_protobuf_bodies(receiver, body, gzipped):
    check(receiver, *body, gzipped)


@FUZZ
@given(body=json_bodies(), gzipped=st.booleans())
def test_mutated_json_bodies(receiver, body, gzipped):
    check(receiver, *body, gzipped)


@settings(max_examples=100, deadline=None)
@given(
    endpoint=st.sampled_from(["/v1/traces", "/v1/metrics"]),
    content_type=st.sampled_from([PROTOBUF, JSON]),
    body=st.binary(max_size=512),
    gzipped=st.booleans(),
)
def test_random_bytes(receiver, endpoint, content_type, body, gzipped):
    check(receiver, endpoint, content_type, body, gzipped)
