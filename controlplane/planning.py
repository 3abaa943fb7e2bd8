"""From what the database knows to what the optimizer needs: a `Snapshot`, then a `Problem`.

`take_snapshot` is the only part that reads; `build_problem` is pure.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, select

from controlplane.db import int_sum
from controlplane.models import (
    Device,
    DeviceClass,
    Fragment,
    FragmentProfile,
    MigrationPolicy,
    Node,
    Placement,
    PlacementItem,
    PlacementState,
    RequestStat,
    Sla,
    Tenant,
    Workload,
)
from controlplane.models._common import minute_of, to_utc
from controlplane.seed import spec_of
from optimizer.catalog import DeviceClassSpec
from optimizer.perfmodel import estimate_profiles
from optimizer.types import ClassCapacity, FragmentDemand, Problem, ServiceProfile

WINDOW_MINUTES = 5  # demand and measured latency are averaged over this many minutes
MIN_ELAPSED_S = 10.0  # a fragment seen for less than this is rated over this long
MIN_MEASURED_VISITS = 20  # fewer visits than this on a class: keep the estimate


@dataclass(frozen=True)
class FragmentView:
    """A fragment and what was observed of it in the window."""

    id: int
    key: str
    kind: str
    model: str
    workload_id: int
    tenant_id: int
    tenant: str
    workload: str
    rate_rps: float
    tokens_in_mean: float
    tokens_out_mean: float
    visits: int
    measured_latency_ms: dict[str, float] = field(default_factory=dict)  # by class with enough visits


@dataclass(frozen=True)
class WorkloadView:
    id: int
    requests: int
    p99_ms: float | None


@dataclass(frozen=True)
class PolicyView:
    """The fleet-wide migration policy in force (defaults when none is set)."""

    min_improvement_pct: float = 5.0
    approval_required: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class Snapshot:
    """Everything one reconciler cycle decides from, read in one transaction."""

    now: datetime
    classes: tuple[DeviceClassSpec, ...]
    class_ids: dict[str, int]
    healthy_devices: dict[str, int]
    fragments: tuple[FragmentView, ...]
    workloads: dict[int, WorkloadView]
    current: dict[tuple[int, str], tuple[int, int]]  # (fragment id, class) -> (replicas, slices)
    current_version: int | None
    latest_version: int
    policy: PolicyView


def take_snapshot(session: Session, now: datetime) -> Snapshot:
    """Read the fleet, the observed graph and the current placement."""
    now = to_utc(now)
    since = minute_of(now) - timedelta(minutes=WINDOW_MINUTES - 1)
    rows = session.exec(select(DeviceClass).order_by(DeviceClass.id)).all()
    classes = tuple(spec_of(r) for r in rows)
    class_ids = {r.name: r.id for r in rows}
    healthy = defaultdict(int)
    for name, count in session.exec(
        select(DeviceClass.name, func.count(Device.id))
        .join(Node, Node.device_class_id == DeviceClass.id)
        .join(Device, Device.node_id == Node.id)
        .where(Node.healthy, Device.healthy)
        .group_by(DeviceClass.name)
    ).all():
        healthy[name] = int(count)

    observed: dict[int, dict[str, tuple[int, float, int, int]]] = defaultdict(dict)
    for fid, cls, visits, latency, tin, tout in session.exec(
        select(
            FragmentProfile.fragment_id,
            FragmentProfile.device_class,
            int_sum(FragmentProfile.visits),
            func.sum(FragmentProfile.latency_ms_sum),
            int_sum(FragmentProfile.tokens_in),
            int_sum(FragmentProfile.tokens_out),
        )
        .where(FragmentProfile.minute >= since)
        .group_by(FragmentProfile.fragment_id, FragmentProfile.device_class)
    ).all():
        observed[fid][cls] = (int(visits or 0), float(latency or 0), int(tin or 0), int(tout or 0))

    fragments = []
    for fragment, workload, tenant in session.exec(
        select(Fragment, Workload, Tenant)
        .join(Workload, Workload.id == Fragment.workload_id)
        .join(Tenant, Tenant.id == Workload.tenant_id)
        .order_by(Fragment.id)
    ).all():
        per_class = observed.get(fragment.id, {})
        visits = sum(v[0] for v in per_class.values())
        elapsed = max(MIN_ELAPSED_S, (now - max(since, to_utc(fragment.first_seen))).total_seconds())
        fragments.append(
            FragmentView(
                id=fragment.id,
                key=fragment.key,
                kind=str(fragment.kind),
                model=fragment.model,
                workload_id=workload.id,
                tenant_id=tenant.id,
                tenant=tenant.name,
                workload=workload.name,
                rate_rps=visits / elapsed,
                tokens_in_mean=sum(v[2] for v in per_class.values()) / visits if visits else 0.0,
                tokens_out_mean=sum(v[3] for v in per_class.values()) / visits if visits else 0.0,
                visits=visits,
                measured_latency_ms={
                    cls: v[1] / v[0] for cls, v in per_class.items() if cls and v[0] >= MIN_MEASURED_VISITS
                },
            )
        )

    requests = dict(
        session.exec(
            select(RequestStat.workload_id, int_sum(RequestStat.requests))
            .where(RequestStat.minute >= since)
            .group_by(RequestStat.workload_id)
        ).all()
    )
    slas = dict(session.exec(select(Sla.workload_id, Sla.p99_ms)).all())
    workloads = {
        wid: WorkloadView(id=wid, requests=int(requests.get(wid) or 0), p99_ms=slas.get(wid))
        for wid in session.exec(select(Workload.id)).all()
    }

    current_placement = session.exec(
        select(Placement).where(Placement.state == PlacementState.applied).order_by(Placement.version.desc())
    ).first()
    current = {}
    if current_placement is not None:
        for item, name in session.exec(
            select(PlacementItem, DeviceClass.name)
            .join(DeviceClass, DeviceClass.id == PlacementItem.device_class_id)
            .where(PlacementItem.placement_id == current_placement.id)
        ).all():
            current[(item.fragment_id, name)] = (item.replicas, item.slices)
    latest = session.exec(select(func.max(Placement.version))).one() or 0

    policy_row = session.exec(
        select(MigrationPolicy)
        .where(MigrationPolicy.enabled, MigrationPolicy.tenant_id.is_(None), MigrationPolicy.workload_id.is_(None))
        .order_by(MigrationPolicy.id)
    ).first()
    policy = (
        PolicyView(policy_row.min_improvement_pct, policy_row.approval_required, policy_row.dry_run)
        if policy_row
        else PolicyView()
    )
    return Snapshot(
        now=now,
        classes=classes,
        class_ids=class_ids,
        healthy_devices=dict(healthy),
        fragments=tuple(fragments),
        workloads=workloads,
        current=current,
        current_version=current_placement.version if current_placement else None,
        latest_version=int(latest),
        policy=policy,
    )


def build_problem(snapshot: Snapshot, headroom: float, time_limit_s: float) -> Problem:
    """The optimizer's problem: estimated profiles (measured latency where telemetry has it) and bounds.

    Latency bound per visit of fragment f in workload w, from w's p99 SLA:
        bound_f = p99_w * e_f / sum_g(v_g * e_g)
    where e_g is g's best estimated latency and v_g its visits per request. If every fragment
    meets its bound, a request's latency along the graph, sum_g(v_g * latency_g), meets p99_w.
    """
    profiles = {f.id: _profiles(f, snapshot.classes) for f in snapshot.fragments}
    bounds = _latency_bounds(snapshot, profiles)
    capacity = tuple(
        ClassCapacity(c.name, c.usd_per_hour, snapshot.healthy_devices.get(c.name, 0), c.slices_per_device)
        for c in snapshot.classes
        if snapshot.healthy_devices.get(c.name, 0) > 0
    )
    fragments = tuple(
        FragmentDemand(
            fragment=str(f.id),
            workload=str(f.workload_id),
            demand_rps=f.rate_rps,
            profiles=profiles[f.id],
            latency_bound_ms=bounds.get(f.id),
        )
        for f in snapshot.fragments
        if profiles[f.id]
    )
    return Problem(device_classes=capacity, fragments=fragments, headroom=headroom, time_limit_s=time_limit_s)


def _profiles(fragment: FragmentView, classes: tuple[DeviceClassSpec, ...]) -> tuple[ServiceProfile, ...]:
    estimated = estimate_profiles(fragment.kind, fragment.model, fragment.tokens_in_mean, fragment.tokens_out_mean, classes)
    return tuple(
        ServiceProfile(p.device_class, p.throughput_rps, fragment.measured_latency_ms[p.device_class], p.slices, measured=True)
        if p.device_class in fragment.measured_latency_ms
        else p
        for p in estimated
    )


def _latency_bounds(snapshot: Snapshot, profiles: dict[int, tuple[ServiceProfile, ...]]) -> dict[int, float]:
    by_workload: dict[int, list[FragmentView]] = defaultdict(list)
    for f in snapshot.fragments:
        by_workload[f.workload_id].append(f)
    bounds = {}
    for wid, fragments in by_workload.items():
        workload = snapshot.workloads.get(wid)
        if workload is None or workload.p99_ms is None or workload.requests == 0:
            continue
        best = {f.id: min((p.latency_ms for p in profiles[f.id]), default=0.0) for f in fragments}
        path_ms = sum(f.visits / workload.requests * best[f.id] for f in fragments)
        if path_ms <= 0:
            continue
        for f in fragments:
            if best[f.id] > 0:
                bounds[f.id] = workload.p99_ms * best[f.id] / path_ms
    return bounds
