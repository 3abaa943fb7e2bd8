"""The reconciler: the thin stateful shell around the pure stages.

Each cycle: sync inventory -> resume unfinished placements -> check drift (observe what runs;
re-apply the latest applied placement where it differs) -> roll back migrations that hurt
an SLA (controlplane.rollback) -> snapshot (and keep the replica
capacities its queue waits measured) -> the policies' limits -> build_problem -> solve -> the
policy gate -> write the placement and its migrations durably (closing a superseded or expired
proposal in the same transaction) -> actuate -> mark the outcome -> record what runs -> meter
it. Every guard lives in controlplane.policy: when no plan within its limits serves demand, the
problem is solved again with them lifted, and the placement's reason says so; when none exists
without them either, optimizer.degrade's best plan by priority is applied, and the cycle report
carries what it does not meet (GET /health shows it). A placement left `applying` by a crash,
or approved since the last cycle, is actuated again at the start of the next cycle (actuation is
idempotent).

The snapshot carries each workload's demand forecast (controlplane.forecast) when forecasting is
on, so the plan covers the rate expected until a migration has settled. Between cycles,
`run_fast` (every `fast_path_period_s`) adds replicas where vLLM reports a queue or a full KV
cache (controlplane.fastpath), recorded and actuated as an applied plan is.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from controlplane.actuators.base import Actuator, DesiredPlacement, ReplicaSet
from controlplane.containers import resolve as resolve_container
from controlplane.db import session_scope, upsert_latest
from controlplane.drift import compare
from controlplane.fastpath import ScaleUp, Thresholds, read_pressure, scale_up
from controlplane.forecast import ForecastConfig
from controlplane.inventory import sync_inventory
from controlplane.leadership import NotLeader
from controlplane.metering import meter
from controlplane.models import (
    AuditEvent,
    DeviceClass,
    Fragment,
    MeasuredCapacity,
    Migration,
    MigrationState,
    Placement,
    PlacementChoice,
    PlacementItem,
    PlacementState,
    RuntimeTemplate,
    Tenant,
    Workload,
)
from controlplane.models._common import utcnow
from controlplane.observed import record_observation
from controlplane.planning import Snapshot, build_problem, class_capacities, take_snapshot
from controlplane.policy import Action, Decision, diff, gate, governing, limits, margins, plan_of, with_margins
from controlplane.queries import placement_in_force
from controlplane.rollback import roll_back_regressions
from controlplane.settings import Settings
from optimizer.degrade import degrade
from optimizer.perfmodel import TARGET_UTILISATION
from optimizer.solver import solve
from optimizer.types import ClassCapacity, Explanation, Infeasibility, Phase, Plan, Problem, Shortfall

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
    usage_lines: int  # usage and idle lines metering wrote
    drifted: int = 0  # replica sets that ran otherwise than the applied placement said, at the cycle's start
    # SLAs the cycle's plan does not meet (a degraded plan: optimizer.degrade), by workload id.
    shortfalls: tuple[Shortfall, ...] = ()
    feasible: bool = True  # False: no plan was found, not even a degraded one; nothing changed
    gap: float = 0.0  # the plan's relative optimality gap (Plan.gap)


class CycleObserver(Protocol):
    """What watches the reconciler from outside (controlplane.telemetry): told when this process starts
    and stops running the loop, and of every cycle's outcome and duration. An observer's fault is logged,
    never raised into the cycle."""

    def leading(self, running: bool) -> None: ...

    def cycle_finished(self, report: CycleReport, seconds: float) -> None: ...

    def cycle_failed(self, error: Exception, seconds: float) -> None: ...


class Reconciler:
    def __init__(
        self,
        engine: Engine,
        actuator: Actuator,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
        observer: CycleObserver | None = None,
        fence: Callable[[Session], None] | None = None,
    ) -> None:
        """`fence` (Leadership.fence) runs first in every transaction that writes a placement version
        and raises NotLeader to refuse it; None when this process is the only writer (SQLite)."""
        self.engine = engine
        self.fence = fence
        self.actuator = actuator
        self.settings = settings
        self.clock = clock
        self.observer = observer
        self.last: CycleReport | None = None
        self.last_fast: CycleReport | None = None
        # time.monotonic() of the latest cycle's start and end, and whether run_forever is looping:
        # what `stale` judges a hung or stopped loop by.
        self.cycle_began: float | None = None
        self.cycle_ended: float | None = None
        self.looping = False

    def run_once(self) -> CycleReport:
        """One cycle (see the module's docstring), timed and reported to the observer, success or not."""
        started = self.cycle_began = time.monotonic()
        try:
            report = self._cycle()
        except Exception as exc:
            seconds = time.monotonic() - started
            self._tell(lambda observer, error=exc: observer.cycle_failed(error, seconds))
            raise
        finally:
            self.cycle_ended = time.monotonic()
        seconds = time.monotonic() - started
        self._tell(lambda observer: observer.cycle_finished(report, seconds))
        return report

    def stale(self, now: float | None = None) -> str | None:
        """Why this loop looks stuck, or None (see `staleness`); None when it is not looping."""
        if not self.looping:
            return None
        return staleness(self.cycle_began, self.cycle_ended, time.monotonic() if now is None else now,
                         self.settings.reconcile_period_s, self.settings.solver_time_limit_s)

    def _tell(self, event: Callable[[CycleObserver], None]) -> None:
        if self.observer is None:
            return
        try:
            event(self.observer)
        except Exception:  # telemetry never breaks the control loop
            log.exception("the reconciler's observer failed")

    def _cycle(self) -> CycleReport:
        now = self.clock()
        with session_scope(self.engine) as session:
            sync_inventory(session, self.actuator.inventory(), now)
        self._resume_unfinished()
        drifted = 0 if self._applying() else self._check_drift()  # mid-migration, what runs differs on purpose
        self._roll_back_regressions(now)
        with session_scope(self.engine) as session:
            snapshot = take_snapshot(session, now, forecast_config(self.settings))
            _remember_capacity(session, now, snapshot.fresh_capacity)
        problem, plan, lifted = self._plan(snapshot, now)
        decision = gate(snapshot, plan, snapshot.policies, now, problem=problem, lifted=lifted)
        version = None
        moved: list[str] = []
        closing = snapshot.proposal.version if decision.close_proposal and snapshot.proposal else None
        if decision.action is not Action.keep:
            version = snapshot.latest_version + 1
            demand = sum(f.demand_rps for f in problem.fragments)
            moved = self._record(version, decision, plan, snapshot.current_version, demand, closing)
            if decision.action is Action.apply:
                self._actuate(version)
        else:
            with session_scope(self.engine) as session:
                if closing is not None:
                    _close_proposal(session, closing, decision.close_proposal, decision.reason)
                if not plan.feasible:
                    session.add(_audit("plan.infeasible", "placement", "", {"reason": decision.reason}))
        self._record_observed(now)
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
            drifted=drifted,
            shortfalls=plan.shortfalls,
            feasible=plan.feasible,
            gap=plan.gap,
        )
        log.info("reconcile: %s%s (%s), %d moves%s", decision.action.value, f" v{version}" if version else "",
                 decision.reason, len(decision.moves), f" in {', '.join(moved)}" if moved else "")
        return self.last

    def _plan(self, snapshot: Snapshot, now: datetime) -> tuple[Problem, Plan, str]:
        """The problem and plan within the migration policies' limits; when no plan exists within them
        (capacity lost, demand grown past what may stay put), the plan with them lifted, and a note
        saying so."""
        s = self.settings
        bounded = limits(snapshot, snapshot.policies, now)
        factors = margins(snapshot, snapshot.policies)
        problem = with_margins(build_problem(snapshot, s.demand_headroom, s.solver_time_limit_s, s.migration_cost_usd,
                                             bounded), factors)
        plan = solve(problem)
        if plan.feasible:
            return problem, plan, ""
        free, free_plan = problem, plan
        if bounded.max_changed is not None or bounded.groups or bounded.pinned:
            free = with_margins(build_problem(snapshot, s.demand_headroom, s.solver_time_limit_s,
                                              s.migration_cost_usd, limits(snapshot, snapshot.policies, now,
                                                                           lifted=True)), factors)
            free_plan = solve(free)
            if free_plan.feasible:
                # The diagnosis names fragment ids and rates of every tenant: the log has it, the
                # placement reason (which tenants read) does not.
                log.info("limits lifted: %s", "; ".join(plan.diagnosis) or "no plan")
                return free, free_plan, "cooldowns, windows and move limits lifted: none of their plans serves demand"
        if free_plan.infeasibility is Infeasibility.not_proven:
            return problem, plan, ""  # none found in time proves nothing: shedding demand on it could empty the fleet
        return degraded_plan(free, plan)

    def run_forever(
        self,
        stop: threading.Event,
        on_error: Callable[[Exception], None] | None = None,
        on_success: Callable[[CycleReport], None] | None = None,
        should_continue: Callable[[], bool] = lambda: True,
    ) -> None:
        """Cycle every `reconcile_period_s` until `stop` is set or `should_continue()` (asked before
        every cycle and check: Leadership.held) is False, with a fast-path check every
        `fast_path_period_s` in between; a failed cycle or check is logged and retried next time.

        Every cycle ends in exactly one of the callbacks, so a health view fed by both follows the
        latest cycle (a fast-path check reports only its failures). The observer hears that this process
        leads from the start until the loop ends (controlplane.leadership runs it only while leading).
        """
        self._tell(lambda observer: observer.leading(True))
        self.looping, self.cycle_began, self.cycle_ended = True, None, time.monotonic()
        try:
            while not stop.is_set() and should_continue():
                report = self._guarded(self.run_once, "reconcile cycle", on_error)
                if report is not None and on_success is not None:
                    on_success(report)
                next_cycle = time.monotonic() + self.settings.reconcile_period_s
                while not stop.is_set() and (left := next_cycle - time.monotonic()) > 0:
                    if stop.wait(min(self.settings.fast_path_period_s, left)) or time.monotonic() >= next_cycle:
                        break
                    if not should_continue():
                        return
                    self._guarded(self.run_fast, "fast path", on_error)
        finally:
            self.looping = False
            self._tell(lambda observer: observer.leading(False))

    @staticmethod
    def _guarded(step: Callable[[], "CycleReport | None"], what: str,
                 on_error: Callable[[Exception], None] | None) -> "CycleReport | None":
        try:
            return step()
        except NotLeader as exc:  # expected when leadership moves: no traceback, the leader loop says why
            log.warning("%s wrote nothing: %s", what, exc)
            if on_error is not None:
                on_error(exc)
            return None
        except Exception as exc:  # one bad cycle must not stop the control loop
            log.exception("%s failed", what)
            if on_error is not None:
                on_error(exc)
            return None

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
        if snapshot.current_version is None:
            return None
        started = time.perf_counter()
        capacity = class_capacities(snapshot)
        thresholds = Thresholds(self.settings.fast_path_queue_per_replica, self.settings.fast_path_kv_usage)
        result = scale_up(snapshot, capacity, readings, thresholds)
        if result is None:
            return None
        # Scale-ups that queues or full KV caches call for are what demand needs: windows and approval do
        # not hold them back (controlplane.policy), but a dry-run policy over any of them does.
        owners = {f.id: (f.workload_id, f.tenant_id) for f in snapshot.fragments}
        if any(governing(snapshot.policies, *owners[a.fragment_id]).dry_run
               for a in result.additions if a.fragment_id in owners):
            return None
        decision, plan = fast_decision(snapshot, result, capacity, time.perf_counter() - started)
        version = snapshot.latest_version + 1
        closing = snapshot.proposal.version if snapshot.proposal and snapshot.proposal.state != "rejected" else None
        moved = self._record(version, decision, plan, snapshot.current_version, 0.0, closing)
        with session_scope(self.engine) as session:
            session.add(_audit("fastpath.scale_up", "placement", str(version),
                               {"additions": [asdict(a) for a in result.additions]}))
        self._actuate(version)
        self.last_fast = CycleReport(at=now, action=decision.action, reason=decision.reason, version=version,
                                     moves=len(decision.moves), usd_per_hour=plan.usd_per_hour,
                                     solve_time_s=plan.solve_time_s, usage_lines=0)
        log.info("fast path: v%d scales up %s: %s", version, ", ".join(moved) or "nothing",
                 "; ".join(a.why for a in result.additions))
        return self.last_fast

    def _record(self, version: int, decision: Decision, plan: Plan, base_version: int | None, demand_rps: float,
                closing: int | None) -> list[str]:
        """Write the placement and its migrations before anything is actuated, closing the open proposal
        `closing` (superseded or expired) in the same transaction; returns the workloads that move, as
        tenant/workload, for the log. Raises NotLeader when the fence refuses, or when another writer has
        written `version` first (this one's snapshot is stale): nothing is written, and the next cycle
        plans again."""
        states = {Action.apply: (PlacementState.applying, MigrationState.pending),
                  Action.propose: (PlacementState.proposed, MigrationState.awaiting_approval),
                  Action.record: (PlacementState.recorded, MigrationState.skipped)}
        placement_state, state = states[decision.action]
        try:
            return self._write(version, decision, plan, base_version, demand_rps, closing, placement_state, state)
        except IntegrityError:
            with Session(self.engine) as session:
                taken = session.exec(select(Placement.id).where(Placement.version == version)).first() is not None
            if not taken:
                raise
            raise NotLeader(f"placement v{version} was written by another writer first: lost the race") from None

    def _write(self, version: int, decision: Decision, plan: Plan, base_version: int | None, demand_rps: float,
               closing: int | None, placement_state: PlacementState, state: MigrationState) -> list[str]:
        with session_scope(self.engine) as session:
            if self.fence is not None:
                self.fence(session)
            if closing is not None:
                _close_proposal(session, closing, decision.close_proposal, decision.reason)
            class_ids = dict(session.exec(select(DeviceClass.name, DeviceClass.id)).all())
            placement = Placement(
                version=version,
                state=placement_state,
                created_at=self.clock(),  # the loop's clock: a proposal's TTL is judged on it
                usd_per_hour=decision.usd_per_hour,
                solver_status=plan.status.value,
                solve_time_s=plan.solve_time_s,
                reason=decision.reason[:500],
                base_version=base_version,
                demand_rps=demand_rps,
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
            for fragment_id, why in choices_of(decision, plan).items():
                session.add(PlacementChoice(placement_id=placement.id, fragment_id=fragment_id,
                                            binding=why.binding[:300], runner_up=why.runner_up,
                                            runner_up_delta_usd_per_hour=why.runner_up_delta_usd_per_hour))
            workload_of = dict(session.exec(select(Fragment.id, Fragment.workload_id).where(
                Fragment.id.in_({m.fragment_id for m in decision.moves}))).all())
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
                        reason=decision.move_reason(move.fragment_id, workload_of.get(move.fragment_id))[:500],
                    )
                )
            session.add(
                _audit(
                    "placement.record",
                    "placement",
                    str(version),
                    {"state": placement.state.value, "moves": len(decision.moves), "usd_per_hour": decision.usd_per_hour},
                )
            )
            return moved_workloads(session, placement.id)

    def _check_drift(self) -> int:
        """Compare what runs with the latest applied placement and, when they differ, apply it again
        (applying is idempotent) and record it; returns how many replica sets differed.

        The placement's own state and time stay as they are: it was in force all along as far as
        the database goes, and metering bills what ran (`_record_observed`), not this."""
        with Session(self.engine) as session:
            placement = placement_in_force(session)
            if placement is None:
                return 0
            desired = desired_placement(session, placement)
        drift = compare(desired.replica_sets, self.actuator.observe().replica_sets)
        if not drift:
            return 0
        log.warning("placement v%d drifted: %s; applying it again", desired.version, drift.summary())
        try:
            result = self.actuator.apply(desired)
        except Exception as exc:  # an actuator fault is an outcome to record, not a crash
            log.exception("actuator failed re-applying v%d", desired.version)
            ok, message = False, f"{type(exc).__name__}: {exc}"
        else:
            ok, message = result.ok, result.message
        with session_scope(self.engine) as session:
            session.add(_audit("placement.drift", "placement", str(desired.version), {
                "drifted_sets": drift.sets, "summary": drift.summary()[:300], "reapplied": ok, "message": message[:300],
            }))
        return drift.sets

    def _record_observed(self, now: datetime) -> None:
        """Keep what the actuator reports running (when it changed), for metering to bill."""
        observed = self.actuator.observe()
        with session_scope(self.engine) as session:
            record_observation(session, observed, now)

    def _roll_back_regressions(self, now: datetime) -> None:
        """Undo the migrations after which their workload fell below its SLA target (controlplane.rollback):
        the rollback is written durably with its fragments pinned, then actuated before planning, so the
        plan of this cycle starts from it."""
        with session_scope(self.engine) as session:
            if self.fence is not None:
                self.fence(session)
            version = roll_back_regressions(session, now, self.settings.rollback_after_minutes)
        if version is not None:
            with Session(self.engine) as session:
                placement_id = session.exec(select(Placement.id).where(Placement.version == version)).one()
                moved = moved_workloads(session, placement_id)
            log.warning("automatic rollback: placement v%d puts back fragments of %s, whose SLA fell after a "
                        "migration", version, ", ".join(moved) or "no workload")
            self._actuate(version)

    def _applying(self) -> bool:
        """Whether a placement is still being brought up (its actuator answered pending)."""
        with Session(self.engine) as session:
            return session.exec(select(Placement.id).where(Placement.state == PlacementState.applying)).first() \
                is not None

    def _resume_unfinished(self) -> None:
        with Session(self.engine) as session:
            unfinished = [(version, moved_workloads(session, placement_id)) for version, placement_id in session.exec(
                select(Placement.version, Placement.id).where(Placement.state == PlacementState.applying)
                .order_by(Placement.version)
            ).all()]
        for version, moved in unfinished:
            log.info("actuating placement v%d (approved, or left applying by an earlier run)%s", version,
                     f", moving {', '.join(moved)}" if moved else "")
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
            if result.pending:  # still coming up: left applying, asked again next cycle (_resume_unfinished)
                log.info("placement v%d is being applied: %s", version, message)
                return
        with session_scope(self.engine) as session:
            placement = session.exec(select(Placement).where(Placement.version == version)).one()
            placement.state = PlacementState.applied if ok else PlacementState.failed
            if ok:
                placement.applied_at = self.clock()  # in force from now: metering counts from here
            for migration in session.exec(
                select(Migration).where(Migration.placement_id == placement.id, Migration.state == MigrationState.applying)
            ).all():
                migration.state = MigrationState.succeeded if ok else MigrationState.failed
                migration.error = "" if ok else message[:1000]
                migration.finished_at = self.clock()
            session.add(_audit("placement.apply", "placement", str(version), {"ok": ok, "message": message[:300]}))


def degraded_plan(problem: Problem, infeasible: Plan) -> tuple[Problem, Plan, str]:
    """When no plan meets every SLA: the best plan by priority (optimizer.degrade) on the problem
    it relaxes, with a note saying so. The note goes into placement and migration reasons, which
    every tenant may read: it says no more than GET /health tells anyone (how many SLAs are not
    met); /health names them to callers allowed to see them. The infeasible plan stands when
    degrading found nothing either."""
    degraded = degrade(problem)
    if not degraded.plan.feasible:
        return problem, infeasible, ""
    unmet = len(degraded.plan.shortfalls)
    return degraded.problem, degraded.plan, (
        f"degraded: no plan meets every SLA, {unmet} not met by this one; GET /health says which and why")


def fast_decision(snapshot: Snapshot, result: ScaleUp, capacity: tuple[ClassCapacity, ...], seconds: float
                  ) -> tuple[Decision, Plan]:
    """The fast path's scale-up as a Decision to apply and the Plan `_record` stores with it. The
    reason names no model, workload or number: every tenant's token reads placement reasons (the
    audit event has the details)."""
    plan = plan_of(result.assignments, capacity, solve_time_s=seconds)
    reason = "fast path: replicas added where model servers queued or their KV cache filled"
    decision = Decision(Action.apply, reason, result.assignments, diff(snapshot.current, result.assignments),
                        close_proposal="superseded", needed=True, usd_per_hour=plan.usd_per_hour)
    return decision, plan


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
    templates = {(t.workload_id, t.fragment_id): t for t in session.exec(
        select(RuntimeTemplate).where(RuntimeTemplate.workload_id.in_({w.id for _, _, w, _, _ in rows}))).all()}
    return DesiredPlacement(
        version=placement.version,
        replica_sets=tuple(
            ReplicaSet(tenant.name, workload.name, fragment.key, cls.name, item.replicas, item.slices, Phase(item.phase),
                       container=resolve_container(fragment.kind, fragment.model, Phase(item.phase),
                                                   templates.get((workload.id, fragment.id)),
                                                   templates.get((workload.id, None)))[1])
            for item, fragment, workload, tenant, cls in rows
        ),
    )


def moved_workloads(session: Session, placement_id: int) -> list[str]:
    """The workloads placement `placement_id` migrates, as tenant/workload: how the operator's log names
    them (the log is fleet-wide; placement reasons, which tenants read, do not name other tenants)."""
    rows = session.exec(
        select(Tenant.name, Workload.name).distinct()
        .join(Workload, Workload.tenant_id == Tenant.id)
        .join(Fragment, Fragment.workload_id == Workload.id)
        .join(Migration, Migration.fragment_id == Fragment.id)
        .where(Migration.placement_id == placement_id)
    ).all()
    return sorted(f"{tenant}/{workload}" for tenant, workload in rows)


STALE_PERIODS = 3  # cycles a loop may miss before /health calls it stale


def staleness(began: float | None, ended: float | None, now: float, period_s: float,
              solve_limit_s: float) -> str | None:
    """Why a reconciler loop looks stuck, or None. A cycle may take its solve's time limit and some;
    the loop starts one every `period_s`. With allowance A = STALE_PERIODS * (period_s + solve_limit_s):
    a cycle running for longer than A is hung; no cycle ended within A (and none running) is a loop
    that stopped cycling. Times are one monotonic clock's, in seconds."""
    allowance = STALE_PERIODS * (period_s + solve_limit_s)
    running = began is not None and (ended is None or began > ended)
    if running and now - began > allowance:
        return f"a cycle has been running for {now - began:,.0f} s"
    if not running and ended is not None and now - ended > allowance:
        return f"no cycle for {now - ended:,.0f} s"
    return None


def choices_of(decision: Decision, plan: Plan) -> dict[int, Explanation]:
    """The plan's explanation of each fragment the decision places exactly as the plan does (a
    fragment the gate kept where it runs was not placed for the plan's reasons)."""
    planned: dict[int, set] = {}
    for a in plan.assignments:
        if a.replicas > 0:
            planned.setdefault(int(a.fragment), set()).add((a.device_class, a.phase, a.replicas, a.slices))
    decided: dict[int, set] = {}
    for (fragment_id, cls, phase), (replicas, slices) in decision.assignments.items():
        if replicas > 0:
            decided.setdefault(fragment_id, set()).add((cls, phase, replicas, slices))
    return {int(f): why for f, why in plan.explanations.items()
            if f.isdigit() and decided.get(int(f)) and decided[int(f)] == planned.get(int(f))}


def busy_per_visit(problem: Problem) -> dict[tuple[int, str, str], float]:
    """Replica-seconds one visit keeps a replica of each phase busy, by (fragment, class, phase): the
    operating point's share of a second per visit. A split LLM's prefill and decode pools each have
    their own, beside the whole replica's (metering turns them into device-seconds)."""
    return {
        (int(f.fragment), p.device_class, p.phase.value): TARGET_UTILISATION / p.throughput_rps
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


def _close_proposal(session: Session, version: int, fate: str, why: str) -> None:
    """Close the open proposal `version` and its migrations as superseded or expired."""
    state = PlacementState(fate)
    placement = session.exec(select(Placement).where(Placement.version == version)).one()
    if placement.state not in (PlacementState.proposed, PlacementState.recorded):
        return  # approved or rejected since the snapshot: the operator's decision stands
    placement.state = state
    for migration in session.exec(select(Migration).where(
            Migration.placement_id == placement.id,
            Migration.state.in_((MigrationState.awaiting_approval, MigrationState.skipped)))).all():
        migration.state = MigrationState(fate)
    session.add(_audit(f"placement.{fate}", "placement", str(version), {"reason": why[:300]}))


def _audit(action: str, target_type: str, target_id: str, detail: dict) -> AuditEvent:
    return AuditEvent(actor=ACTOR, action=action, target_type=target_type, target_id=target_id, detail=detail)
