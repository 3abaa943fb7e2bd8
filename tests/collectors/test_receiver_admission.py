"""Admission before work: a full queue is refused from its depth, before the body is read, with a
`Retry-After` of its expected drain time; a reply sent before the body was read closes the connection."""

import math
import socket
from fractions import Fraction

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

import collectors.receiver
from collectors.normalise import normalise_request
from collectors.pipeline import Ingest
from collectors.receiver import RETRY_AFTER_CAP_S, create_receiver_app, retry_after_s
from controlplane.auth import otlp_authoriser
from controlplane.runtime import ServerThread
from tests.collectors.otlp_builders import agent_loop, make_request

PROTOBUF = "application/x-protobuf"


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def post(client, body: bytes, token: str):
    return client.post("/v1/traces", content=body,
                       headers={"Content-Type": PROTOBUF, "Authorization": f"Bearer {token}"})


def batch(trace: int) -> list:
    return [r._replace(trace_id=f"{trace:032x}") for r in normalise_request(make_request(agent_loop())).records]


def test_a_full_queue_is_refused_without_decoding_the_body(engine, settings, admin_token, monkeypatch):
    parsed = []
    real_parse = collectors.receiver.parse_message
    monkeypatch.setattr(collectors.receiver, "parse_message", lambda *a: parsed.append(1) or real_parse(*a))
    full = Ingest(None, max_queued_batches=1)  # never started: nothing drains it
    with TestClient(create_receiver_app(otlp_authoriser(engine), full, settings.otlp_max_body_bytes)) as client:
        assert post(client, make_request(agent_loop()).SerializeToString(), admin_token).status_code == 200
        assert parsed == [1]
        # Not protobuf at all: decoded, this would be a 400.
        refused = post(client, b"\xff\xff\xff not protobuf", admin_token)

    assert refused.status_code == 503
    assert parsed == [1]
    assert refused.headers["connection"] == "close"  # the unread body must not be taken for the next request
    assert full.depth == 1


def test_retry_after_is_the_measured_drain_time_of_the_queue(engine, settings, admin_token):
    clock = FakeClock()
    queue = Ingest(None, max_queued_batches=4, flush_interval_s=1.0, clock=clock)
    for trace in range(4):
        assert queue.submit(batch(trace))
    clock.now_s += 8.0  # a busy cycle: four batches in eight seconds
    queue.flush()
    assert queue.drain_rate_per_s == pytest.approx(0.5)
    for trace in range(4, 8):
        assert queue.submit(batch(trace))

    with TestClient(create_receiver_app(otlp_authoriser(engine), queue, settings.otlp_max_body_bytes)) as client:
        refused = post(client, make_request(agent_loop()).SerializeToString(), admin_token)

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "8"  # 4 queued / 0.5 per second


def test_a_mostly_empty_drain_does_not_lower_the_drain_rate():
    clock = FakeClock()
    queue = Ingest(None, max_queued_batches=4, flush_interval_s=2.0, clock=clock)
    assert queue.drain_rate_per_s == 2.0  # before any busy drain: a full queue per interval
    queue.submit(batch(1))
    clock.now_s += 100.0
    queue.flush()  # one batch in 100 s measures arrivals, not how fast the worker writes

    assert queue.drain_rate_per_s == 2.0


def test_the_drain_rate_is_a_moving_average_of_busy_cycles():
    clock = FakeClock()
    queue = Ingest(None, max_queued_batches=2, clock=clock)
    rates = []
    for cycle_s in (1.0, 4.0):
        queue.submit(batch(1))
        queue.submit(batch(2))
        clock.now_s += cycle_s
        queue.flush()
        rates.append(queue.drain_rate_per_s)

    assert rates[0] == pytest.approx(2.0)
    assert rates[1] == pytest.approx(0.3 * 0.5 + 0.7 * 2.0)


def expected_retry_after(depth: int, rate: float) -> int:
    """Independently: the fewest whole seconds, at least one, in which `rate` drains `depth`; else the cap."""
    exact = Fraction(rate)
    for seconds in range(1, RETRY_AFTER_CAP_S + 1):
        if seconds * exact >= depth:
            return seconds
    return RETRY_AFTER_CAP_S


rates = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
depths = st.integers(min_value=0, max_value=100_000)


@given(depths, rates)
def test_retry_after_is_the_whole_seconds_to_drain(depth, rate):
    assert retry_after_s(depth, rate) == expected_retry_after(depth, rate)


@given(depths, depths, rates, rates)
def test_retry_after_grows_with_depth_and_shrinks_with_drain_rate(depth_a, depth_b, rate_a, rate_b):
    low_depth, high_depth = sorted((depth_a, depth_b))
    slow, fast = sorted((rate_a, rate_b))
    assert 1 <= retry_after_s(low_depth, slow) <= retry_after_s(high_depth, slow) <= RETRY_AFTER_CAP_S
    assert retry_after_s(high_depth, fast) <= retry_after_s(high_depth, slow)


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan, math.inf])
def test_a_queue_that_does_not_drain_asks_for_the_longest_wait(rate):
    assert retry_after_s(10, rate) == RETRY_AFTER_CAP_S


def read_response(sock: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length, read off the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


@pytest.mark.parametrize("expect", [b"", b"Expect: 100-continue\r\n"], ids=["body-pending", "expect-continue"])
def test_a_declared_oversize_body_is_413_and_the_connection_closes(engine, settings, ingest, admin_token, expect):
    server = ServerThread(create_receiver_app(otlp_authoriser(engine), ingest, settings.otlp_max_body_bytes),
                          "127.0.0.1", 0, "otlp")
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/x-protobuf\r\n"
                         b"Authorization: Bearer %s\r\n%sContent-Length: %d\r\n\r\n"
                         % (admin_token.encode(), expect, settings.otlp_max_body_bytes + 1))
            head = read_response(sock)
            assert head.startswith(b"HTTP/1.1 413 ")
            assert b"connection: close" in head.lower()
            # The server hangs up; before, it waited for the body it had refused, and a next request hung.
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        server.stop()
