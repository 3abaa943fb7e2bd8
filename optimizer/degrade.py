"""The best plan by priority when no plan meets every SLA: relax the problem in stages, then say
what the plan does not meet, per workload, in plain units.

`degrade(problem)` is called once `solve(problem)` has found no feasible plan. It solves a
sequence of relaxed problems with `optimizer.solver.solve`, each relaxation keeping the ones
before it, and stops at the first that is feasible:

    0. relax unreachable  SLAs no placement meets on this fleet even with unlimited capacity (see 3),
                          of any priority, become the fleet's best path: when they are the only
                          cause, nothing else gives way.
    1. queue batch        batch workloads (Problem.batch_workloads) lose their latency SLA (p99,
                          TTFT, TPOT) and their fragments' latency bounds: their demand is still
                          served in full, later than agreed.
    2. shed batch         batch demand is scaled by the largest fraction phi_b in [0, 1] for which
                          the problem is feasible (bisection on a grid of 1 / 2^SHED_STEPS; a
                          fraction of 0 also drops the fragments' min replicas). When phi_b = 0 is
                          still infeasible, batch stays at 0 and:
    3. relax unreachable  realtime SLAs no placement meets on this fleet even with unlimited
                          capacity (the fastest allowed class of every fragment, the cheapest
                          transfers: optimizer.diagnose) become that best path; TTFT, TPOT and
                          fragment bounds of those workloads are dropped. Served as fast as the
                          fleet can.
    4. relax realtime     every realtime p99 SLA is loosened (x LOOSEN; then dropped, each fragment
                          held within NEAR_FASTEST x its fastest class's latency; then dropped
                          altogether: the fast classes are too few for all of them): served, later
                          than agreed, but still as fast as the loosest bound that fits keeps it.
    5. shed realtime      realtime demand is scaled by the largest feasible fraction phi_r (as
                          in 2), batch at 0.
       After 3 or 4 (realtime served in full), batch is grown back to the largest fraction the
       capacity left allows; after 5 it stays at 0.

A fragment that no class can run at all (no profile in the fleet, pins on an absent class) is
shed wholly from the start, whatever its workload's class. Demand at phi scales every fragment of
the workload (and each bucket's rate) by phi, so a realtime workload is never shed while a batch
workload is still served, and shedding never grows when the fleet grows (every stage is monotone
in capacity, up to the time limit of each solve).

Each solve gets an even share of what is left of `problem.time_limit_s` over the solves still
possible (at most 4 + 2 * (1 + SHED_STEPS)); an infeasible small problem is rejected by `solve`'s
diagnosis in milliseconds, so the share of later solves grows as earlier ones return. A solve that
finds nothing in its share counts as infeasible, so a share too short sheds more than capacity
needs: call `degrade` when the problem is proven infeasible (Plan.infeasibility), not when `solve`
merely ran out of time.
"""

import math
import time
from collections import defaultdict
from dataclasses import dataclass, replace

from optimizer.candidates import allowed_candidates, effective_profiles
from optimizer.diagnose import min_transfer_ms
from optimizer.explain import own_latency, predicted_p99, units_of
from optimizer.graph import build_graph, longest_paths, workload_p99
from optimizer.prepare import prepare
from optimizer.solver import solve
from optimizer.types import (
    FragmentDemand,
    Phase,
    Plan,
    PlanStatus,
    Priority,
    Problem,
    Shortfall,
    ShortfallCause,
    ShortfallKind,
    WorkloadSla,
)

SHED_STEPS = 6  # bisection steps on a shed fraction: the served share is exact to 1 / 64
LOOSEN = (1.1, 1.25, 1.5, 2.0)  # stage 4 first tries every realtime p99 SLA times these before dropping them
NEAR_FASTEST = 4.0  # then each fragment within this many times its fastest class's latency
_MAX_SOLVES = 6 + len(LOOSEN) + 2 * (1 + SHED_STEPS)
_MIN_SOLVE_S = 0.05
_REL_TOL = 1e-9


@dataclass(frozen=True)
class Degraded:
    """The relaxed problem and its plan (status degraded, with its shortfalls against the original);
    the plan is infeasible only when even shedding everything found none within the time limit."""

    problem: Problem
    plan: Plan


def degrade(problem: Problem) -> Degraded:
    """The best plan by priority for a problem without a feasible plan (see the module docstring)."""
    run = _Run(problem)
    realtime = {f.workload for f in problem.fragments if problem.priority_of(f.workload) is Priority.realtime}
    batch = {f.workload for f in problem.fragments} - realtime
    unrunnable = _unrunnable(problem)
    base = _shed(problem, unrunnable, 0.0)
    fractions = {w: 0.0 for w in unrunnable}

    # SLAs no capacity could meet give way first, to the fleet's best path: queueing or shedding
    # batch work cannot help them, so it keeps its SLA when they are the only cause.
    hopeless = _relax_unreachable(base, realtime | batch)
    if hopeless != base and (plan := run.solve(hopeless)):
        return run.done(hopeless, plan, fractions)
    queued = _drop_latency(base, batch)
    if batch and (plan := run.solve(queued)):
        return run.done(queued, plan, fractions)
    if batch:
        phi, plan = run.largest_fraction(queued, batch - unrunnable, full_known_infeasible=True)
        if plan is not None:
            return run.done(_shed(queued, batch - unrunnable, phi), plan,
                            {**fractions, **dict.fromkeys(batch - unrunnable, phi)})
    fractions.update(dict.fromkeys(batch, 0.0))
    no_batch = _shed(queued, batch, 0.0)

    reachable = _relax_unreachable(no_batch, realtime)
    stages = [no_batch] if unrunnable and not batch else []  # not tried yet: only the unrunnable shed
    stages += [reachable] if reachable != no_batch else []
    stages += [_loosen(reachable, realtime, factor) for factor in LOOSEN]
    dropped = _drop_latency(no_batch, realtime)
    stages += [_near_fastest(dropped, realtime), dropped]
    for relaxed in stages:
        if plan := run.solve(relaxed):
            # Realtime is served in full: batch gets what capacity is left.
            grown = _restore(relaxed, problem, batch - unrunnable)
            phi, more = run.largest_fraction(grown, batch - unrunnable, zero_plan=plan)
            return run.done(_shed(grown, batch - unrunnable, phi), more,
                            {**fractions, **dict.fromkeys(batch - unrunnable, phi)})
    relaxed = stages[-1]
    phi, plan = run.largest_fraction(relaxed, realtime - unrunnable, full_known_infeasible=True)
    if plan is None:  # out of time before even the empty plan: nothing better to offer
        return Degraded(relaxed, Plan(PlanStatus.infeasible, diagnosis=(
            "no degraded plan found within the time limit; raise the solver's time limit",)))
    # Realtime is shed: batch stays at 0, whatever capacity realtime cannot use.
    return run.done(_shed(relaxed, realtime - unrunnable, phi), plan,
                    {**fractions, **dict.fromkeys(realtime - unrunnable, phi)})


class _Run:
    """The solves of one `degrade` call, sharing its time limit, and the original problem."""

    def __init__(self, problem: Problem) -> None:
        self.original = problem
        self.started = time.perf_counter()
        self.solves_left = _MAX_SOLVES

    def solve(self, problem: Problem) -> Plan | None:
        """`problem`'s plan within this solve's share of the time left, None when none was found."""
        left = self.original.time_limit_s - (time.perf_counter() - self.started)
        share = max(_MIN_SOLVE_S, left / max(1, self.solves_left))
        self.solves_left = max(1, self.solves_left - 1)
        plan = solve(replace(problem, time_limit_s=share))
        return plan if plan.feasible else None

    def largest_fraction(self, problem: Problem, workloads: set[str], zero_plan: Plan | None = None,
                         full_known_infeasible: bool = False) -> tuple[float, Plan | None]:
        """The largest phi on the bisection grid for which `problem` with `workloads` shed to phi is
        feasible, and its plan; (0, None) when not even phi = 0 is. `zero_plan`: the plan at 0,
        when the caller has it."""
        best = zero_plan or self.solve(_shed(problem, workloads, 0.0))
        if best is None or not workloads:
            return 0.0, best
        if not full_known_infeasible and (plan := self.solve(problem)):
            return 1.0, plan
        low, high = 0.0, 1.0
        for _ in range(SHED_STEPS):
            mid = (low + high) / 2
            if plan := self.solve(_shed(problem, workloads, mid)):
                low, best = mid, plan
            else:
                high = mid
        return low, best

    def done(self, relaxed: Problem, plan: Plan, fractions: dict[str, float]) -> Degraded:
        shortfalls = shortfalls_of(self.original, relaxed, plan, fractions)
        return Degraded(relaxed, replace(plan, status=PlanStatus.degraded, shortfalls=shortfalls,
                                         solve_time_s=time.perf_counter() - self.started))


def _unrunnable(problem: Problem) -> set[str]:
    """Workloads with a fragment that has demand but no class may run, whatever its SLA."""
    free = _drop_latency(problem, {f.workload for f in problem.fragments})
    prepared = prepare(free, diagnose=False)
    return {f.workload for f in free.fragments
            if not prepared.candidates[f.fragment] and f.fragment not in prepared.pools
            and (f.demand_rps > 0 or f.min_replicas > 0 or any(b.rate_rps > 0 for b in f.buckets))}


def _drop_latency(problem: Problem, workloads: set[str]) -> Problem:
    """`problem` without the latency SLAs (and fragment latency bounds) of `workloads`."""
    return replace(
        problem,
        slas=tuple(s for s in problem.slas if s.workload not in workloads),
        fragments=tuple(replace(f, latency_bound_ms=None) if f.workload in workloads else f
                        for f in problem.fragments),
    )


def _loosen(problem: Problem, workloads: set[str], factor: float) -> Problem:
    """`problem` with the p99 SLAs of `workloads` times `factor` (TTFT, TPOT and fragment bounds
    dropped): a plan still held to a bound stays as fast as capacity lets it, where dropping the
    bound would let the cheapest, slowest classes in."""
    return replace(
        problem,
        slas=tuple(replace(s, p99_ms=s.p99_ms * factor, ttft_ms=None, tpot_ms=None) if s.workload in workloads
                   else s for s in problem.slas),
        fragments=tuple(replace(f, latency_bound_ms=None) if f.workload in workloads else f
                        for f in problem.fragments),
    )


def _near_fastest(problem: Problem, workloads: set[str]) -> Problem:
    """`problem` with each fragment of `workloads` bound to NEAR_FASTEST x its fastest class's latency:
    with the path SLAs gone, this still keeps a reranker off a CPU a thousand times slower."""
    classes = {c.device_class for c in problem.device_classes if c.devices > 0}

    def bound(f: FragmentDemand) -> FragmentDemand:
        fastest = min((p.latency_ms for p in f.profiles if p.device_class in classes and p.phase is Phase.whole),
                      default=None)
        return replace(f, latency_bound_ms=NEAR_FASTEST * fastest) if fastest and f.workload in workloads else f
    return replace(problem, fragments=tuple(bound(f) for f in problem.fragments))


def _shed(problem: Problem, workloads: set[str], fraction: float) -> Problem:
    """`problem` with the demand of `workloads` scaled by `fraction` (at 0, no min replicas either)."""
    return replace(problem, fragments=tuple(_scaled(f, fraction) if f.workload in workloads else f
                                            for f in problem.fragments))


def _scaled(f: FragmentDemand, fraction: float) -> FragmentDemand:
    return replace(f.scaled(fraction), min_replicas=f.min_replicas if fraction > 0 else 0)


def _restore(problem: Problem, original: Problem, workloads: set[str]) -> Problem:
    """`problem` with the fragments of `workloads` as `original` has them (demand and bounds)."""
    before = {f.fragment: f for f in original.fragments}
    return replace(problem, fragments=tuple(replace(before[f.fragment], latency_bound_ms=f.latency_bound_ms)
                                            if f.workload in workloads else f for f in problem.fragments))


def best_p99_ms(problem: Problem) -> dict[str, float]:
    """Per SLA workload, the fastest worst path any placement on this fleet gives it with unlimited
    capacity, ignoring TTFT, TPOT and fragment latency bounds (each fragment on its fastest class)."""
    free = replace(problem, slas=tuple(replace(s, ttft_ms=None, tpot_ms=None) for s in problem.slas),
                   fragments=tuple(replace(f, latency_bound_ms=None) for f in problem.fragments))
    prepared = prepare(free, diagnose=False)
    graph, candidates = prepared.graph, prepared.candidates
    if graph.cycle:
        return {}
    fastest = {f: min((c.latency_ms for c in candidates[f]), default=0.0) for f in graph.order}
    below, _ = longest_paths(graph, fastest.__getitem__,
                             lambda e: min_transfer_ms(free, prepared.classes, candidates, e))
    return {w: value for w, (value, _) in workload_p99(graph, below).items()}


def _unreachable(problem: Problem, workloads: set[str]) -> set[str]:
    """Those of `workloads` whose SLA no placement meets on this fleet: a path slower than the p99
    at best, or a fragment no class may run within the TTFT, TPOT or its own bound."""
    best = best_p99_ms(problem)
    prepared = prepare(problem, diagnose=False)
    blocked = {f.workload for f in problem.fragments
               if not prepared.candidates[f.fragment] and f.fragment not in prepared.pools}
    return {s.workload for s in problem.slas
            if s.workload in workloads and (best.get(s.workload, 0.0) > s.p99_ms or s.workload in blocked)}


def _relax_unreachable(problem: Problem, realtime: set[str]) -> Problem:
    """Stage 3: the unreachable realtime SLAs become the fleet's best path; their token and fragment
    bounds are dropped."""
    hopeless = _unreachable(problem, realtime)
    if not hopeless:
        return problem
    loose = replace(problem, fragments=tuple(replace(f, latency_bound_ms=None) if f.workload in hopeless else f
                                             for f in problem.fragments),
                    slas=tuple(replace(s, ttft_ms=None, tpot_ms=None) if s.workload in hopeless else s
                               for s in problem.slas))
    best = best_p99_ms(loose)
    slas = tuple(replace(s, p99_ms=max(s.p99_ms, best.get(s.workload, 0.0) * (1 + 1e-6) + 1e-3))
                 if s.workload in hopeless else s for s in loose.slas)
    return replace(loose, slas=slas)


def shortfalls_of(original: Problem, relaxed: Problem, plan: Plan, fractions: dict[str, float]) -> tuple[Shortfall, ...]:
    """What `plan` (feasible for `relaxed`) does not meet of `original`, per workload: its demand
    where shed (`fractions`: the share of each shed workload's demand served), else its latency SLA
    where the plan misses it."""
    predicted = _predicted_p99(original, relaxed, plan)
    best = best_p99_ms(original)
    slas = {s.workload: s for s in original.slas}
    unrunnable = _unrunnable(original)
    workloads = sorted({f.workload for f in original.fragments})
    hopeless = _unreachable(original, set(workloads))
    out = []
    for w in workloads:
        priority = original.priority_of(w)
        fraction = fractions.get(w, 1.0)
        if fraction < 1.0:
            demand = _root_demand(original, w)
            cause = (ShortfallCause.no_class if w in unrunnable
                     else ShortfallCause.shed if priority is Priority.batch else ShortfallCause.capacity)
            out.append(Shortfall(w, priority, ShortfallKind.demand, cause, demand_rps=demand,
                                 served_rps=demand * fraction, **_devices_for(original, plan, w, fraction)))
            continue
        sla = slas.get(w)
        if sla is None:
            continue
        late = predicted.get(w, 0.0) > sla.p99_ms * (1 + _REL_TOL)
        tokens = _token_misses(original, plan, sla)
        if not late and not tokens:
            continue
        if priority is Priority.batch:
            cause = ShortfallCause.queued
        elif tokens or w in hopeless:
            cause = ShortfallCause.no_fast_class
        else:
            cause = ShortfallCause.fast_classes_full
        out.append(Shortfall(w, priority, ShortfallKind.latency, cause, sla_p99_ms=sla.p99_ms,
                             predicted_p99_ms=predicted.get(w), best_p99_ms=best.get(w),
                             sla_ttft_ms=sla.ttft_ms if "ttft" in tokens else None,
                             sla_tpot_ms=sla.tpot_ms if "tpot" in tokens else None,
                             demand_rps=_root_demand(original, w), served_rps=_root_demand(original, w)))
    return tuple(out)


def _predicted_p99(original: Problem, relaxed: Problem, plan: Plan) -> dict[str, float]:
    """Per SLA workload of `original`, the worst path of `plan` (its SLA may be gone from `relaxed`)."""
    problem = replace(relaxed, slas=original.slas)
    graph = build_graph(problem)
    if graph.cycle:
        return {}
    classes = {c.device_class: c for c in problem.device_classes}
    fragments = {f.fragment: f for f in problem.fragments}
    units = units_of(plan.assignments)
    latency = {}
    used: dict[str, dict[str, int]] = defaultdict(dict)
    for a in plan.assignments:
        profile = effective_profiles(fragments[a.fragment], a.phase).get(a.device_class)
        latency[a.fragment, a.device_class, a.phase] = profile.latency_ms if profile else 0.0
        used[a.fragment][a.device_class] = used[a.fragment].get(a.device_class, 0) + a.replicas
    own = own_latency(problem, classes, latency, units)
    return predicted_p99(problem, graph, classes, own, used)[0]


def _token_misses(original: Problem, plan: Plan, sla: WorkloadSla) -> set[str]:
    """"ttft" / "tpot" when a replica of the workload's fragments in `plan` misses that bound."""
    fragments = {f.fragment: f for f in original.fragments if f.workload == sla.workload}
    out = set()
    for a in plan.assignments:
        if a.fragment not in fragments:
            continue
        p = effective_profiles(fragments[a.fragment], a.phase).get(a.device_class)
        if p is None:
            continue
        ttft = p.latency_ms if p.phase is Phase.prefill and p.ttft_ms is None else p.ttft_ms
        if sla.ttft_ms is not None and ttft is not None and p.phase is not Phase.decode and ttft > sla.ttft_ms:
            out.add("ttft")
        if sla.tpot_ms is not None and p.tpot_ms is not None and p.phase is not Phase.prefill and p.tpot_ms > sla.tpot_ms:
            out.add("tpot")
    return out


def _root_demand(problem: Problem, workload: str) -> float:
    """Requests/s a workload receives: the demand of its fragments no fragment of it calls."""
    members = [f for f in problem.fragments if f.workload == workload]
    names = {f.fragment for f in members}
    called = {e.child for e in problem.edges if e.parent in names}
    roots = [f for f in members if f.fragment not in called] or members
    return sum(f.demand_rps for f in roots)


def _devices_for(problem: Problem, plan: Plan, workload: str, fraction: float) -> dict:
    """Where more devices would serve the shed share of `workload`: the class needing the most of
    them when each shed fragment goes to its cheapest class per request/s; Shortfall's fields."""
    classes = {c.device_class: c for c in problem.device_classes}
    slas = {s.workload: s for s in problem.slas}
    slices: dict[str, int] = defaultdict(int)
    for f in problem.fragments:
        if f.workload != workload:
            continue
        shed_rps = (f.demand_rps or sum(b.rate_rps for b in f.buckets)) * (1 - fraction) * problem.headroom
        cands = [c for c in allowed_candidates(f, classes, slas.get(workload)) if c.throughput_rps > 0]
        if shed_rps <= 0 or not cands:
            continue
        best = min(cands, key=lambda c: c.usd_per_replica / c.throughput_rps)
        slices[best.device_class] += math.ceil(shed_rps / best.throughput_rps - 1e-9) * best.slices
    if not slices:
        return {}
    name, extra_slices = max(slices.items(), key=lambda kv: kv[1] / classes[kv[0]].slices_per_device)
    cls = classes[name]
    extra = math.ceil(extra_slices / cls.slices_per_device)
    return dict(device_class=name, devices_needed=plan.devices_used.get(name, 0) + extra,
                devices_healthy=cls.devices, extra_usd_per_hour=extra * cls.usd_per_hour)
