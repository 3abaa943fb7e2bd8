"""GenAI metric data points become metric samples: series, bucket values, identity, temporality, rejection."""

import pytest

from collectors.metrics_decode import (
    OPERATION_DURATION,
    TIME_PER_OUTPUT_TOKEN,
    TIME_TO_FIRST_TOKEN,
    TOKEN_USAGE,
    CumulativeStreams,
    decode_metrics,
    samples_of,
)
from collectors.records import Series
from tests.collectors.otlp_builders import (
    CHAT,
    CUMULATIVE,
    MS,
    T0_NS,
    exponential_point,
    histogram_metric,
    histogram_point,
    make_metrics_request,
)

INPUT = {**CHAT, "gen_ai.token.type": "input"}
OUTPUT = {**CHAT, "gen_ai.token.type": "output"}


def buckets(request, tenant=None) -> list[tuple[Series, float, int]]:
    """(series, value, count) of every sample of a request with only delta points."""
    decoded = decode_metrics(request, tenant)
    assert decoded.rejected == 0, decoded.error
    return [(s.series, pytest.approx(s.value), s.count) for p in decoded.points for s in samples_of(p)]


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        # First bucket (-inf, 0.1]: min 0.05 s; (0.1, 0.5]: midpoint 0.3 s; overflow (1, inf): max 2 s.
        (histogram_point([0.1, 0.5, 1.0], [2, 3, 0, 1], min=0.05, max=2.0), [(50, 2), (300, 3), (2000, 1)]),
        # Without min and max: half the first bound, and the last bound.
        (histogram_point([0.1, 0.5, 1.0], [2, 0, 0, 1]), [(50, 2), (1000, 1)]),
        # A single bucket with no bounds: the mean, sum / count = 3 s / 4.
        (histogram_point([], [4], sum=3.0), [(750, 4)]),
        # Empty buckets and a histogram without buckets give nothing.
        (histogram_point([0.1], [0, 0]), []),
    ],
    ids=["min-mid-max", "no-min-max", "mean-only", "empty"],
)
def test_explicit_duration_buckets_in_milliseconds(point, expected):
    request = make_metrics_request([histogram_metric(OPERATION_DURATION, [point])])
    assert buckets(request) == [(Series.latency_ms, value, count) for value, count in expected]


@pytest.mark.parametrize(
    ("name", "unit", "series", "value_ms"),
    [
        (OPERATION_DURATION, "s", Series.latency_ms, 300),
        (OPERATION_DURATION, "ms", Series.latency_ms, 0.3),
        (TIME_TO_FIRST_TOKEN, "s", Series.ttft_ms, 300),
        (TIME_PER_OUTPUT_TOKEN, "s", Series.tpot_ms, 300),
        (TIME_PER_OUTPUT_TOKEN, "", Series.tpot_ms, 300),  # no unit: the conventions' seconds
    ],
)
def test_duration_metrics_map_to_series(name, unit, series, value_ms):
    point = histogram_point([0.1, 0.5], [0, 5, 0])  # 5 in (0.1, 0.5]: midpoint 0.3
    request = make_metrics_request([histogram_metric(name, [point], unit=unit)])
    assert buckets(request) == [(series, value_ms, 5)]


def test_token_usage_splits_input_and_output_and_ignores_other_types():
    points = [
        histogram_point([25, 100], [1, 2, 3], INPUT),  # 12.5 (half of 25), 62.5, 100 (last bound)
        histogram_point([25, 100], [0, 4, 0], OUTPUT),
        histogram_point([25, 100], [0, 4, 0], {**CHAT, "gen_ai.token.type": "cached"}),
    ]
    request = make_metrics_request([histogram_metric(TOKEN_USAGE, points, unit="{token}")])

    assert buckets(request) == [
        (Series.tokens_in, 12.5, 1), (Series.tokens_in, 62.5, 2), (Series.tokens_in, 100, 3),
        (Series.tokens_out, 62.5, 4),
    ]


@pytest.mark.parametrize(
    ("scale", "offset", "counts", "zero", "expected"),
    [
        # Scale 0: base 2, bucket i is (2^i, 2^(i+1)]: i=3 (8, 16] -> 12, i=5 (32, 64] -> 48; zero bucket -> 0.
        (0, 3, [1, 0, 2], 1, [(0, 1), (12, 1), (48, 2)]),
        # Scale 1: base sqrt(2), i=2 is (2, 2*sqrt(2)] -> 2.4142.
        (1, 2, [7], 0, [(2.414213562, 7)]),
        # Scale -1: base 4, i=-1 is (0.25, 1] -> 0.625.
        (-1, -1, [3], 0, [(0.625, 3)]),
    ],
)
def test_exponential_token_buckets(scale, offset, counts, zero, expected):
    point = exponential_point(scale, offset, counts, INPUT, zero_count=zero)
    request = make_metrics_request([histogram_metric(TOKEN_USAGE, [point], unit="{token}")])
    assert buckets(request) == [(Series.tokens_in, value, count) for value, count in expected]


@pytest.mark.parametrize(
    ("resource", "attrs", "identity"),
    [
        ({"heteroplane.tenant": "Acme", "heteroplane.workload": "Support Bot"}, CHAT,
         ("acme", "support-bot", "llm:gpt-4o", "llm", "gpt-4o", "gpt-4o", "")),
        ({"service.namespace": "globex", "service.name": "rag", "heteroplane.device_class": "l40s"},
         {"gen_ai.operation.name": "embeddings", "gen_ai.response.model": "bge-m3"},
         ("globex", "rag", "embedding:bge-m3", "embedding", "bge-m3", "bge-m3", "l40s")),
        ({"service.name": "bot", "heteroplane.device_class": "l40s"},
         {**CHAT, "heteroplane.device_class": "h100"},  # the point's device class wins over the resource's
         ("default", "bot", "llm:gpt-4o", "llm", "gpt-4o", "gpt-4o", "h100")),
        ({"service.name": "svc"}, {"gen_ai.request.model": "llama-3.1-8b"},  # a model and no operation: a chat
         ("default", "svc", "llm:llama-3.1-8b", "llm", "llama-3.1-8b", "llama-3.1-8b", "")),
        ({"service.name": "bot"}, {"gen_ai.operation.name": "chat"},  # no model: the span-name convention
         ("default", "bot", "llm:chat", "llm", "chat", "", "")),
    ],
    ids=["heteroplane-attrs", "service-attrs", "point-device-class", "model-only", "operation-only"],
)
def test_fragment_identity_like_spans(resource, attrs, identity):
    point = histogram_point([1.0], [1, 0], attrs)
    request = make_metrics_request([histogram_metric(OPERATION_DURATION, [point])], resource)

    (sample,) = samples_of(decode_metrics(request).points[0])

    assert (sample.tenant, sample.workload, sample.fragment_key, sample.kind, sample.name, sample.model,
            sample.device_class) == identity
    assert sample.end_ns == T0_NS + 60_000 * MS


def test_a_tenant_scoped_token_overrides_the_resource_tenant():
    point = histogram_point([1.0], [1, 0])
    request = make_metrics_request([histogram_metric(OPERATION_DURATION, [point])], {"heteroplane.tenant": "acme"})

    assert samples_of(decode_metrics(request, tenant="globex").points[0])[0].tenant == "globex"


def test_unknown_metrics_are_ignored_not_rejected():
    point = histogram_point([1.0], [1, 0])
    request = make_metrics_request([histogram_metric("http.server.request.duration", [point])])

    decoded = decode_metrics(request)

    assert (decoded.points, decoded.rejected) == ((), 0)


def _bad_count():
    point = histogram_point([1.0], [1, 1])
    point.count = 5
    return point


def _negative_values():
    point = exponential_point(0, 0, [1])
    point.negative.bucket_counts.append(1)
    point.count = 2
    return point


def _no_time():
    point = histogram_point([1.0], [1, 0])
    point.time_unix_nano = 0
    return point


@pytest.mark.parametrize(
    ("bad_point", "unit", "temporality", "message"),
    [
        (histogram_point([1.0, 2.0], [1, 1]), "s", None, "bucket_counts has 2 entries for 2 explicit_bounds"),
        (histogram_point([2.0, 1.0], [1, 1, 1]), "s", None, "strictly increasing"),
        (histogram_point([1.0, float("inf")], [1, 1, 1]), "s", None, "finite"),
        (_bad_count(), "s", None, "count 5 is not the sum"),
        (_negative_values(), "s", None, "negative"),
        (exponential_point(21, 0, [1]), "s", None, "scale 21"),
        (_no_time(), "s", None, "time_unix_nano"),
        (histogram_point([1.0], [1, 0], {"gen_ai.token.type": "input"}), "s", None, "gen_ai.operation.name"),
        (histogram_point([1.0], [1, 0]), "min", None, "unit 'min'"),
        (histogram_point([1.0], [1, 0]), "s", 0, "aggregation_temporality"),
    ],
    ids=["counts-vs-bounds", "bounds-order", "bounds-finite", "count-sum", "negative", "scale", "no-time",
         "no-fragment", "unit", "temporality"],
)
def test_invalid_points_are_rejected_and_the_rest_kept(bad_point, unit, temporality, message):
    good = histogram_point([1.0], [3, 0])
    bad = histogram_metric(OPERATION_DURATION, [bad_point], unit=unit)
    if temporality is not None:
        (bad.histogram if bad.HasField("histogram") else bad.exponential_histogram).aggregation_temporality = 0
    request = make_metrics_request([bad, histogram_metric(OPERATION_DURATION, [good])])

    decoded = decode_metrics(request)

    assert decoded.rejected == 1
    assert message in decoded.error
    assert [s.count for p in decoded.points for s in samples_of(p)] == [3]


def test_a_genai_metric_that_is_not_a_histogram_is_rejected():
    request = make_metrics_request([histogram_metric(OPERATION_DURATION, [histogram_point([1.0], [1, 0])])])
    metric = request.resource_metrics[0].scope_metrics[0].metrics.add(name=TIME_TO_FIRST_TOKEN)
    metric.gauge.data_points.add(as_double=0.2, time_unix_nano=T0_NS)

    decoded = decode_metrics(request)

    assert (len(decoded.points), decoded.rejected) == (1, 1)
    assert "must be a histogram, got a gauge" in decoded.error


def test_points_without_a_recorded_value_are_skipped():
    point = histogram_point([1.0], [1, 0])
    point.flags = 1  # DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
    decoded = decode_metrics(make_metrics_request([histogram_metric(OPERATION_DURATION, [point])]))
    assert (decoded.points, decoded.rejected) == ((), 0)


# Cumulative streams. The receiver starts at T0 + 10 s; points are cumulative over [start, end].
STARTED_NS = T0_NS + 10_000 * MS


def cumulative(counts, *, start_ms=0, end_ms=60_000, tenant=None, attrs=None):
    point = histogram_point([1.0], counts, attrs, start_ms=start_ms, end_ms=end_ms)
    request = make_metrics_request([histogram_metric(OPERATION_DURATION, [point], temporality=CUMULATIVE)])
    return decode_metrics(request, tenant)


def take(streams, decoded, accept=True) -> list[tuple[float, int]]:
    taken = []

    def submit(samples):
        taken.extend((s.value, s.count) for s in samples)
        return accept

    assert streams.submit(decoded, submit) is accept
    return taken


def test_cumulative_stream_older_than_the_receiver_starts_emitting_at_its_second_point():
    streams = CumulativeStreams(STARTED_NS)

    # Started before us: what it counted so far is not ours to see.
    assert take(streams, cumulative([5, 1], end_ms=60_000)) == []
    # Then only the growth: 8 - 5 in the first bucket, 1 - 1 (nothing) in the overflow.
    assert take(streams, cumulative([8, 1], end_ms=120_000)) == [(500, 3)]
    assert take(streams, cumulative([8, 3], end_ms=180_000)) == [(1000, 2)]


def test_cumulative_stream_that_started_after_the_receiver_emits_all_its_counts():
    streams = CumulativeStreams(STARTED_NS)
    assert take(streams, cumulative([5, 1], start_ms=20_000)) == [(500, 5), (1000, 1)]


def test_cumulative_reset_and_stale_points():
    streams = CumulativeStreams(STARTED_NS)
    take(streams, cumulative([5, 1], end_ms=60_000))

    # A retried export of the same point (no newer) adds nothing.
    assert take(streams, cumulative([5, 1], end_ms=60_000)) == []
    # A count going down without a new start time is a reset we cannot date: like a first sighting of
    # a stream older than the receiver, nothing until the next point.
    assert take(streams, cumulative([3, 1], end_ms=90_000)) == []
    assert take(streams, cumulative([4, 1], end_ms=100_000)) == [(500, 1)]
    # The app restarted at T0 + 110 s, after the receiver: its counts since then are all new.
    assert take(streams, cumulative([2, 0], start_ms=110_000, end_ms=120_000)) == [(500, 2)]


def test_cumulative_streams_advance_only_when_the_queue_takes_the_samples():
    streams = CumulativeStreams(STARTED_NS)
    take(streams, cumulative([5, 1], end_ms=60_000))

    assert take(streams, cumulative([8, 1], end_ms=120_000), accept=False) == [(500, 3)]
    # Refused (503): the exporter retries the same point and its growth is still there to take.
    assert take(streams, cumulative([8, 1], end_ms=120_000)) == [(500, 3)]


def test_cumulative_streams_are_kept_apart_by_tenant_and_attributes():
    streams = CumulativeStreams(STARTED_NS)
    for tenant in ("acme", "globex"):
        take(streams, cumulative([5, 0], end_ms=60_000, tenant=tenant))
    take(streams, cumulative([5, 0], end_ms=60_000, attrs={**CHAT, "gen_ai.request.model": "o3"}))

    assert take(streams, cumulative([6, 0], end_ms=120_000, tenant="acme")) == [(500, 1)]
    assert take(streams, cumulative([9, 0], end_ms=120_000, tenant="globex")) == [(500, 4)]


def test_delta_points_pass_through_the_streams_and_streams_stay_bounded():
    streams = CumulativeStreams(STARTED_NS, max_streams=2)
    delta = decode_metrics(make_metrics_request([histogram_metric(OPERATION_DURATION, [
        histogram_point([1.0], [2, 0])])]))
    assert take(streams, delta) == [(500, 2)]

    for model in ("a", "b", "c"):
        take(streams, cumulative([5, 0], attrs={**CHAT, "gen_ai.request.model": model}))
    # "a" was forgotten: its next point is a first sighting again (older than the receiver: nothing).
    assert take(streams, cumulative([7, 0], end_ms=120_000, attrs={**CHAT, "gen_ai.request.model": "a"})) == []
    assert take(streams, cumulative([7, 0], end_ms=120_000, attrs={**CHAT, "gen_ai.request.model": "c"})) == [(500, 2)]
