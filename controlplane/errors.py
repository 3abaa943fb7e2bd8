"""Every error the API can answer, and the one handler that renders them as RFC 9457 problem+json."""

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

PROBLEM_JSON = "application/problem+json"

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a client can act on. `field` names the offending input where there is one."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra


class InvalidInput(ApiError):
    """An input that is well formed but not acceptable (a rule across fields, an unknown parameter)."""

    status = 422
    title = "Invalid request"


class NotFound(ApiError):
    status = 404
    title = "Not found"


class Conflict(ApiError):
    status = 409
    title = "Conflict"


class Unauthorized(ApiError):
    status = 401
    title = "Unauthorized"


class Forbidden(ApiError):
    status = 403
    title = "Forbidden"


class TooManyRequests(ApiError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


def problem(status: int, title: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "instance": instance}
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_path(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error through problem+json so clients parse one shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        response = problem(exc.status, exc.title, exc.detail, request.url.path, field=exc.field, **exc.extra)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_path(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": None, "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        return problem(422, "Invalid request", detail, request.url.path, field=first["field"], errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        response = problem(exc.status_code, str(exc.detail), str(exc.detail), request.url.path)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route on the path; a path served by
            # several routes (GET list, POST create) allows all of theirs.
            response.headers["Allow"] = allowed_methods(request, response.headers.get("Allow", ""))
        return response

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        # The message of the driver may contain row values; say what kind of conflict without echoing data.
        return problem(409, "Conflict", "the change conflicts with existing data (duplicate name or a row still in use)", request.url.path)

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # A value the database cannot hold: bad input, not a server fault (the driver's text may echo data).
        # Inputs are bounded where they are parsed (controlplane.inputs), so this is a last line of defence.
        return problem(422, "Invalid request", "a value in the request cannot be stored: a number past its "
                       "column's range (ids and counts are at most 2147483647), a date outside the years "
                       "2000-2199, or a NUL character", request.url.path)

    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The database is down, restarting or saturated: the client should retry, and the driver's
        # text (hosts, users) stays in the log, once per outage.
        database_state(up=False, why=type(exc).__name__)
        response = problem(503, "Service unavailable", "the database is unavailable or busy; retry after the "
                           "seconds in Retry-After", request.url.path)
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
        return response

    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A defect: logged with its traceback by the server; the client gets problem+json, and is told
        # the connection closes (the server drops it after a 500).
        response = problem(500, "Internal server error", "an unexpected error; it is logged, and the request "
                           "may be retried", request.url.path)
        response.headers["Connection"] = "close"
        return response


def allowed_methods(request: Request, named: str) -> str:
    """Every method the OpenAPI document gives the request's path, with those Starlette `named` (the
    first matching route's only): GET list and POST create on one path are separate routes."""
    methods = {m.strip().upper() for m in named.split(",") if m.strip()}
    for template, operations in request.app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", template), request.url.path):
            methods |= {m.upper() for m in operations}
    return ", ".join(sorted(methods))


# What the driver and the pool raise when the database is unreachable or busy: answered 503, never 500.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
DATABASE_RETRY_AFTER_S = 2
_database = {"up": True}


def database_state(up: bool, why: str = "") -> None:
    """Note whether the database answered; logs one line when that changes, never one per request."""
    if _database["up"] != up:
        _database["up"] = up
        if up:
            log.warning("the database answers again")
        else:
            log.warning("the database is unavailable (%s); API requests answer 503 until it answers", why)
