"""The typed stages of the optimizer: what a `Problem` holds and what a `Plan` answers."""

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class ClassCapacity:
    """One device class as the solver sees it: what is healthy now and what it costs."""

    device_class: str
    usd_per_hour: float  # one whole device
    devices: int  # healthy devices
    slices_per_device: int = 1

    @property
    def slices(self) -> int:
        return self.devices * self.slices_per_device


@dataclass(frozen=True)
class ServiceProfile:
    """How one replica of a fragment performs on one device class, at an SLA-safe operating point."""

    device_class: str
    throughput_rps: float  # visits per second one replica sustains
    latency_ms: float  # latency of one visit at that operating point
    slices: int = 1  # slices one replica occupies
    measured: bool = False  # True when it comes from telemetry, False when estimated


@dataclass(frozen=True)
class FragmentDemand:
    """One fragment to place: its load, its latency bound and where it can run."""

    fragment: str  # stable identifier, unique within the problem
    workload: str
    demand_rps: float
    profiles: tuple[ServiceProfile, ...]
    latency_bound_ms: float | None = None
    min_replicas: int = 1


@dataclass(frozen=True)
class Problem:
    """Everything `solve` needs; built by the control plane's snapshot, never mutated."""

    device_classes: tuple[ClassCapacity, ...]
    fragments: tuple[FragmentDemand, ...]
    headroom: float = 1.2
    time_limit_s: float = 5.0


class PlanStatus(StrEnum):
    optimal = "optimal"
    feasible = "feasible"
    infeasible = "infeasible"


@dataclass(frozen=True)
class Assignment:
    """Replicas of one fragment on one device class."""

    fragment: str
    device_class: str
    replicas: int
    slices: int  # per replica
    usd_per_hour: float  # for all these replicas


@dataclass(frozen=True)
class Plan:
    """A proposed placement with its cost, or a diagnosis of why none exists."""

    status: PlanStatus
    assignments: tuple[Assignment, ...] = ()
    usd_per_hour: float = 0.0
    lower_bound_usd_per_hour: float = 0.0
    solve_time_s: float = 0.0
    diagnosis: tuple[str, ...] = field(default=())

    @property
    def feasible(self) -> bool:
        return self.status is not PlanStatus.infeasible

    @property
    def gap(self) -> float:
        """Relative optimality gap: 0 when proven optimal."""
        if self.usd_per_hour <= 0:
            return 0.0
        return max(0.0, (self.usd_per_hour - self.lower_bound_usd_per_hour) / self.usd_per_hour)

    def replicas_of(self, fragment: str) -> dict[str, int]:
        return {a.device_class: a.replicas for a in self.assignments if a.fragment == fragment and a.replicas}
