"""The OTLP/HTTP trace receiver: `POST /v1/traces` in, profiles stored, an OTLP response out.

A thin shell: authenticate, read a bounded body, decode (`otlp_codec`), normalise,
assemble, store, all database and CPU-heavy work in the threadpool so the event
loop keeps accepting requests.

Who may send: a bearer API token of role operator or admin (401 without a valid
token, 403 for viewers). Such tokens may create the tenants and workloads their
spans name. A tenant-scoped token cannot write into another tenant: every span
it sends is attributed to the token's tenant, whatever `heteroplane.tenant` or
`service.namespace` the span's resource claims.
"""

import logging
from collections.abc import Sequence
from dataclasses import replace

from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from collectors.assembly import assemble
from collectors.normalise import NormalisedRequest, SpanRecord, normalise_request
from collectors.otlp_codec import (
    JSON,
    MEDIA_TYPES,
    BodyTooLarge,
    OtlpError,
    UnsupportedMediaType,
    decode_body,
    error_body,
    media_type,
    parse_message,
    serialise,
)
from collectors.store import store_batch
from controlplane.auth import Principal, authenticate
from controlplane.db import session_scope
from controlplane.models import Role, Tenant
from controlplane.settings import Settings

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1


class _Unauthorized(OtlpError):
    status = 401


class _Forbidden(OtlpError):
    status = 403


class _Unavailable(OtlpError):
    status = 503


def create_receiver_app(engine: Engine, settings: Settings) -> FastAPI:
    """The OTLP/HTTP receiver over `engine`; serve it on settings.otlp_host:otlp_port (4318 by default)."""
    app = FastAPI(title="heteroplane OTLP receiver", version="0.1.0")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/traces")
    async def export_traces(request: Request) -> Response:
        media = media_type(request.headers.get("content-type"))
        reply_media = media if media in MEDIA_TYPES else JSON
        try:
            principal = await run_in_threadpool(_authorise, engine, request.headers.get("authorization"))
            if media not in MEDIA_TYPES:
                raise UnsupportedMediaType(f"Content-Type {media!r} is not supported; use one of {MEDIA_TYPES}")
            body = await _read_body(request, settings.otlp_max_body_bytes)
            normalised = await run_in_threadpool(
                _decode, body, request.headers.get("content-encoding"), media, settings.otlp_max_body_bytes
            )
            await run_in_threadpool(_ingest, engine, normalised.records, principal)
        except OperationalError as exc:
            # Locked or unreachable database: the exporter retries on 503 after Retry-After.
            log.warning("OTLP export not stored, asking the exporter to retry: %s", exc)
            return _error(_Unavailable("the profile store is unavailable; retry later"), reply_media)
        except OtlpError as exc:
            return _error(exc, reply_media)
        return Response(serialise(_export_response(normalised), media), 200, media_type=media)

    return app


def _error(exc: OtlpError, media: str) -> Response:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if exc.status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    return Response(error_body(exc.status, str(exc), media), exc.status, headers, media)



def _authorise(engine: Engine, authorization: str | None) -> Principal:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _Unauthorized("send an API token as `Authorization: Bearer <token>`")
    with session_scope(engine) as session:
        principal = authenticate(session, token.strip())
    if principal is None:
        raise _Unauthorized("the API token is unknown, revoked or expired")
    if principal.role == Role.viewer:
        raise _Forbidden("a viewer token cannot send telemetry; use an operator or admin token")
    return principal


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


def _decode(body: bytes, content_encoding: str | None, media: str, limit: int) -> NormalisedRequest:
    payload = decode_body(body, content_encoding, limit)
    return normalise_request(parse_message(payload, media, ExportTraceServiceRequest()))


def _ingest(engine: Engine, records: Sequence[SpanRecord], principal: Principal) -> None:
    """Assemble and store `records` in one transaction, in the principal's tenant when it is tenant-scoped."""
    if not records:
        return
    with session_scope(engine) as session:
        if principal.tenant_id is not None:
            tenant = session.get(Tenant, principal.tenant_id)
            if tenant is None:
                raise _Unauthorized("the API token's tenant no longer exists")
            records = [replace(r, tenant=tenant.name) for r in records]
        store_batch(session, assemble(records))


def _export_response(normalised: NormalisedRequest) -> ExportTraceServiceResponse:
    response = ExportTraceServiceResponse()
    if normalised.rejected:
        response.partial_success.rejected_spans = normalised.rejected
        response.partial_success.error_message = normalised.error
    return response
