"""Hostile numbers in telemetry (NaN, Inf, -0.0, 1e308, negatives, ints past int64) never reach a sum.

Every stage is pure, so the properties feed hostile OTLP straight through normalise, the trace
window and assembly (and metric decoding), and check what would be stored: every sum finite and
non-negative, every integer within a BIGINT, every queue wait within its span.
"""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collectors.assembly import AssembledBatch, assemble
from collectors.metrics_decode import OPERATION_DURATION, TOKEN_USAGE, decode_metrics, samples_of
from collectors.normalise import COUNT_MAX, normalise_request, normalise_span
from collectors.sketch import latency_bucket, token_bucket
from controlplane.planning import _tail_latency_ms
from tests.collectors.otlp_builders import (
    CHAT,
    histogram_metric,
    histogram_point,
    key_values,
    make_metrics_request,
    make_request,
    make_span,
)

BIGINT_MAX = 2**63 - 1
HOSTILE_FLOATS = [math.inf, -math.inf, math.nan, -0.0, 1e308, 1.7976931348623157e308, 1e306, -1.0, -1e308, 5e-324]
HOSTILE_INTS = [-1, -(2**63), 2**63 - 1, 0]
HOSTILE_TEXT = ["1e400", "-1e400", "nan", "inf", "-0", "99999999999999999999999999", "0x10", "", " 12 "]
hostile_value = st.one_of(
    st.sampled_from(HOSTILE_FLOATS),
    st.sampled_from(HOSTILE_INTS),
    st.sampled_from(HOSTILE_TEXT),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=2**63, max_value=2**200).map(str),  # beyond int64: only text can carry it
    st.booleans(),
)
NUMERIC_ATTRS = [
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "llm.usage.total_tokens",
    "gen_ai.latency.time_in_queue", "heteroplane.bytes", "http.request.body.size",
    "http.response.body.size", "messaging.message.body.size",
]
hostile_trace_state = st.one_of(
    st.just(""),
    st.sampled_from(["ot=th:0", "ot=th:8", "ot=th:fd70a4", "ot=th:ffffffffffffff", "ot=th:", "ot=th:zz",
                     "ot=th:123456789abcdef", "ot=th:c;rv:ffffffffffffff", "ot=th:c;rv:00000000000000"]),
    st.text(max_size=40).map(lambda text: f"ot={text}"),
)


@st.composite
def hostile_spans(draw) -> list[Span]:
    """A trace or two of LLM spans (a root and its children) whose numbers are hostile."""
    spans = []
    for n in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, 2**64 - 1))
        span = make_span("chat", trace=1 + n % 2, span=n + 1, parent=(n % 2) + 1 if n >= 2 else None,
                         attrs={**CHAT, **draw(st.dictionaries(st.sampled_from(NUMERIC_ATTRS), hostile_value))})
        span.start_time_unix_nano = start
        span.end_time_unix_nano = draw(st.one_of(st.integers(0, 2**64 - 1), st.just(start)))
        span.trace_state = draw(hostile_trace_state)
        event = span.events.add(name="message")
        event.attributes.extend(key_values({"rpc.message.uncompressed_size": draw(hostile_value)}))
        spans.append(span)
    return spans


def assert_storable(batch: AssembledBatch) -> None:
    """What the store would add: finite, non-negative sums, integers within a BIGINT."""
    def count(value: int) -> None:
        assert type(value) is int and 0 <= value <= BIGINT_MAX

    def total(value: float) -> None:
        assert math.isfinite(value) and value >= 0

    for v in batch.visits:
        for value in (v.visits, v.tokens_in, v.tokens_out, v.queue_visits):
            count(value)
        total(v.latency_ms_sum)
        total(v.queue_ms_sum)
        assert v.queue_visits <= v.visits
        # Waits lie within their spans, so their sum within the latency sum (up to float rounding).
        assert v.queue_ms_sum <= v.latency_ms_sum * (1 + 1e-9)
    for b in batch.buckets:
        count(b.count)
        assert b.count > 0
    for e in batch.edges:
        for value in (e.calls, e.bytes, e.calls_overlapping):
            count(value)
        for calls, visits in e.visits_by_calls:
            count(calls)
            count(visits)
    for r in batch.requests:
        total(r.duration_ms)
        count(r.tokens)
        count(r.weight)
        assert r.weight >= 1


@settings(max_examples=300, deadline=None)
@given(hostile_spans())
def test_hostile_span_numbers_never_reach_a_sum(spans):
    normalised = normalise_request(make_request(spans))
    assert normalised.rejected == 0  # bad numbers drop or clamp an attribute, never the span
    for r in normalised.records:
        assert 0 <= r.tokens_in <= COUNT_MAX and 0 <= r.tokens_out <= COUNT_MAX and 0 <= r.bytes <= COUNT_MAX
        assert math.isfinite(r.duration_ms) and r.duration_ms >= 0
        assert r.queue_ms is None or 0 <= r.queue_ms <= r.duration_ms
        assert r.weight >= 1
    assert_storable(assemble(normalised.records))


@settings(max_examples=200, deadline=None)
@given(
    bounds=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4).map(sorted),
    counts=st.lists(st.integers(0, 2**40), min_size=1, max_size=5),
    extremes=st.dictionaries(st.sampled_from(["min", "max", "sum"]), st.sampled_from(HOSTILE_FLOATS)),
    name=st.sampled_from([OPERATION_DURATION, TOKEN_USAGE]),
    unit=st.sampled_from(["s", "ms", "ns"]),
)
def test_hostile_metric_points_never_reach_a_sum(bounds, counts, extremes, name, unit):
    counts = (counts + [0] * len(bounds))[: len(bounds) + 1]
    attrs = {**CHAT, "gen_ai.token.type": "input"}
    point = histogram_point(bounds, counts, attrs, **extremes)
    decoded = decode_metrics(make_metrics_request([histogram_metric(name, [point], unit=unit)]))
    samples = [s for p in decoded.points for s in samples_of(p)]
    for s in samples:
        assert math.isfinite(s.value) and s.value >= 0
    assert_storable(assemble([], samples=samples))


@given(st.sampled_from(HOSTILE_FLOATS) | st.floats(allow_nan=True, allow_infinity=True))
def test_sketch_buckets_take_any_double(value):
    assert isinstance(latency_bucket(value), int)
    assert 0 <= token_bucket(value) <= 6


def test_a_queue_wait_of_1e306_seconds_leaves_the_planner_the_real_latency():
    """One vLLM span reporting 1e306 s of queue (Inf in milliseconds) once turned the measured latency
    of the whole fragment into 0 ms. Now the wait is clamped to its span's duration."""
    spans = [
        make_span("chat", trace=i + 1, span=1, start_ms=100 * i, duration_ms=100,
                  attrs={**CHAT, "gen_ai.latency.time_in_queue": 1e306 if i == 0 else 0.02})
        for i in range(100)
    ]
    batch = assemble(normalise_request(make_request(spans)).records)
    (visits,) = batch.visits
    assert math.isfinite(visits.queue_ms_sum)
    # 99 waits of 20 ms and one of its span's 100 ms: 2080 ms.
    assert visits.queue_ms_sum == 99 * 20.0 + 100.0
    sketch = {b.bucket: b.count for b in batch.buckets}
    observed = [visits.visits, visits.latency_ms_sum - visits.queue_ms_sum, 0, 0, visits.queue_ms_sum]
    # Every visit took 100 ms (p99 within the sketch's 1%), less the mean wait 20.8 ms: 79.2 ms.
    assert _tail_latency_ms(observed, sketch) == pytest.approx(100 - 20.8, rel=0.015)


def test_queue_wait_of_a_zero_length_span_is_zero():
    span = make_span("chat", span=1, duration_ms=0, attrs={**CHAT, "gen_ai.latency.time_in_queue": 5})
    assert normalise_span(span, {}).queue_ms == 0.0
