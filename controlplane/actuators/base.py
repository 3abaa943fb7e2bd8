"""The actuator protocol: apply a placement, report what runs where and what hardware exists."""

from dataclasses import dataclass
from typing import Protocol

from optimizer.types import Phase


@dataclass(frozen=True)
class ReplicaSet:
    """Replicas of one fragment on one device class. `fragment_key` is the collectors' stable key.

    `phase` is whole for replicas that serve every visit end to end. An LLM fragment split for
    disaggregated serving runs a prefill pool and a decode pool instead (possibly on different
    classes): each visit is prefilled on a prefill replica, its KV cache handed to a decode
    replica, which generates the output. A fragment runs either whole replicas or both pools.
    """

    tenant: str
    workload: str
    fragment_key: str
    device_class: str
    replicas: int
    slices: int = 1
    phase: Phase = Phase.whole


@dataclass(frozen=True)
class DesiredPlacement:
    """A whole placement version; applying it is idempotent."""

    version: int
    replica_sets: tuple[ReplicaSet, ...]


@dataclass(frozen=True)
class ObservedPlacement:
    """What actually runs now, and which version it was applied from (None before the first apply)."""

    version: int | None
    replica_sets: tuple[ReplicaSet, ...]


@dataclass(frozen=True)
class NodeInventory:
    """One node the actuator can place on."""

    name: str
    device_class: str
    devices: int
    healthy_devices: int


@dataclass(frozen=True)
class ApplyResult:
    ok: bool
    message: str = ""


class Actuator(Protocol):
    """Implemented by the simulated fleet and by the Kubernetes actuator."""

    def apply(self, desired: DesiredPlacement) -> ApplyResult:
        """Make the fleet run `desired`; make-before-break; applying the same version twice changes nothing."""
        ...

    def observe(self) -> ObservedPlacement:
        """What runs where right now."""
        ...

    def inventory(self) -> tuple[NodeInventory, ...]:
        """The nodes and healthy devices available for placement."""
        ...
