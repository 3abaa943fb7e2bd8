"""OTLP/HTTP bodies to and from protobuf messages: gzip, binary protobuf and OTLP JSON.

Pure and transport-free, so the receiver stays a thin HTTP shell. Each failure
is an `OtlpError` carrying the HTTP status the receiver answers with.

OTLP JSON differs from protobuf's canonical JSON mapping in one way that
matters: trace and span ids are hex strings, not base64. They are rewritten to
base64 before `json_format` parses the rest (int64 as strings or numbers, enums
as integers or names, unknown fields ignored: all `json_format`'s own rules).
Ids are rewritten only where OTLP puts them (spans, span links, exemplars), so
the walk never descends into attribute values however deeply they nest; a
span's own ids must be hex (400 otherwise), while a link's or an exemplar's
unusable id is dropped, since nothing here reads them.

Nothing a body can hold makes decoding raise anything but `OtlpError`: the JSON
parser and protobuf both bound nesting depth (RecursionError and protobuf's
depth limit become 400), and any other exception from the parsers is a
malformed body too.
"""

import base64
import json
import zlib
from collections.abc import Iterator
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MEDIA_TYPES = (PROTOBUF, JSON)

# gRPC status codes carried in error bodies, by HTTP status (OTLP/HTTP: the body is a google.rpc.Status).
_GRPC_CODE = {400: 3, 401: 16, 403: 7, 413: 8, 415: 3, 503: 14}

# Nesting allowed in a JSON body: OTLP itself needs about 8 levels, the rest is nested attribute values.
MAX_JSON_DEPTH = 100

# OTLP JSON field names (lowerCamelCase, and the proto names json_format also accepts).
_TRACE_ID = ("traceId", "trace_id")
_SPAN_ID = ("spanId", "span_id")
_PARENT_SPAN_ID = ("parentSpanId", "parent_span_id")
_RESOURCE_SPANS = ("resourceSpans", "resource_spans")
_SCOPE_SPANS = ("scopeSpans", "scope_spans")
_RESOURCE_METRICS = ("resourceMetrics", "resource_metrics")
_SCOPE_METRICS = ("scopeMetrics", "scope_metrics")
_METRIC_DATA = ("gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram", "summary")
_DATA_POINTS = ("dataPoints", "data_points")


class OtlpError(Exception):
    """A request the receiver refuses, with the HTTP status and a message naming the fix."""

    status = 400


class MalformedBody(OtlpError):
    status = 400


class BodyTooLarge(OtlpError):
    status = 413


class UnsupportedMediaType(OtlpError):
    status = 415


class Unauthorized(OtlpError):
    status = 401


class Forbidden(OtlpError):
    status = 403


class Unavailable(OtlpError):
    status = 503


def media_type(content_type: str | None) -> str:
    """The bare, lower-cased media type of a Content-Type header (parameters such as charset dropped)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """`data` gunzipped (all members), refusing output over `limit` bytes without inflating past it."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            # max_length >= 1 here (len(out) <= limit); 0 would mean unbounded.
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise MalformedBody(f"body is not valid gzip: {exc}") from exc
        if len(out) > limit or inflater.unconsumed_tail:
            raise BodyTooLarge(f"decompressed body exceeds {limit} bytes; send smaller batches")
        if not inflater.eof:
            raise MalformedBody("gzip body is truncated")
        data = inflater.unused_data
    return bytes(out)


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The payload of a request body under its Content-Encoding (identity or gzip)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "gzip":
        return gunzip_bounded(body, limit)
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    if len(body) > limit:
        raise BodyTooLarge(f"body exceeds {limit} bytes; send smaller batches")
    return body


def parse_message(payload: bytes, media: str, message: Message) -> Message:
    """Fill `message` from an OTLP protobuf or OTLP JSON payload; raises `MalformedBody`."""
    if media not in MEDIA_TYPES:
        raise UnsupportedMediaType(f"Content-Type {media!r} is not supported; use {PROTOBUF} or {JSON}")
    name = message.DESCRIPTOR.name
    try:
        if media == PROTOBUF:
            message.ParseFromString(payload)
        else:
            document = json.loads(payload)
            _hex_ids_to_base64(document)
            json_format.ParseDict(document, message, ignore_unknown_fields=True, max_recursion_depth=MAX_JSON_DEPTH)
    except OtlpError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a hostile body makes a parser raise, it is the body's fault
        kind = "protobuf" if media == PROTOBUF else "OTLP JSON"
        raise MalformedBody(f"body is not a valid {name} in {kind}: {type(exc).__name__}: {exc}"[:500]) from exc
    return message


def serialise(message: Message, media: str) -> bytes:
    """`message` as a response body in the request's media type (JSON when that is unknown)."""
    if media == PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()


def error_body(status: int, message: str, media: str) -> bytes:
    """The google.rpc.Status body OTLP/HTTP prescribes for a failed request."""
    return serialise(Status(code=_GRPC_CODE.get(status, 2), message=message), media)


def _hex_ids_to_base64(document: Any) -> None:
    """Rewrite OTLP JSON's hex ids into protobuf JSON's base64, in place, where OTLP puts them.

    Shapes json_format will refuse anyway (a list where an object belongs…) are left for it to name.
    """
    for resource_spans in _objects(document, _RESOURCE_SPANS):
        for scope_spans in _objects(resource_spans, _SCOPE_SPANS):
            for span in _objects(scope_spans, ("spans",)):
                for field in (*_TRACE_ID, *_SPAN_ID, *_PARENT_SPAN_ID):
                    _rewrite_id(span, field, strict=True)
                for link in _objects(span, ("links",)):
                    for field in (*_TRACE_ID, *_SPAN_ID):
                        _rewrite_id(link, field, strict=False)
    for resource_metrics in _objects(document, _RESOURCE_METRICS):
        for scope_metrics in _objects(resource_metrics, _SCOPE_METRICS):
            for metric in _objects(scope_metrics, ("metrics",)):
                for data in (metric.get(name) for name in _METRIC_DATA):
                    for point in _objects(data, _DATA_POINTS):
                        for exemplar in _objects(point, ("exemplars",)):
                            for field in (*_TRACE_ID, *_SPAN_ID):
                                _rewrite_id(exemplar, field, strict=False)


def _objects(node: Any, names: tuple[str, ...]) -> Iterator[dict]:
    """The JSON objects in the list `node[name]`, for each spelling of the field name."""
    if not isinstance(node, dict):
        return
    for name in names:
        items = node.get(name)
        if isinstance(items, list):
            yield from (item for item in items if isinstance(item, dict))


def _rewrite_id(node: dict, field: str, *, strict: bool) -> None:
    value = node.get(field)
    if not isinstance(value, str):
        return
    try:
        node[field] = base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError as exc:
        if strict:
            raise MalformedBody(f"{field} must be a hex string, got {value[:40]!r}") from exc
        del node[field]
