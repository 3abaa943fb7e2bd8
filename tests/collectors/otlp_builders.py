"""Builders of OTLP trace and metric messages for the collector tests, so each test states only what it varies."""

import json
from base64 import b64decode
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

# 2026-01-01T12:00:00Z: every span starts in the same, known minute unless a test says otherwise.
T0_NS = 1_767_268_800 * 10**9
MS = 10**6


def trace_id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def span_id(n: int) -> bytes:
    return n.to_bytes(8, "big")


def any_value(value: str | bool | int | float) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def key_values(attrs: Mapping[str, str | bool | int | float]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def make_span(
    name: str,
    *,
    trace: int = 1,
    span: int,
    parent: int | None = None,
    start_ms: float = 0,
    duration_ms: float = 10,
    attrs: Mapping[str, str | bool | int | float] | None = None,
    failed: bool = False,
) -> Span:
    start = T0_NS + int(start_ms * MS)
    return Span(
        status=Status(code=Status.STATUS_CODE_ERROR if failed else Status.STATUS_CODE_UNSET),
        trace_id=trace_id(trace),
        span_id=span_id(span),
        parent_span_id=span_id(parent) if parent is not None else b"",
        name=name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=start,
        end_time_unix_nano=start + int(duration_ms * MS),
        attributes=key_values(attrs or {}),
    )


def make_request(spans: Iterable[Span], resource: Mapping[str, str] | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans: ResourceSpans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(key_values(resource or {"service.name": "support-bot"}))
    resource_spans.scope_spans.add().spans.extend(spans)
    return request


def to_otlp_json(message: Message) -> bytes:
    """OTLP JSON as exporters send it: camelCase, int64 as strings, ids as hex (not protobuf's base64)."""
    document = json_format.MessageToDict(message)
    _base64_ids_to_hex(document)
    return json.dumps(document).encode()


def _base64_ids_to_hex(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _base64_ids_to_hex(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                node[key] = b64decode(value).hex()
            else:
                _base64_ids_to_hex(value)


DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}


def histogram_point(
    bounds: Sequence[float],
    counts: Sequence[int],
    attrs: Mapping[str, str | bool | int | float] | None = None,
    *,
    start_ms: float = 0,
    end_ms: float = 60_000,
    **fields: float,
) -> HistogramDataPoint:
    """An explicit-bucket point; `fields` sets sum, min or max. Count is the sum of `counts`."""
    return HistogramDataPoint(
        attributes=key_values(CHAT if attrs is None else attrs),
        start_time_unix_nano=T0_NS + int(start_ms * MS),
        time_unix_nano=T0_NS + int(end_ms * MS),
        count=sum(counts),
        explicit_bounds=bounds,
        bucket_counts=counts,
        **fields,
    )


def exponential_point(
    scale: int,
    offset: int,
    counts: Sequence[int],
    attrs: Mapping[str, str | bool | int | float] | None = None,
    *,
    zero_count: int = 0,
    end_ms: float = 60_000,
) -> ExponentialHistogramDataPoint:
    point = ExponentialHistogramDataPoint(
        attributes=key_values(CHAT if attrs is None else attrs),
        start_time_unix_nano=T0_NS,
        time_unix_nano=T0_NS + int(end_ms * MS),
        count=sum(counts) + zero_count,
        scale=scale,
        zero_count=zero_count,
    )
    point.positive.offset = offset
    point.positive.bucket_counts.extend(counts)
    return point


def histogram_metric(
    name: str,
    points: Iterable[HistogramDataPoint | ExponentialHistogramDataPoint],
    *,
    unit: str = "s",
    temporality: int = DELTA,
) -> Metric:
    points = list(points)
    metric = Metric(name=name, unit=unit)
    data = metric.histogram if isinstance(points[0], HistogramDataPoint) else metric.exponential_histogram
    data.aggregation_temporality = temporality
    data.data_points.extend(points)
    return metric


def make_metrics_request(
    metrics: Iterable[Metric], resource: Mapping[str, str] | None = None
) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.extend(key_values(resource or {"service.name": "support-bot"}))
    resource_metrics.scope_metrics.add().metrics.extend(metrics)
    return request


def agent_loop(trace: int = 1, tool_calls: int = 3) -> list[Span]:
    """One request of an agent: a root span, an LLM chat and `tool_calls` calls of one tool."""
    spans = [
        make_span("invoke_agent triage", trace=trace, span=1, duration_ms=500,
                  attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"}),
        make_span("chat gpt-4o", trace=trace, span=2, parent=1, start_ms=1, duration_ms=200,
                  attrs={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                         "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20}),
    ]
    for i in range(tool_calls):
        spans.append(
            make_span("execute_tool search", trace=trace, span=10 + i, parent=1, start_ms=210 + 50 * i,
                      duration_ms=40, attrs={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"})
        )
    return spans
