"""ApiServerDouble: a test double of the Kubernetes API server's HTTP interface, for tests without a cluster.

It serves the real REST paths and JSON shapes on http://127.0.0.1:<free port> from a background thread, so code
under test talks to it through the official `kubernetes` client unmodified (see `client_configuration`).

Resources and verbs (URL paths as on a real server; namespaced types also list/watch across namespaces):

| resource                                       | verbs                                                         |
|------------------------------------------------|---------------------------------------------------------------|
| core/v1 nodes (cluster), + /status             | get list watch create update patch apply delete               |
| apps/v1 deployments, + /status                 | get list watch create update patch apply delete               |
| resource.k8s.io/v1 resourceslices (cluster)    | get list watch create update patch apply delete               |
| resource.k8s.io/v1 resourceclaimtemplates      | get list watch create update patch apply delete               |
| coordination.k8s.io/v1 leases                  | get list watch create update patch apply delete               |

Semantics kept: a global resourceVersion, uid, creationTimestamp, generation (+1 on spec change); no-op writes
keep their resourceVersion; PUT with a stale `metadata.resourceVersion` is 409 Conflict; server-side apply
(`PATCH`, `Content-Type: application/apply-patch+yaml`, `fieldManager` required, `force`) with simplified field
ownership in managedFields (see double_fields); JSON merge patch, and strategic merge patch treated as merge
patch; /status writes change only status and main-resource writes never change it; label and field selectors;
watch as chunked newline-delimited JSON from a resourceVersion, with bookmarks, `timeoutSeconds`, and an ERROR
event carrying a 410 Status once the requested resourceVersion has left the bounded history; every error as a
`Status` object with its HTTP code; a bearer token check (401).

Deliberately not implemented: authorization, admission, defaulting beyond `spec.replicas: 1` on Deployments
(and kind/apiVersion from the URL),
validation beyond required fields, garbage collection, finalizers and graceful deletion, generateName, list
paging (`limit`/`continue`), JSON patch, dry run, discovery (/api, /apis, /openapi), protobuf and CBOR, and
real controllers: a Deployment's status changes only through `rollout`, `fail_rollout`, automatic rollout, or
a client writing /status.

To simulate a cluster, tests shape state through helpers (`add_node`, `set_node_ready`, `add_resource_slice`,
`put`, `remove`), drive Deployment status (`rollout`, `fail_rollout`, `auto_rollout`), inject faults
(`inject`, `drop_connections`, `stop`/`start`) and read `requests` to assert what a client did.

The call an actuator makes to server-side apply a Deployment with the official client:

    AppsV1Api(api_client).patch_namespaced_deployment(
        name, namespace, body, field_manager="heteroplane", force=True,
        _content_type="application/apply-patch+yaml")

Without `_content_type` the client sends a strategic merge patch, which does not create a missing object.
"""

import copy
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml
from kubernetes.client import Configuration

from tests.k8s.double_fields import ApplyConflictError, Obj, apply, get_path, merge_patch, record_update
from tests.k8s.double_objects import deployment_status, device, ready_condition
from tests.k8s.double_routes import ApiError, Route, not_found, parse_route, request_verb
from tests.k8s.double_store import (
    RESOURCE_TYPES,
    ObjectStore,
    ResourceType,
    field_selector,
    label_selector,
    now_timestamp,
)

APPLY = "application/apply-patch+yaml"
MERGE_PATCHES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
_TYPES_BY_KIND = {(t.api_version, t.kind): t for t in RESOURCE_TYPES}
@dataclass(frozen=True)
class RecordedRequest:
    """One request as the double received it, for tests to assert what a client did."""

    method: str
    path: str
    query: dict[str, str]
    verb: str
    resource: str | None  # plural, e.g. "deployments"; None for a path the double does not serve
    content_type: str | None
    field_manager: str | None
    body: Any  # parsed JSON/YAML body, None when empty or unparseable


@dataclass
class _Fault:
    status: int
    remaining: int
    retry_after: int | None
    verbs: frozenset[str] | None
    resource: str | None

    def matches(self, verb: str, resource: str | None) -> bool:
        return (self.verbs is None or verb in self.verbs) and (self.resource is None or self.resource == resource)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked watch streams, as a real server speaks
    disable_nagle_algorithm = True  # headers and body go out in separate writes; Nagle would hold each for 40 ms
    server: "_Server"

    def setup(self) -> None:
        super().setup()
        self.server.double._track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.double._track(self.connection, open_=False)
        super().finish()

    def _serve_request(self) -> None:
        self.server.double._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve_request

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # open keep-alive connections are closed by stop(), not waited for

    def __init__(self, port: int, double: "ApiServerDouble"):
        self.double = double
        super().__init__(("127.0.0.1", port), _Handler)


class ApiServerDouble:
    """A Kubernetes API server double on 127.0.0.1; `start()` it, point a client at `client_configuration()`."""

    def __init__(self, *, token: str = "double-token", history: int = 100, watch_timeout: float = 30.0):
        self.token = token
        self.watch_timeout = watch_timeout  # a watch without timeoutSeconds ends after this many seconds
        self.store = ObjectStore(history)
        self._lock = threading.Lock()  # requests, faults, connections, rollout settings
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._drops = 0
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._serving = threading.Event()
        self._port = 0
        self._rollout_delay: float | None = None
        self._failing: set[tuple[str, str]] = set()
        self._timers: list[threading.Timer] = []

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> "ApiServerDouble":
        """Serve, on a free port the first time and on the same port after `stop()` (an outage that ends)."""
        self._server = _Server(self._port, self)
        self._port = self._server.server_address[1]
        self._serving.set()
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection, watches included; the stored objects survive."""
        if self._server is None:
            return
        self._serving.clear()
        self.store.wake_watchers()
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer

    def close(self) -> None:
        with self._lock:
            for timer in self._timers:
                timer.cancel()
        self.stop()

    def client_configuration(self, token: str | None = None) -> Configuration:
        """A client Configuration for this double, authenticating with `token` (default: the accepted one)."""
        token = self.token if token is None else token
        return Configuration(host=self.url, api_key={"authorization": token}, api_key_prefix={"authorization": "Bearer"})

    # -- fault injection and request log ----------------------------------------------------------------------

    def inject(self, status: int, *, count: int = 1, retry_after: int | None = None,
               verbs: tuple[str, ...] | None = None, resource: str | None = None) -> None:
        """Fail the next `count` requests matching `verbs` (get, list, watch, create, update, patch, delete) and
        `resource` (plural) with `status`; a 429 or 503 carries `Retry-After: retry_after` when given."""
        fault = _Fault(status, count, retry_after, frozenset(verbs) if verbs else None, resource)
        with self._lock:
            self._faults.append(fault)

    def drop_connections(self, count: int = 1) -> None:
        """Close the next `count` connections on receipt of a request, without any response."""
        with self._lock:
            self._drops += count

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- cluster state helpers ---------------------------------------------------------------------------------

    def put(self, obj: Obj) -> Obj:
        """Create or replace any served object directly, as a controller or kubelet would; no faults, no auth."""
        return self.store.commit(_TYPES_BY_KIND[(obj["apiVersion"], obj["kind"])], obj)

    def get(self, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        return self.store.get(self._type(plural), namespace, name)

    def remove(self, plural: str, name: str, namespace: str | None = None) -> None:
        self.store.delete(self._type(plural), namespace, name)

    def add_node(self, name: str, *, labels: dict[str, str] | None = None,
                 allocatable: dict[str, str] | None = None, ready: bool = True) -> Obj:
        """A Node with `labels` (e.g. nvidia.com/gpu.product), `allocatable` (e.g. {"nvidia.com/gpu": "8"}), Ready."""
        resources = {"cpu": "8", "memory": "32Gi", "pods": "110", **(allocatable or {})}
        return self.put({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {},
            "status": {"capacity": resources, "allocatable": resources, "conditions": [ready_condition(ready)]},
        })

    def set_node_ready(self, name: str, ready: bool) -> Obj:
        node = self._existing("nodes", name, None)
        node["status"]["conditions"] = [c for c in node["status"].get("conditions", []) if c["type"] != "Ready"]
        node["status"]["conditions"].append(ready_condition(ready))
        return self.put(node)

    def add_resource_slice(self, name: str, *, driver: str, pool: str, node_name: str,
                           devices: list[dict[str, Any]]) -> Obj:
        """A ResourceSlice publishing `devices`, each `{"name", "attributes": {k: str|int|bool}, "capacity": {k: qty}}`."""
        return self.put({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": name},
            "spec": {
                "driver": driver, "nodeName": node_name,
                "pool": {"name": pool, "generation": 1, "resourceSliceCount": 1},
                "devices": [device(d) for d in devices],
            },
        })

    # -- simulated deployment controller ----------------------------------------------------------------------

    def rollout(self, name: str | None = None, namespace: str = "default") -> None:
        """Bring Deployments' status to match spec: the named one (clearing `fail_rollout`), or all in `namespace`
        (failing ones stay failed)."""
        with self.store.lock:
            if name is not None:
                self._failing.discard((namespace, name))
                names = [self._existing("deployments", name, namespace)["metadata"]["name"]]
            else:
                items, _ = self.store.list_matching(self._type("deployments"), namespace, lambda _: True)
                names = [d["metadata"]["name"] for d in items]
            for each in names:
                self._rollout_one(each, namespace)

    def fail_rollout(self, name: str, namespace: str = "default") -> None:
        """Keep a Deployment's readyReplicas one short of spec (Progressing=False) until `rollout(name)`; it may be
        called before the Deployment exists."""
        with self.store.lock:
            self._failing.add((namespace, name))
            self._rollout_one(name, namespace)

    def auto_rollout(self, delay: float | None) -> None:
        """After every Deployment spec change, roll it out at once (0), after `delay` seconds, or never (None)."""
        with self._lock:
            self._rollout_delay = delay

    def _rollout_later(self, name: str, namespace: str, delay: float) -> None:
        if delay == 0:
            self._rollout_one(name, namespace)
            return
        timer = threading.Timer(delay, self._rollout_one, args=(name, namespace))
        timer.daemon = True
        with self._lock:
            self._timers.append(timer)
        timer.start()

    def _rollout_one(self, name: str, namespace: str) -> None:
        deployments = self._type("deployments")
        with self.store.lock:
            deployment = self.store.get(deployments, namespace, name)
            if deployment is not None:
                failing = (namespace, name) in self._failing
                deployment["status"] = deployment_status(deployment, failing=failing)
                self.store.commit(deployments, deployment)

    # -- request handling --------------------------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def _serve(self, handler: _Handler) -> None:
        url = urlsplit(handler.path)
        query = dict(parse_qsl(url.query))
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip() or None
        route = parse_route(url.path)
        verb = request_verb(handler.command, route, query)
        resource = route.rtype.plural if route else None
        with self._lock:
            self._requests.append(RecordedRequest(handler.command, url.path, query, verb, resource, content_type,
                                                  query.get("fieldManager"), _parse_quietly(raw)))
            drop = self._drops > 0
            self._drops -= int(drop)
        if drop:
            handler.close_connection = True
            return
        try:
            self._admit(handler, verb, resource)
            if route is None:
                raise ApiError(404, f"the server could not find the requested resource ({handler.command} {url.path})")
            if verb == "watch":
                self._watch(handler, route, query)
                return
            code, body = self._dispatch(handler, verb, route, query, raw, content_type)
            _send_json(handler, code, body)
        except ApiError as error:
            headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
            _send_json(handler, error.code, error.status(), headers)

    def _admit(self, handler: _Handler, verb: str, resource: str | None) -> None:
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized")
        with self._lock:
            fault = next((f for f in self._faults if f.matches(verb, resource)), None)
            if fault is None:
                return
            fault.remaining -= 1
            if fault.remaining == 0:
                self._faults.remove(fault)
        messages = {429: "Too many requests, please try again later.", 503: "the server is currently unable to handle the request"}
        raise ApiError(fault.status, messages.get(fault.status, "injected fault"), retry_after=fault.retry_after)

    def _dispatch(self, handler: _Handler, verb: str, route: Route, query: dict[str, str], raw: bytes,
                  content_type: str | None) -> tuple[int, Obj]:
        rtype, namespace, name = route.rtype, route.namespace, route.name
        if verb == "list":
            items, rv = self.store.list_matching(rtype, namespace, _selectors(query))
            return 200, {"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
                         "metadata": {"resourceVersion": str(rv)}, "items": items}
        if verb == "get":
            return 200, self._existing(rtype.plural, name, namespace)
        if verb == "delete" and name is not None:
            deleted = self.store.delete(rtype, namespace, name)
            if deleted is None:
                raise not_found(rtype, name)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": {"name": name, "group": rtype.group, "kind": rtype.plural,
                                     "uid": deleted["metadata"]["uid"]}}
        manager = query.get("fieldManager") or (handler.headers.get("User-Agent") or "unknown").split("/")[0]
        if verb == "create" and name is None and not route.subresource:
            return 201, self._create(rtype, namespace, _parse_body(raw), manager)
        if verb == "update" and name is not None:
            return 200, self._update(route, _parse_body(raw), manager)
        if verb == "patch" and name is not None:
            return self._patch(route, query, _parse_body(raw), content_type, manager)
        raise ApiError(405, f"{verb} is not supported on {handler.path}")

    def _create(self, rtype: ResourceType, namespace: str | None, body: Obj, manager: str) -> Obj:
        body = _created(rtype, _checked(rtype, body, namespace, None))
        with self.store.lock:
            if self.store.get(rtype, namespace, body["metadata"]["name"]) is not None:
                raise ApiError(409, f'{rtype.qualified} "{body["metadata"]["name"]}" already exists', reason="AlreadyExists",
                               details={"name": body["metadata"]["name"], "group": rtype.group, "kind": rtype.plural})
            body["metadata"].pop("managedFields", None)
            return self._commit(rtype, record_update({}, body, manager, subresource="", now=now_timestamp()))

    def _update(self, route: Route, body: Obj, manager: str) -> Obj:
        rtype = route.rtype
        body = _checked(rtype, body, route.namespace, route.name)
        with self.store.lock:
            current = self._existing(rtype.plural, route.name, route.namespace)
            expected = body["metadata"].get("resourceVersion")
            if expected and expected != current["metadata"]["resourceVersion"]:
                raise ApiError(409, f'Operation cannot be fulfilled on {rtype.qualified} "{route.name}": the object has '
                               "been modified; please apply your changes to the latest version and try again",
                               details={"name": route.name, "group": rtype.group, "kind": rtype.plural})
            candidate = _confined(rtype, current, body, route.subresource)
            return self._commit(rtype, record_update(current, candidate, manager, subresource=route.subresource,
                                                     now=now_timestamp()))

    def _patch(self, route: Route, query: dict[str, str], body: Obj, content_type: str | None,
               manager: str) -> tuple[int, Obj]:
        rtype, name, namespace, subresource = route.rtype, route.name or "", route.namespace, route.subresource
        now = now_timestamp()
        with self.store.lock:
            current = self.store.get(rtype, namespace, name)
            if current is None and (subresource or content_type != APPLY):
                raise not_found(rtype, name)
            if content_type in MERGE_PATCHES:
                patched = _confined(rtype, current, merge_patch(current, body), subresource)
                _require(rtype, patched)
                return 200, self._commit(rtype, record_update(current, patched, manager, subresource=subresource, now=now))
            if content_type != APPLY:
                raise ApiError(415, f"the body of the request was in an unknown format - accepted media types include: "
                               f"{APPLY}, {', '.join(MERGE_PATCHES)}")
            if "fieldManager" not in query:
                raise ApiError(400, "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests")
            body = _checked(rtype, body, namespace, name, full=False)
            base = current or {"apiVersion": rtype.api_version, "kind": rtype.kind,
                               "metadata": {"name": name, **({"namespace": namespace} if namespace else {})}}
            try:
                applied = apply(base, body, manager, force=query.get("force") == "true", subresource=subresource, now=now)
            except ApplyConflictError as conflict:
                raise ApiError(409, str(conflict), details={
                    "name": name, "group": rtype.group, "kind": rtype.plural,
                    "causes": [{"reason": "FieldManagerConflict", "message": c.describe(),
                                "field": "." + ".".join(c.path)} for c in conflict.conflicts]}) from None
            _require(rtype, applied)
            if current is None:
                applied = _created(rtype, applied)
            return (201 if current is None else 200), self._commit(rtype, _confined(rtype, current, applied, subresource))

    def _commit(self, rtype: ResourceType, obj: Obj) -> Obj:
        stored = self.store.commit(rtype, obj)
        with self._lock:
            delay = self._rollout_delay
        spec_changed = stored["metadata"]["generation"] != (stored.get("status") or {}).get("observedGeneration")
        if rtype.kind == "Deployment" and delay is not None and spec_changed:
            self._rollout_later(stored["metadata"]["name"], stored["metadata"]["namespace"], delay)
            return self.store.get(rtype, stored["metadata"]["namespace"], stored["metadata"]["name"]) or stored
        return stored

    def _watch(self, handler: _Handler, route: Route, query: dict[str, str]) -> None:
        """Stream events after `resourceVersion` (or the current state, then events, when it is absent or 0)."""
        matches = _selectors(query)
        timeout = float(query.get("timeoutSeconds") or self.watch_timeout)
        requested = query.get("resourceVersion") or "0"
        if not requested.isdigit():
            raise ApiError(400, f"invalid resource version: {requested!r}")
        rtype, namespace = route.rtype, route.namespace

        def visible(obj: Obj) -> bool:
            in_scope = namespace is None or obj["metadata"].get("namespace") == namespace
            return in_scope and matches(obj)

        with self.store.lock:
            since = int(requested)
            initial: list[Obj] = []
            if since == 0:
                initial, since = self.store.list_matching(rtype, namespace, matches)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        deadline = time.monotonic() + timeout
        try:
            for obj in initial:
                _send_chunk(handler, {"type": "ADDED", "object": obj})
            while self._serving.is_set() and (remaining := deadline - time.monotonic()) > 0:
                events = self.store.events_after(since, wait=min(remaining, 0.1))
                if events is None:
                    expired = ApiError(410, f"too old resource version: {requested}")
                    _send_chunk(handler, {"type": "ERROR", "object": expired.status()})
                    break
                for event in events:
                    since = event.resource_version
                    if event.rtype == rtype and visible(event.obj):
                        _send_chunk(handler, {"type": event.type, "object": event.obj})
            else:
                if query.get("allowWatchBookmarks") == "true" and self._serving.is_set():
                    bookmark = {"kind": rtype.kind, "apiVersion": rtype.api_version,
                                "metadata": {"resourceVersion": str(since)}}
                    _send_chunk(handler, {"type": "BOOKMARK", "object": bookmark})
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True  # the client went away, or stop() cut the connection

    def _type(self, plural: str) -> ResourceType:
        return next(t for t in RESOURCE_TYPES if t.plural == plural)

    def _existing(self, plural: str, name: str | None, namespace: str | None) -> Obj:
        rtype = self._type(plural)
        obj = self.store.get(rtype, namespace, name or "")
        if obj is None:
            raise not_found(rtype, name or "")
        return obj


def _selectors(query: dict[str, str]) -> Callable[[Obj], bool]:
    try:
        labels = label_selector(query.get("labelSelector", ""))
        fields = field_selector(query.get("fieldSelector", ""))
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    return lambda obj: labels(obj) and fields(obj)


def _parse_quietly(raw: bytes) -> Any:
    try:
        return yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        return None


def _parse_body(raw: bytes) -> Obj:
    """A request body as a JSON object; JSON is read as YAML, which also covers apply's YAML bodies."""
    try:
        body = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError as error:
        raise ApiError(400, f"the body of the request could not be decoded: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body of the request must be a JSON or YAML object")
    return body


def _checked(rtype: ResourceType, body: Obj, namespace: str | None, name: str | None, *, full: bool = True) -> Obj:
    """`body` after the checks a real server makes before writing; kind, apiVersion and namespace default to the
    URL's."""
    body.setdefault("apiVersion", rtype.api_version)
    body.setdefault("kind", rtype.kind)
    if body["apiVersion"] != rtype.api_version or body["kind"] != rtype.kind:
        raise ApiError(400, f"the API version in the data ({body.get('apiVersion')}) and kind ({body.get('kind')}) "
                       f"do not match the resource {rtype.api_version} {rtype.kind}")
    metadata = body.setdefault("metadata", {})
    if not isinstance(metadata, dict) or not metadata.get("name"):
        raise _invalid(rtype, name or "", "metadata.name", "Required value: name is required")
    if name is not None and metadata["name"] != name:
        raise ApiError(400, f"the name of the object ({metadata['name']}) does not match the name on the URL ({name})")
    if metadata.get("namespace", namespace) != namespace:
        raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
    if namespace is not None:
        metadata["namespace"] = namespace
    if full:
        _require(rtype, body)
    return body


def _created(rtype: ResourceType, obj: Obj) -> Obj:
    """A new object as the registry stores it: a Deployment starts with `spec.replicas: 1` and an empty status."""
    if rtype.kind == "Deployment":
        obj["spec"].setdefault("replicas", 1)
        obj["status"] = {}
    return obj


def _require(rtype: ResourceType, obj: Obj) -> None:
    for dotted in rtype.required:
        if not get_path(obj, tuple(dotted.split("."))):
            raise _invalid(rtype, obj["metadata"]["name"], dotted, "Required value")


def _invalid(rtype: ResourceType, name: str, field: str, message: str) -> ApiError:
    return ApiError(422, f'{rtype.kind} "{name}" is invalid: {field}: {message}', details={
        "name": name, "group": rtype.group, "kind": rtype.kind,
        "causes": [{"reason": "FieldValueRequired", "message": message, "field": field}]})


def _confined(rtype: ResourceType, current: Obj | None, candidate: Obj, subresource: str) -> Obj:
    """What a write may change: /status writes only status; main-resource writes never status."""
    if not rtype.status_subresource or current is None:
        return candidate
    if subresource == "status":
        result = copy.deepcopy(current)
        result["status"] = candidate.get("status", {})
        result["metadata"]["managedFields"] = candidate["metadata"].get("managedFields", [])
        return result
    result = copy.deepcopy(candidate)
    result.pop("status", None)
    if "status" in current:
        result["status"] = copy.deepcopy(current["status"])
    return result


def _send_json(handler: _Handler, code: int, body: Obj, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


def _send_chunk(handler: _Handler, event: Obj) -> None:
    data = json.dumps(event).encode() + b"\n"
    handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    handler.wfile.flush()
