"""The normaliser: one OTLP span, whatever dialect the app emits, becomes one `SpanRecord`.

Pure functions over the OTel protobuf messages; no I/O, no clock.

Attribute contract (OTel GenAI semantic conventions, first cut):

=====================================================  =========  ==========================================
span attribute                                         kind       fragment name
=====================================================  =========  ==========================================
gen_ai.operation.name = chat | text_completion |       llm        gen_ai.request.model, else
generate_content                                                  gen_ai.response.model, else span name
gen_ai.operation.name = embeddings                     embedding  model (as llm), else span name
gen_ai.operation.name = rerank                         rerank     model (as llm), else span name
gen_ai.operation.name = execute_tool                   tool       gen_ai.tool.name, else span name
gen_ai.operation.name = invoke_agent | create_agent    agent      gen_ai.agent.name, else span name
gen_ai.operation.name = retrieval                      retrieval  gen_ai.data_source.id, else span name
db.system.name or db.system (no GenAI operation)       db         that attribute's value
anything else                                          cpu        span name
=====================================================  =========  ==========================================

The fragment key is ``f"{kind}:{name}"``: stable across traces, never a span id.
Tokens come from gen_ai.usage.input_tokens / output_tokens, or the older
gen_ai.usage.prompt_tokens / completion_tokens. Resource attributes
``heteroplane.tenant`` / ``heteroplane.workload`` name the tenant and workload
(falling back to service.namespace / service.name), and ``heteroplane.device_class``
(span attribute first, then resource attribute) names the device class.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from controlplane.models.workloads import FragmentKind

Attributes = Mapping[str, str | bool | int | float]

DEFAULT_TENANT = "default"
DEFAULT_WORKLOAD = "unknown"
UNNAMED = "unnamed"
NAME_MAX = 63
# Column widths of Fragment.key / Fragment.model and FragmentProfile.device_class.
KEY_MAX = 200
MODEL_MAX = 200
DEVICE_CLASS_MAX = 64

TENANT_ATTR = "heteroplane.tenant"
WORKLOAD_ATTR = "heteroplane.workload"
DEVICE_CLASS_ATTR = "heteroplane.device_class"

_MODEL_ATTRS = ("gen_ai.request.model", "gen_ai.response.model")

# gen_ai.operation.name -> (kind, attributes naming the fragment, first present wins).
_GENAI_OPERATIONS: dict[str, tuple[FragmentKind, tuple[str, ...]]] = {
    "chat": (FragmentKind.llm, _MODEL_ATTRS),
    "text_completion": (FragmentKind.llm, _MODEL_ATTRS),
    "generate_content": (FragmentKind.llm, _MODEL_ATTRS),
    "embeddings": (FragmentKind.embedding, _MODEL_ATTRS),
    "rerank": (FragmentKind.rerank, _MODEL_ATTRS),
    "execute_tool": (FragmentKind.tool, ("gen_ai.tool.name",)),
    "invoke_agent": (FragmentKind.agent, ("gen_ai.agent.name",)),
    "create_agent": (FragmentKind.agent, ("gen_ai.agent.name",)),
    "retrieval": (FragmentKind.retrieval, ("gen_ai.data_source.id",)),
}
_DB_SYSTEM_ATTRS = ("db.system.name", "db.system")
_INPUT_TOKEN_ATTRS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_OUTPUT_TOKEN_ATTRS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")

_NOT_NAME_CHARS = re.compile(r"[^a-z0-9-]+")
_DASH_RUNS = re.compile(r"-{2,}")


class InvalidSpan(ValueError):
    """A span the receiver must reject (counted in the OTLP partial-success response)."""


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span reduced to what profiling needs; the unit trace assembly works on."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    tenant: str
    workload: str
    kind: FragmentKind
    name: str
    model: str
    key: str
    device_class: str
    start_ns: int
    end_ns: int
    duration_ms: float
    tokens_in: int
    tokens_out: int


@dataclass(frozen=True, slots=True)
class NormalisedRequest:
    """The records of one export request, and how many of its spans were rejected and why."""

    records: tuple[SpanRecord, ...]
    rejected: int
    error: str


def attributes_of(key_values: Iterable[KeyValue]) -> dict[str, str | bool | int | float]:
    """Scalar OTLP attributes as a plain mapping; arrays, maps and bytes are not needed here and dropped."""
    out: dict[str, str | bool | int | float] = {}
    for kv in key_values:
        value = _scalar(kv.value)
        if value is not None:
            out[kv.key] = value
    return out


def _scalar(value: AnyValue) -> str | bool | int | float | None:
    field = value.WhichOneof("value")
    if field in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(value, field)
    return None


def sanitise_name(raw: str, fallback: str) -> str:
    """`raw` as a DNS-label-like name (``^[a-z0-9]([-a-z0-9]*[a-z0-9])?$``, at most 63), or `fallback`."""
    name = _DASH_RUNS.sub("-", _NOT_NAME_CHARS.sub("-", raw.strip().lower())).strip("-")
    name = name[:NAME_MAX].rstrip("-")
    return name or fallback


def classify(span_name: str, attrs: Attributes) -> tuple[FragmentKind, str, str]:
    """The fragment a span is a visit of: (kind, name, model)."""
    model = _first_str(attrs, _MODEL_ATTRS)
    operation = _first_str(attrs, ("gen_ai.operation.name",)).lower()
    if operation in _GENAI_OPERATIONS:
        kind, name_attrs = _GENAI_OPERATIONS[operation]
        return kind, _first_str(attrs, name_attrs) or span_name, model
    db_system = _first_str(attrs, _DB_SYSTEM_ATTRS)
    if db_system:
        return FragmentKind.db, db_system, ""
    return FragmentKind.cpu, span_name, ""


def fragment_key(kind: FragmentKind, name: str) -> str:
    """A fragment's identity within its workload."""
    return f"{kind.value}:{name}"


def normalise_span(span: Span, resource: Attributes) -> SpanRecord:
    """One span and its resource's attributes as a `SpanRecord`; raises `InvalidSpan` for bad ids."""
    trace_id = _hex_id(span.trace_id, 16, "trace_id")
    span_id = _hex_id(span.span_id, 8, "span_id")
    parent_span_id = _hex_id(span.parent_span_id, 8, "parent_span_id") if span.parent_span_id else None
    attrs = attributes_of(span.attributes)
    kind, name, model = classify(span.name.strip() or UNNAMED, attrs)
    name = name[: KEY_MAX - len(kind.value) - 1]  # so the key fits the Fragment.key column
    start_ns = span.start_time_unix_nano
    end_ns = max(span.end_time_unix_nano, start_ns)
    device_class = _first_str(attrs, (DEVICE_CLASS_ATTR,)) or _first_str(resource, (DEVICE_CLASS_ATTR,))
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        tenant=sanitise_name(_first_str(resource, (TENANT_ATTR, "service.namespace")), DEFAULT_TENANT),
        workload=sanitise_name(_first_str(resource, (WORKLOAD_ATTR, "service.name")), DEFAULT_WORKLOAD),
        kind=kind,
        name=name,
        model=model[:MODEL_MAX],
        key=fragment_key(kind, name),
        device_class=device_class[:DEVICE_CLASS_MAX],
        start_ns=start_ns,
        end_ns=end_ns,
        duration_ms=(end_ns - start_ns) / 1e6,
        tokens_in=_first_count(attrs, _INPUT_TOKEN_ATTRS),
        tokens_out=_first_count(attrs, _OUTPUT_TOKEN_ATTRS),
    )


def normalise_request(request: ExportTraceServiceRequest) -> NormalisedRequest:
    """Every span of an export request as records; invalid spans are counted, not raised."""
    records: list[SpanRecord] = []
    rejected = 0
    error = ""
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                try:
                    records.append(normalise_span(span, resource))
                except InvalidSpan as exc:
                    rejected += 1
                    error = error or str(exc)
    return NormalisedRequest(records=tuple(records), rejected=rejected, error=error)


def _hex_id(raw: bytes, size: int, field: str) -> str:
    if len(raw) != size or not any(raw):
        raise InvalidSpan(f"{field} must be {size} bytes and not all zero; got {raw.hex() or 'empty'}")
    return raw.hex()


def _first_str(attrs: Attributes, names: Iterable[str]) -> str:
    for name in names:
        value = attrs.get(name)
        if value is not None and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return ""


def _first_count(attrs: Attributes, names: Iterable[str]) -> int:
    """A non-negative token count; SDKs send ints, some send numeric strings or floats."""
    for name in names:
        value = attrs.get(name)
        if value is None or isinstance(value, bool):
            continue
        try:
            return max(int(float(value)), 0)
        except (TypeError, ValueError, OverflowError):
            continue
    return 0
