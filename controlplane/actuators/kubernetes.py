"""The Kubernetes actuator: the fleet is a cluster, read and changed through the official client.

- **inventory**: every Node with a device class: its `heteroplane.io/device-class` label, else one
  derived from the well-known GPU labels (NVIDIA GPU feature discovery's `nvidia.com/gpu.product`,
  the AMD node labeller's `amd.com/gpu.product-name`); a node with neither is not heteroplane's.
  Devices are the vendor's extended resource in `status.capacity` (`nvidia.com/gpu`, `amd.com/gpu`,
  `habana.ai/gaudi`; for a CPU class, cores / cores per device), and healthy ones the same in
  `status.allocatable`: a device plugin withdraws an unhealthy device from allocatable. A node whose
  Ready condition is not True is not ready.
- **observe**: the Deployments heteroplane manages (kubernetes_manifests.MANAGED_BY) in its
  namespace: each one's ready replicas, by the identity its labels and annotations carry.
- **apply**: make-before-break, with rollback. Every object of the new placement is written with
  server-side apply under the field manager `heteroplane` (forcing: heteroplane owns these
  objects); then, once every one of its Deployments is ready, the managed Deployments (and claim
  templates) the placement no longer has are deleted. If they are not all ready within
  `ready_timeout_s`, what this apply changed is put back as it was (Deployments it created are
  deleted, ones it resized get their old replica count) and the apply fails, naming the ones that
  were not ready. This version waits for readiness inside `apply`; the reconciler's cycle waits
  with it.
- **errors**: 409, 429 and 5xx answers to writes are retried with backoff (honouring Retry-After,
  at most WRITE_ATTEMPTS times); reads the client retries itself. Anything else is raised to the
  reconciler, which records the apply as failed.
"""

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, ResourceV1Api
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
PRODUCT_LABELS = ("nvidia.com/gpu.product", "amd.com/gpu.product-name", "beta.amd.com/gpu.product-name")


class KubernetesActuator:
    """Implements `Actuator` for one namespace of one cluster."""

    def __init__(self, api: ApiClient, namespace: str, shapes: Mapping[str, ClassShape],
                 ready_timeout_s: float = 600.0, poll_s: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.core = CoreV1Api(api)
        self.apps = AppsV1Api(api)
        self.dra = ResourceV1Api(api)
        self.namespace = namespace
        self.shapes = dict(shapes)
        self.ready_timeout_s = ready_timeout_s
        self.poll_s = poll_s
        self.sleep = sleep

    # -- inventory ---------------------------------------------------------------------------------

    def inventory(self) -> tuple[NodeInventory, ...]:
        out = []
        for node in self.core.list_node().items:
            cls = device_class_of(node.metadata.labels or {})
            if cls is None or cls not in self.shapes:
                continue
            shape = self.shapes[cls]
            devices = device_count(node.status.capacity or {}, shape)
            healthy = min(devices, device_count(node.status.allocatable or {}, shape))
            ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
            out.append(NodeInventory(node.metadata.name, cls, devices, healthy, ready=ready))
        return tuple(out)

    # -- observe -----------------------------------------------------------------------------------

    def _managed(self) -> list[Any]:
        return self.apps.list_namespaced_deployment(self.namespace, label_selector=MANAGED_SELECTOR).items

    def observe(self) -> ObservedPlacement:
        deployments = self._managed()
        versions = {int(d.metadata.annotations.get(VERSION_ANNOTATION, "0")) for d in deployments}
        sets = tuple(replica_set_of(d) for d in deployments)
        return ObservedPlacement(version=min(versions) if versions else None, replica_sets=sets)

    # -- apply -------------------------------------------------------------------------------------

    def apply(self, desired: DesiredPlacement) -> ApplyResult:
        try:
            objects = manifests(desired, self.shapes, self.namespace)
        except (ValueError, KeyError) as exc:
            return ApplyResult(False, str(exc).strip("'\""))
        before = {d.metadata.name: d.spec.replicas for d in self._managed()}
        wanted = [o for o in objects if o["kind"] == "Deployment"]
        for obj in objects:
            self._write(lambda o=obj: self._apply_one(o))
        waiting = self._wait_ready({o["metadata"]["name"] for o in wanted})
        if waiting:
            self._restore(before, wanted)
            return ApplyResult(False, f"not ready within {self.ready_timeout_s:g} s: {', '.join(sorted(waiting))}; "
                                      "the previous replicas were restored")
        keep = {o["metadata"]["name"] for o in objects}
        for name in sorted(set(before) - keep):
            self._write(lambda n=name: self.apps.delete_namespaced_deployment(n, self.namespace), missing_ok=True)
        for claim in self.dra.list_namespaced_resource_claim_template(
                self.namespace, label_selector=MANAGED_SELECTOR).items:
            if claim.metadata.name not in keep:
                self._write(lambda n=claim.metadata.name: self.dra.delete_namespaced_resource_claim_template(
                    n, self.namespace), missing_ok=True)
        return ApplyResult(True, f"{len(wanted)} deployments ready, {len(set(before) - keep)} retired")

    def _apply_one(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if obj["kind"] == "Deployment":
            self.apps.patch_namespaced_deployment(name, self.namespace, obj, field_manager=FIELD_MANAGER, force=True,
                                                  _content_type=APPLY)
        else:
            self.dra.patch_namespaced_resource_claim_template(name, self.namespace, obj, field_manager=FIELD_MANAGER,
                                                              force=True, _content_type=APPLY)

    def _wait_ready(self, names: set[str]) -> set[str]:
        """The Deployments of `names` not ready when the timeout ends (empty once all are)."""
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            ready = {d.metadata.name for d in self._managed() if d.metadata.name in names and is_ready(d)}
            waiting = names - ready
            if not waiting or time.monotonic() >= deadline:
                return waiting
            self.sleep(self.poll_s)

    def _restore(self, before: dict[str, int], wanted: list[dict[str, Any]]) -> None:
        for obj in wanted:
            name = obj["metadata"]["name"]
            if name not in before:
                self._write(lambda n=name: self.apps.delete_namespaced_deployment(n, self.namespace), missing_ok=True)
            elif before[name] != obj["spec"]["replicas"]:
                self._write(lambda n=name: self.apps.patch_namespaced_deployment(
                    n, self.namespace, {"spec": {"replicas": before[n]}}, field_manager=FIELD_MANAGER,
                    _content_type="application/merge-patch+json"))

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


def is_ready(deployment: Any) -> bool:
    """Every replica of the Deployment's current generation is ready."""
    status = deployment.status
    wanted = deployment.spec.replicas or 0
    return ((status.observed_generation or 0) >= (deployment.metadata.generation or 0)
            and (status.ready_replicas or 0) >= wanted and (status.updated_replicas or 0) >= wanted)


def replica_set_of(deployment: Any) -> ReplicaSet:
    labels = deployment.metadata.labels
    phase = labels.get("heteroplane.io/phase", "whole")
    return ReplicaSet(
        tenant=labels.get("heteroplane.io/tenant", ""), workload=labels.get("heteroplane.io/workload", ""),
        fragment_key=deployment.metadata.annotations.get(FRAGMENT_ANNOTATION, labels.get(SET_LABEL, "")),
        device_class=labels.get(CLASS_LABEL, ""), replicas=deployment.status.ready_replicas or 0,
        slices=int(deployment.metadata.annotations.get("heteroplane.io/slices", "1")),
        phase=Phase("" if phase == "whole" else phase),
    )
