"""Capacity prices: what a slice of each device class is worth when the fleet runs short of it.

When the cheapest classes cannot hold every fragment that would like them, who gets them matters:
a fragment that saves $3/h per slice there should have them before one that saves $0.10. The
capacity constraints moved into the objective (Lagrangian relaxation) say how much:

    L(lam) = sum_f min_c n_fc * (u_fc + lam_c * s_fc)  -  sum_c lam_c * S_c          lam >= 0

with n_fc the replicas f needs on c alone, u_fc their price per replica, s_fc their slices and
S_c the class's slices. The best lam, and the placement it prices, come from the same relaxation
as a linear program (`relaxed_placement`, GLOP): every fragment on one class alone, z_fc in
[0, 1] with sum_c z_fc = 1 and capacity sum_f z_fc n_fc s_fc <= S_c. Its duals are lam, and a
basic solution has at most |C| fragments split between classes, so its whole choices are a
near-optimal placement to start CP-SAT from (solve's hint).

`lagrangian_bound` turns prices into a proven lower bound on any plan's cost: for a fixed lam >= 0
every plan's cost is at least sum_f (f's cheapest priced cover) - lam . S, because its capacity
term is <= 0. A fragment's cheapest priced cover may mix classes; it is found exactly
(`_cheapest_cover`, a branch and bound over whole replicas), so the bound holds for the model as
written. SLAs and edges are ignored (a relaxation); a fragment that is bucketed or may be split
counts its unpriced fractional bound (no more than any priced cover of it), which keeps it valid.
When capacity is not short, lam = 0 and the bound is each fragment's cheapest whole-replica cover.
"""

import math

from ortools.linear_solver import linear_solver_pb2, pywraplp

from optimizer.candidates import Candidate, Pools, needed_units, replicas_alone_each, supply_units
from optimizer.greedy import fractional_single
from optimizer.types import ClassCapacity, Problem

COVER_NODES = 1_000  # branch-and-bound nodes per fragment before its bound falls back to the LP's


def relaxed_placement(problem: Problem, classes: dict[str, ClassCapacity],
                      candidates: dict[str, tuple[Candidate, ...]],
                      time_limit_s: float | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """The LP's prices (dual values, $/h per slice) and the class of every fragment it places wholly
    on one class; ({}, {}) when GLOP finds no optimum (capacity short even fractionally, or not
    within `time_limit_s`).

    The LP is written as an MPModelProto and loaded in one call: adding its ~10,000 variables one
    `NumVar` at a time took longer than solving it."""
    model = linear_solver_pb2.MPModelProto()
    names = list(classes)
    rows: dict[str, tuple[list[int], list[float]]] = {name: ([], []) for name in names}
    choices = []
    for f in problem.fragments:
        cands = candidates[f.fragment]
        alone = [(c, n) for c, n in zip(cands, replicas_alone_each(f, cands, problem.headroom), strict=True)
                 if n is not None]
        if not alone:
            continue
        first = len(model.variable)
        for c, n in alone:
            index = len(model.variable)
            model.variable.add(lower_bound=0.0, upper_bound=1.0, objective_coefficient=n * c.usd_per_replica)
            row = rows[c.device_class]
            row[0].append(index)
            row[1].append(float(n * c.slices))
            choices.append((f.fragment, c.device_class, index))
        one = model.constraint.add(lower_bound=1.0, upper_bound=1.0)
        one.var_index.extend(range(first, len(model.variable)))
        one.coefficient.extend([1.0] * (len(model.variable) - first))
    capacity = {}
    for name in names:
        capacity[name] = len(model.constraint)
        row = model.constraint.add(lower_bound=-math.inf, upper_bound=float(classes[name].slices))
        row.var_index.extend(rows[name][0])
        row.coefficient.extend(rows[name][1])
    lp = pywraplp.Solver.CreateSolver("GLOP")
    if time_limit_s is not None:
        lp.SetTimeLimit(max(1, int(time_limit_s * 1000)))
    if lp.LoadModelFromProto(model) or lp.Solve() != pywraplp.Solver.OPTIMAL:
        return {}, {}
    constraints, variables = lp.constraints(), lp.variables()
    lam = {name: max(0.0, -constraints[i].dual_value()) for name, i in capacity.items()}
    whole = {f: name for f, name, i in choices if variables[i].solution_value() > 1 - 1e-6}
    return lam, whole


def lagrangian_bound(problem: Problem, candidates: dict[str, tuple[Candidate, ...]], lam: dict[str, float],
                     capacity: dict[str, int], pools: Pools | None = None) -> float:
    """L(lam) of the module docstring in $/h: a lower bound on every plan's cost, for any lam >= 0."""
    total = -sum(lam.get(name, 0.0) * s for name, s in capacity.items())
    for f in problem.fragments:
        if f.buckets or (pools and f.fragment in pools):
            total += fractional_single(problem, f, candidates[f.fragment], pools)
            continue
        options = [(c.usd_per_replica + lam.get(c.device_class, 0.0) * c.slices, supply_units(c.throughput_rps))
                   for c in candidates[f.fragment]]
        total += _cheapest_cover(needed_units(f, problem.headroom), f.min_replicas, options)
    return total - 1e-9 * abs(total)  # float sums of $/h: stay on the safe side


def _cheapest_cover(need: int, least: int, options: list[tuple[float, int]]) -> float:
    """min sum_c w_c x_c over whole x_c >= 0 with sum_c R_c x_c >= need and sum_c x_c >= least, for
    `options` (w_c, R_c); a lower bound on it (the LP's) when the search runs past COVER_NODES."""
    if need <= 0 and least <= 0:
        return 0.0
    if need > 0 and not any(r for _, r in options):
        return 0.0  # no class can serve it: prepare's diagnosis stops the solve before any bound matters
    # A class no cheaper per replica and serving no more than another is never needed: dropping it
    # (and all but one of equal classes) keeps the search from trying every way to share replicas
    # among them. Classes without throughput still count towards `least`: they sort last (ratio inf).
    kept = sorted(set(options), key=lambda o: (o[0], -o[1]))
    kept = [o for i, o in enumerate(kept) if not any(r >= o[1] for _, r in kept[:i])]
    opts = sorted(kept, key=lambda o: o[0] / o[1] if o[1] else math.inf)
    ratio = [w / r if r else math.inf for w, r in opts]
    cheapest = [min(w for w, _ in opts[i:]) for i in range(len(opts))]

    def floor_of(i: int, need: int, least: int) -> float:
        return max(max(need, 0) * ratio[i] if need > 0 else 0.0, max(least, 0) * cheapest[i])

    root = floor_of(0, need, least)
    best = min(max(-(-need // r) if r else 0, least) * w for w, r in opts if r or need <= 0)
    nodes = 0

    def search(i: int, need: int, least: int, cost: float) -> None:
        nonlocal best, nodes
        if need <= 0 and least <= 0:
            best = min(best, cost)
            return
        if i == len(opts) or cost + floor_of(i, need, least) >= best - 1e-12:
            return
        nodes += 1
        if nodes > COVER_NODES:
            return
        w, r = opts[i]
        most = max(-(-need // r) if r and need > 0 else 0, least)
        for k in range(most, -1, -1):
            search(i + 1, need - k * r, least - k, cost + k * w)

    search(0, need, least, 0.0)
    return best if nodes <= COVER_NODES else root
