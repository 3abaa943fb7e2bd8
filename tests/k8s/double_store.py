"""The object store behind the API server double: typed resources, resourceVersions, a bounded watch history.

It plays etcd plus the registry's bookkeeping: every committed change takes the next value of one global
resourceVersion counter and is appended to an event history that watches read from. The history keeps the
last `history` events; a watch that starts before the oldest kept event cannot be served, which is what makes
the real server answer "410 Gone" (too old resource version).

The store also sets what the registry sets on every write: `uid` and `creationTimestamp` on create,
`resourceVersion` on every change, `generation` (1 on create, +1 when `spec` changes). A write that changes
nothing but managedFields timestamps is a no-op and keeps its resourceVersion, as on a real server.

Selectors are the list/watch filters: label selectors (equality- and set-based) and field selectors
(`=`, `==`, `!=` on any dotted path, where the real server allows a few per kind).
"""

import copy
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.k8s.double_fields import Obj, get_path


@dataclass(frozen=True)
class ResourceType:
    """One REST resource: where it lives (group, version, plural), its kind, and its scope."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = False
    required: tuple[str, ...] = ()  # dotted paths a written object must carry, else 422 Invalid

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`deployments.apps`, as Kubernetes names a resource in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCE_TYPES = (
    ResourceType("", "v1", "nodes", "Node", namespaced=False, status_subresource=True),
    ResourceType(
        "apps", "v1", "deployments", "Deployment", namespaced=True, status_subresource=True,
        required=("spec.selector", "spec.template"),
    ),
    ResourceType("resource.k8s.io", "v1", "resourceslices", "ResourceSlice", namespaced=False, required=("spec.driver",)),
    ResourceType("resource.k8s.io", "v1", "resourceclaimtemplates", "ResourceClaimTemplate", namespaced=True, required=("spec",)),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True),
)


def now_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class StoredEvent:
    """A committed change, as a watch delivers it."""

    resource_version: int
    type: str  # ADDED | MODIFIED | DELETED
    rtype: ResourceType
    obj: Obj


def _key(rtype: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str]:
    return (rtype.plural, namespace or "", name)


def _comparable(obj: Obj) -> Obj:
    """The object minus what a no-op write may still change: its resourceVersion and managedFields times."""
    result = copy.deepcopy(obj)
    metadata = result.get("metadata", {})
    metadata.pop("resourceVersion", None)
    for entry in metadata.get("managedFields") or []:
        entry.pop("time", None)
    return result


class ObjectStore:
    """Thread-safe objects plus event history. Hold `lock` around a read-modify-write to make it atomic."""

    def __init__(self, history: int):
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._events: deque[StoredEvent] = deque(maxlen=history)
        self._resource_version = 0
        self._compacted = 0  # a watch from any resourceVersion >= this is served from history

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj | None:
        with self.lock:
            obj = self._objects.get(_key(rtype, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list_matching(self, rtype: ResourceType, namespace: str | None, matches: Callable[[Obj], bool]) -> tuple[list[Obj], int]:
        """Matching objects of a type (in one namespace, or all when None) and the collection's resourceVersion."""
        with self.lock:
            items = [
                copy.deepcopy(obj)
                for (plural, ns, _), obj in sorted(self._objects.items())
                if plural == rtype.plural and (namespace is None or ns == namespace) and matches(obj)
            ]
            return items, self._resource_version

    def commit(self, rtype: ResourceType, obj: Obj) -> Obj:
        """Create or replace `obj`, setting server-managed metadata; a no-op returns the stored object unchanged."""
        metadata = obj["metadata"]
        with self.lock:
            key = _key(rtype, metadata.get("namespace"), metadata["name"])
            previous = self._objects.get(key)
            if previous is not None and _comparable(previous) == _comparable(obj):
                return copy.deepcopy(previous)
            stored = copy.deepcopy(obj)
            meta = stored["metadata"]
            self._resource_version += 1
            meta["resourceVersion"] = str(self._resource_version)
            if previous is None:
                meta["uid"] = str(uuid.uuid4())
                meta["creationTimestamp"] = now_timestamp()
                meta["generation"] = 1
            else:
                old_meta = previous["metadata"]
                meta["uid"], meta["creationTimestamp"] = old_meta["uid"], old_meta["creationTimestamp"]
                changed_spec = previous.get("spec") != stored.get("spec")
                meta["generation"] = old_meta["generation"] + (1 if changed_spec else 0)
            self._objects[key] = stored
            self._record("ADDED" if previous is None else "MODIFIED", rtype, stored)
            return copy.deepcopy(stored)

    def delete(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj | None:
        """Remove an object; returns it as last seen (with the deletion's resourceVersion), None if absent."""
        with self.lock:
            obj = self._objects.pop(_key(rtype, namespace, name), None)
            if obj is None:
                return None
            self._resource_version += 1
            obj["metadata"]["resourceVersion"] = str(self._resource_version)
            self._record("DELETED", rtype, obj)
            return copy.deepcopy(obj)

    def _record(self, event_type: str, rtype: ResourceType, obj: Obj) -> None:
        if len(self._events) == self._events.maxlen:
            self._compacted = self._events[0].resource_version
        self._events.append(StoredEvent(self._resource_version, event_type, rtype, copy.deepcopy(obj)))
        self._changed.notify_all()

    def events_after(self, resource_version: int, wait: float) -> list[StoredEvent] | None:
        """Events newer than `resource_version`, waiting up to `wait` s for one; None if history no longer has them."""
        with self.lock:
            if resource_version < self._compacted:
                return None
            if self._resource_version <= resource_version:
                self._changed.wait(wait)
            if resource_version < self._compacted:
                return None
            return [event for event in self._events if event.resource_version > resource_version]

    def wake_watchers(self) -> None:
        with self.lock:
            self._changed.notify_all()


_SET_TERM = re.compile(r"([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)")
_EQUALITY_TERM = re.compile(r"([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)")
_EXISTS_TERM = re.compile(r"(!?)\s*([^\s!=(),]+)")


def label_selector(text: str) -> Callable[[Obj], bool]:
    """A predicate for a Kubernetes label selector string; raises ValueError naming a term it cannot parse."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in (t.strip() for t in re.split(r",(?![^()]*\))", text)):
        if not term:
            continue
        if m := _SET_TERM.fullmatch(term):
            key, values, negate = m[1], {v.strip() for v in m[3].split(",")}, m[2] == "notin"
            tests.append(lambda labels, k=key, vs=values, n=negate: (labels.get(k) in vs) != n)
        elif m := _EQUALITY_TERM.fullmatch(term):
            key, value, negate = m[1], m[3], m[2] == "!="
            tests.append(lambda labels, k=key, v=value, n=negate: (labels.get(k) == v) != n)
        elif m := _EXISTS_TERM.fullmatch(term):
            key, negate = m[2], m[1] == "!"
            tests.append(lambda labels, k=key, n=negate: (k in labels) != n)
        else:
            raise ValueError(f"unable to parse requirement: {term!r}")

    def matches(obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(test(labels) for test in tests)

    return matches


def field_selector(text: str) -> Callable[[Obj], bool]:
    """A predicate for a field selector string (`metadata.name=x,spec.nodeName!=y`)."""
    tests: list[Callable[[Obj], bool]] = []
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        m = _EQUALITY_TERM.fullmatch(term)
        if m is None:
            raise ValueError(f"invalid field selector term: {term!r}")
        path, value, negate = tuple(m[1].split(".")), m[3], m[2] == "!="
        tests.append(lambda obj, p=path, v=value, n=negate: (_field_text(get_path(obj, p)) == v) != n)
    return lambda obj: all(test(obj) for test in tests)


def _field_text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)
