"""GenAI metrics from an OTLP export request, as `MetricSample`s for the profiles.

`decode_metrics` is pure (a request in, data points out); `CumulativeStreams` is
the small stateful shell that turns cumulative points into the counts new since
the last export, and hands them to the ingest queue.

Metric mapping (OTel GenAI semantic conventions; any other metric is ignored):

=====================================  ===========  ==============================================
metric (a histogram, explicit or        unit         series
exponential)
=====================================  ===========  ==============================================
gen_ai.client.token.usage              {token}      tokens_in / tokens_out by gen_ai.token.type
                                                    (input / output; other types are ignored)
gen_ai.client.operation.duration       s            latency_ms
gen_ai.server.time_to_first_token      s            ttft_ms
gen_ai.server.time_per_output_token    s            tpot_ms
=====================================  ===========  ==============================================

Durations in ``ms``, ``us`` or ``ns`` are converted too. The fragment comes from
the data point's attributes as a span's does (`collectors.normalise.classify`
with the GenAI span-name convention ``"{operation} {model}"`` as fallback name):
``gen_ai.operation.name`` + ``gen_ai.request.model`` (or ``gen_ai.response.model``)
give kind, name, model and key ``"llm:<model>"``; a point naming a model but no
operation is taken as ``chat``; a point naming neither is rejected. Tenant and
workload come from resource attributes exactly as for spans; the device class
from ``heteroplane.device_class`` on the point, else on the resource.

Buckets: a histogram point becomes one sample per non-empty bucket, its value a
representative of the bucket in the series' unit. Explicit bounds b0 < … < bn-1:
the first bucket (-inf, b0] is represented by min when the point has one, else
b0 / 2; a finite bucket (bi-1, bi] by its midpoint; the overflow bucket (bn-1, inf)
by max when present, else bn-1. Exponential buckets: bucket i of scale s is
(base^i, base^(i+1)] with base = 2^(2^-s), represented by its midpoint; the zero
bucket by 0. A point with no buckets at all is ignored.

Temporality: DELTA points are used as they are. A CUMULATIVE stream, keyed by
(token tenant, resource attributes, metric name, point attributes), emits the
difference from its previous point. Its first sighting emits its full counts only
if the stream started (start_time_unix_nano) after this receiver did: counts from
before that were never ours to see, so an older stream is remembered and emits
nothing until its next point. A reset (new start time, a new bucket layout, a
count going down) is treated like a first sighting; a point no newer than the
last one (a retried export) emits nothing. Cumulative streams therefore need a
sticky route to one receiver (the OTel Collector's load-balancing exporter);
delta temporality has no such need.

Invalid points are rejected and counted (OTLP partial success): bucket_counts
whose length is not len(explicit_bounds) + 1, bounds that are not finite and
increasing, a count that is not the sum of the buckets, negative values
(exponential negative buckets), an unset temporality or time, a scale outside
[-10, 20], or a GenAI metric that is not a histogram, or a bucket whose value
is beyond a double once in the series' unit (a max of 1e308 s). Negative counts cannot
occur: OTLP counts are unsigned (a negative count in JSON is a malformed body).

Bad numbers short of that: a NaN or infinite min, max or sum is ignored (as if absent);
a negative bucket value (a negative min or bound) is 0. Values only choose a sketch
bucket; counts, the only numbers summed, are integers of at most 2^53 per point.
"""

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    DataPointFlags,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
)

from collectors.normalise import (
    DEVICE_CLASS_ATTR,
    DEVICE_CLASS_MAX,
    KEY_MAX,
    MODEL_MAX,
    Attributes,
    attributes_of,
    classify,
    first_str,
    fragment_key,
    resource_origin,
)
from collectors.records import MetricSample, Series
from optimizer.vocabulary import FragmentKind

TOKEN_USAGE = "gen_ai.client.token.usage"
OPERATION_DURATION = "gen_ai.client.operation.duration"
TIME_TO_FIRST_TOKEN = "gen_ai.server.time_to_first_token"
TIME_PER_OUTPUT_TOKEN = "gen_ai.server.time_per_output_token"

_DURATION_SERIES = {
    OPERATION_DURATION: Series.latency_ms,
    TIME_TO_FIRST_TOKEN: Series.ttft_ms,
    TIME_PER_OUTPUT_TOKEN: Series.tpot_ms,
}
_TOKEN_SERIES = {"input": Series.tokens_in, "output": Series.tokens_out}
_MS_PER_UNIT = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_MODEL_ATTRS = ("gen_ai.request.model", "gen_ai.response.model")
_ZERO_BUCKET = "zero"
# Counts land in 64-bit database columns and in float maths; a count past 2^53 is a corrupt point.
_MAX_COUNT = 2**53
_MIN_SCALE, _MAX_SCALE = -10, 20


class InvalidDataPoint(ValueError):
    """A data point the receiver must reject (counted in the OTLP partial-success response)."""


@dataclass(frozen=True, slots=True)
class HistogramPoint:
    """One GenAI histogram data point: its identity, and its non-empty buckets as (key, value, count)."""

    stream: Hashable
    sample: MetricSample  # identity and end time; value and count are set per bucket
    start_ns: int
    cumulative: bool
    layout: Hashable  # buckets of two points compare only under one layout
    buckets: tuple[tuple[Hashable, float, int], ...]


@dataclass(frozen=True, slots=True)
class DecodedMetrics:
    """The usable points of one export request, and how many data points were rejected and why."""

    points: tuple[HistogramPoint, ...]
    rejected: int
    error: str


def decode_metrics(request: ExportMetricsServiceRequest, tenant: str | None = None) -> DecodedMetrics:
    """Every GenAI histogram point of `request`; `tenant` (a tenant-scoped token's) overrides the resource's."""
    points: list[HistogramPoint] = []
    rejected = 0
    error = ""
    for resource_metrics in request.resource_metrics:
        resource = attributes_of(resource_metrics.resource.attributes)
        origin = resource_origin(resource)
        owner = (tenant or origin.tenant, origin.workload, origin.device_class)
        resource_key = frozenset(resource.items())
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in _data_points(metric):
                    try:
                        decoded = _decode_point(metric, point, resource, owner, resource_key)
                    except InvalidDataPoint as exc:
                        rejected += 1
                        error = error or f"{metric.name}: {exc}"
                        continue
                    if decoded is not None:
                        points.append(decoded)
    return DecodedMetrics(points=tuple(points), rejected=rejected, error=error)


def samples_of(point: HistogramPoint, counts: dict[Hashable, int] | None = None) -> list[MetricSample]:
    """One sample per bucket of `point` with a positive count (its own counts, or `counts` by bucket key)."""
    samples = []
    for key, value, own in point.buckets:
        count = own if counts is None else counts.get(key, 0)
        if count > 0:
            samples.append(replace(point.sample, value=value, count=count))
    return samples


@dataclass(frozen=True, slots=True)
class _StreamState:
    start_ns: int
    end_ns: int
    layout: Hashable
    counts: dict[Hashable, int]


class CumulativeStreams:
    """The last point of each cumulative stream, so each export adds only what is new (see module docstring).

    Thread-safe. Bounded: past `max_streams` the least recently seen stream is forgotten
    (its next point then counts as a first sighting).
    """

    def __init__(self, started_ns: int, max_streams: int = 65_536) -> None:
        self.started_ns = started_ns
        self.max_streams = max_streams
        self._streams: OrderedDict[Hashable, _StreamState] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, decoded: DecodedMetrics, submit: Callable[[Sequence[MetricSample]], bool]) -> bool:
        """Hand the samples of `decoded` to `submit`; streams advance only if it accepts (False: retry later)."""
        with self._lock:
            samples: list[MetricSample] = []
            updates: dict[Hashable, _StreamState] = {}
            for point in decoded.points:
                if not point.cumulative:
                    samples.extend(samples_of(point))
                    continue
                previous = updates.get(point.stream) or self._streams.get(point.stream)
                state = _StreamState(point.start_ns, point.sample.end_ns, point.layout,
                                     {key: count for key, _, count in point.buckets})
                counts = _new_counts(previous, state, self.started_ns)
                if counts is not None:
                    updates[point.stream] = state
                    samples.extend(samples_of(point, counts))
            if not submit(samples):
                return False
            for stream, state in updates.items():
                self._streams[stream] = state
                self._streams.move_to_end(stream)
            while len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
            return True


def _new_counts(previous: _StreamState | None, current: _StreamState, started_ns: int) -> dict[Hashable, int] | None:
    """Counts of `current` not yet seen in `previous`; None when `current` is stale (no newer than `previous`)."""
    if previous is not None:
        if current.end_ns <= previous.end_ns:
            return None
        if previous.start_ns == current.start_ns and previous.layout == current.layout:
            diff = {key: count - previous.counts.get(key, 0) for key, count in current.counts.items()}
            went_down = any(d < 0 for d in diff.values()) or any(k not in current.counts for k in previous.counts)
            if not went_down:
                return diff
    # First sighting or a reset: everything since the stream's start is new only if it started after us.
    return dict(current.counts) if current.start_ns >= started_ns else {}


def _data_points(metric: Metric) -> Iterable[HistogramDataPoint | ExponentialHistogramDataPoint]:
    field = metric.WhichOneof("data")
    if metric.name not in _DURATION_SERIES and metric.name != TOKEN_USAGE or field is None:
        return ()
    return getattr(metric, field).data_points


def _decode_point(
    metric: Metric,
    point: HistogramDataPoint | ExponentialHistogramDataPoint,
    resource: Attributes,
    owner: tuple[str, str, str],
    resource_key: frozenset,
) -> HistogramPoint | None:
    """One data point of a GenAI metric as a `HistogramPoint`; None when it carries nothing to use."""
    field = metric.WhichOneof("data")
    if field not in ("histogram", "exponential_histogram"):
        raise InvalidDataPoint(f"must be a histogram, got a {field}")
    temporality = getattr(metric, field).aggregation_temporality
    if temporality not in (AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA,
                           AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE):
        raise InvalidDataPoint("aggregation_temporality must be DELTA or CUMULATIVE")
    if point.flags & DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK:
        return None
    if not point.time_unix_nano:
        raise InvalidDataPoint("time_unix_nano must be set")
    attrs = attributes_of(point.attributes)
    series = _series(metric, attrs)
    if series is None:
        return None
    scale = 1.0 if metric.name == TOKEN_USAGE else _ms_per_unit(metric.unit)
    if field == "histogram":
        layout, buckets = _explicit_buckets(point)
    else:
        layout, buckets = _exponential_buckets(point)
    if not buckets:
        return None
    buckets = [(key, value * scale, count) for key, value, count in buckets]
    if not all(math.isfinite(value) for _, value, _ in buckets):
        raise InvalidDataPoint("a bucket's value is beyond the range of a double")
    tenant, workload, resource_class = owner
    kind, name, model = _fragment(attrs)
    device_class = first_str(attrs, (DEVICE_CLASS_ATTR,)) or resource_class
    sample = MetricSample(
        tenant=tenant,
        workload=workload,
        fragment_key=fragment_key(kind, name),
        kind=kind,
        name=name,
        model=model,
        device_class=device_class[:DEVICE_CLASS_MAX],
        series=series,
        end_ns=point.time_unix_nano,
        value=0.0,
        count=0,
    )
    return HistogramPoint(
        stream=(tenant, resource_key, metric.name, frozenset(attrs.items())),
        sample=sample,
        start_ns=point.start_time_unix_nano,
        cumulative=temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE,
        layout=layout,
        buckets=tuple(buckets),
    )


def _series(metric: Metric, attrs: Attributes) -> Series | None:
    if metric.name == TOKEN_USAGE:
        return _TOKEN_SERIES.get(first_str(attrs, ("gen_ai.token.type",)).lower())
    return _DURATION_SERIES[metric.name]


def _ms_per_unit(unit: str) -> float:
    factor = _MS_PER_UNIT.get(unit.strip() or "s")
    if factor is None:
        raise InvalidDataPoint(f"unit {unit!r} is not a duration unit; send seconds ('s') as the conventions say")
    return factor


def _fragment(attrs: Attributes) -> tuple[FragmentKind, str, str]:
    """(kind, name, model) of the fragment a point measures, as `classify` finds it for a span."""
    operation = first_str(attrs, ("gen_ai.operation.name",))
    model = first_str(attrs, _MODEL_ATTRS)
    if not operation:
        if not model:
            raise InvalidDataPoint("name the fragment: set gen_ai.operation.name (and gen_ai.request.model)")
        operation = "chat"
        attrs = {**attrs, "gen_ai.operation.name": operation}
    kind, name, model = classify(f"{operation} {model}".strip(), attrs)
    return kind, name[: KEY_MAX - len(kind.value) - 1], model[:MODEL_MAX]


def _explicit_buckets(point: HistogramDataPoint) -> tuple[Hashable, list[tuple[Hashable, float, int]]]:
    bounds = list(point.explicit_bounds)
    counts = list(point.bucket_counts)
    if not counts:
        return (), []
    if len(counts) != len(bounds) + 1:
        raise InvalidDataPoint(
            f"bucket_counts has {len(counts)} entries for {len(bounds)} explicit_bounds; it needs one more than bounds"
        )
    if not all(math.isfinite(b) for b in bounds) or any(hi <= lo for lo, hi in pairwise(bounds)):
        raise InvalidDataPoint("explicit_bounds must be finite and strictly increasing")
    _check_count(point.count, sum(counts))
    low = _finite(point, "min")
    high = _finite(point, "max")
    buckets = []
    for i, count in enumerate(counts):
        if not count:
            continue
        if not bounds:  # one bucket, (-inf, inf): only the mean says where its values lie
            value = point.sum / point.count if point.HasField("sum") and math.isfinite(point.sum) else None
        elif i == 0:
            value = min(low, bounds[0]) if low is not None else (bounds[0] / 2 if bounds[0] > 0 else bounds[0])
        elif i == len(bounds):
            value = max(high, bounds[-1]) if high is not None else bounds[-1]
        else:
            value = (bounds[i - 1] + bounds[i]) / 2
        if value is not None:
            buckets.append((i, max(value, 0.0), count))
    return tuple(bounds), buckets


def _exponential_buckets(point: ExponentialHistogramDataPoint) -> tuple[Hashable, list[tuple[Hashable, float, int]]]:
    if not _MIN_SCALE <= point.scale <= _MAX_SCALE:
        raise InvalidDataPoint(f"scale {point.scale} is outside [{_MIN_SCALE}, {_MAX_SCALE}]")
    if any(point.negative.bucket_counts):
        raise InvalidDataPoint("GenAI durations and token counts cannot be negative; negative buckets must be empty")
    positive = list(point.positive.bucket_counts)
    _check_count(point.count, point.zero_count + sum(positive))
    width = 2.0 ** -point.scale  # log2 of the bucket base
    buckets: list[tuple[Hashable, float, int]] = []
    if point.zero_count:
        buckets.append((_ZERO_BUCKET, 0.0, point.zero_count))
    for k, count in enumerate(positive):
        if not count:
            continue
        index = point.positive.offset + k
        try:
            low, high = 2.0 ** (index * width), 2.0 ** ((index + 1) * width)
        except OverflowError:
            raise InvalidDataPoint(f"bucket {index} at scale {point.scale} lies beyond the range of a double") from None
        buckets.append((index, low / 2 + high / 2, count))
    return ("exponential", point.scale), buckets


def _check_count(count: int, bucket_total: int) -> None:
    if count != bucket_total:
        raise InvalidDataPoint(f"count {count} is not the sum of the bucket counts ({bucket_total})")
    if count > _MAX_COUNT:
        raise InvalidDataPoint(f"count {count} is implausibly large (over 2^53)")


def _finite(point: HistogramDataPoint, field: str) -> float | None:
    if point.HasField(field):
        value = getattr(point, field)
        if math.isfinite(value):
            return value
    return None


