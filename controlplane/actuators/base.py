"""The actuator protocol: apply a placement, report what runs where and what hardware exists."""

from dataclasses import dataclass, field
from typing import Protocol

from optimizer.types import Phase


@dataclass(frozen=True)
class Container:
    """What one replica runs: resolved from the runtime templates (controlplane.containers)."""

    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # (name, value), sorted by name
    secret_env: tuple[tuple[str, str], ...] = ()  # (name, "secret/key"), sorted by name
    ports: tuple[int, ...] = ()
    cpu_millicores: int | None = None
    memory_mib: int | None = None
    model: str | None = None


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
    # What each replica runs; None where no template applies (or an actuator that runs nothing real
    # does not say). Not part of equality: what runs where is compared by counts, and a changed
    # template is the actuator's to roll out.
    container: Container | None = field(default=None, compare=False)


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
    """One node the actuator can place on, and which of its devices are not ready.

    `unhealthy` names the devices (by index) that are missing or not ready. An actuator that can
    only count them leaves it None: the last `devices - healthy_devices` indices are then taken.
    `ready` is false for a node that is lost (not ready); a node no longer reported is lost too.
    """

    name: str
    device_class: str
    devices: int
    healthy_devices: int
    unhealthy: tuple[int, ...] | None = None
    ready: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.healthy_devices <= self.devices:
            raise ValueError(f"node {self.name}: healthy_devices must be within 0..{self.devices}, "
                             f"got {self.healthy_devices}")
        if self.unhealthy is not None:
            wrong = sorted(i for i in self.unhealthy if not 0 <= i < self.devices)
            if wrong:
                raise ValueError(f"node {self.name}: unhealthy device indices {wrong} are outside 0..{self.devices - 1}")
            if len(set(self.unhealthy)) != self.devices - self.healthy_devices:
                raise ValueError(f"node {self.name}: {len(set(self.unhealthy))} unhealthy devices named but "
                                 f"{self.devices - self.healthy_devices} counted (devices - healthy_devices)")

    def unhealthy_indices(self) -> frozenset[int]:
        """The indices of the devices that are missing or not ready."""
        if self.unhealthy is not None:
            return frozenset(self.unhealthy)
        return frozenset(range(self.healthy_devices, self.devices))


@dataclass(frozen=True)
class ApplyResult:
    """What applying a placement came to: done (`ok`), failed (neither), or started and not finished
    yet (`pending`: new replicas are coming up; apply the same placement again, which is idempotent,
    to learn more). An actuator that finishes within `apply` never answers pending."""

    ok: bool
    message: str = ""
    pending: bool = False


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
