"""Migration policy: every guard on how the placement may change, as pure functions of typed values.

Two questions are asked of the policies each reconciler cycle, both here and nowhere else:

* `limits(snapshot, policies, now, lifted)` — what the planner may change: fragments pinned to the
  classes they run on (cooldown after a move, outside a maintenance window, an operator's or a
  rollback's pin; they may still scale there), and how many running fragments may change per cycle
  (the fleet policy's limit, plus each tenant or workload policy's own limit over its fragments).
  When no plan within them serves demand the reconciler plans again with `lifted=True`: none of
  them holds then, pins included, since serving demand comes first.
* `gate(snapshot, plan, policies, now, ...)` — what happens to the plan: applied, proposed for
  approval, recorded only (dry run) or kept out, per workload, with a structured reason for each.

Scope and precedence. A policy applies to the whole fleet, one tenant or one workload; for each
fragment the most specific enabled policy governs (workload > tenant > fleet > the defaults below),
the oldest first where two share a scope. Guards are per fragment; the gate takes or defers a
workload's moves together, since its SLA binds its fragments' classes together.

The gate, for a feasible plan that differs from what runs:

    needed   the current placement no longer serves a workload's demand within its SLA (the
             optimizer's checker says why), or no longer fits the fleet: that workload's moves
             (every workload's, when capacity is lost or the rest do not fit without them) are
             taken, whatever the minimum saving, window or approval; a dry-run policy still
             only records. Other workloads' moves follow the optional rules.
    optional otherwise, a workload's moves are taken when its policy's minimum saving is met:
                 saving_w = (cost_w(current) - cost_w(plan)) / cost_w(current) >= min_improvement_pct
             where cost_w is the slices its replicas hold at each class's price per slice (a
             workload not placed yet has nothing to save and is always taken), and, when they
             stop more replicas than they start, the smaller placement still serves the
             workload's demand x (1 + demand_margin_pct).

Hysteresis. The reconciler plans each workload's demand x (1 + demand_margin_pct) (`margins`);
what runs is judged "needed" against the demand itself. So a placement grows only once demand
outgrows it, to a size that holds that much more, and shrinks only once a smaller one holds
that much more: a demand that wobbles within the margin changes nothing. The placement then
             written is the plan for the taken workloads and what runs for the deferred ones, and
             it must still pass the checker (fit the fleet), else nothing changes this cycle.

Modes: a taken workload is `apply`d unless its policy wants approval (`propose`) or is a dry run
(`record`). One placement is written per cycle: the applied workloads' moves first; proposals
are made once nothing is left to apply, and recorded-only plans once nothing is left to propose.

Proposals are stable (see `proposal_fate`): an open proposal stays open, and no new one is made,
until it expires (`proposal_ttl_s`) or the new plan differs materially from it: it is cheaper by
more than `supersede_cost_pct`, the fleet's demand since it was made by more than
`supersede_demand_pct`, the placement it was made against is no longer the current one, or it no
longer fits the healthy fleet or serves demand within SLAs (capacity lost, demand grown). A plan
that costs more than the proposal replaces it only then: a proposal that still serves demand is
not withdrawn for a dearer one. A superseded or expired proposal and its migrations
close as `superseded` / `expired`; a rejected plan is never proposed again as it was.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from controlplane.windows import Window
from optimizer.checker import check
from optimizer.explain import pair_moves
from optimizer.packing import device_costs, min_devices
from optimizer.types import Assignment, ClassCapacity, Phase, Plan, PlanStatus, Problem

if TYPE_CHECKING:  # planning reads policies from the database, so it imports this module
    from controlplane.planning import Replicas, Snapshot

# ---------------------------------------------------------------------------- policies and their scope


class Mode(StrEnum):
    """What the gate does with a workload's moves."""

    apply = "apply"  # write the placement and actuate it
    propose = "propose"  # write it as a proposal an operator approves or rejects
    record = "record"  # dry run: write it as a record, never actuate


@dataclass(frozen=True)
class Policy:
    """One migration policy as the gate reads it; the defaults are what runs with none set."""

    name: str = "defaults"
    tenant_id: int | None = None
    workload_id: int | None = None
    min_improvement_pct: float = 5.0
    cooldown_s: int = 300
    max_moves_per_cycle: int = 10
    approval_required: bool = False
    dry_run: bool = False
    windows: tuple[Window, ...] = ()
    proposal_ttl_s: int = 3600
    supersede_cost_pct: float = 10.0
    supersede_demand_pct: float = 20.0
    demand_margin_pct: float = 0.0

    @property
    def mode(self) -> Mode:
        return Mode.record if self.dry_run else Mode.propose if self.approval_required else Mode.apply

    @property
    def scope(self) -> str:
        if self.workload_id is not None:
            return f"workload {self.workload_id}"
        return f"tenant {self.tenant_id}" if self.tenant_id is not None else "fleet"

    def in_window(self, now: datetime) -> bool:
        """Whether moves are allowed now: always without windows, else inside one of them."""
        return not self.windows or any(w.contains(now) for w in self.windows)


DEFAULTS = Policy()
DEGRADED_SLACK = 0.1  # what runs misses a degraded plan's relaxed bounds and shares only 10% past them


def governing(policies: Iterable[Policy], workload_id: int, tenant_id: int) -> Policy:
    """The policy that governs a workload's fragments: workload > tenant > fleet > DEFAULTS."""
    best, rank = DEFAULTS, 0
    for p in policies:
        r = 3 if p.workload_id == workload_id else 2 if (p.workload_id is None and p.tenant_id == tenant_id) else \
            1 if p.workload_id is None and p.tenant_id is None else 0
        if r > rank:
            best, rank = p, r
    return best


def fleet_policy(policies: Iterable[Policy]) -> Policy:
    return next((p for p in policies if p.workload_id is None and p.tenant_id is None), DEFAULTS)


# ---------------------------------------------------------------------------- limits on the plan


@dataclass(frozen=True)
class ChangeGroup:
    """At most `limit` of these running fragments may change in one cycle (a scoped policy's limit)."""

    fragments: frozenset[int]
    limit: int
    scope: str


@dataclass(frozen=True)
class Limits:
    """What the planner may change this cycle."""

    pinned: dict[int, tuple[str, ...]] = field(default_factory=dict)  # fragment -> classes it stays on
    why_pinned: dict[int, str] = field(default_factory=dict)
    max_changed: int | None = None  # running fragments that may change, fleet-wide
    groups: tuple[ChangeGroup, ...] = ()
    lifted: bool = False


def limits(snapshot: Snapshot, policies: tuple[Policy, ...], now: datetime, lifted: bool = False) -> Limits:
    """The module docstring's limits: pins (`snapshot.pins`: an operator's or a rollback's), cooldowns,
    windows and move limits; `lifted`, none of them."""
    running: dict[int, set[str]] = defaultdict(set)
    for fid, cls, _ in snapshot.current:
        running[fid].add(cls)
    if lifted:  # serving demand comes before keeping anything where it was
        return Limits(lifted=True)
    pinned: dict[int, tuple[str, ...]] = {}
    why: dict[int, str] = {}
    for fid, classes in snapshot.pins.items():
        pinned[fid], why[fid] = tuple(sorted(classes)), "pinned (see /pins)"
    if not snapshot.current:
        return Limits(pinned, why)
    groups: dict[str, tuple[set[int], int]] = {}
    for f in snapshot.fragments:
        policy = governing(policies, f.workload_id, f.tenant_id)
        if f.id in pinned or not running.get(f.id):
            continue
        moved = snapshot.last_moved.get(f.id)
        if moved is not None and now - moved < timedelta(seconds=policy.cooldown_s):
            pinned[f.id] = tuple(sorted(running[f.id]))
            why[f.id] = f"cooling down until {(moved + timedelta(seconds=policy.cooldown_s)):%H:%M:%S} UTC"
        elif not policy.in_window(now):
            pinned[f.id] = tuple(sorted(running[f.id]))
            why[f.id] = "outside its maintenance windows (" + ", ".join(w.text for w in policy.windows) + ")"
        if policy.scope != "fleet":
            members, _ = groups.setdefault(policy.scope, (set(), policy.max_moves_per_cycle))
            members.add(f.id)
    fleet = fleet_policy(policies)
    return Limits(pinned, why, fleet.max_moves_per_cycle,
                  tuple(ChangeGroup(frozenset(m), n, scope) for scope, (m, n) in sorted(groups.items())), False)


def margins(snapshot: Snapshot, policies: tuple[Policy, ...]) -> dict[str, float]:
    """Per workload (the optimizer's workload id), the factor its demand is planned at: 1 plus its
    policy's demand margin, so that a placement sized for it rides out that much growth before
    it no longer serves demand (the lower edge of the hysteresis band; the gate keeps the upper)."""
    return {str(f.workload_id): 1 + governing(policies, f.workload_id, f.tenant_id).demand_margin_pct / 100
            for f in snapshot.fragments}


def with_margins(problem: Problem, factors: dict[str, float]) -> Problem:
    """`problem` with each workload's demand (and its buckets' rates) times its factor."""
    return replace(problem, fragments=tuple(f.scaled(factors[f.workload]) if factors.get(f.workload, 1.0) != 1.0
                                            else f for f in problem.fragments))


# ---------------------------------------------------------------------------- the gate


class Verdict(StrEnum):
    taken = "taken"
    deferred = "deferred"


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
class WorkloadVerdict:
    """What the gate decided for one workload's moves, and why, in plain units: `reason` speaks of this
    workload only (its own costs), so its tenant may read it on its migrations."""

    workload_id: int
    verdict: Verdict
    mode: Mode
    policy: str
    reason: str
    moves: tuple[Move, ...]


class Action(StrEnum):
    keep = "keep"  # write nothing new, actuate nothing
    apply = "apply"  # write the placement and actuate it
    propose = "propose"  # write it as a proposal (approval)
    record = "record"  # write it as a dry-run record


@dataclass(frozen=True)
class Decision:
    """The gate's answer: the action, the placement to write (all fragments) and the moves to it,
    one verdict per workload with moves, and what becomes of the open proposal."""

    action: Action
    reason: str
    assignments: Replicas
    moves: tuple[Move, ...]
    verdicts: tuple[WorkloadVerdict, ...] = ()
    close_proposal: str | None = None  # "superseded" or "expired": how the open proposal closes
    needed: bool = False  # the current placement no longer serves demand
    usd_per_hour: float = 0.0  # of the placement to write

    def move_reason(self, fragment_id: int, workload_id: int | None) -> str:
        """What a move of this fragment's workload says to its tenant: its verdict, never the fleet's reason."""
        verdict = next((v for v in self.verdicts if v.workload_id == workload_id), None)
        return verdict.reason if verdict is not None else self.reason  # a fast-path scale-up: no verdicts

    @property
    def mode(self) -> Mode | None:
        return {Action.apply: Mode.apply, Action.propose: Mode.propose, Action.record: Mode.record}.get(self.action)


def gate(snapshot: Snapshot, plan: Plan, policies: tuple[Policy, ...], now: datetime, *, problem: Problem,
         lifted: str = "") -> Decision:
    """The module docstring's gate; `problem` is what `plan` was solved for (the checker judges the
    current placement and the merged one against it), `lifted` the note when limits were lifted."""
    current = snapshot.current
    proposal = snapshot.proposal
    if snapshot.applying_version is not None:  # one migration at a time: the next plan starts from its result
        return Decision(Action.keep, f"placement v{snapshot.applying_version} is still being applied; planning "
                                     "resumes once it is in force or has failed", current, ())
    fate = proposal_fate(snapshot, policies, now, problem) if proposal is not None else None
    if not plan.feasible:
        reason = "no feasible plan: " + "; ".join(plan.diagnosis)
        return Decision(Action.keep, reason, current, (), close_proposal=fate)
    target: Replicas = {(int(a.fragment), a.device_class, a.phase): (a.replicas, a.slices)
                        for a in plan.assignments if a.replicas}
    if not target and not current:
        return Decision(Action.keep, "nothing to place yet: no fragments observed", current, (), close_proposal=fate)
    moves = diff(current, target)
    if not moves:
        return Decision(Action.keep, "the current placement is already the plan", current, (), close_proposal=fate)

    workload_of = {f.id: (f.workload_id, f.tenant_id) for f in snapshot.fragments}
    by_workload: dict[int, list[Move]] = defaultdict(list)
    for move in moves:
        by_workload[workload_of.get(move.fragment_id, (-1, -1))[0]].append(move)
    tenant_of = {w: t for w, t in workload_of.values()}
    first = snapshot.current_version is None
    # `problem` plans each workload's demand with its margin; what runs must serve the demand itself.
    base = with_margins(problem, {w: 1 / k for w, k in margins(snapshot, policies).items()})
    if plan.status is PlanStatus.degraded:
        # Its bounds and served shares are the best this fleet gives now, re-solved every cycle: what
        # runs is replaced for them only past DEGRADED_SLACK, or every cycle would chase the last one's.
        base = with_margins(base, {w: 1 / (1 + DEGRADED_SLACK) for w in margins(snapshot, policies)})
        base = replace(base, slas=tuple(replace(s, p99_ms=s.p99_ms * (1 + DEGRADED_SLACK)) for s in base.slas))
    violations = [] if first else check(base, as_plan(current, base))
    needed = bool(violations)
    # Which workloads the current placement fails: theirs must change; the others only as the optional
    # rules allow. Lost capacity (the whole no longer packs) leaves no workload's placement safe.
    unserved = set(by_workload) if first or (needed and not fits(current, base.device_classes)) else \
        {w for w in by_workload if needed and _fails(base, current, w, workload_of)}
    price = {c.name: c.usd_per_hour / c.slices_per_device for c in snapshot.classes}

    verdicts = []
    for wid, wmoves in sorted(by_workload.items()):
        policy = governing(policies, wid, tenant_of.get(wid, -1))
        if wid in unserved:
            why = "initial placement" if first else "the current placement no longer serves demand within capacity and SLAs"
            verdicts.append(WorkloadVerdict(wid, Verdict.taken, policy.mode, policy.name, why, tuple(wmoves)))
            continue
        before = _cost(current, wid, workload_of, price)
        after = _cost(target, wid, workload_of, price)
        if before <= 0:
            verdicts.append(WorkloadVerdict(wid, Verdict.taken, policy.mode, policy.name,
                                            f"newly placed at ${after:.2f}/h", tuple(wmoves)))
            continue
        saving = (before - after) / before * 100
        line = f"${before:.2f}/h -> ${after:.2f}/h ({-saving:+.1f}%)"
        if saving + 1e-9 < policy.min_improvement_pct:
            verdicts.append(WorkloadVerdict(wid, Verdict.deferred, policy.mode, policy.name,
                                            f"saving {saving:.1f}% ({line}) is below policy {policy.name!r}'s "
                                            f"{policy.min_improvement_pct:g}% minimum", tuple(wmoves)))
        elif _shrinks(wmoves) and _fails(problem, _merge(current, target, {wid}, workload_of), wid, workload_of):
            verdicts.append(WorkloadVerdict(wid, Verdict.deferred, policy.mode, policy.name,
                                            f"scaling down ({line}) waits until the smaller placement serves "
                                            f"{policy.demand_margin_pct:g}% more than demand (policy "
                                            f"{policy.name!r})", tuple(wmoves)))
        else:
            verdicts.append(WorkloadVerdict(wid, Verdict.taken, policy.mode, policy.name, f"saves {line}",
                                            tuple(wmoves)))

    taken = [v for v in verdicts if v.verdict is Verdict.taken]
    # An urgent change is applied without waiting for approval; a dry run still only records.
    modes = {v.workload_id: (Mode.apply if needed and v.mode is Mode.propose else v.mode) for v in taken}
    for mode, action in ((Mode.apply, Action.apply), (Mode.propose, Action.propose), (Mode.record, Action.record)):
        chosen = {wid for wid, m in modes.items() if m is mode}
        if not chosen:
            continue
        merged = _merge(current, target, chosen, workload_of)
        # The deferred keep what runs, which need only serve their demand itself (not the margin).
        if check(base, as_plan(merged, base)):
            if not needed:
                return Decision(Action.keep, "the moves the policies allow do not fit the fleet without those they "
                                "defer; keeping the current placement", current, (), tuple(verdicts), fate, needed)
            # Serving demand needs more than the failing workloads' moves: take the whole plan.
            chosen = {wid for wid, m in modes.items() if m is mode} | {
                v.workload_id for v in verdicts if v.verdict is Verdict.deferred and v.mode is mode}
            merged = _merge(current, target, chosen, workload_of)
        held, close = _against_proposal(snapshot, policies, fate, merged, plan.usd_per_hour, action)
        if held:
            return Decision(Action.keep, held, current, (), tuple(verdicts), None, needed)
        summary = _summary(snapshot, action, plan, chosen, verdicts, lifted, needed, violations[0] if needed else "")
        usd = plan.usd_per_hour if merged == target else as_plan(merged, problem).usd_per_hour
        return Decision(action, summary, merged, diff(current, merged), tuple(verdicts), close, needed, usd)
    reasons = "; ".join(f"workload {v.workload_id}: {v.reason}" for v in verdicts)
    return Decision(Action.keep, f"moves deferred by policy: {reasons}", current, (), tuple(verdicts), fate, needed)


def _against_proposal(snapshot: Snapshot, policies: tuple[Policy, ...], fate: str | None, merged: Replicas,
                      usd_per_hour: float, action: Action) -> tuple[str | None, str | None]:
    """(why the open or rejected proposal holds this placement back, or None; how the open proposal
    closes if this placement is written, or None)."""
    proposal = snapshot.proposal
    if proposal is None or fate is not None:
        return None, fate
    if proposal.state == "rejected":
        return (f"this plan was proposed as v{proposal.version} and rejected" if proposal.items == merged else None), None
    if action is Action.apply:  # it was made against the placement this one replaces
        return None, "superseded"
    waiting = "recorded by a dry run" if proposal.state == "recorded" else "awaiting approval"
    if proposal.items == merged:
        return f"this plan is proposed as v{proposal.version}, {waiting}", None
    policy = _proposal_policy(snapshot, policies, proposal.items)
    change = _changed_pct(proposal.usd_per_hour, usd_per_hour)
    if usd_per_hour < proposal.usd_per_hour and change > policy.supersede_cost_pct:
        return None, "superseded"  # materially cheaper (a dearer plan replaces it only once it fails: proposal_fate)
    return (f"v{proposal.version} stays open ({waiting}): the new plan's cost differs from it by {change:.1f}%, "
            f"within policy {policy.name!r}'s {policy.supersede_cost_pct:g}%"), None


def proposal_fate(snapshot: Snapshot, policies: tuple[Policy, ...], now: datetime, problem: Problem) -> str | None:
    """What becomes of the open proposal, if there is one: "expired" once older than its TTL,
    "superseded" when the fleet changed materially since it was made (module docstring), else None
    (it stays open). A rejected proposal is already closed: None."""
    proposal = snapshot.proposal
    if proposal is None or proposal.state == "rejected":
        return None
    policy = _proposal_policy(snapshot, policies, proposal.items)
    if now - proposal.created_at >= timedelta(seconds=policy.proposal_ttl_s):
        return "expired"
    if proposal.base_version != snapshot.current_version:
        return "superseded"
    demand = sum(f.demand_rps for f in problem.fragments)
    if _changed_pct(proposal.demand_rps, demand) > policy.supersede_demand_pct:
        return "superseded"
    if not fits(proposal.items, problem.device_classes):
        return "superseded"
    unlimited = replace(problem, max_changed_fragments=None, change_limits=())
    if check(unlimited, as_plan(proposal.items, unlimited)):  # it no longer serves demand within SLAs
        return "superseded"
    return None


def fits(items: Replicas, classes: Iterable[ClassCapacity]) -> bool:
    """Whether a placement's replicas pack onto the healthy devices of `classes` (optimizer.packing),
    a replica on a class not among them never does."""
    by_name = {c.device_class: c for c in classes}
    sizes: dict[str, Counter[int]] = defaultdict(Counter)
    for (_, cls, _), (replicas, slices) in items.items():
        if replicas:
            sizes[cls][slices] += replicas
    return all(cls in by_name and min_devices(by_name[cls], counts) is not None for cls, counts in sizes.items())


def _proposal_policy(snapshot: Snapshot, policies: tuple[Policy, ...], items: Replicas) -> Policy:
    """The strictest TTL and thresholds among the policies governing the proposal's workloads."""
    owners = {f.id: (f.workload_id, f.tenant_id) for f in snapshot.fragments}
    governing_ones = {governing(policies, *owners[fid]) for fid, _, _ in items if fid in owners} or {
        fleet_policy(policies)}
    return min(governing_ones, key=lambda p: (p.proposal_ttl_s, p.supersede_cost_pct, p.supersede_demand_pct))


def _changed_pct(before: float, after: float) -> float:
    if before <= 0:
        return 0.0 if after <= 0 else float("inf")
    return abs(after - before) / before * 100


def _fails(problem: Problem, items: Replicas, workload_id: int, workload_of: dict[int, tuple[int, int]]) -> bool:
    """Whether `items` fail workload `workload_id` on its own: its fragments' demand, bounds and SLA."""
    w = str(workload_id)
    mine = {f.fragment for f in problem.fragments if f.workload == w}
    alone = replace(problem, fragments=tuple(f for f in problem.fragments if f.workload == w),
                    edges=tuple(e for e in problem.edges if e.parent in mine and e.child in mine),
                    slas=tuple(s for s in problem.slas if s.workload == w),
                    current=tuple(a for a in problem.current if a.fragment in mine),
                    max_changed_fragments=None, change_limits=())
    return bool(check(alone, as_plan({k: v for k, v in items.items() if workload_of.get(k[0], (-1,))[0] == workload_id},
                                     alone)))


def _shrinks(moves: Iterable[Move]) -> bool:
    """Whether the moves take replicas away (more stopped than started), not only move them."""
    return sum(m.replicas for m in moves if m.to_class is None) > sum(m.replicas for m in moves if m.from_class is None)


def _cost(items: Replicas, workload_id: int, workload_of: dict[int, tuple[int, int]], price: dict[str, float]) -> float:
    return sum(n * s * price.get(cls, 0.0) for (fid, cls, _), (n, s) in items.items()
               if workload_of.get(fid, (-1, -1))[0] == workload_id)


def _merge(current: Replicas, target: Replicas, workloads: set[int], workload_of: dict[int, tuple[int, int]]) -> Replicas:
    """The target's items for fragments of `workloads`, the current ones for the rest."""
    def mine(fid: int) -> bool:
        return workload_of.get(fid, (-1, -1))[0] in workloads
    return {**{k: v for k, v in current.items() if not mine(k[0])}, **{k: v for k, v in target.items() if mine(k[0])}}


def _summary(snapshot: Snapshot, action: Action, plan: Plan, chosen: set[int], verdicts: list[WorkloadVerdict],
             lifted: str, needed: bool, violation: str) -> str:
    first = snapshot.current_version is None
    what = "initial placement" if first else "re-placement"
    parts = [f"{what}: ${plan.usd_per_hour:.2f}/h, {plan.status.value}"]
    if action is Action.propose:
        parts.append("approval required")
    elif action is Action.record:
        parts.append("dry run")
    if needed and not first:
        parts.append(f"the current placement does not serve demand: {violation}")
        if any(v.mode is Mode.propose for v in verdicts if v.workload_id in chosen):
            parts.append("applied without waiting for approval: demand is not served")
    deferred = [v for v in verdicts if v.workload_id not in chosen]
    if deferred:
        parts.append(f"{len(deferred)} workload(s) deferred")
    if lifted:
        parts.append(lifted)
    return "; ".join(parts)


# ---------------------------------------------------------------------------- placements as plans


def as_plan(assignments: Replicas, problem: Problem) -> Plan:
    """A placement expressed as a `Plan`, so the optimizer's checker can judge it against `problem`."""
    return plan_of(assignments, problem.device_classes, known={f.fragment for f in problem.fragments})


def plan_of(assignments: Replicas, classes: Iterable[ClassCapacity], known: set[str] | None = None,
            solve_time_s: float = 0.0) -> Plan:
    """A placement as a `Plan` priced on `classes`: its replicas' slices, and the idle rest of the
    devices they occupy on classes sold whole; with `known`, only those fragments' replicas."""
    capacity = {c.device_class: c for c in classes}
    price = {name: c.usd_per_hour / c.slices_per_device for name, c in capacity.items()}
    rows = tuple(
        Assignment(str(fid), cls, replicas, slices, replicas * slices * price.get(cls, 0.0), phase)
        for (fid, cls, phase), (replicas, slices) in sorted(assignments.items())
        if known is None or str(fid) in known
    )
    try:
        devices, idle = device_costs(capacity, (a for a in rows if a.device_class in capacity))
    except ValueError:  # it no longer packs on the healthy devices: the checker says so, by class
        devices, idle = {}, {}
    return Plan(PlanStatus.feasible, rows, usd_per_hour=sum(a.usd_per_hour for a in rows) + sum(idle.values()),
                solve_time_s=solve_time_s, devices_used=devices)


def diff(current: Replicas, target: Replicas) -> tuple[Move, ...]:
    """The moves from `current` to `target`: freed replicas are paired with new ones of the same
    fragment and phase (a whole replica never turns into a pool's)."""
    delta: dict[tuple[int, Phase], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (fid, cls, phase), (replicas, _) in target.items():
        delta[fid, phase][cls] += replicas
    for (fid, cls, phase), (replicas, _) in current.items():
        delta[fid, phase][cls] -= replicas
    return tuple(Move(fid, a, b, n, phase) for (fid, phase), a, b, n in pair_moves(delta))
