"""The reconciler: the thin stateful shell around the pure stages.

Each cycle: sync inventory -> snapshot (and keep the replica capacities its queue waits measured)
-> build_problem -> solve -> decide -> write the placement and its migrations durably -> actuate
-> mark the outcome -> meter. The problem keeps the
migration policy's cooldown and move limit; only when no plan within them serves demand is it
solved again without them, and the placement's reason says so. A placement left `applying`
by a crash is actuated again at the start of the next cycle (actuation is idempotent).

The snapshot carries each workload's demand forecast (controlplane.forecast) when forecasting is
on, so the plan covers the rate expected until a migration has settled. Between cycles,
`run_fast` (every `fast_path_period_s`) adds replicas where vLLM reports a queue or a full KV
cache (controlplane.fastpath), recorded and actuated as an applied plan is.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from controlplane.actuators.base import Actuator, DesiredPlacement, ReplicaSet
from controlplane.db import session_scope, upsert_latest
from controlplane.decide import Action, Decision, decide, diff
from controlplane.fastpath import ScaleUp, Thresholds, read_pressure, scale_up
from controlplane.forecast import ForecastConfig
from controlplane.inventory import sync_inventory
from controlplane.metering import meter
from controlplane.models import (
    AuditEvent,
    DeviceClass,
    Fragment,
    MeasuredCapacity,
    Migration,
    MigrationState,
    Placement,
    PlacementItem,
    PlacementState,
    Tenant,
    Workload,
)
from controlplane.models._common import utcnow
from controlplane.planning import Snapshot, build_problem, class_capacities, take_snapshot
from controlplane.settings import Settings
from optimizer.packing import device_costs
from optimizer.perfmodel import TARGET_UTILISATION
from optimizer.solver import solve
from optimizer.types import Assignment, ClassCapacity, Phase, Plan, PlanStatus, Problem

log = logging.getLogger(__name__)
ACTOR = "reconciler"


@dataclass(frozen=True)
class CycleReport:
    """What one cycle did, for logs, health and tests."""

    at: datetime
    action: Action
    reason: str
    version: int | None
    moves: int
    usd_per_hour: float
    solve_time_s: float
    usage_lines: int


class Reconciler:
    def __init__(
        self,
        engine: Engine,
        actuator: Actuator,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.actuator = actuator
        self.settings = settings
        self.clock = clock
        self.last: CycleReport | None = None
        self.last_fast: CycleReport | None = None

    def run_once(self) -> CycleReport:
        now = self.clock()
        with session_scope(self.engine) as session:
            sync_inventory(session, self.actuator.inventory())
        self._resume_unfinished()
        with session_scope(self.engine) as session:
            snapshot = take_snapshot(session, now, forecast_config(self.settings))
            _remember_capacity(session, now, snapshot.fresh_capacity)
        problem, plan, lifted = self._plan(snapshot)
        decision = decide(snapshot, problem, plan)
        if lifted and decision.action is not Action.keep:
            decision = replace(decision, reason=f"{decision.reason}; {lifted}")
        version = None
        if decision.action is not Action.keep:
            version = snapshot.latest_version + 1
            self._record(version, decision, plan)
            if decision.action is Action.apply:
                self._actuate(version)
        else:
            with session_scope(self.engine) as session:
                if not plan.feasible:
                    session.add(_audit("plan.infeasible", "placement", "", {"reason": decision.reason}))
        with session_scope(self.engine) as session:
            lines = meter(session, now, busy_per_visit(problem))
        self.last = CycleReport(
            at=now,
            action=decision.action,
            reason=decision.reason,
            version=version,
            moves=len(decision.moves),
            usd_per_hour=plan.usd_per_hour,
            solve_time_s=plan.solve_time_s,
            usage_lines=lines,
        )
        log.info("reconcile: %s (%s), %d moves", decision.action.value, decision.reason, len(decision.moves))
        return self.last

    def _plan(self, snapshot: Snapshot) -> tuple[Problem, Plan, str]:
        """The problem and plan within the migration policy's cooldown and move limit; when no plan
        exists within them (capacity lost, demand grown past what may stay put), the plan without
        them, with a note saying so."""
        s = self.settings
        problem = build_problem(snapshot, s.demand_headroom, s.solver_time_limit_s, s.migration_cost_usd)
        plan = solve(problem)
        if plan.feasible or problem.max_changed_fragments is None:
            return problem, plan, ""
        free = build_problem(snapshot, s.demand_headroom, s.solver_time_limit_s, s.migration_cost_usd, limits=False)
        free_plan = solve(free)
        if not free_plan.feasible:
            return problem, plan, ""
        why = plan.diagnosis[0] if plan.diagnosis else "no plan"
        return free, free_plan, f"cooldown and move limit lifted: none of their plans serves demand ({why})"

    def run_forever(self, stop: threading.Event, on_error: Callable[[Exception], None] | None = None) -> None:
        """Cycle every `reconcile_period_s` until `stop` is set, with a fast-path check every
        `fast_path_period_s` in between; a failed cycle or check is logged and retried next time."""
        while not stop.is_set():
            self._guarded(self.run_once, "reconcile cycle", on_error)
            next_cycle = time.monotonic() + self.settings.reconcile_period_s
            while not stop.is_set() and (left := next_cycle - time.monotonic()) > 0:
                if stop.wait(min(self.settings.fast_path_period_s, left)) or time.monotonic() >= next_cycle:
                    break
                self._guarded(self.run_fast, "fast path", on_error)

    @staticmethod
    def _guarded(step: Callable[[], object], what: str, on_error: Callable[[Exception], None] | None) -> None:
        try:
            step()
        except Exception as exc:  # one bad cycle must not stop the control loop
            log.exception("%s failed", what)
            if on_error is not None:
                on_error(exc)

    def run_fast(self, now: datetime | None = None) -> CycleReport | None:
        """Between cycles: add replicas where a model server's queue or KV cache fills
        (controlplane.fastpath), recorded durably and actuated as `run_once` applies a plan; None
        when nothing was added. A dry-run policy, or a placement still being applied, leaves it idle."""
        now = now or self.clock()
        with session_scope(self.engine) as session:
            readings = read_pressure(session, now)
            if not readings or session.exec(
                select(Placement.id).where(Placement.state == PlacementState.applying)
            ).first() is not None:
                return None
            snapshot = take_snapshot(session, now)
        if snapshot.current_version is None or snapshot.policy.dry_run:
            return None
        started = time.perf_counter()
        capacity = class_capacities(snapshot)
        thresholds = Thresholds(self.settings.fast_path_queue_per_replica, self.settings.fast_path_kv_usage)
        result = scale_up(snapshot, capacity, readings, thresholds)
        if result is None:
            return None
        decision, plan = fast_decision(snapshot, result, capacity, time.perf_counter() - started)
        version = snapshot.latest_version + 1
        self._record(version, decision, plan)
        with session_scope(self.engine) as session:
            session.add(_audit("fastpath.scale_up", "placement", str(version),
                               {"additions": [asdict(a) for a in result.additions]}))
        self._actuate(version)
        self.last_fast = CycleReport(at=now, action=decision.action, reason=decision.reason, version=version,
                                     moves=len(decision.moves), usd_per_hour=plan.usd_per_hour,
                                     solve_time_s=plan.solve_time_s, usage_lines=0)
        log.info("fast path: v%d, %s", version, "; ".join(a.why for a in result.additions))
        return self.last_fast

    def _record(self, version: int, decision: Decision, plan: Plan) -> None:
        """Write the placement and its migrations before anything is actuated."""
        applying = decision.action is Action.apply
        with session_scope(self.engine) as session:
            class_ids = dict(session.exec(select(DeviceClass.name, DeviceClass.id)).all())
            placement = Placement(
                version=version,
                state=PlacementState.applying if applying else PlacementState.proposed,
                usd_per_hour=plan.usd_per_hour,
                solver_status=plan.status.value,
                solve_time_s=plan.solve_time_s,
                reason=decision.reason[:500],
            )
            session.add(placement)
            session.flush()
            for (fragment_id, cls, phase), (replicas, slices) in sorted(decision.assignments.items()):
                session.add(
                    PlacementItem(
                        placement_id=placement.id,
                        fragment_id=fragment_id,
                        device_class_id=class_ids[cls],
                        phase=phase.value,
                        replicas=replicas,
                        slices=slices,
                    )
                )
            state = MigrationState.pending if applying else MigrationState.awaiting_approval
            if not applying and "dry run" in decision.reason:
                state = MigrationState.skipped
            for move in decision.moves:
                session.add(
                    Migration(
                        placement_id=placement.id,
                        fragment_id=move.fragment_id,
                        from_device_class_id=class_ids.get(move.from_class) if move.from_class else None,
                        to_device_class_id=class_ids.get(move.to_class) if move.to_class else None,
                        phase=move.phase.value,
                        replicas=move.replicas,
                        state=state,
                        reason=decision.reason[:500],
                    )
                )
            session.add(
                _audit(
                    "placement.record",
                    "placement",
                    str(version),
                    {"state": placement.state.value, "moves": len(decision.moves), "usd_per_hour": plan.usd_per_hour},
                )
            )

    def _resume_unfinished(self) -> None:
        with Session(self.engine) as session:
            versions = session.exec(
                select(Placement.version).where(Placement.state == PlacementState.applying).order_by(Placement.version)
            ).all()
        for version in versions:
            log.info("actuating placement v%d (approved, or left applying by an earlier run)", version)
            self._actuate(version)

    def _actuate(self, version: int) -> None:
        """Apply placement `version` through the actuator and record the outcome; safe to repeat."""
        with session_scope(self.engine) as session:
            placement = session.exec(select(Placement).where(Placement.version == version)).one()
            desired = desired_placement(session, placement)
            migrations = session.exec(
                select(Migration).where(Migration.placement_id == placement.id, Migration.state == MigrationState.pending)
            ).all()
            for migration in migrations:
                migration.state = MigrationState.applying
                migration.started_at = self.clock()
        try:
            result = self.actuator.apply(desired)
        except Exception as exc:  # an actuator fault is an outcome to record, not a crash
            log.exception("actuator failed applying v%d", version)
            ok, message = False, f"{type(exc).__name__}: {exc}"
        else:
            ok, message = result.ok, result.message
        with session_scope(self.engine) as session:
            placement = session.exec(select(Placement).where(Placement.version == version)).one()
            placement.state = PlacementState.applied if ok else PlacementState.failed
            if ok:
                placement.created_at = self.clock()  # in force from now: metering counts from here
            for migration in session.exec(
                select(Migration).where(Migration.placement_id == placement.id, Migration.state == MigrationState.applying)
            ).all():
                migration.state = MigrationState.succeeded if ok else MigrationState.failed
                migration.error = "" if ok else message[:1000]
                migration.finished_at = self.clock()
            session.add(_audit("placement.apply", "placement", str(version), {"ok": ok, "message": message[:300]}))


def fast_decision(snapshot: Snapshot, result: ScaleUp, capacity: tuple[ClassCapacity, ...], seconds: float
                  ) -> tuple[Decision, Plan]:
    """The fast path's scale-up as a Decision to apply and the Plan `_record` stores with it. The
    reason names no model, workload or number: every tenant's token reads placement reasons (the
    audit event has the details)."""
    price = {c.device_class: c.usd_per_hour / c.slices_per_device for c in capacity}
    rows = tuple(Assignment(str(fid), cls, replicas, slices, replicas * slices * price.get(cls, 0.0), phase)
                 for (fid, cls, phase), (replicas, slices) in sorted(result.assignments.items()))
    classes = {c.device_class: c for c in capacity}
    devices, idle = device_costs(classes, (a for a in rows if a.device_class in classes))
    plan = Plan(PlanStatus.feasible, rows, usd_per_hour=sum(a.usd_per_hour for a in rows) + sum(idle.values()),
                solve_time_s=seconds, devices_used=devices)
    reason = "fast path: replicas added where model servers queued or their KV cache filled"
    return Decision(Action.apply, reason, result.assignments, diff(snapshot.current, result.assignments)), plan


def forecast_config(settings: Settings) -> ForecastConfig | None:
    """How demand is forecast under `settings`; None when forecasting is off."""
    if not settings.forecast_enabled:
        return None
    return ForecastConfig(settings.forecast_horizon_s, settings.forecast_quantile, settings.forecast_periods_s)


def desired_placement(session: Session, placement: Placement) -> DesiredPlacement:
    rows = session.exec(
        select(PlacementItem, Fragment, Workload, Tenant, DeviceClass)
        .join(Fragment, Fragment.id == PlacementItem.fragment_id)
        .join(Workload, Workload.id == Fragment.workload_id)
        .join(Tenant, Tenant.id == Workload.tenant_id)
        .join(DeviceClass, DeviceClass.id == PlacementItem.device_class_id)
        .where(PlacementItem.placement_id == placement.id)
        .order_by(PlacementItem.id)
    ).all()
    return DesiredPlacement(
        version=placement.version,
        replica_sets=tuple(
            ReplicaSet(tenant.name, workload.name, fragment.key, cls.name, item.replicas, item.slices, Phase(item.phase))
            for item, fragment, workload, tenant, cls in rows
        ),
    )


def busy_per_visit(problem: Problem) -> dict[tuple[int, str], float]:
    """Device-seconds one visit keeps a replica busy: the operating point's share of a second per visit."""
    return {
        (int(f.fragment), p.device_class): TARGET_UTILISATION / p.throughput_rps
        for f in problem.fragments
        for p in f.profiles
        if p.throughput_rps > 0
    }


def _remember_capacity(session: Session, now: datetime, capacity: dict[int, dict[str, float]]) -> None:
    """Keep each fresh measurement of a replica's capacity, so that planning still has it once the
    queue that revealed it is gone (more replicas) or the fragment has moved."""
    upsert_latest(session, MeasuredCapacity.__table__, ["fragment_id", "device_class"], [
        {"fragment_id": fid, "device_class": cls, "visits_per_s": visits_per_s, "measured_at": now}
        for fid, by_class in capacity.items() for cls, visits_per_s in by_class.items()
    ])


def _audit(action: str, target_type: str, target_id: str, detail: dict) -> AuditEvent:
    return AuditEvent(actor=ACTOR, action=action, target_type=target_type, target_id=target_id, detail=detail)
