"""An in-memory actuator: the test double beside the simulated fleet and Kubernetes."""

from dataclasses import dataclass, field

from controlplane.actuators.base import ApplyResult, DesiredPlacement, NodeInventory, ObservedPlacement


@dataclass
class InMemoryActuator:
    """Records what it is asked to apply; `fail_with` makes the next applies fail with that message,
    `pending_for` makes that many next applies answer pending (replicas still coming up)."""

    nodes: tuple[NodeInventory, ...]
    applied: list[DesiredPlacement] = field(default_factory=list)
    fail_with: str | None = None
    pending_for: int = 0

    def apply(self, desired: DesiredPlacement) -> ApplyResult:
        if self.fail_with is not None:
            return ApplyResult(ok=False, message=self.fail_with)
        if self.pending_for > 0:
            self.pending_for -= 1
            return ApplyResult(ok=False, message="replicas coming up", pending=True)
        if not self.applied or self.applied[-1] != desired:
            self.applied.append(desired)
        return ApplyResult(ok=True)

    def observe(self) -> ObservedPlacement:
        if not self.applied:
            return ObservedPlacement(version=None, replica_sets=())
        return ObservedPlacement(self.applied[-1].version, self.applied[-1].replica_sets)

    def inventory(self) -> tuple[NodeInventory, ...]:
        return self.nodes
