"""Rollback: put fragments back where they ran before, by an operator's request or when a migration
hurt their workload's SLA, and pin them there until an operator clears the pin.

`due_rollbacks`, `restored` and `reapplied` are pure; `roll_back_regressions` and `record_rollback`
are the edges that read and write (the reconciler and the API call them).

Automatic rollback. A succeeded migration m of fragment f, of workload w with SLA attainment target
t, finished during minute M. With N = `rollback_after_minutes` and, for a minute k,
a(k) = requests within SLA / requests of w in minute k (minutes without requests say nothing):

    before(m)  = Σ within / Σ requests over the minutes M-N .. M-1       (one share, the window's)
    due(m)    <=> before(m) >= t  and  a(M+k) < t for every k in 1..N with requests
                 and at least one minute with requests on each side

The minute M itself is mixed (part before, part after) and is left out. m is judged once minute
M+N has closed, and only during the N minutes after that: a move in force for longer is the
planner's to change, not a rollback's. Only moves that took replicas away from a class (a move or a
scale-down) are judged: removing a scale-up cannot bring an SLA back. A migration made by a
rollback, one already rolled back, and one of a fragment that has migrated again since, are never due.
The shell leaves alone a due migration whose fragment would not fit the healthy devices of the
classes it goes back to (an evacuation after a failure: the SLA dip was the failure's), and one
whose fragment already runs as it did before.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, select

from controlplane.models import (
    AuditEvent,
    DeviceClass,
    Fragment,
    FragmentPin,
    Migration,
    MigrationState,
    Placement,
    PlacementItem,
    PlacementState,
    RequestStat,
    Workload,
)
from controlplane.models._common import minute_of, to_utc
from controlplane.planning import Replicas, placement_items
from controlplane.policy import diff, fits
from controlplane.queries import healthy_devices_per_class, newest_placement, placement_in_force, sla_targets
from optimizer.types import ClassCapacity

MINUTE = timedelta(minutes=1)
RECONCILER = "reconciler"


@dataclass(frozen=True)
class MoveRecord:
    """A succeeded migration, as the rollback decision sees it."""

    migration_id: int
    fragment_id: int
    workload_id: int
    placement_version: int
    finished_at: datetime
    took_replicas_away: bool  # it had a class to move from: a move or a scale-down, not only a scale-up
    by_rollback: bool = False  # written by a rollback placement
    rolled_back: bool = False  # already rolled back once


@dataclass(frozen=True)
class MinuteOutcome:
    """End-to-end requests of one workload in one minute, and how many met its SLA (RequestStat)."""

    requests: int
    within_sla: int


@dataclass(frozen=True)
class DueRollback:
    """A migration to roll back, with the evidence: shares of requests within SLA (0..1)."""

    migration_id: int
    fragment_id: int
    workload_id: int
    placement_version: int
    target: float
    before: float  # over the N minutes before the migration
    after: tuple[float, ...]  # each minute after it that had requests, in order


def due_rollbacks(
    moves: Iterable[MoveRecord],
    outcomes: Mapping[tuple[int, datetime], MinuteOutcome],  # (workload id, minute) -> outcome
    targets: Mapping[int, float],  # workload id -> SLA attainment target
    minutes: int,
    now: datetime,
) -> tuple[DueRollback, ...]:
    """The migrations to roll back now (see the module's docstring), by migration id."""
    moves = tuple(moves)
    if minutes <= 0:
        return ()
    latest: dict[int, datetime] = {}
    for m in moves:
        latest[m.fragment_id] = max(latest.get(m.fragment_id, m.finished_at), m.finished_at)
    due = []
    for m in sorted(moves, key=lambda m: m.migration_id):
        target = targets.get(m.workload_id)
        if (target is None or not m.took_replicas_away or m.by_rollback or m.rolled_back
                or m.finished_at < latest[m.fragment_id]):
            continue
        moved = minute_of(m.finished_at)
        judged_from = moved + (minutes + 1) * MINUTE  # minute M+N has closed
        if not judged_from <= now < judged_from + minutes * MINUTE:
            continue
        before = [outcomes.get((m.workload_id, moved - k * MINUTE)) for k in range(minutes, 0, -1)]
        after = [outcomes.get((m.workload_id, moved + k * MINUTE)) for k in range(1, minutes + 1)]
        before = [o for o in before if o is not None and o.requests > 0]
        after = [o for o in after if o is not None and o.requests > 0]
        if not before or not after:
            continue
        share_before = sum(o.within_sla for o in before) / sum(o.requests for o in before)
        shares_after = tuple(o.within_sla / o.requests for o in after)
        if share_before >= target and all(a < target for a in shares_after):
            due.append(DueRollback(m.migration_id, m.fragment_id, m.workload_id, m.placement_version, target,
                                   share_before, shares_after))
    return tuple(due)


def restored(current: Replicas, earlier: Mapping[int, Replicas]) -> Replicas:
    """`current` with each fragment of `earlier` (fragment id -> the placement it goes back to) given
    its items there instead."""
    out = {key: value for key, value in current.items() if key[0] not in earlier}
    for fid, items in earlier.items():
        out.update({key: value for key, value in items.items() if key[0] == fid})
    return out


def reapplied(current: Replicas, target: Replicas) -> Replicas:
    """An earlier placement `target` re-applied over `current`: fragments it did not know yet keep
    their current items (a rollback cannot un-know a fragment, and must not stop it)."""
    known = {fid for fid, _, _ in target}
    return {**{k: v for k, v in current.items() if k[0] not in known}, **target}


def changed_fragments(current: Replicas, target: Replicas) -> set[int]:
    """Fragments whose items differ between the two placements."""
    def of(items: Replicas) -> dict[int, Replicas]:
        out: dict[int, Replicas] = defaultdict(dict)
        for key, value in items.items():
            out[key[0]][key] = value
        return out

    a, b = of(current), of(target)
    return {fid for fid in a.keys() | b.keys() if a.get(fid) != b.get(fid)}


def classes_of(items: Replicas, fragment_ids: Iterable[int]) -> dict[int, tuple[str, ...]]:
    """The classes each of `fragment_ids` runs on in `items` (its pin after a rollback); a fragment
    with no replicas there gets none."""
    out: dict[int, set[str]] = defaultdict(set)
    wanted = set(fragment_ids)
    for (fid, cls, _), (replicas, _) in items.items():
        if fid in wanted and replicas > 0:
            out[fid].add(cls)
    return {fid: tuple(sorted(classes)) for fid, classes in out.items()}


# ---- the edges: read the evidence, write the rollback --------------------------------------------------


def roll_back_regressions(session: Session, now: datetime, minutes: int) -> int | None:
    """Write the automatic rollback due now, if any (state applying, its fragments pinned, audited);
    returns its version for the caller to actuate."""
    now = to_utc(now)
    since = now - (2 * minutes + 1) * MINUTE  # no migration finished earlier can be judged now
    rows = session.exec(
        select(Migration, Placement, Fragment.workload_id)
        .join(Placement, Placement.id == Migration.placement_id)
        .join(Fragment, Fragment.id == Migration.fragment_id)
        .where(Migration.state == MigrationState.succeeded, Migration.finished_at >= since)
    ).all()
    moves = [MoveRecord(m.id, m.fragment_id, wid, p.version, to_utc(m.finished_at), m.from_device_class_id is not None,
                        by_rollback=p.rollback_to is not None, rolled_back=m.rollback_placement_id is not None)
             for m, p, wid in rows]
    if not moves:
        return None
    workloads = {m.workload_id for m in moves}
    outcomes = {
        (wid, to_utc(minute)): MinuteOutcome(int(requests), int(within))
        for wid, minute, requests, within in session.exec(
            select(RequestStat.workload_id, RequestStat.minute, RequestStat.requests, RequestStat.within_sla)
            .where(RequestStat.workload_id.in_(workloads), RequestStat.minute >= minute_of(since) - minutes * MINUTE)
        ).all()
    }
    targets = sla_targets(session, workloads)
    due = due_rollbacks(moves, outcomes, targets, minutes, now)
    if not due:
        return None

    current_row = placement_in_force(session)
    current = placement_items(session, current_row.id) if current_row is not None else {}
    devices = healthy_devices_per_class(session)
    capacity = [ClassCapacity(name, 0.0, devices.get(name, 0), per_device) for name, per_device in
                session.exec(select(DeviceClass.name, DeviceClass.slices_per_device)).all()]
    earlier: dict[int, Replicas] = {}
    versions: dict[int, int] = {}
    for d in due:
        previous = newest_placement(session, PlacementState.applied, before_version=d.placement_version)
        if previous is None or d.fragment_id in earlier:
            continue
        items = placement_items(session, previous.id)
        # A fragment goes back only where it fits the healthy devices: a move off a class that has
        # since lost devices (an evacuation) is not undone, since the SLA dip was the failure's.
        candidate = restored(current, {**earlier, d.fragment_id: items})
        back_to = set(classes_of(candidate, [d.fragment_id]).get(d.fragment_id, ()))
        if fits({k: v for k, v in candidate.items() if k[1] in back_to}, capacity):
            earlier[d.fragment_id] = items
            versions[d.fragment_id] = previous.version
    if not earlier:
        return None
    target = restored(current, earlier)
    if target == current:
        return None  # already back where they were: nothing to write or pin
    names = dict(session.exec(select(Workload.id, Workload.name).where(Workload.id.in_(workloads))).all())
    why = {d.fragment_id: (f"automatic rollback of migration {d.migration_id} to v{versions[d.fragment_id]}: "
                           f"workload {names[d.workload_id]} had {d.before:.1%} of requests within SLA in the "
                           f"{minutes} min before it, {_pcts(d.after)} after (target {d.target:.1%})")
           for d in due if d.fragment_id in earlier}
    placement = record_rollback(
        session, now, target, current,
        # Seen by every tenant: no workload, fragment or count of theirs goes in here (each migration says its own).
        reason="automatic rollback: fragments whose workload fell below its SLA target after a migration "
               "go back where they ran before, pinned there",
        rollback_to=min(versions.values()), decided_by=None, actor=RECONCILER, why=why,
    )
    for d in (d for d in due if d.fragment_id in earlier):
        migration = session.get(Migration, d.migration_id)
        migration.rollback_placement_id = placement.id
        session.add(AuditEvent(
            actor=RECONCILER, action="placement.rollback", target_type="placement", target_id=str(placement.version),
            tenant_id=session.get(Workload, d.workload_id).tenant_id,
            detail={"migration_id": d.migration_id, "fragment_id": d.fragment_id, "workload_id": d.workload_id,
                    "rollback_to": versions.get(d.fragment_id), "attainment_before_pct": round(100 * d.before, 2),
                    "attainment_after_pct": [round(100 * a, 2) for a in d.after],
                    "target_pct": round(100 * d.target, 2), "minutes": minutes},
        ))
    return placement.version


def record_rollback(session: Session, now: datetime, target: Replicas, current: Replicas, reason: str,
                    rollback_to: int, decided_by: str | None, actor: str, why: Mapping[int, str]) -> Placement:
    """Write `target` as the next placement version, state applying, with the moves from `current` as
    pending migrations, and pin each fragment of `why` (fragment id -> reason) to the classes it runs on
    in `target`, replacing an earlier pin. The caller commits; the reconciler actuates."""
    classes = {c.name: c for c in session.exec(select(DeviceClass)).all()}
    newest = session.exec(select(func.max(Placement.version))).one() or 0
    placement = Placement(
        version=newest + 1,
        state=PlacementState.applying,
        usd_per_hour=sum(classes[cls].usd_per_hour_for(r, s) for (_, cls, _), (r, s) in target.items()),
        solver_status="rollback",
        reason=reason[:500],
        rollback_to=rollback_to,
        decided_by=decided_by,
        decided_at=now if decided_by else None,
    )
    session.add(placement)
    session.flush()
    for (fid, cls, phase), (replicas, slices) in sorted(target.items()):
        session.add(PlacementItem(placement_id=placement.id, fragment_id=fid, device_class_id=classes[cls].id,
                                  phase=phase.value, replicas=replicas, slices=slices))
    for move in diff(current, target):
        session.add(Migration(
            placement_id=placement.id, fragment_id=move.fragment_id,
            from_device_class_id=classes[move.from_class].id if move.from_class else None,
            to_device_class_id=classes[move.to_class].id if move.to_class else None,
            phase=move.phase.value, replicas=move.replicas, state=MigrationState.pending,
            reason=why.get(move.fragment_id, reason)[:500],
        ))
    for fid, pinned in classes_of(target, why).items():
        pin = session.exec(select(FragmentPin).where(FragmentPin.fragment_id == fid)).first()
        if pin is None:
            pin = FragmentPin(fragment_id=fid, created_by=actor)
        pin.device_classes, pin.reason, pin.created_by, pin.created_at = list(pinned), why[fid][:500], actor, now
        session.add(pin)
    session.flush()
    return placement


def _pcts(shares: tuple[float, ...]) -> str:
    return ", ".join(f"{s:.1%}" for s in shares)
