"""Kubernetes manifests for a desired placement: pure functions from `DesiredPlacement` to objects.

One Deployment per replica set, that is per (tenant, workload, fragment, device class, phase):

- **name**: `hp-<workload>-<fragment>-<class>[-p|-d]-<hash>`, each part slugged and cut so the
  whole is a DNS-1123 label of at most 63 characters; the 10-hex-digit hash of the full identity
  keeps names distinct where the cut parts collide (two tenants' `rag` workloads, long model names);
- **labels** (selectable, so only values Kubernetes accepts): `app.kubernetes.io/managed-by:
  heteroplane`, `heteroplane.io/set` (the hash: the selector, which never changes),
  `heteroplane.io/tenant`, `heteroplane.io/workload`, `heteroplane.io/device-class` and
  `heteroplane.io/phase`; **annotations** carry what labels cannot hold: the fragment key and the
  placement version the object was written for;
- **placement**: required node affinity on the node label `heteroplane.io/device-class` (the
  Kubernetes actuator's inventory reads the same label, or derives it from GPU labels, and operators
  label nodes with it), tolerations for the vendor's device taint;
- **devices**: a replica of `slices` slices on a class of `slices_per_device` occupies
  `slices / slices_per_device` devices. Whole devices are requested as the vendor's extended
  resource (`nvidia.com/gpu`, `amd.com/gpu`, `habana.ai/gaudi`); a CPU class's slices as cores. A
  fraction of a device (a MIG slice) is a DRA claim: a `resource.k8s.io/v1` ResourceClaimTemplate
  per Deployment asking for `slices` devices of the DeviceClass `<vendor driver>` with the class's
  slice size, which the pod template references;
- **container**: the replica set's resolved `Container` (controlplane.containers); a replica set
  without one cannot be written (`NoContainer`), which the actuator reports instead of guessing.
"""

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from controlplane.actuators.base import Container, DesiredPlacement, ReplicaSet
from optimizer.types import Phase

MANAGED_BY = {"app.kubernetes.io/managed-by": "heteroplane"}
SET_LABEL = "heteroplane.io/set"
CLASS_LABEL = "heteroplane.io/device-class"
FRAGMENT_ANNOTATION = "heteroplane.io/fragment-key"
VERSION_ANNOTATION = "heteroplane.io/placement-version"
VENDOR_RESOURCE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu", "intel": "habana.ai/gaudi"}
DRA_DEVICE_CLASS = {"nvidia": "mig.nvidia.com", "amd": "gpu.amd.com", "intel": "gaudi.habana.ai"}


class NoContainer(ValueError):
    """A replica set has no container (no runtime template applies to its fragment)."""


@dataclass(frozen=True)
class ClassShape:
    """What the manifests need of a device class: its vendor, slices per device and, for a CPU
    class, cores per device (optimizer.catalog.DeviceClassSpec has all three)."""

    vendor: str
    slices_per_device: int
    cores: int = 0


def set_id(rs: ReplicaSet) -> str:
    """The replica set's stable hash: its identity, not its size or version."""
    identity = "\x00".join((rs.tenant, rs.workload, rs.fragment_key, rs.device_class, rs.phase.value))
    return hashlib.sha256(identity.encode()).hexdigest()[:10]


def slug(text: str, width: int) -> str:
    """`text` as lower-case letters, digits and dashes, at most `width` long, no dash at either end."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-")[:width].strip("-") or "x"


def deployment_name(rs: ReplicaSet) -> str:
    phase = {Phase.whole: "", Phase.prefill: "-p", Phase.decode: "-d"}[rs.phase]
    fragment = rs.fragment_key.rsplit("/", 1)[-1]
    return (f"hp-{slug(rs.workload, 14)}-{slug(fragment, 16)}-{slug(rs.device_class, 10)}{phase}"
            f"-{set_id(rs)}")


def label_value(text: str) -> str:
    """A label value: at most 63 of [A-Za-z0-9._-], starting and ending alphanumeric ('' stays '')."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63].strip("._-")


def labels(rs: ReplicaSet) -> dict[str, str]:
    return {**MANAGED_BY, SET_LABEL: set_id(rs), "heteroplane.io/tenant": label_value(rs.tenant),
            "heteroplane.io/workload": label_value(rs.workload), CLASS_LABEL: label_value(rs.device_class),
            "heteroplane.io/phase": rs.phase.value or "whole"}


def manifests(desired: DesiredPlacement, shapes: dict[str, ClassShape], namespace: str) -> list[dict[str, Any]]:
    """Every object placement `desired` needs, in apply order (claim templates before the
    Deployments that reference them). Raises NoContainer or KeyError (an unknown class) naming
    the replica set."""
    out: list[dict[str, Any]] = []
    for rs in desired.replica_sets:
        if rs.container is None:
            raise NoContainer(f"{rs.tenant}/{rs.workload} fragment {rs.fragment_key!r}: no runtime template "
                              "applies; set one (PUT /workloads/{id}/runtime-template)")
        if rs.device_class not in shapes:
            raise KeyError(f"device class {rs.device_class!r} of {rs.tenant}/{rs.workload} is not in the catalog")
        shape = shapes[rs.device_class]
        claim = claim_template(rs, shape, namespace) if fractional(rs, shape) else None
        if claim is not None:
            out.append(claim)
        out.append(deployment(rs, shape, namespace, desired.version, claim))
    return out


def fractional(rs: ReplicaSet, shape: ClassShape) -> bool:
    """Whether a replica takes part of a device (a DRA claim) rather than whole devices."""
    return shape.cores == 0 and rs.slices % shape.slices_per_device != 0


def deployment(rs: ReplicaSet, shape: ClassShape, namespace: str, version: int,
               claim: dict[str, Any] | None) -> dict[str, Any]:
    name = deployment_name(rs)
    pod_spec: dict[str, Any] = {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": CLASS_LABEL, "operator": "In", "values": [label_value(rs.device_class)]}]},
        ]}}},
        "containers": [container(rs.container, rs, shape, claim)],
    }
    if shape.vendor in VENDOR_RESOURCE and shape.cores == 0:
        pod_spec["tolerations"] = [{"key": VENDOR_RESOURCE[shape.vendor], "operator": "Exists", "effect": "NoSchedule"}]
    if claim is not None:
        pod_spec["resourceClaims"] = [{"name": "slices", "resourceClaimTemplateName": claim["metadata"]["name"]}]
    meta = labels(rs)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": meta,
                     "annotations": {FRAGMENT_ANNOTATION: rs.fragment_key, VERSION_ANNOTATION: str(version)}},
        "spec": {
            "replicas": rs.replicas,
            "selector": {"matchLabels": {SET_LABEL: meta[SET_LABEL]}},
            "template": {"metadata": {"labels": meta, "annotations": {FRAGMENT_ANNOTATION: rs.fragment_key}},
                         "spec": pod_spec},
        },
    }


def container(spec: Container, rs: ReplicaSet, shape: ClassShape, claim: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "replica", "image": spec.image}
    if spec.command:
        out["command"] = list(spec.command)
    if spec.args:
        out["args"] = list(spec.args)
    env = [{"name": name, "value": value} for name, value in spec.env]
    env += [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.split("/", 1)[0], "key": ref.split("/", 1)[1]}}}
            for name, ref in spec.secret_env]
    if env:
        out["env"] = env
    if spec.ports:
        out["ports"] = [{"containerPort": port} for port in spec.ports]
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if spec.cpu_millicores is not None:
        requests["cpu"] = f"{spec.cpu_millicores}m"
    if spec.memory_mib is not None:
        requests["memory"] = limits["memory"] = f"{spec.memory_mib}Mi"
    if shape.cores > 0:
        cores = rs.slices * shape.cores // shape.slices_per_device
        requests["cpu"] = limits["cpu"] = str(cores)
    elif claim is None and shape.vendor in VENDOR_RESOURCE:
        limits[VENDOR_RESOURCE[shape.vendor]] = str(rs.slices // shape.slices_per_device)
    if requests or limits:
        out["resources"] = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    if claim is not None:
        out.setdefault("resources", {})["claims"] = [{"name": "slices"}]
    return out


def claim_template(rs: ReplicaSet, shape: ClassShape, namespace: str) -> dict[str, Any]:
    """A DRA claim template for `rs.slices` slices of one device, per pod."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": deployment_name(rs), "namespace": namespace, "labels": labels(rs)},
        "spec": {"spec": {"devices": {"requests": [{
            "name": "slices",
            "exactly": {"deviceClassName": DRA_DEVICE_CLASS.get(shape.vendor, "gpu.example.com"),
                        "allocationMode": "ExactCount", "count": rs.slices},
        }]}}},
    }
