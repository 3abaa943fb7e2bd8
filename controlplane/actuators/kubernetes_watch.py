"""A watched list: one kind of Kubernetes object kept current by list-then-watch, as an informer does.

The Kubernetes actuator reads the Deployments it manages every cycle (drift detection) and every
step of a migration (readiness). Listing them each time costs the API server a full list; a watch
costs it one long request that carries only changes. `WatchedList` runs that watch on a thread:

1. **list** (with the label selector): the items, and the list's `resourceVersion` R;
2. **watch** from R: ADDED/MODIFIED replace an object (unless the one held is newer), DELETED
   removes it, BOOKMARKs advance R; a watch that ends (its `timeoutSeconds`) resumes from R;
3. **410 Gone** (R has left the server's history, as an ERROR event or an answer) means events were
   missed: list again at once;
4. **any other failure** (404 for a namespace or API the server does not have, 5xx, 429, a cut
   connection, an unreachable server): out of sync until a list succeeds again, retried with a
   backoff of 0.5 s doubling to 15 s.

`items()` is None whenever the cache is out of sync (not yet listed, or failed since): the caller
then reads from the server itself, whose errors it already handles. What the caller writes it hands
to `saw`/`forgot`, so a read straight after its own write never sees the object from before it.
"""

import logging
import threading
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

WATCH_SECONDS = 60  # each watch request's timeoutSeconds; then it resumes from the last resourceVersion
BACKOFF_MAX_S = 15.0


def newer(a: str | None, b: str | None) -> bool:
    """Whether resourceVersion `a` comes after `b`. They are opaque to clients, but every server
    in use (etcd's revisions, the test double) issues increasing integers; anything else counts as
    newer, so a write's answer or a later event is never ignored."""
    if b is None:
        return True
    if a is not None and a.isdigit() and b.isdigit():
        return int(a) >= int(b)
    return True


class WatchedList:
    """The objects `list_call(*args, label_selector=selector)` returns, kept current by a watch."""

    def __init__(self, list_call: Callable[..., Any], *args: Any, selector: str = "",
                 watch_seconds: int = WATCH_SECONDS) -> None:
        self._list = list_call
        self._args = args
        self._selector = selector
        self._watch_seconds = watch_seconds
        self._lock = threading.Lock()
        self._objects: dict[str, Any] = {}
        self._in_sync = False
        self._listed = threading.Event()
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self.relists = 0  # lists since start: 1 + one per 410 or failure (tests and logs read it)

    # -- what the actuator reads and writes ------------------------------------------------------

    def items(self) -> list[Any] | None:
        """The objects, sorted by name, or None while out of sync."""
        with self._lock:
            return [self._objects[n] for n in sorted(self._objects)] if self._in_sync else None

    def saw(self, obj: Any) -> None:
        """`obj` as a write just returned it (kept unless a newer version is already held)."""
        if obj is None or getattr(obj, "metadata", None) is None:
            return
        with self._lock:
            self._keep(obj)

    def forgot(self, name: str) -> None:
        """`name` was just deleted."""
        with self._lock:
            self._objects.pop(name, None)

    # -- the thread -------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kubernetes-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)  # a watch blocked on a quiet stream ends at its timeoutSeconds
        with self._lock:
            self._in_sync = False

    def wait_in_sync(self, timeout_s: float) -> bool:
        """Block until the first list has landed (or `timeout_s` passes); whether it has."""
        return self._listed.wait(timeout_s)

    def _run(self) -> None:
        failures = 0
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._relist()
                version = self._follow(version)
                failures = 0
            except ApiException as exc:
                version = None
                if exc.status == 410:
                    log.info("kubernetes watch expired (410 Gone): listing again")
                    continue
                failures += 1
                self._out_of_sync(f"{exc.status} {exc.reason}", failures)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                version = None
                failures += 1
                self._out_of_sync(type(exc).__name__, failures)

    def _relist(self) -> str:
        answer = self._list(*self._args, label_selector=self._selector)
        with self._lock:
            self._objects = {o.metadata.name: o for o in answer.items}
            self._in_sync = True
        self.relists += 1
        self._listed.set()
        return answer.metadata.resource_version

    def _follow(self, version: str) -> str | None:
        """Apply the events of one watch request from `version`; the resourceVersion to resume from."""
        self._watch = watch.Watch()
        stream = self._watch.stream(self._list, *self._args, label_selector=self._selector,
                                    resource_version=version, timeout_seconds=self._watch_seconds,
                                    allow_watch_bookmarks=True)
        for event in stream:
            obj = event["object"]
            with self._lock:
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._keep(obj)
                elif event["type"] == "DELETED":
                    self._objects.pop(obj.metadata.name, None)
            if self._stop.is_set():
                break
        return self._watch.resource_version or version

    def _keep(self, obj: Any) -> None:
        held = self._objects.get(obj.metadata.name)
        if held is None or newer(obj.metadata.resource_version, held.metadata.resource_version):
            self._objects[obj.metadata.name] = obj

    def _out_of_sync(self, why: str, failures: int) -> None:
        with self._lock:
            was, self._in_sync = self._in_sync, False
        wait = min(BACKOFF_MAX_S, 0.5 * 2 ** (failures - 1))
        if was or failures == 1:
            log.warning("kubernetes watch failed (%s): reading from the API server until a list succeeds; "
                        "retrying in %.1f s", why, wait)
        self._stop.wait(wait)
