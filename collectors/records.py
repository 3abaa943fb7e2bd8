"""Normalised telemetry records that cross from decoding into aggregation (besides `SpanRecord`)."""

from dataclasses import dataclass
from enum import StrEnum


class Series(StrEnum):
    """A distribution kept per (fragment, device class, minute)."""

    latency_ms = "latency_ms"  # one visit, end to end
    ttft_ms = "ttft_ms"  # time to first token (LLM)
    tpot_ms = "tpot_ms"  # time per output token (LLM)
    tokens_in = "tokens_in"
    tokens_out = "tokens_out"


@dataclass(frozen=True, slots=True)
class MetricSample:
    """Observations of one series from an OTLP metric data point: `count` values near `value`.

    A histogram data point becomes one sample per non-empty bucket (value: a representative
    of the bucket, in the series' unit: milliseconds or tokens).
    """

    tenant: str
    workload: str
    fragment_key: str
    kind: str
    name: str
    model: str
    device_class: str
    series: Series
    end_ns: int
    value: float
    count: int
