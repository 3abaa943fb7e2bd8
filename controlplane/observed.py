"""The log of what ran: the actuator's observations, written when they change, for metering to bill.

The database's placement says what was asked for; an observation says what the actuator reported
running. They differ after a restart, an eviction or a failed apply, and usage follows the latter.
"""

from datetime import datetime

from sqlmodel import Session, select

from controlplane.actuators.base import ObservedPlacement
from controlplane.models import DeviceClass, Fragment, Observation, ObservationItem, Tenant, Workload
from controlplane.models._common import to_utc
from optimizer.types import Phase

# (fragment id, device class id, phase) -> (replicas, slices), as metering's intervals hold them
Items = dict[tuple[int, int, str], tuple[int, int]]


def observed_items(session: Session, observed: ObservedPlacement) -> Items:
    """The observed replica sets by ids; sets of fragments or classes the database does not know yet
    (a fragment no telemetry has shown) are left out: there is nobody to bill them to."""
    fragment_ids = {
        (tenant, workload, key): fid
        for fid, key, workload, tenant in session.exec(
            select(Fragment.id, Fragment.key, Workload.name, Tenant.name)
            .join(Workload, Workload.id == Fragment.workload_id)
            .join(Tenant, Tenant.id == Workload.tenant_id)
        ).all()
    }
    class_ids = dict(session.exec(select(DeviceClass.name, DeviceClass.id)).all())
    items: Items = {}
    for rs in observed.replica_sets:
        fid = fragment_ids.get((rs.tenant, rs.workload, rs.fragment_key))
        cid = class_ids.get(rs.device_class)
        if fid is None or cid is None or rs.replicas <= 0:
            continue
        key = (fid, cid, Phase(rs.phase).value)
        replicas, _ = items.get(key, (0, rs.slices))
        items[key] = (replicas + rs.replicas, rs.slices)
    return items


def items_of(session: Session, observation_id: int) -> Items:
    return {
        (i.fragment_id, i.device_class_id, i.phase): (i.replicas, i.slices)
        for i in session.exec(select(ObservationItem).where(ObservationItem.observation_id == observation_id)).all()
    }


def record_observation(session: Session, observed: ObservedPlacement, now: datetime) -> bool:
    """Write what the actuator reported running at `now`, unless it is what the last observation
    already says; True when a new observation was written (the caller commits)."""
    items = observed_items(session, observed)
    last = session.exec(select(Observation).order_by(Observation.observed_at.desc(), Observation.id.desc())).first()
    if last is not None and items_of(session, last.id) == items:
        return False
    observation = Observation(observed_at=to_utc(now), version=observed.version)
    session.add(observation)
    session.flush()
    for (fid, cid, phase), (replicas, slices) in sorted(items.items()):
        session.add(ObservationItem(observation_id=observation.id, fragment_id=fid, device_class_id=cid,
                                    phase=phase, replicas=replicas, slices=slices))
    return True
