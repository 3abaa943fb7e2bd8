"""Bounds every API request meets before a route parses it: a body size, and no NUL character.

No column stores a NUL (PostgreSQL refuses it in text) and no name needs one, so a NUL in the
path, a query parameter or any string of a JSON body is answered 422 naming where it was, before
any route runs. A body larger than MAX_BODY_BYTES (no request of this API needs a tenth of it) is
answered 413 without being read further. Integers, floats and datetimes are bounded where they
are declared (controlplane.models._common: INT32_MAX, INPUT, Instant).
"""

import json
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.errors import InvalidInput, problem

MAX_BODY_BYTES = 1024 * 1024
_JSON = (b"application/json", b"application/merge-patch+json")


class InputGuard:
    """Pure ASGI middleware: refuses oversized bodies (413) and NUL characters (422) for every route."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = nul_in_target(scope["path"], scope.get("query_string", b"").decode("latin-1"))
        if where is not None:
            await _refuse_nul(scope, receive, send, where)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type in _JSON and (where := nul_in_json(body)) is not None:
            await _refuse_nul(scope, receive, send, where)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "Content too large", f"the request body is over {self.max_body_bytes} bytes (or its "
                           "Content-Length is not a number); no request of this API needs that much", scope["path"])
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


async def known_query_parameters(request: Request) -> None:
    """A dependency of every API route: a query parameter the route does not read is refused (422
    naming it), so a misspelt filter (`?workload=3`) is an error, not a silently unfiltered list."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    unknown = sorted(set(request.query_params) - _query_names(route))
    if unknown:
        allowed = ", ".join(sorted(_query_names(route))) or "none"
        raise InvalidInput(f"{unknown[0]!r} is not a query parameter of this operation (it takes: {allowed})",
                               field=unknown[0])


_QUERY_NAMES: dict[int, frozenset[str]] = {}  # by id(route): routes live as long as the app


def _query_names(route: APIRoute) -> frozenset[str]:
    def names(dependant: Dependant) -> set[str]:
        return {p.alias for p in dependant.query_params}.union(*(names(d) for d in dependant.dependencies))

    if id(route) not in _QUERY_NAMES:
        _QUERY_NAMES[id(route)] = frozenset(names(route.dependant))
    return _QUERY_NAMES[id(route)]


def nul_in_target(path: str, query: str) -> str | None:
    """Where a NUL is in a request's path or query ('path', 'query parameter `x`'), or None."""
    if "\x00" in unquote(path):
        return "path"
    for name, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "\\0") if "\x00" in name else name
    return None


def nul_in_json(body: bytes) -> str | None:
    """The dotted path of the first string (value or key) holding a NUL in a JSON `body`, or None;
    a body that is not JSON is left to the route's parser to refuse."""
    if b"\\u0000" not in body.lower() and b"\x00" not in body:
        return None  # the common case: no NUL can be in it, so it is not parsed twice
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return _nul_at(document, ())


def _nul_at(value: Any, at: tuple[str, ...]) -> str | None:
    if isinstance(value, str):
        return (".".join(at) or "body") if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return ".".join((*at, key.replace("\x00", "\\0")))
        found = _nul_at(item, (*at, str(key)))
        if found is not None:
            return found
    return None


async def _refuse_nul(scope: Scope, receive: Receive, send: Send, field: str) -> None:
    message = "must not contain a NUL character"
    response = problem(422, "Invalid request", f"{field}: {message}", scope["path"], field=field,
                       errors=[{"field": field, "message": message}])
    await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the route the body already read, then whatever the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
