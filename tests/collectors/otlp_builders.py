"""Builders of OTLP trace messages for the collector tests, so each test states only what it varies."""

import json
from base64 import b64decode
from collections.abc import Iterable, Mapping

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

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
) -> Span:
    start = T0_NS + int(start_ms * MS)
    return Span(
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


def to_otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP JSON as exporters send it: camelCase, int64 as strings, ids as hex (not protobuf's base64)."""
    document = json_format.MessageToDict(request)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for field in ("traceId", "spanId", "parentSpanId"):
                    if field in span:
                        span[field] = b64decode(span[field]).hex()
    return json.dumps(document).encode()


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
