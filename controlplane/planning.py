"""From what the database knows to what the optimizer needs: a `Snapshot`, then a `Problem`.

`take_snapshot` is the only part that reads; `build_problem` is pure.
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property

from sqlalchemy import func
from sqlmodel import Session, select

from collectors.fanout import calls_percentile, is_concurrent
from collectors.records import Series
from collectors.sketch import TOKEN_EDGES, quantiles
from controlplane.calibration import calibrations
from controlplane.db import epoch_seconds, int_sum
from controlplane.forecast import SHORT_MINUTES, DemandHistory, Forecast, ForecastConfig, forecast
from controlplane.models import (
    DeviceClass,
    Edge,
    Fragment,
    FragmentPin,
    FragmentProfile,
    MeasuredCapacity,
    Migration,
    MigrationPolicy,
    MigrationState,
    PlacementItem,
    PlacementState,
    ProfileBucket,
    RequestStat,
    Sla,
    Tenant,
    Workload,
)
from controlplane.models._common import minute_of, to_utc
from controlplane.policy import Limits, Policy
from controlplane.profiles import visits_by_calls
from controlplane.queries import (
    healthy_devices_per_node,
    kernel_speedups_by_class,
    newest_placement,
    placement_in_force,
)
from controlplane.seed import spec_of
from controlplane.windows import parse_window
from optimizer.calibration import KNOWN_OPS, Calibration, KernelSpeedups, effective_specs
from optimizer.catalog import DeviceClassSpec
from optimizer.perfmodel import (
    MIN_QUEUE_UTILISATION,
    TARGET_UTILISATION,
    capacity_from_queueing,
    estimate_profiles,
    kv_bytes_per_token,
    params_from_model_name,
)
from optimizer.types import (
    Assignment,
    ChangeLimit,
    ClassCapacity,
    FragmentDemand,
    Phase,
    Priority,
    Problem,
    ServiceProfile,
    WorkloadSla,
)
from optimizer.types import Edge as OptEdge

WINDOW_MINUTES = 5  # demand and measured latency are averaged over this many minutes
MIN_ELAPSED_S = 10.0  # a fragment seen for less than this is rated over this long
MIN_MEASURED_VISITS = 20  # fewer visits than this on a class: keep the estimate
CAPACITY_TTL = timedelta(hours=1)  # a measured capacity no queue has confirmed for this long is dropped


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
    # The p99 latency of a visit less the mean queue wait (the SLA is a p99: a path counts each
    # fragment's tail, and queueing is a shortage of replicas, not a slow class), by class with enough
    # visits in the window; the mean less the wait where the window has no latency sketch.
    measured_latency_ms: dict[str, float] = field(default_factory=dict)
    # Since the fragment's replicas last changed (within the window): visits/s on each class, and the
    # mean wait for a replica on the classes with enough visits that reported one.
    settled_rate_rps: dict[str, float] = field(default_factory=dict)
    queue_ms: dict[str, float] = field(default_factory=dict)
    # Capacity of one whole replica (visits/s) by class, as last measured (MeasuredCapacity).
    known_capacity: dict[str, float] = field(default_factory=dict)
    # Input and output tokens of a visit at the 99th percentile, from the token histograms (linear within
    # the bucket holding it; the open bucket ends at twice its edge); None without them.
    tokens_p99: tuple[float, float] | None = None


@dataclass(frozen=True)
class WorkloadView:
    id: int
    p99_ms: float | None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    priority: Priority = Priority.realtime


Replicas = dict[tuple[int, str, Phase], tuple[int, int]]  # (fragment id, class, phase) -> (replicas, slices)


@dataclass(frozen=True)
class ProposalView:
    """The newest placement when it was not applied: an open proposal (waiting for approval, or
    recorded by a dry run) or one an operator rejected, with its items and what it was made against."""

    version: int
    state: PlacementState
    items: Replicas
    created_at: datetime
    usd_per_hour: float = 0.0
    demand_rps: float = 0.0
    base_version: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything one reconciler cycle decides from, read in one transaction."""

    now: datetime
    classes: tuple[DeviceClassSpec, ...]
    class_ids: dict[str, int]
    healthy_devices: dict[str, int]
    fragments: tuple[FragmentView, ...]
    workloads: dict[int, WorkloadView]
    current: Replicas
    current_version: int | None
    latest_version: int
    policies: tuple[Policy, ...] = ()  # the enabled migration policies, oldest first
    edges: tuple["EdgeView", ...] = ()
    last_moved: dict[int, datetime] = field(default_factory=dict)  # fragment id -> its last migration's end
    proposal: ProposalView | None = None
    applying_version: int | None = None  # a placement the actuator is still bringing up
    # Healthy devices on each healthy node of a class, in node order (a class missing: not known).
    node_devices: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Fragment id -> the classes an operator's or a rollback's pin holds it on (FragmentPin).
    pins: dict[int, tuple[str, ...]] = field(default_factory=dict)
    # Workload id -> its demand forecast (controlplane.forecast); empty when forecasting is off.
    forecasts: dict[int, Forecast] = field(default_factory=dict)
    # Class name -> what `heteroplane calibrate` measured it to reach; a class missing: uncalibrated.
    calibrations: dict[str, Calibration] = field(default_factory=dict)
    # Class name -> op -> speedup of its selected kernel over eager (the kernel registry); missing: none.
    kernel_speedups: dict[str, KernelSpeedups] = field(default_factory=dict)

    def specs_for(self, kind: str) -> tuple[DeviceClassSpec, ...]:
        """The classes as the performance model prices a fragment of `kind` on them: scaled by their
        measured efficiency, and for an LLM by its verified kernels' speedups (optimizer.calibration)."""
        return effective_specs(self.classes, self.calibrations, self.kernel_speedups, kind)

    @cached_property
    def whole_replicas(self) -> dict[int, dict[str, int]]:
        """Fragment id -> class -> the whole replicas it runs there now."""
        whole: dict[int, dict[str, int]] = defaultdict(dict)
        for (fid, cls, phase), (replicas, _) in self.current.items():
            if phase is Phase.whole:
                whole[fid][cls] = replicas
        return dict(whole)

    @cached_property
    def fresh_capacity(self) -> dict[int, dict[str, float]]:
        """`measured_capacity` of every fragment that queued long enough, with the whole replicas it
        runs now; worked out once per snapshot (the reconciler keeps it, build_problem plans by it)."""
        return {f.id: measured for f in self.fragments
                if (measured := measured_capacity(f, self.whole_replicas.get(f.id, {})))}


@dataclass(frozen=True)
class EdgeView:
    """Calls from one fragment to another, per call of the parent, and bytes per call, all-time;
    whether they run concurrently with their siblings, and calls per parent visit at p99 where
    visits were tallied (collectors.fanout)."""

    parent_id: int
    child_id: int
    calls_per_parent_call: float
    bytes_per_call: float
    concurrent: bool = False
    calls_p99: float | None = None


def registry_speedups(session: Session, class_names: Iterable[str]) -> dict[str, dict[str, float]]:
    """Each class's kernel speedups per op as the kernel registry stored them; classes never measured
    are left out (every op at 1.0), and so are rows of ops the model has no share for (a kernel
    suite newer than this planner) or a speedup that is not a finite number > 0."""
    found = {name: {op: s for op, s in ops.items() if op in KNOWN_OPS and math.isfinite(s) and s > 0}
             for name, ops in kernel_speedups_by_class(session, class_names).items()}
    return {name: ops for name, ops in found.items() if ops}


def take_snapshot(session: Session, now: datetime, forecasting: ForecastConfig | None = None,
                  kernel_speedups: Mapping[str, Mapping[str, float]] | None = None) -> Snapshot:
    """Read the fleet, its calibrations, the observed graph and the current placement; with
    `forecasting`, each workload's demand history too, and forecast it. `kernel_speedups` (class
    name -> op -> speedup over eager) is carried to the estimates; by default it is what the kernel
    registry (`heteroplane kernels bench`, table kernel_selection) stored for each class."""
    now = to_utc(now)
    since = minute_of(now) - timedelta(minutes=WINDOW_MINUTES - 1)
    rows = session.exec(select(DeviceClass).order_by(DeviceClass.id)).all()
    classes = tuple(spec_of(r) for r in rows)
    class_ids = {r.name: r.id for r in rows}
    per_node = healthy_devices_per_node(session)

    last_moved = {
        fid: to_utc(at)
        for fid, at in session.exec(
            select(Migration.fragment_id, func.max(Migration.finished_at))
            .where(Migration.state == MigrationState.succeeded)
            .group_by(Migration.fragment_id)
        ).all()
        if at is not None
    }
    # Per (fragment, class): visits, latency without queue waits, tokens in, tokens out, waits over the window;
    # and since the minute after the fragment last moved: visits, visits that reported a wait, waits.
    observed: dict[int, dict[str, list]] = defaultdict(dict)
    settled: dict[int, dict[str, list]] = defaultdict(dict)
    for fid, cls, minute, visits, latency, tin, tout, queued, queue_ms in session.exec(
        select(
            FragmentProfile.fragment_id,
            FragmentProfile.device_class,
            FragmentProfile.minute,
            FragmentProfile.visits,
            FragmentProfile.latency_ms_sum,
            FragmentProfile.tokens_in,
            FragmentProfile.tokens_out,
            FragmentProfile.queue_visits,
            FragmentProfile.queue_ms_sum,
        ).where(FragmentProfile.minute >= since)
    ).all():
        acc = observed[fid].setdefault(cls, [0, 0.0, 0, 0, 0.0])
        acc[0] += visits
        acc[1] += latency - queue_ms
        acc[2] += tin
        acc[3] += tout
        acc[4] += queue_ms
        if fid not in last_moved or to_utc(minute) > minute_of(last_moved[fid]):
            acc = settled[fid].setdefault(cls, [0, 0, 0.0])
            acc[0] += visits
            acc[1] += queued
            acc[2] += queue_ms

    sketches: dict[tuple[int, str], dict[int, int]] = defaultdict(dict)
    token_counts: dict[tuple[int, str], dict[int, int]] = defaultdict(dict)  # (fragment, series): all classes
    for fid, cls, series, bucket, count in session.exec(
        select(ProfileBucket.fragment_id, ProfileBucket.device_class, ProfileBucket.series, ProfileBucket.bucket,
               int_sum(ProfileBucket.count))
        .where(ProfileBucket.minute >= since,
               ProfileBucket.series.in_((Series.latency_ms, Series.tokens_in, Series.tokens_out)))
        .group_by(ProfileBucket.fragment_id, ProfileBucket.device_class, ProfileBucket.series, ProfileBucket.bucket)
    ).all():
        if series == Series.latency_ms:
            sketches[fid, cls][bucket] = int(count)
        else:
            counts = token_counts[fid, series]
            counts[bucket] = counts.get(bucket, 0) + int(count)

    known: dict[int, dict[str, float]] = defaultdict(dict)
    for fid, cls, visits_per_s in session.exec(
        select(MeasuredCapacity.fragment_id, MeasuredCapacity.device_class, MeasuredCapacity.visits_per_s)
        .where(MeasuredCapacity.measured_at >= now - CAPACITY_TTL)
    ).all():
        known[fid][cls] = visits_per_s

    fragments = []
    for fragment, workload, tenant in session.exec(
        select(Fragment, Workload, Tenant)
        .join(Workload, Workload.id == Fragment.workload_id)
        .join(Tenant, Tenant.id == Workload.tenant_id)
        .order_by(Fragment.id)
    ).all():
        per_class = observed.get(fragment.id, {})
        visits = sum(v[0] for v in per_class.values())
        seen_since = max(since, to_utc(fragment.first_seen))
        elapsed = max(MIN_ELAPSED_S, (now - seen_since).total_seconds())
        moved = last_moved.get(fragment.id)
        settled_since = max(seen_since, minute_of(moved) + timedelta(minutes=1)) if moved else seen_since
        settled_s = max(MIN_ELAPSED_S, (now - settled_since).total_seconds())
        calm = settled.get(fragment.id, {})
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
                tokens_p99=_tokens_p99(token_counts.get((fragment.id, Series.tokens_in)),
                                       token_counts.get((fragment.id, Series.tokens_out))),
                measured_latency_ms={
                    cls: _tail_latency_ms(v, sketches.get((fragment.id, cls), {}))
                    for cls, v in per_class.items() if cls and v[0] >= MIN_MEASURED_VISITS
                },
                settled_rate_rps={cls: v[0] / settled_s for cls, v in calm.items() if cls and v[0]},
                queue_ms={cls: v[2] / v[1] for cls, v in calm.items() if cls and v[1] >= MIN_MEASURED_VISITS},
                known_capacity=known.get(fragment.id, {}),
            )
        )

    slas = {wid: (p99, ttft, tpot) for wid, p99, ttft, tpot in
            session.exec(select(Sla.workload_id, Sla.p99_ms, Sla.ttft_ms, Sla.tpot_ms)).all()}
    workloads = {
        wid: WorkloadView(wid, *slas.get(wid, (None, None, None)), priority=Priority(priority))
        for wid, priority in session.exec(select(Workload.id, Workload.priority)).all()
    }

    current_placement = placement_in_force(session)
    current = placement_items(session, current_placement.id) if current_placement is not None else {}
    newest = newest_placement(session)
    latest = newest.version if newest is not None else 0
    proposal = None
    if newest is not None and newest.state in (PlacementState.proposed, PlacementState.recorded,
                                                PlacementState.rejected):
        proposal = ProposalView(newest.version, PlacementState(newest.state), placement_items(session, newest.id),
                                to_utc(newest.created_at), newest.usd_per_hour, newest.demand_rps,
                                newest.base_version)

    visits_ever = dict(
        session.exec(
            select(FragmentProfile.fragment_id, int_sum(FragmentProfile.visits)).group_by(FragmentProfile.fragment_id)
        ).all()
    )
    tallies = visits_by_calls(session)
    edges = tuple(
        EdgeView(e.parent_id, e.child_id, e.calls / visits, e.bytes_total / e.calls,
                 concurrent=is_concurrent(e.calls, e.calls_overlapping),
                 calls_p99=calls_percentile(tallies.get(e.id, {}), visits))
        for e in session.exec(select(Edge).order_by(Edge.id)).all()
        if e.calls > 0 and (visits := int(visits_ever.get(e.parent_id) or 0)) > 0
    )

    policies = tuple(policy_of(row) for row in session.exec(
        select(MigrationPolicy).where(MigrationPolicy.enabled).order_by(MigrationPolicy.id)).all())
    return Snapshot(
        now=now,
        classes=classes,
        class_ids=class_ids,
        healthy_devices={name: sum(counts) for name, counts in per_node.items()},
        fragments=tuple(fragments),
        workloads=workloads,
        current=current,
        current_version=current_placement.version if current_placement else None,
        latest_version=int(latest),
        policies=policies,
        edges=edges,
        last_moved=last_moved,
        proposal=proposal,
        applying_version=applying.version if (applying := newest_placement(session, PlacementState.applying)) else None,
        node_devices=per_node,
        pins={fid: tuple(classes) for fid, classes in
              session.exec(select(FragmentPin.fragment_id, FragmentPin.device_classes)).all()},
        forecasts={wid: forecast(h, forecasting) for wid, h in demand_history(session, now, forecasting).items()}
        if forecasting is not None else {},
        calibrations=calibrations(session),
        kernel_speedups={cls: dict(ops) for cls, ops in (
            registry_speedups(session, class_ids) if kernel_speedups is None else kernel_speedups).items()},
    )


def policy_of(row: MigrationPolicy) -> Policy:
    """A stored migration policy as the gate reads it (its windows were checked when written)."""
    return Policy(
        name=row.name, tenant_id=row.tenant_id, workload_id=row.workload_id,
        min_improvement_pct=row.min_improvement_pct, cooldown_s=row.cooldown_s,
        max_moves_per_cycle=row.max_moves_per_cycle, approval_required=row.approval_required,
        dry_run=row.dry_run, windows=tuple(parse_window(w) for w in row.maintenance_windows or ()),
        proposal_ttl_s=row.proposal_ttl_s, supersede_cost_pct=row.supersede_cost_pct,
        supersede_demand_pct=row.supersede_demand_pct, demand_margin_pct=row.demand_margin_pct,
    )


def demand_history(session: Session, now: datetime, config: ForecastConfig) -> dict[int, DemandHistory]:
    """Each workload's requests (RequestStat) per complete minute over the last SHORT_MINUTES, and per
    complete bucket of `config.bucket_s` over `config.history_s` (summed in the database, so a long
    history costs one row per bucket), gaps filled with zeros from its first record on."""
    now = to_utc(now)
    this_minute = minute_of(now)
    per_minute: dict[int, dict[datetime, float]] = defaultdict(dict)
    for wid, minute, requests in session.exec(
        select(RequestStat.workload_id, RequestStat.minute, RequestStat.requests)
        .where(RequestStat.minute >= this_minute - timedelta(minutes=SHORT_MINUTES), RequestStat.minute < this_minute)
    ).all():
        per_minute[wid][to_utc(minute)] = float(requests)
    size = int(config.bucket_s)
    current = int(now.timestamp()) // size  # the bucket now is in, incomplete

    def at(bucket: int) -> datetime:
        return datetime.fromtimestamp(bucket * size, now.tzinfo)

    per_bucket: dict[int, dict[int, float]] = defaultdict(dict)
    if config.periods_s:
        bucket = epoch_seconds(session, RequestStat.minute) // size
        for wid, index, requests in session.exec(
            select(RequestStat.workload_id, bucket, int_sum(RequestStat.requests))
            .where(RequestStat.minute >= at(current - math.ceil(config.history_s / size)),
                   RequestStat.minute < at(current))
            .group_by(RequestStat.workload_id, bucket)
        ).all():
            per_bucket[wid][int(index)] = float(requests)
    out = {}
    for wid in per_minute.keys() | per_bucket.keys():
        minutes = per_minute.get(wid, {})
        first = min(minutes, default=this_minute)
        buckets = per_bucket.get(wid, {})
        out[wid] = DemandHistory(
            minutes=tuple(minutes.get(first + timedelta(minutes=i), 0.0)
                          for i in range(int((this_minute - first).total_seconds() // 60))),
            buckets=tuple(buckets.get(i, 0.0) for i in range(min(buckets, default=current), current)),
            bucket_s=float(size),
            into_bucket_s=now.timestamp() - current * size,
        )
    return out


def placement_items(session: Session, placement_id: int) -> Replicas:
    """A placement's replicas per (fragment id, class, phase), with slices per replica."""
    return {
        (item.fragment_id, name, Phase(item.phase)): (item.replicas, item.slices)
        for item, name in session.exec(
            select(PlacementItem, DeviceClass.name)
            .join(DeviceClass, DeviceClass.id == PlacementItem.device_class_id)
            .where(PlacementItem.placement_id == placement_id)
        ).all()
    }


def build_problem(
    snapshot: Snapshot, headroom: float, time_limit_s: float, migration_cost_usd: float = 0.0,
    limits: Limits | None = None,
) -> Problem:
    """The optimizer's problem: the observed graph with its SLAs, the fleet, and what runs now.

    Profiles are estimated by the performance model, pricing each class by what it was calibrated to
    reach and, for an LLM, by its verified kernels (`Snapshot.specs_for`), with measured mean latency where
    telemetry has enough visits on a class (for fragments that call no other: a caller's spans
    include the calls it waits on), less the time visits queued for a replica: queueing is a
    shortage of replicas, not a slow class. Where spans report that queue time, a replica's
    throughput is measured too (`Snapshot.fresh_capacity`, else the last measurement the database keeps,
    up to CAPACITY_TTL old), and the estimates of the fragment's other classes of the same kind
    (CPU or accelerator: their errors differ) are scaled down by as much as the measured ones
    fell short of theirs. LLM fragments get prefill- and decode-pool profiles and
    their KV hand-off size too, so the solver may split them (disaggregated serving). Each
    workload's p99 SLA bounds every path of its graph (the solver adds transfer latency where an
    edge crosses classes); batch workloads are named for the degraded fallback (optimizer.degrade).
    Edges that would close a cycle (agent loops: a model calls a tool that calls the model) are left out, the
    lightest first, since a path bound needs an acyclic graph.

    Each fragment's demand is its observed rate scaled by its workload's forecast ratio
    (`Snapshot.forecasts`: the rate planned for over the settling horizon over the observed one,
    never below 1), so a rise the workload's history foretells is provisioned before it arrives.

    `limits` (controlplane.policy.limits: the migration policies' cooldowns, windows, pins and
    move limits) pin fragments to classes and bound how many running fragments change.
    A pin none of whose classes has healthy devices is ignored, since holding the fragment there
    would leave it nowhere to run.
    """
    specs = {c.name: c for c in snapshot.classes}
    capacity = class_capacities(snapshot)
    # Spans time a visit end to end: a caller's include the calls it waits on, which the path bound
    # adds again, and a split fragment's are reported on its decode class. Neither measures the
    # fragment's own latency on a class, so both keep the performance model's estimates.
    unmeasured = {fid for fid, _, phase in snapshot.current if phase is not Phase.whole}
    unmeasured |= {e.parent_id for e in snapshot.edges if e.child_id != e.parent_id}
    fresh = snapshot.fresh_capacity
    def ratio(workload_id: int) -> float:
        known = snapshot.forecasts.get(workload_id)
        return known.ratio if known is not None else 1.0

    fragments = tuple(
        FragmentDemand(fragment=str(f.id), workload=str(f.workload_id), demand_rps=f.rate_rps * ratio(f.workload_id),
                       profiles=profiles,
                       kv_bytes_per_request=_kv_bytes(f))
        for f in snapshot.fragments
        if (profiles := _profiles(f, snapshot.specs_for(f.kind), measured=f.id not in unmeasured,
                                  capacity=(rates := {**f.known_capacity, **fresh.get(f.id, {})}),
                                  overloaded=overloaded(f, snapshot.whole_replicas.get(f.id, {}), rates)))
    )
    placed = {f.fragment for f in fragments}
    edges = acyclic(
        OptEdge(str(e.parent_id), str(e.child_id), e.calls_per_parent_call, e.bytes_per_call,
                concurrent=e.concurrent, calls_p99=e.calls_p99)
        for e in snapshot.edges
        if str(e.parent_id) in placed and str(e.child_id) in placed and e.parent_id != e.child_id
    )
    workloads = {f.workload for f in fragments}
    slas = tuple(
        WorkloadSla(str(w.id), w.p99_ms, w.ttft_ms, w.tpot_ms)
        for w in snapshot.workloads.values()
        if w.p99_ms is not None and str(w.id) in workloads
    )
    current = tuple(
        Assignment(str(fid), cls, replicas, slices,
                   specs[cls].usd_per_hour * replicas * slices / specs[cls].slices_per_device, phase)
        for (fid, cls, phase), (replicas, slices) in sorted(snapshot.current.items())
        if str(fid) in placed and cls in specs
    )
    limit, groups = None, ()
    if limits is not None:
        healthy = {c.device_class for c in capacity}
        fragments = tuple(replace(f, pinned=held) if (held := tuple(
            c for c in limits.pinned.get(int(f.fragment), ()) if c in healthy)) else f for f in fragments)
        if current:
            limit = limits.max_changed
            groups = tuple(ChangeLimit(tuple(sorted(str(fid) for fid in g.fragments if str(fid) in placed)), g.limit)
                           for g in limits.groups)
    return Problem(
        device_classes=capacity,
        fragments=fragments,
        headroom=headroom,
        time_limit_s=time_limit_s,
        edges=edges,
        slas=slas,
        current=current,
        migration_cost_usd=migration_cost_usd,
        max_changed_fragments=limit,
        change_limits=tuple(g for g in groups if g.fragments),
        batch_workloads=tuple(sorted(str(w.id) for w in snapshot.workloads.values()
                                     if w.priority is Priority.batch and str(w.id) in workloads)),
    )


def class_capacities(snapshot: Snapshot) -> tuple[ClassCapacity, ...]:
    """The classes with healthy devices, as the optimizer (and the fast path) sees them."""
    return tuple(
        ClassCapacity(
            c.name,
            c.usd_per_hour,
            snapshot.healthy_devices.get(c.name, 0),
            c.slices_per_device,
            vendor=c.vendor,
            fabric=c.fabric,
            sold_by_slice=c.sold_by_slice,
            node_devices=snapshot.node_devices.get(c.name, ()),
        )
        for c in snapshot.classes
        if snapshot.healthy_devices.get(c.name, 0) > 0
    )


def acyclic(edges: Iterable[OptEdge]) -> tuple[OptEdge, ...]:
    """The edges, heaviest (most calls per parent call) first, skipping any that would close a cycle."""
    children: dict[str, set[str]] = defaultdict(set)
    kept = []
    for edge in sorted(edges, key=lambda e: (-e.calls_per_parent_call, e.parent, e.child)):
        if _reaches(children, edge.child, edge.parent):
            continue
        children[edge.parent].add(edge.child)
        kept.append(edge)
    return tuple(sorted(kept, key=lambda e: (e.parent, e.child)))


def _reaches(children: dict[str, set[str]], start: str, goal: str) -> bool:
    stack, seen = [start], {start}
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for child in children.get(node, ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return False


def measured_capacity(fragment: FragmentView, replicas: dict[str, int]) -> dict[str, float]:
    """Visits/s one whole replica of `fragment` completes at most, by class, where it runs
    `replicas` there and queued long enough to say (optimizer.perfmodel: capacity_from_queueing)."""
    out = {}
    for cls, wait_ms in fragment.queue_ms.items():
        count, rate = replicas.get(cls, 0), fragment.settled_rate_rps.get(cls, 0.0)
        if count > 0 and rate > 0:
            mu, rho = capacity_from_queueing(rate / count, wait_ms / 1000.0)
            if rho >= MIN_QUEUE_UTILISATION:
                out[cls] = mu
    return out


def _tokens_p99(tokens_in: dict[int, int] | None, tokens_out: dict[int, int] | None) -> tuple[float, float] | None:
    """FragmentView.tokens_p99 from the two token histograms (bucket i: [TOKEN_EDGES[i], TOKEN_EDGES[i+1]);
    the open last bucket is taken to end at twice its lower edge)."""
    if not tokens_in and not tokens_out:
        return None

    def p99(counts: dict[int, int] | None) -> float:
        if not counts:
            return 0.0
        total, acc = sum(counts.values()), 0
        target = 0.99 * total
        for bucket in sorted(counts):
            if acc + counts[bucket] >= target:
                break
            acc += counts[bucket]
        lo = TOKEN_EDGES[bucket]
        hi = TOKEN_EDGES[bucket + 1] if bucket + 1 < len(TOKEN_EDGES) else 2 * TOKEN_EDGES[-1]
        # Linear within the bucket, as Prometheus' histogram_quantile: an upper bound of the quantile
        # wherever the density falls across the bucket, as token counts' does in their tail.
        return float(lo + (hi - lo) * (target - acc) / counts[bucket])

    return p99(tokens_in), p99(tokens_out)


def _tail_latency_ms(observed: list, sketch: dict[int, int]) -> float:
    """A visit's p99 latency on one class less the mean queue wait (never below the mean without it);
    `observed` is [visits, latency sum less waits, tokens in, tokens out, waits] over the window and
    `sketch` its latency buckets."""
    visits, without_waits = observed[0], max(observed[1], 0.0)
    mean = without_waits / visits
    p99 = quantiles(sketch, (0.99,))[0.99] if sketch else None
    if p99 is None:
        return mean
    return max(mean, p99 - observed[4] / visits)


def overloaded(fragment: FragmentView, replicas: dict[str, int], capacity: dict[str, float]) -> set[str]:
    """The classes on which `fragment`'s replicas ran past the SLA-safe operating point
    (TARGET_UTILISATION of their measured capacity) since it last moved: a latency measured there
    is the overload's (fuller batches decode slower), not what the class gives at the operating
    point the plan will hold it to."""
    return {cls for cls, rate in fragment.settled_rate_rps.items()
            if replicas.get(cls, 0) > 0 and capacity.get(cls, 0.0) > 0
            and rate / (replicas[cls] * capacity[cls]) > TARGET_UTILISATION}


def _profiles(fragment: FragmentView, classes: tuple[DeviceClassSpec, ...], measured: bool,
              capacity: dict[str, float], overloaded: set[str] = frozenset()) -> tuple[ServiceProfile, ...]:
    """Estimates (an LLM's prefill and decode pools too), whole replicas' latency measured where
    telemetry has it, unless `measured` is False, and their throughput at TARGET_UTILISATION of
    the measured `capacity`; other profiles' throughput scaled by the geometric mean shortfall of
    the measured classes of their kind (CPU or accelerator) against their estimates, when they fell
    short (see build_problem)."""
    estimated = estimate_profiles(fragment.kind, fragment.model, fragment.tokens_in_mean, fragment.tokens_out_mean,
                                  classes, phases=True, tail_tokens=fragment.tokens_p99)
    latency = {cls: ms for cls, ms in fragment.measured_latency_ms.items() if cls not in overloaded} if measured \
        else {}
    throughput = {p.device_class: TARGET_UTILISATION * capacity[p.device_class] for p in estimated
                  if p.phase is Phase.whole and p.device_class in capacity}
    cpu = {c.name: c.is_cpu for c in classes}
    ratios: dict[bool, list[float]] = defaultdict(list)  # CPU classes calibrate CPU classes, accelerators accelerators
    for p in estimated:
        if p.phase is Phase.whole and p.device_class in throughput:
            ratios[cpu[p.device_class]].append(throughput[p.device_class] / p.throughput_rps)
    scale = {group: min(1.0, math.exp(sum(map(math.log, r)) / len(r))) for group, r in ratios.items()}
    out = []
    for p in estimated:
        if p.phase is Phase.whole and (p.device_class in latency or p.device_class in throughput):
            out.append(replace(p, latency_ms=latency.get(p.device_class, p.latency_ms),
                               throughput_rps=throughput.get(p.device_class, p.throughput_rps), measured=True))
        elif scale.get(cpu[p.device_class], 1.0) < 1.0:
            out.append(replace(p, throughput_rps=p.throughput_rps * scale[cpu[p.device_class]]))
        else:
            out.append(p)
    return tuple(out)


def _kv_bytes(fragment: FragmentView) -> float:
    """KV cache a split LLM visit hands from prefill to decode: its mean prompt's tokens."""
    if fragment.kind != "llm":
        return 0.0
    return kv_bytes_per_token(params_from_model_name(fragment.model, fragment.kind)) * fragment.tokens_in_mean
