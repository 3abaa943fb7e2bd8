"""The OpenAPI document says every answer the API can give: each error as RFC 9457 problem+json.

FastAPI documents only 422, and as its own `{detail: [...]}` JSON, while every error this API sends
is `application/problem+json` (controlplane.errors). `document_errors` rewrites the generated
document once: a `Problem` schema, and per operation the statuses it can answer with:

- every operation: 400 (a request the route refuses as a whole), 422 (a field out of bounds, named
  in `field`), 503 (database unavailable or the server at capacity; `Retry-After`);
- with a token: 401 (missing, unknown, revoked or expired; `WWW-Authenticate`), 403 (the role or
  the tenant scope does not allow it), 429 (too many failed tokens from this client; `Retry-After`);
- on one object (a path id) or naming objects in its body: 404 (absent, or another tenant's);
- changing something: 409 (conflicts with existing data or the object's state);
- with a body: 413 (over controlplane.inputs.MAX_BODY_BYTES).

/health needs no token (a token only shows more), and answers 503 with its usual body when degraded.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM_JSON = "application/problem+json"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "An error, as RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "What went wrong and what to do about it."},
        "instance": {"type": "string", "description": "The request's path."},
        "field": {"type": ["string", "null"], "description": "The input at fault, as a dotted path."},
        "errors": {
            "type": "array",
            "description": "Every invalid input (422).",
            "items": {"type": "object", "properties": {"field": {"type": ["string", "null"]},
                                                         "message": {"type": "string"}}},
        },
    },
}

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}}
_WHY = {
    400: "The request was refused as a whole (e.g. a body that is not JSON, or inconsistent parameters).",
    401: "No token, or one that is unknown, revoked or expired.",
    403: "The token's role or tenant scope does not allow this.",
    404: "The object, or one the request names, does not exist or belongs to another tenant.",
    409: "The change conflicts with existing data or with the object's state.",
    413: "The request body is too large.",
    422: "An input is invalid or out of bounds; `field` names it.",
    429: "Too many failed tokens from this client; retry after `Retry-After` seconds.",
    503: "The database is unavailable or the server is at capacity; retry after `Retry-After` seconds.",
}
_HEADERS = {401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
            429: _RETRY_AFTER, 503: _RETRY_AFTER}
_CHANGES = {"post", "put", "patch", "delete"}


def error_statuses(method: str, path: str, operation: dict[str, Any]) -> list[int]:
    """The error statuses `method path` can answer with (see the module docstring)."""
    statuses = [400, 422, 503]
    if operation.get("security"):
        statuses += [401, 403, 429]
    if "{" in path or method in _CHANGES or not _is_list(operation):
        statuses.append(404)
    if method in _CHANGES:
        statuses.append(409)
    if "requestBody" in operation:
        statuses.append(413)
    return sorted(statuses)


def _is_list(operation: dict[str, Any]) -> bool:
    """A list answers an empty page, never 404."""
    schema = operation.get("responses", {}).get("200", {}).get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").startswith("#/components/schemas/Page_")


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` describe every error the API answers with (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        problem_ref = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path, item in document["paths"].items():
            for method, operation in item.items():
                responses = operation.setdefault("responses", {})
                for status in error_statuses(method, path, operation):
                    responses[str(status)] = {"description": _WHY[status], "content": problem_ref}
                    if status in _HEADERS:
                        responses[str(status)]["headers"] = _HEADERS[status]
        _document_health(document)
        app.openapi_schema = document
        return document

    app.openapi = openapi


def _document_health(document: dict[str, Any]) -> None:
    operation = document["paths"].get("/api/v1/health", {}).get("get")
    if operation is None:
        return
    operation["security"] = [{}, *operation.get("security", [])]  # {}: no token needed
    ok = operation["responses"]["200"]
    operation["responses"]["503"] = {
        "description": "Degraded: the database, a component or an SLA is not well (the same body as 200); or the "
                       "database cannot be reached to check a token sent along.",
        "content": {**ok["content"], PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for status in ("401", "403", "404", "429"):
        operation["responses"].pop(status, None)
    ready = document["paths"].get("/api/v1/ready", {}).get("get")
    if ready is not None:
        ready["responses"]["503"] = {
            "description": "Not ready: this process cannot reach its database (the same body as 200).",
            "content": {**ready["responses"]["200"]["content"],
                        PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
