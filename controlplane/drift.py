"""Drift: where what the actuator reports running differs from the placement last applied.

Pure: the reconciler observes, calls `compare`, and re-applies the placement when it drifted (a
restarted fleet back on its initial deployment, replicas evicted by a failed device, a hand edit).
Only fragments the placement names are compared: a fragment it does not name is not managed yet
(the fleet runs it as it was deployed before heteroplane adopted it).
"""

from dataclasses import dataclass

from controlplane.actuators.base import ReplicaSet
from optimizer.types import Phase

# tenant, workload, fragment key, device class, phase, replicas, slices: a replica set as compared
SetView = tuple[str, str, str, str, Phase, int, int]


@dataclass(frozen=True)
class Drift:
    """Replica sets the placement wants but the fleet does not run as asked, and the reverse."""

    missing: tuple[ReplicaSet, ...] = ()  # applied, not running like this
    unexpected: tuple[ReplicaSet, ...] = ()  # running, not applied like this

    @property
    def sets(self) -> int:
        """How many replica sets differ, counting both sides."""
        return len(self.missing) + len(self.unexpected)

    def __bool__(self) -> bool:
        return bool(self.sets)

    def summary(self, limit: int = 3) -> str:
        """A short line for the audit trail, e.g. "2 sets missing (rag/llm:x on L40S ×2, ...); 1 unexpected (...)"."""
        parts = []
        for label, sets in (("missing", self.missing), ("unexpected", self.unexpected)):
            if sets:
                shown = ", ".join(_describe(rs) for rs in sets[:limit])
                more = f", and {len(sets) - limit} more" if len(sets) > limit else ""
                parts.append(f"{len(sets)} {label} ({shown}{more})")
        return "; ".join(parts) or "none"


def compare(applied: tuple[ReplicaSet, ...], running: tuple[ReplicaSet, ...]) -> Drift:
    """How `running` (what the actuator observes) differs from `applied`, over the fragments `applied` names.

    Sets with no replicas run nothing, so they are left out on both sides; the phase is compared as a
    `Phase` whatever spelling the actuator gave it.
    """
    named = {(rs.tenant, rs.workload, rs.fragment_key) for rs in applied}
    want = {_view(rs): rs for rs in applied if rs.replicas > 0}
    have = {
        _view(rs): rs
        for rs in running
        if rs.replicas > 0 and (rs.tenant, rs.workload, rs.fragment_key) in named
    }
    return Drift(
        missing=tuple(want[k] for k in sorted(want.keys() - have.keys())),
        unexpected=tuple(have[k] for k in sorted(have.keys() - want.keys())),
    )


def _view(rs: ReplicaSet) -> SetView:
    return (rs.tenant, rs.workload, rs.fragment_key, rs.device_class, Phase(rs.phase), rs.replicas, rs.slices)


def _describe(rs: ReplicaSet) -> str:
    pool = f" {Phase(rs.phase).value} pool" if Phase(rs.phase) is not Phase.whole else ""
    return f"{rs.workload}/{rs.fragment_key}{pool} on {rs.device_class} ×{rs.replicas}"
