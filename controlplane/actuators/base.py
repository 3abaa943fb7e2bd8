"""The actuator protocol: apply a placement, report what runs where and what hardware exists."""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ReplicaSet:
    """Replicas of one fragment on one device class. `fragment_key` is the collectors' stable key."""

    tenant: str
    workload: str
    fragment_key: str
    device_class: str
    replicas: int
    slices: int = 1


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
