"""The Kubernetes actuator: the fleet is a cluster, read and changed through the official client.

- **inventory**: every Node with a device class: its `heteroplane.io/device-class` label, else one
  derived from the well-known GPU labels (NVIDIA GPU feature discovery's `nvidia.com/gpu.product`,
  the AMD node labeller's `amd.com/gpu.product-name`); a node with neither is not heteroplane's.
  Devices are the vendor's extended resource in `status.capacity` (`nvidia.com/gpu`, `amd.com/gpu`,
  `habana.ai/gaudi`; for a CPU class, cores / cores per device), and healthy ones the same in
  `status.allocatable`: a device plugin withdraws an unhealthy device from allocatable. Where a DRA
  driver publishes the devices in `resource.k8s.io/v1` ResourceSlices instead, its whole devices
  count (MIG partitions are slices of them, not more devices). A node whose Ready condition is not
  True is not ready.
- **observe**: the Deployments heteroplane manages (kubernetes_manifests.MANAGED_BY) in its
  namespace: each one's ready replicas, by the identity its labels and annotations carry. With
  `watch` (as `serve` runs it, between `start` and `stop`) they are kept by a list-then-watch
  (kubernetes_watch.WatchedList: 410 Gone lists again, other failures back off) instead of listed
  on every read; while that watch is out of sync, reads list them from the server.
- **apply**: make-before-break, one step per call, never waiting. Each call writes every object of
  the placement with server-side apply under the field manager `heteroplane` (forcing: heteroplane
  owns these objects), keeping any Deployment at the replicas it runs now where the placement
  wants fewer; while any of the placement's Deployments lacks its ready replicas the answer is
  *pending*, and the reconciler asks again next cycle (applying is idempotent). Once all are ready,
  the scale-downs are written and the managed Deployments (and claim templates) the placement no
  longer has are deleted: done. Past `ready_timeout_s` since this process first applied the
  version, the answer is *failed*: nothing was scaled down or deleted, the previous placement's
  replicas still run, and the reconciler's drift repair re-applies that placement, which retires
  what the failed one added. (A restart restarts the clock: it errs towards waiting longer.)
- **errors**: 409, 429 and 5xx answers to writes are retried with backoff (honouring Retry-After,
  at most WRITE_ATTEMPTS times); reads the client retries itself. An API server that stays
  unreachable or failing leaves the apply pending (within the ready timeout), so a lost server
  neither loses nor repeats a migration: the next cycle takes it up where it was. A 4xx refusal is
  raised to the reconciler, which records the apply as failed.
"""

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, ResourceV1Api, V1Deployment
from kubernetes.client.exceptions import ApiException

from controlplane.actuators.base import ApplyResult, DesiredPlacement, NodeInventory, ObservedPlacement, ReplicaSet
from controlplane.actuators.kubernetes_manifests import (
    CLASS_LABEL,
    FRAGMENT_ANNOTATION,
    MANAGED_BY,
    SET_LABEL,
    VENDOR_RESOURCE,
    VERSION_ANNOTATION,
    ClassShape,
    manifests,
)
from controlplane.actuators.kubernetes_watch import WatchedList
from optimizer.types import Phase

log = logging.getLogger(__name__)

FIELD_MANAGER = "heteroplane"
APPLY = "application/apply-patch+yaml"
WRITE_ATTEMPTS = 5
RETRIED = {409, 429, 500, 502, 503, 504}
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())

# Product names as GPU feature discovery / the AMD node labeller report them, to catalog classes;
# checked in order (L40S before L4, H200 before H100).
PRODUCT_CLASSES = (("H200", "H200"), ("H100", "H100-SXM"), ("A100", "A100-80GB"), ("L40S", "L40S"), ("L4", "L4"),
                   ("A10G", "A10G"), ("MI300X", "MI300X"), ("GAUDI3", "Gaudi3"), ("GAUDI2", "Gaudi2"))
DRA_DRIVERS = frozenset({"gpu.nvidia.com", "gpu.amd.com", "gaudi.habana.ai"})
PRODUCT_LABELS = ("nvidia.com/gpu.product", "amd.com/gpu.product-name", "beta.amd.com/gpu.product-name")


class KubernetesActuator:
    """Implements `Actuator` for one namespace of one cluster."""

    def __init__(self, api: ApiClient, namespace: str, shapes: Mapping[str, ClassShape],
                 ready_timeout_s: float = 600.0, sleep: Callable[[float], None] = time.sleep,
                 watch: bool = False) -> None:
        self.core = CoreV1Api(api)
        self.apps = AppsV1Api(api)
        self.dra = ResourceV1Api(api)
        self.namespace = namespace
        self.shapes = dict(shapes)
        self.ready_timeout_s = ready_timeout_s
        self.sleep = sleep
        self._started: dict[int, float] = {}  # placement version -> when this process first applied it
        self.deployments = (WatchedList(self.apps.list_namespaced_deployment, namespace, selector=MANAGED_SELECTOR)
                            if watch else None)

    def start(self) -> None:
        """Start watching the managed Deployments (with `watch`); reads list them until the first list lands."""
        if self.deployments is not None:
            self.deployments.start()

    def stop(self) -> None:
        if self.deployments is not None:
            self.deployments.stop()

    # -- inventory ---------------------------------------------------------------------------------

    def inventory(self) -> tuple[NodeInventory, ...]:
        published = self._dra_devices()
        out = []
        for node in self.core.list_node().items:
            cls = device_class_of(node.metadata.labels or {})
            if cls is None or cls not in self.shapes:
                continue
            shape = self.shapes[cls]
            drawn = published.get(node.metadata.name, 0)  # devices its DRA driver publishes instead
            devices = max(device_count(node.status.capacity or {}, shape), drawn)
            healthy = min(devices, max(device_count(node.status.allocatable or {}, shape), drawn))
            ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
            out.append(NodeInventory(node.metadata.name, cls, devices, healthy, ready=ready))
        return tuple(out)

    def _dra_devices(self) -> dict[str, int]:
        """Whole devices each node's DRA drivers publish in ResourceSlices (resource.k8s.io/v1): the
        devices of the GPU drivers DRA_DRIVERS names, partitions (NVIDIA's `type: mig`) not counted
        again. A cluster that does not serve the DRA API has none."""
        try:
            slices = self.dra.list_resource_slice().items
        except ApiException as exc:
            if exc.status in (404, 403):
                return {}
            raise
        counts: dict[str, int] = {}
        for resource_slice in slices:
            spec = resource_slice.spec
            if spec.driver not in DRA_DRIVERS or not spec.node_name:
                continue
            whole = [d for d in spec.devices or [] if device_type(d) != "mig"]
            counts[spec.node_name] = counts.get(spec.node_name, 0) + len(whole)
        return counts

    # -- observe -----------------------------------------------------------------------------------

    def _managed(self) -> list[Any]:
        held = self.deployments.items() if self.deployments is not None else None
        if held is not None:
            return held
        return self.apps.list_namespaced_deployment(self.namespace, label_selector=MANAGED_SELECTOR).items

    def observe(self) -> ObservedPlacement:
        deployments = self._managed()
        versions = {placement_version(d) for d in deployments}
        sets = tuple(replica_set_of(d) for d in deployments)
        return ObservedPlacement(version=min(versions) if versions else None, replica_sets=sets)

    # -- apply -------------------------------------------------------------------------------------

    def apply(self, desired: DesiredPlacement) -> ApplyResult:
        """One step of bringing `desired` up, never waiting (see the module docstring): pending until
        every one of its Deployments is ready, then done; failed once `ready_timeout_s` has passed
        since this process first applied the version. An API server that cannot be reached (or keeps
        answering 5xx) leaves it pending too, within the same timeout: the migration resumes where it
        was when the server is back, since every step is idempotent."""
        try:
            objects = manifests(desired, self.shapes, self.namespace)
        except (ValueError, KeyError) as exc:
            return ApplyResult(False, str(exc).strip("'\""))
        try:
            return self._step(desired, objects)
        except (urllib3.exceptions.HTTPError, ApiException) as exc:
            if isinstance(exc, ApiException) and (exc.status or 0) < 500:
                raise  # the server refused what was sent: not a reason to wait
            started = self._started.setdefault(desired.version, time.monotonic())
            if time.monotonic() - started >= self.ready_timeout_s:
                del self._started[desired.version]
                raise
            reason = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else type(exc).__name__
            log.warning("kubernetes API unavailable applying v%d (%s); trying again next cycle", desired.version,
                        reason)
            return ApplyResult(False, f"the Kubernetes API server is unavailable ({reason}); trying again",
                               pending=True)

    def _step(self, desired: DesiredPlacement, objects: list[dict[str, Any]]) -> ApplyResult:
        running = {d.metadata.name: d for d in self._managed()}
        surged = [surge(obj, running.get(obj["metadata"]["name"])) for obj in objects]
        for obj in surged:
            self._saw(self._write(lambda o=obj: self._apply_one(o)))
        running = {d.metadata.name: d for d in self._managed()}
        wanted = {o["metadata"]["name"]: o["spec"]["replicas"] for o in objects if o["kind"] == "Deployment"}
        waiting = sorted(name for name, replicas in wanted.items() if not is_ready(running.get(name), replicas))
        if waiting:
            started = self._started.setdefault(desired.version, time.monotonic())
            if time.monotonic() - started < self.ready_timeout_s:
                return ApplyResult(False, f"waiting for {len(waiting)} of {len(wanted)} deployments to be ready: "
                                          f"{', '.join(waiting)}", pending=True)
            del self._started[desired.version]
            return ApplyResult(False, f"not ready within {self.ready_timeout_s:g} s: {', '.join(waiting)}; the "
                                      "previous placement's replicas still run")
        self._started.pop(desired.version, None)
        for obj, applied in zip(objects, surged, strict=True):
            if obj is not applied:  # kept at the running count while the rest came up: now its own
                self._saw(self._write(lambda o=obj: self._apply_one(o)))
        keep = {o["metadata"]["name"] for o in objects}
        retired = sorted(set(running) - keep)
        for name in retired:
            self._write(lambda n=name: self.apps.delete_namespaced_deployment(n, self.namespace), missing_ok=True)
            if self.deployments is not None:
                self.deployments.forgot(name)
        for claim in self.dra.list_namespaced_resource_claim_template(
                self.namespace, label_selector=MANAGED_SELECTOR).items:
            if claim.metadata.name not in keep:
                self._write(lambda n=claim.metadata.name: self.dra.delete_namespaced_resource_claim_template(
                    n, self.namespace), missing_ok=True)
        return ApplyResult(True, f"{len(wanted)} deployments ready, {len(retired)} retired")

    def _apply_one(self, obj: dict[str, Any]) -> Any:
        """Server-side apply of `obj`; the object as the server now holds it."""
        name = obj["metadata"]["name"]
        if obj["kind"] == "Deployment":
            return self.apps.patch_namespaced_deployment(name, self.namespace, obj, field_manager=FIELD_MANAGER,
                                                         force=True, _content_type=APPLY)
        return self.dra.patch_namespaced_resource_claim_template(name, self.namespace, obj, field_manager=FIELD_MANAGER,
                                                                 force=True, _content_type=APPLY)

    def _saw(self, written: Any) -> None:
        """A Deployment as a write returned it: the watched list holds it from now, not its state before."""
        if self.deployments is not None and isinstance(written, V1Deployment):
            self.deployments.saw(written)

    def _write(self, call: Callable[[], Any], missing_ok: bool = False) -> Any:
        """`call`, retried on 409/429/5xx with backoff (Retry-After when the server says); with
        `missing_ok` (a delete), a 404 is what was wanted."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return call()
            except ApiException as exc:
                if exc.status == 404 and missing_ok:
                    return None
                if exc.status not in RETRIED or attempt == WRITE_ATTEMPTS:
                    raise
                wait = retry_after(exc) or min(8.0, 0.5 * 2 ** (attempt - 1))
                log.warning("kubernetes answered %s; retrying in %.1f s (attempt %d of %d)", exc.status, wait,
                            attempt + 1, WRITE_ATTEMPTS)
                self.sleep(wait)
        return None


def device_type(device: Any) -> str | None:
    """A published device's `type` attribute ('gpu', 'mig', ...), where its driver sets one."""
    attribute = (device.attributes or {}).get("type")
    return getattr(attribute, "string", None) if attribute is not None else None


def retry_after(exc: ApiException) -> float | None:
    value = (exc.headers or {}).get("Retry-After")
    try:
        return min(30.0, float(value)) if value is not None else None
    except ValueError:
        return None


def device_class_of(labels: Mapping[str, str]) -> str | None:
    """The node's device class: its heteroplane label, else one its GPU product label implies."""
    if labels.get(CLASS_LABEL):
        return labels[CLASS_LABEL]
    for key in PRODUCT_LABELS:
        product = labels.get(key, "").upper().replace("_", "-")
        for marker, cls in PRODUCT_CLASSES:
            if marker in product:
                return cls
    return None


def device_count(resources: Mapping[str, str], shape: ClassShape) -> int:
    """Devices of `shape` in a node's capacity or allocatable."""
    if shape.cores > 0:
        return cpu_cores(resources.get("cpu", "0")) // shape.cores
    return int(resources.get(VENDOR_RESOURCE.get(shape.vendor, ""), "0") or 0)


def cpu_cores(quantity: str) -> int:
    """Whole cores of a CPU quantity ('64', '63500m')."""
    return int(quantity[:-1]) // 1000 if quantity.endswith("m") else int(float(quantity))


def is_ready(deployment: Any, replicas: int) -> bool:
    """The Deployment exists, its controller has seen its latest spec, and `replicas` of its pods run
    that spec and are ready."""
    if deployment is None or deployment.status is None:
        return False
    status = deployment.status
    return ((status.observed_generation or 0) >= (deployment.metadata.generation or 0)
            and (status.ready_replicas or 0) >= replicas and (status.updated_replicas or 0) >= replicas)


def surge(obj: dict[str, Any], running: Any) -> dict[str, Any]:
    """`obj`, or a copy keeping the replicas the Deployment runs now where it would have fewer: a
    placement scales down only once all of it is ready (make before break)."""
    if obj["kind"] != "Deployment" or running is None or (running.spec.replicas or 0) <= obj["spec"]["replicas"]:
        return obj
    return {**obj, "spec": {**obj["spec"], "replicas": running.spec.replicas}}


def placement_version(deployment: Any) -> int:
    """The placement version a managed Deployment's annotation names; 0 where it has none (someone
    else's object carrying heteroplane's labels): older than any placement, so drift repair rewrites it."""
    value = (deployment.metadata.annotations or {}).get(VERSION_ANNOTATION, "0")
    return int(value) if value.isdigit() and len(value) < 10 else 0


def replica_set_of(deployment: Any) -> ReplicaSet:
    labels = deployment.metadata.labels or {}
    annotations = deployment.metadata.annotations or {}
    phase = labels.get("heteroplane.io/phase", "whole")
    return ReplicaSet(
        tenant=labels.get("heteroplane.io/tenant", ""), workload=labels.get("heteroplane.io/workload", ""),
        fragment_key=annotations.get(FRAGMENT_ANNOTATION, labels.get(SET_LABEL, "")),
        device_class=labels.get(CLASS_LABEL, ""),
        replicas=(deployment.status.ready_replicas or 0) if deployment.status is not None else 0,
        slices=int(slices) if (slices := annotations.get("heteroplane.io/slices", "1")).isdigit() else 1,
        phase=Phase("" if phase == "whole" else phase),
    )
