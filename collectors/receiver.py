"""The OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/metrics` in, batches queued for ingest, OTLP replies out.

A thin shell: authenticate, admit, read a bounded body, decode (`otlp_codec`), normalise
spans (`normalise`) or GenAI metrics (`metrics_decode`), then hand the batch to
the bounded ingest queue (`pipeline.Ingest`), which assembles, aggregates and
stores it off the request path. Decoding runs in the threadpool so the event
loop keeps accepting requests.

Replies, as the OTLP/HTTP specification prescribes, in the request's content type
(JSON when the content type itself is refused):

====  ==========================================================================
200   accepted; `partial_success` counts spans / data points rejected one by one
400   malformed body (bad protobuf, JSON, gzip or hex id): a `google.rpc.Status`
401   no valid bearer token (`WWW-Authenticate: Bearer`)
403   a viewer token
413   body over `otlp_max_body_bytes`, after decompression
415   Content-Type not protobuf or JSON, or Content-Encoding not gzip / identity
503   ingest queue full or token store unavailable, with `Retry-After`: retryable
====  ==========================================================================

Admission before work: a full ingest queue is refused from its depth before the body is read,
so refused load costs no decoding. `Retry-After` is the queue's expected drain time
(`retry_after_s`). A reply sent before the body was read in full (401, 403, 415, the early 503,
413) says `Connection: close` and closes the connection: the unread rest of the body (or, after
`Expect: 100-continue`, the next request) would otherwise be taken for the body and hang.
Every 413 closes, whether the declared length or the inflated body was too large.

Who may send is decided by the `authorise` function the receiver is handed (the control plane's
`controlplane.auth.otlp_authoriser`: a bearer API token of role operator or admin). A
tenant-scoped token cannot write into another tenant: all it sends is attributed to the token's
tenant, whatever `heteroplane.tenant` or `service.namespace` the resource claims.
"""

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from fractions import Fraction
from typing import TypeVar

from fastapi import FastAPI, Request, Response
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.concurrency import run_in_threadpool

from collectors.metrics_decode import CumulativeStreams, DecodedMetrics, decode_metrics
from collectors.normalise import NormalisedRequest, normalise_request
from collectors.otlp_codec import (
    JSON,
    MEDIA_TYPES,
    BodyTooLarge,
    MalformedBody,
    OtlpError,
    Unavailable,
    UnsupportedMediaType,
    decode_body,
    error_body,
    media_type,
    parse_message,
    serialise,
)
from collectors.pipeline import Ingest

log = logging.getLogger(__name__)

T = TypeVar("T")


Authorise = Callable[[str | None], str | None]
"""(the request's Authorization header) -> the tenant its token is scoped to, or None for a
fleet-wide one; raises Unauthorized, Forbidden, or Unavailable when it cannot tell now."""


# One export: (payload, media type, the token's tenant or None) -> the reply; raises OtlpError.
_Export = Callable[[bytes, str, str | None], Message]

RETRY_AFTER_CAP_S = 60
"""The longest back-off a 503 asks for: past a minute the estimate is a guess, and exporters give up."""


def retry_after_s(depth: int, drain_rate_per_s: float, cap_s: int = RETRY_AFTER_CAP_S) -> int:
    """Whole seconds until a queue of `depth` batches drains at `drain_rate_per_s`, clamped to [1, cap_s].

        t = min(cap, max(1, ⌈depth / rate⌉))

    computed exactly (a float quotient just above an integer must not round down to it); a
    rate that is not positive and finite never drains, so it answers `cap_s`.
    """
    if not (drain_rate_per_s > 0 and math.isfinite(drain_rate_per_s)):
        return cap_s
    return min(cap_s, max(1, math.ceil(Fraction(max(depth, 0)) / Fraction(drain_rate_per_s))))


def create_receiver_app(authorise: Authorise, ingest: Ingest, max_body_bytes: int, *,
                        owns_ingest: bool = False) -> FastAPI:
    """The OTLP/HTTP receiver; serve it on settings.otlp_host:otlp_port (4318 by default).

    Batches go to `ingest`; with `owns_ingest` the app starts it with itself and flushes and stops
    it when it stops, otherwise its caller does.
    """
    owned = owns_ingest
    queue = ingest
    streams = CumulativeStreams(started_ns=time.time_ns())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if owned:
            queue.start()
        try:
            yield
        finally:
            if owned:
                await run_in_threadpool(queue.stop)

    app = FastAPI(title="heteroplane OTLP receiver", version="0.1.0", lifespan=lifespan)
    app.state.ingest = queue

    def export_traces(payload: bytes, media: str, tenant: str | None) -> ExportTraceServiceResponse:
        normalised = _decoded(lambda: normalise_request(parse_message(payload, media, ExportTraceServiceRequest())))
        records = normalised.records
        if tenant is not None:
            records = [r._replace(tenant=tenant) for r in records]
        if not queue.submit(records):
            raise Unavailable("the ingest queue is full; retry later")
        return _trace_response(normalised)

    def export_metrics(payload: bytes, media: str, tenant: str | None) -> ExportMetricsServiceResponse:
        decoded = _decoded(lambda: decode_metrics(parse_message(payload, media, ExportMetricsServiceRequest()), tenant))
        if not streams.submit(decoded, queue.submit_metrics):
            raise Unavailable("the ingest queue is full; retry later")
        return _metrics_response(decoded)

    async def handle(request: Request, export: _Export) -> Response:
        media = media_type(request.headers.get("content-type"))
        reply_media = media if media in MEDIA_TYPES else JSON
        body_read = False
        try:
            tenant = await run_in_threadpool(authorise, request.headers.get("authorization"))
            if media not in MEDIA_TYPES:
                raise UnsupportedMediaType(f"Content-Type {media!r} is not supported; use one of {MEDIA_TYPES}")
            if queue.full:  # admission before work: refuse without reading, let alone decoding
                raise Unavailable("the ingest queue is full; retry later")
            body = await _read_body(request, max_body_bytes)
            body_read = True
            encoding = request.headers.get("content-encoding")

            def work() -> Message:
                return export(decode_body(body, encoding, max_body_bytes), media, tenant)

            reply = await run_in_threadpool(work)
        except OtlpError as exc:
            return _error(exc, reply_media, retry_after_s(queue.depth, queue.drain_rate_per_s), close=not body_read or exc.status == 413)
        return Response(serialise(reply, media), 200, media_type=media)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/traces")
    async def traces(request: Request) -> Response:
        return await handle(request, export_traces)

    @app.post("/v1/metrics")
    async def metrics(request: Request) -> Response:
        return await handle(request, export_metrics)

    return app


def _error(exc: OtlpError, media: str, retry_after: int, *, close: bool) -> Response:
    """The error reply; `close` when the body was not read in full, so the connection cannot be reused."""
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if exc.status == 503:
        headers["Retry-After"] = str(retry_after)
    if close:
        headers["Connection"] = "close"
    return Response(error_body(exc.status, str(exc), media), exc.status, headers, media)


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it passes `limit` (a compressed body that large inflates past it too)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body exceeds {limit} bytes; send smaller batches")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"body exceeds {limit} bytes; send smaller batches")
    return bytes(body)


def _decoded(decode: Callable[[], T]) -> T:
    """`decode()`, with any failure on a hostile body a 400 rather than a 500.

    The codec raises only `OtlpError`; anything else comes from deeper in a parser or
    the normaliser, is logged for us, and answered as a body we could not read.
    """
    try:
        return decode()
    except OtlpError:
        raise
    except Exception as exc:  # noqa: BLE001 - a body must never make the receiver answer 500
        log.exception("OTLP body could not be decoded")
        raise MalformedBody(f"body could not be decoded: {type(exc).__name__}: {exc}"[:500]) from exc


def _trace_response(normalised: NormalisedRequest) -> ExportTraceServiceResponse:
    response = ExportTraceServiceResponse()
    if normalised.rejected:
        response.partial_success.rejected_spans = normalised.rejected
        response.partial_success.error_message = normalised.error
    return response


def _metrics_response(decoded: DecodedMetrics) -> ExportMetricsServiceResponse:
    response = ExportMetricsServiceResponse()
    if decoded.rejected:
        response.partial_success.rejected_data_points = decoded.rejected
        response.partial_success.error_message = decoded.error
    return response
