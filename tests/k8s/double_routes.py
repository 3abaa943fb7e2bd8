"""Requests and errors of the API server double: which resource a URL path addresses, the Kubernetes verb of a
request, and failures rendered as `Status` objects with their HTTP codes."""

from dataclasses import dataclass

from tests.k8s.double_fields import Obj
from tests.k8s.double_store import RESOURCE_TYPES, ResourceType

_TYPES_BY_PATH = {(t.group, t.version, t.plural): t for t in RESOURCE_TYPES}
_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict",
    410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
    500: "InternalError", 503: "ServiceUnavailable",
}


class ApiError(Exception):
    """A failed request, rendered as a Kubernetes `Status` object with the matching HTTP code."""

    def __init__(self, code: int, message: str, *, reason: str | None = None, details: Obj | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason or _REASONS[code]
        self.details, self.retry_after = details or {}, retry_after

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": self.message, "reason": self.reason, "code": self.code}
        details = dict(self.details)
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            body["details"] = details
        return body


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rtype.qualified} "{name}" not found', details={"name": name, "group": rtype.group, "kind": rtype.plural})


@dataclass(frozen=True)
class Route:
    """What a request path addresses: a resource type, an optional namespace, name and subresource."""

    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str


def parse_route(path: str) -> Route | None:
    """`/api/v1/nodes/n1`, `/apis/apps/v1/namespaces/ns/deployments/d/status`, ...; None if not served."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    rtype = _TYPES_BY_PATH.get((group, version, rest[0])) if rest else None
    if rtype is None or len(rest) > 3 or (namespace is not None and not rtype.namespaced):
        return None
    name = rest[1] if len(rest) >= 2 else None
    subresource = rest[2] if len(rest) == 3 else ""
    if (name is not None and rtype.namespaced and namespace is None) or (
        subresource and not (subresource == "status" and rtype.status_subresource)
    ):
        return None
    return Route(rtype, namespace, name, subresource)


def request_verb(method: str, route: Route | None, query: dict[str, str]) -> str:
    """The Kubernetes verb of a request (get, list, watch, create, update, patch, delete), as RBAC names it."""
    if method == "GET":
        if route is not None and route.name is None:
            return "watch" if query.get("watch") in ("true", "1") else "list"
        return "get"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())
