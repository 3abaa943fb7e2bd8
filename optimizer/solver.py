"""Cheapest placement of every fragment's replicas on the fleet's device classes (OR-Tools CP-SAT).

Notation

    F                 fragments f, with demand d_f (visits/s), min replicas m_f, latency bound L_f
    C                 device classes c, with S_c = devices_c * slices_per_device_c slices and
                      price p_c $/hour for one whole device
    h                 headroom (demand is served with a margin: d_f * h)
    A                 allowed (f, c) pairs: f has a service profile on c, c is in the fleet, and
                      (when L_f is set) latency_fc <= L_f. One profile per (f, c): a measured one
                      beats an estimate, otherwise the first listed wins.
    s_fc, r_fc        slices per replica and throughput (visits/s) per replica of f on c

Variables

    x_fc in {0, .., floor(S_c / s_fc)}   replicas of f on c, for (f, c) in A

Objective (integer micro-dollars per hour; the plan's cost is recomputed from the floats)

    minimise  sum_{(f,c) in A}  x_fc * round(1e6 * s_fc / slices_per_device_c * p_c)

Constraints

    capacity   sum_f x_fc * s_fc <= S_c                                   for every c
    demand     sum_c x_fc * floor(1e6 * r_fc) >= ceil(1e6 * d_f * h)       for every f
    replicas   sum_c x_fc >= m_f                                          for every f

Throughput is rounded down and demand up (in micro-visits/s), so an integer solution also
satisfies the real-valued demand constraint. Fragments no class can serve, or that the whole
fleet cannot serve even alone, are diagnosed before the model is built; when the joint model is
infeasible the diagnosis names the classes that run short.

Search uses NUM_WORKERS threads with a fixed seed. The cost is reproducible whenever the solve
ends optimal; which of several exactly equal-cost placements comes back may differ between runs
(CP-SAT's deterministic ``interleave_search`` was ~30x slower on a 60-fragment fleet). The
migration cost from the current placement, a later addition, is what should break such ties.
"""

import math
import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from optimizer.types import Assignment, ClassCapacity, FragmentDemand, Plan, PlanStatus, Problem, ServiceProfile

RPS_SCALE = 1_000_000  # micro-visits per second
USD_SCALE = 1_000_000  # micro-dollars per hour
NUM_WORKERS = 2
RANDOM_SEED = 0
_ROUNDING_SLACK = 1e-6  # in scaled units: absorbs float noise such as 1.2 * 100 = 120.00000000000001


@dataclass(frozen=True)
class Candidate:
    """One allowed (fragment, class) pair with the numbers the model needs."""

    fragment: str
    device_class: str
    slices: int  # per replica
    throughput_rps: float  # per replica
    latency_ms: float
    usd_per_replica: float
    max_replicas: int  # replicas the class could hold if f had it alone


def solve(problem: Problem) -> Plan:
    """The cheapest placement meeting capacity, demand x headroom, min replicas and latency bounds."""
    started = time.perf_counter()
    validate(problem)
    classes = {cls.device_class: cls for cls in problem.device_classes}
    candidates = {f.fragment: allowed_candidates(f, classes) for f in problem.fragments}
    diagnosis = _diagnose_fragments(problem, classes, candidates)
    if diagnosis:
        return Plan(PlanStatus.infeasible, solve_time_s=time.perf_counter() - started, diagnosis=diagnosis)

    model, replicas = _build_model(problem, candidates)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = problem.time_limit_s
    solver.parameters.num_workers = NUM_WORKERS
    solver.parameters.random_seed = RANDOM_SEED
    # A library must not own the process's signals: CP-SAT would otherwise install a SIGINT handler
    # during the solve (from whatever thread runs it) and leave SIGINT at its default afterwards.
    solver.parameters.catch_sigint_signal = False
    status = solver.solve(model)

    if status == cp_model.MODEL_INVALID:
        raise RuntimeError(f"optimizer built an invalid CP-SAT model: {model.validate()}")
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        if status == cp_model.INFEASIBLE:
            diagnosis = _diagnose_capacity(problem, candidates)
        else:
            diagnosis = (f"no feasible plan found within the {problem.time_limit_s} s time limit "
                         "(not proven infeasible); raise time_limit_s",)
        return Plan(PlanStatus.infeasible, solve_time_s=time.perf_counter() - started, diagnosis=diagnosis)

    assignments = tuple(
        Assignment(f.fragment, c.device_class, n, c.slices, n * c.usd_per_replica)
        for f in problem.fragments
        for c in candidates[f.fragment]
        if (n := solver.value(replicas[f.fragment, c.device_class])) > 0
    )
    usd = sum((a.usd_per_hour for a in assignments), 0.0)
    optimal = status == cp_model.OPTIMAL
    bound = usd if optimal else min(usd, max(0.0, solver.best_objective_bound / USD_SCALE))
    return Plan(
        PlanStatus.optimal if optimal else PlanStatus.feasible,
        assignments=assignments,
        usd_per_hour=usd,
        lower_bound_usd_per_hour=bound,
        solve_time_s=time.perf_counter() - started,
    )


def _build_model(
    problem: Problem, candidates: dict[str, tuple[Candidate, ...]]
) -> tuple[cp_model.CpModel, dict[tuple[str, str], cp_model.IntVar]]:
    """The CP-SAT model of the module docstring, with x_fc keyed by (fragment, class)."""
    model = cp_model.CpModel()
    replicas: dict[tuple[str, str], cp_model.IntVar] = {}
    used: dict[str, list[cp_model.LinearExpr]] = {}
    for f in problem.fragments:
        cands = candidates[f.fragment]
        for c in cands:
            x = model.new_int_var(0, c.max_replicas, f"x[{f.fragment}@{c.device_class}]")
            replicas[f.fragment, c.device_class] = x
            used.setdefault(c.device_class, []).append(x * c.slices)
        need = _needed_units(f, problem.headroom)
        if need > 0:
            supply = (replicas[f.fragment, c.device_class] * _supply_units(c.throughput_rps) for c in cands)
            model.add(sum(supply) >= need)
        if f.min_replicas > 0:
            model.add(sum(replicas[f.fragment, c.device_class] for c in cands) >= f.min_replicas)
    for cls in problem.device_classes:
        if cls.device_class in used:
            model.add(sum(used[cls.device_class]) <= cls.slices)
    model.minimize(
        sum(
            replicas[f.fragment, c.device_class] * round(c.usd_per_replica * USD_SCALE)
            for f in problem.fragments
            for c in candidates[f.fragment]
        )
    )
    return model, replicas


def validate(problem: Problem) -> None:
    """Raise ValueError naming the field when `problem` cannot be solved as given."""
    if problem.headroom <= 0:
        raise ValueError(f"headroom must be > 0, got {problem.headroom}")
    if problem.time_limit_s <= 0:
        raise ValueError(f"time_limit_s must be > 0, got {problem.time_limit_s}")
    _require_unique([c.device_class for c in problem.device_classes], "device_classes[].device_class")
    _require_unique([f.fragment for f in problem.fragments], "fragments[].fragment")
    for cls in problem.device_classes:
        if cls.devices < 0 or cls.slices_per_device < 1 or cls.usd_per_hour < 0:
            raise ValueError(
                f"device class {cls.device_class!r}: need devices >= 0, slices_per_device >= 1 and "
                f"usd_per_hour >= 0, got {cls.devices}, {cls.slices_per_device}, {cls.usd_per_hour}"
            )
    for f in problem.fragments:
        if f.demand_rps < 0 or f.min_replicas < 0:
            raise ValueError(
                f"fragment {f.fragment!r}: demand_rps and min_replicas must be >= 0, "
                f"got {f.demand_rps} and {f.min_replicas}"
            )
        for p in f.profiles:
            if p.slices < 1 or p.throughput_rps < 0 or p.latency_ms < 0:
                raise ValueError(
                    f"fragment {f.fragment!r} profile on {p.device_class!r}: need slices >= 1, "
                    f"throughput_rps >= 0 and latency_ms >= 0"
                )


def allowed_candidates(fragment: FragmentDemand, classes: dict[str, ClassCapacity]) -> tuple[Candidate, ...]:
    """The (fragment, class) pairs the model may use, in the fleet's class order."""
    profiles = effective_profiles(fragment)
    out = []
    for name, cls in classes.items():
        p = profiles.get(name)
        if p is None or not _within_bound(p, fragment) or p.slices > cls.slices:
            continue
        usd = p.slices / cls.slices_per_device * cls.usd_per_hour
        out.append(Candidate(fragment.fragment, name, p.slices, p.throughput_rps, p.latency_ms, usd,
                             cls.slices // p.slices))
    return tuple(out)


def effective_profiles(fragment: FragmentDemand) -> dict[str, ServiceProfile]:
    """One profile per class: a measured one beats an estimate, else the first listed wins."""
    chosen: dict[str, ServiceProfile] = {}
    for p in fragment.profiles:
        current = chosen.get(p.device_class)
        if current is None or (p.measured and not current.measured):
            chosen[p.device_class] = p
    return chosen


def _within_bound(profile: ServiceProfile, fragment: FragmentDemand) -> bool:
    return fragment.latency_bound_ms is None or profile.latency_ms <= fragment.latency_bound_ms


def _needed_units(fragment: FragmentDemand, headroom: float) -> int:
    return max(0, math.ceil(fragment.demand_rps * headroom * RPS_SCALE - _ROUNDING_SLACK))


def _supply_units(throughput_rps: float) -> int:
    return math.floor(throughput_rps * RPS_SCALE + _ROUNDING_SLACK)


def _replicas_alone(fragment: FragmentDemand, cand: Candidate, headroom: float) -> int | None:
    """Replicas f needs on one candidate class alone, ignoring capacity; None if it cannot serve."""
    need = _needed_units(fragment, headroom)
    supply = _supply_units(cand.throughput_rps)
    if need > 0 and supply == 0:
        return None
    by_demand = -(-need // supply) if need > 0 else 0
    return max(fragment.min_replicas, by_demand)


def _diagnose_fragments(
    problem: Problem, classes: dict[str, ClassCapacity], candidates: dict[str, tuple[Candidate, ...]]
) -> tuple[str, ...]:
    """Fragments that cannot be served even with the whole fleet to themselves."""
    messages = []
    for f in problem.fragments:
        need = _needed_units(f, problem.headroom)
        if need == 0 and f.min_replicas == 0:
            continue
        cands = candidates[f.fragment]
        if not cands:
            messages.append(f"fragment {f.fragment!r}: no allowed device class: {_why_no_class(f, classes)}")
            continue
        supply = sum(c.max_replicas * _supply_units(c.throughput_rps) for c in cands)
        if supply < need:
            detail = ", ".join(f"{c.device_class} {c.max_replicas} x {c.throughput_rps:.3g} rps" for c in cands)
            messages.append(
                f"fragment {f.fragment!r}: needs {f.demand_rps * problem.headroom:.3g} rps "
                f"(demand {f.demand_rps:.3g} x headroom {problem.headroom:g}) but the whole fleet serves at "
                f"most {supply / RPS_SCALE:.3g} rps of it ({detail})"
            )
        room = sum(c.max_replicas for c in cands)
        if room < f.min_replicas:
            messages.append(
                f"fragment {f.fragment!r}: needs at least {f.min_replicas} replicas "
                f"but the fleet has room for {room}"
            )
    return tuple(messages)


def _why_no_class(fragment: FragmentDemand, classes: dict[str, ClassCapacity]) -> str:
    profiles = effective_profiles(fragment)
    if not profiles:
        return "it has no service profile"
    in_fleet = {name: p for name, p in profiles.items() if name in classes}
    if not in_fleet:
        return f"its profiles are only for classes not in the fleet ({', '.join(sorted(profiles))})"
    reasons = []
    fitting = {n: p for n, p in in_fleet.items() if p.slices <= classes[n].slices}
    for name, p in in_fleet.items():
        if name not in fitting:
            reasons.append(
                f"one replica needs {p.slices} slices of {name} but the fleet has {classes[name].slices}"
            )
    if fitting and fragment.latency_bound_ms is not None:
        best_name, best = min(fitting.items(), key=lambda item: item[1].latency_ms)
        reasons.append(
            f"latency bound too tight: best latency {best.latency_ms:.4g} ms (on {best_name}) "
            f"> bound {fragment.latency_bound_ms:.4g} ms"
        )
    return "; ".join(reasons)


def _diagnose_capacity(problem: Problem, candidates: dict[str, tuple[Candidate, ...]]) -> tuple[str, ...]:
    """Which classes run short when every fragment fits alone but not all of them together."""
    capacity = {cls.device_class: cls.slices for cls in problem.device_classes}
    pinned: dict[str, list[tuple[str, int]]] = {}
    cheapest: dict[str, list[tuple[str, int]]] = {}
    for f in problem.fragments:
        options = [(c, n) for c in candidates[f.fragment] if (n := _replicas_alone(f, c, problem.headroom))]
        if not options:
            continue
        if len(options) == 1:
            cand, n = options[0]
            pinned.setdefault(cand.device_class, []).append((f.fragment, n * cand.slices))
        cand, n = min(options, key=lambda o: o[1] * o[0].usd_per_replica)
        cheapest.setdefault(cand.device_class, []).append((f.fragment, n * cand.slices))

    messages = [
        _shortage(name, needs, capacity[name], "fragments that can only run there")
        for name, needs in pinned.items()
        if sum(s for _, s in needs) > capacity[name]
    ]
    if not messages:
        messages = [
            _shortage(name, needs, capacity[name], "fragments for which it is the cheapest class")
            for name, needs in cheapest.items()
            if sum(s for _, s in needs) > capacity[name]
        ]
    if not messages:
        fleet = ", ".join(f"{name} {slices} slices" for name, slices in capacity.items())
        messages = [f"every fragment fits alone but not all together; more capacity is needed in: {fleet}"]
    return tuple(messages)


def _shortage(device_class: str, needs: list[tuple[str, int]], capacity: int, who: str) -> str:
    total = sum(s for _, s in needs)
    detail = ", ".join(f"{name} {s}" for name, s in needs)
    return (
        f"class {device_class!r} is short by {total - capacity} slices: {who} need {total} ({detail}) "
        f"but it has {capacity}"
    )


def _require_unique(names: list[str], field_name: str) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{field_name} must be unique; duplicated: {', '.join(duplicates)}")
