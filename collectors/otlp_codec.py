"""OTLP/HTTP bodies to and from protobuf messages: gzip, binary protobuf and OTLP JSON.

Pure and transport-free, so the receiver stays a thin HTTP shell. Each failure
is an `OtlpError` carrying the HTTP status the receiver answers with.

OTLP JSON differs from protobuf's canonical JSON mapping in one way that
matters: trace and span ids are hex strings, not base64. They are rewritten to
base64 before `json_format` parses the rest (int64 as strings, enum integers and
unknown fields are handled by `json_format` itself).
"""

import base64
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc.status_pb2 import Status

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MEDIA_TYPES = (PROTOBUF, JSON)

# gRPC status codes carried in error bodies, by HTTP status (OTLP/HTTP: the body is a google.rpc.Status).
_GRPC_CODE = {400: 3, 401: 16, 403: 7, 413: 8, 415: 3, 503: 14}

_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


class OtlpError(Exception):
    """A request the receiver refuses, with the HTTP status and a message naming the fix."""

    status = 400


class MalformedBody(OtlpError):
    status = 400


class BodyTooLarge(OtlpError):
    status = 413


class UnsupportedMediaType(OtlpError):
    status = 415


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
    if media == PROTOBUF:
        try:
            message.ParseFromString(payload)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise MalformedBody(f"body is not a valid {message.DESCRIPTOR.name} protobuf: {exc}") from exc
        return message
    if media == JSON:
        try:
            document = json.loads(payload)
            _hex_ids_to_base64(document)
            json_format.ParseDict(document, message, ignore_unknown_fields=True)
        except (ValueError, RecursionError, json_format.ParseError) as exc:
            raise MalformedBody(f"body is not valid OTLP JSON for {message.DESCRIPTOR.name}: {exc}") from exc
        return message
    raise UnsupportedMediaType(f"Content-Type {media!r} is not supported; use {PROTOBUF} or {JSON}")


def serialise(message: Message, media: str) -> bytes:
    """`message` as a response body in the request's media type (JSON when that is unknown)."""
    if media == PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()


def error_body(status: int, message: str, media: str) -> bytes:
    """The google.rpc.Status body OTLP/HTTP prescribes for a failed request."""
    return serialise(Status(code=_GRPC_CODE.get(status, 2), message=message), media)


def _hex_ids_to_base64(node: Any) -> None:
    """Rewrite OTLP JSON's hex trace/span ids, wherever they sit, into protobuf JSON's base64, in place."""
    if isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError as exc:
                    raise MalformedBody(f"{key} must be a hex string, got {value[:40]!r}") from exc
            elif isinstance(value, (dict, list)):
                _hex_ids_to_base64(value)
