"""The reconciler's pure decision: given the snapshot, the plan and the policy, what to record and apply.

`decide(snapshot, problem, plan) -> Decision` does no I/O and reads no clock.
"""

from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum

from controlplane.models import PlacementState
from controlplane.planning import Replicas, Snapshot
from optimizer.checker import check
from optimizer.explain import pair_moves
from optimizer.packing import device_costs
from optimizer.types import Assignment, Phase, Plan, PlanStatus, Problem


class Action(StrEnum):
    keep = "keep"  # record nothing new, actuate nothing
    apply = "apply"  # record the plan as a new placement and actuate it
    propose = "propose"  # record the plan, but do not actuate (dry run or approval needed)


@dataclass(frozen=True)
class Move:
    """Replicas of a fragment (of one pool of it, when split) moving between classes; an empty side
    is a scale-up or scale-down."""

    fragment_id: int
    from_class: str | None
    to_class: str | None
    replicas: int
    phase: Phase = Phase.whole


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    assignments: Replicas
    moves: tuple[Move, ...]


def decide(snapshot: Snapshot, problem: Problem, plan: Plan) -> Decision:
    current = snapshot.current
    if not plan.feasible:
        return Decision(Action.keep, "no feasible plan: " + "; ".join(plan.diagnosis), current, ())
    target = {(int(a.fragment), a.device_class, a.phase): (a.replicas, a.slices) for a in plan.assignments if a.replicas}
    moves = diff(current, target)
    if not target and not current:
        return Decision(Action.keep, "nothing to place yet: no fragments observed", current, ())
    if not moves:
        return Decision(Action.keep, "the current placement is already the plan", current, ())
    gate = _gate(snapshot, problem, plan)
    if gate is not None:
        return Decision(Action.keep, gate, current, ())
    policy = snapshot.policy
    if policy.dry_run or policy.approval_required:
        proposal = snapshot.proposal
        if proposal is not None and proposal.items == target:  # one proposal per plan, not one per cycle
            if proposal.state is PlacementState.rejected:
                return Decision(Action.keep, f"this plan was proposed as v{proposal.version} and rejected", current, ())
            return Decision(Action.keep, f"this plan is proposed as v{proposal.version}, "
                            f"{'recorded by a dry run' if policy.dry_run else 'awaiting approval'}", current, ())
        why = "dry run" if policy.dry_run else "approval required"
        return Decision(Action.propose, f"{_summary(snapshot, plan)} ({why})", target, moves)
    return Decision(Action.apply, _summary(snapshot, plan), target, moves)


def _gate(snapshot: Snapshot, problem: Problem, plan: Plan) -> str | None:
    """Why the plan should not replace the current placement, or None when it should."""
    if snapshot.current_version is None:
        return None
    current_plan = as_plan(snapshot.current, problem)
    if check(problem, current_plan):
        return None  # the current placement no longer serves demand or fits: move regardless
    current_cost = current_plan.usd_per_hour
    if current_cost <= 0:
        return None
    saving_pct = (current_cost - plan.usd_per_hour) / current_cost * 100
    if saving_pct < snapshot.policy.min_improvement_pct:
        return (
            f"saving {saving_pct:.1f}% (${current_cost:.2f}/h -> ${plan.usd_per_hour:.2f}/h) is below the "
            f"policy's {snapshot.policy.min_improvement_pct:g}% minimum"
        )
    return None


def _summary(snapshot: Snapshot, plan: Plan) -> str:
    first = snapshot.current_version is None
    return f"{'initial placement' if first else 're-placement'}: ${plan.usd_per_hour:.2f}/h, {plan.status.value}"


def as_plan(assignments: Replicas, problem: Problem) -> Plan:
    """A placement expressed as a `Plan`, so the optimizer's checker can judge it against `problem`:
    its replicas' slices, and the idle rest of the devices they occupy on classes sold whole."""
    price = {c.device_class: c.usd_per_hour / c.slices_per_device for c in problem.device_classes}
    known = {f.fragment for f in problem.fragments}
    rows = tuple(
        Assignment(str(fid), cls, replicas, slices, replicas * slices * price.get(cls, 0.0), phase)
        for (fid, cls, phase), (replicas, slices) in sorted(assignments.items())
        if str(fid) in known
    )
    classes = {c.device_class: c for c in problem.device_classes}
    try:
        devices, idle = device_costs(classes, (a for a in rows if a.device_class in classes))
    except ValueError:  # it no longer packs on the healthy devices: the checker says so, by class
        devices, idle = {}, {}
    return Plan(PlanStatus.feasible, rows, usd_per_hour=sum(a.usd_per_hour for a in rows) + sum(idle.values()),
                devices_used=devices)


def diff(current: Replicas, target: Replicas) -> tuple[Move, ...]:
    """The moves from `current` to `target`: freed replicas are paired with new ones of the same
    fragment and phase (a whole replica never turns into a pool's)."""
    delta: dict[tuple[int, Phase], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (fid, cls, phase), (replicas, _) in target.items():
        delta[fid, phase][cls] += replicas
    for (fid, cls, phase), (replicas, _) in current.items():
        delta[fid, phase][cls] -= replicas
    return tuple(Move(fid, a, b, n, phase) for (fid, phase), a, b, n in pair_moves(delta))
