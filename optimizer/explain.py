"""What a placement means: cost breakdown, predicted p99, moves and per-fragment explanations.

Shared by the CP-SAT solver and the greedy fast path, so both explain plans the same way.

Explanations are a cheap heuristic, not a re-solve. For fragment f placed mostly on class p
(the class with most of its cost), every allowed class c is priced alone: the replicas f would
need there by itself times c's price per replica. The runner-up is the cheapest such class other
than p, its delta that price minus what f costs in the plan. The binding constraint is the first of:
"pinned" (f has pins); "cheapest per throughput" (nothing is cheaper alone than f's plan cost);
otherwise, for the cheapest cheaper class c: "capacity of c" (c lacks free slices for f alone),
"latency bound of workload w" (f is on w's worst path and c is slower), "migration cost" (f kept
its current placement), else "joint optimum" (sharing capacity or the graph made it so).
"""

from collections import defaultdict
from collections.abc import Mapping
from typing import TypeVar

from optimizer.candidates import Candidate, needed_units, replicas_alone
from optimizer.graph import Graph, longest_paths, path_from, workload_p99
from optimizer.types import Assignment, ClassCapacity, CostBreakdown, Edge, Explanation, Problem, ReplicaMove

K = TypeVar("K", int, str)  # a fragment: its id in the control plane, its name in the optimizer

_EPS = 1e-9


def predicted_p99(
    problem: Problem, graph: Graph, classes: dict[str, ClassCapacity],
    latency: dict[tuple[str, str], float], used: dict[str, dict[str, int]],
) -> tuple[dict[str, float], set[str]]:
    """Per SLA workload its worst path latency (max over the classes a fragment uses), and the
    fragments on those worst paths."""
    def lat(f: str) -> float:
        return max((latency[f, c] for c in used.get(f, {})), default=0.0)

    def xfer(e: Edge) -> float:
        return max((problem.transfer.ms(e.bytes_per_call, classes[a], classes[b])
                    for a in used.get(e.parent, {}) for b in used.get(e.child, {}) if a != b), default=0.0)

    below, via = longest_paths(graph, lat, xfer)
    out, critical = {}, set()
    for w, (value, root) in workload_p99(graph, below).items():
        out[w] = value
        if root is not None:
            critical.update(path_from(root, via))
    return out, critical


def moves(current: tuple[Assignment, ...], target: dict[str, dict[str, int]]) -> tuple[ReplicaMove, ...]:
    """Freed replicas paired with new ones of the same fragment, then plain starts and stops."""
    delta: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for f, by_class in target.items():
        for c, n in by_class.items():
            delta[f][c] += n
    for a in current:
        delta[a.fragment][a.device_class] -= a.replicas
    return tuple(ReplicaMove(*move) for move in pair_moves(delta))


def pair_moves(delta: Mapping[K, Mapping[str, int]]) -> list[tuple[K, str | None, str | None, int]]:
    """Moves from per-class replica changes of each fragment: freed replicas pair with new ones.

    `delta[f][c]` is target minus current replicas of f on c. Returns (f, from class, to class, n);
    an empty side is a scale-up or scale-down.
    """
    out: list[tuple[K, str | None, str | None, int]] = []
    for f in sorted(delta):
        gains = [[c, n] for c, n in sorted(delta[f].items()) if n > 0]
        losses = [[c, -n] for c, n in sorted(delta[f].items()) if n < 0]
        while gains and losses:
            n = min(gains[0][1], losses[0][1])
            out.append((f, losses[0][0], gains[0][0], n))
            gains[0][1] -= n
            losses[0][1] -= n
            gains = [g for g in gains if g[1]]
            losses = [loss for loss in losses if loss[1]]
        out += [(f, None, c, n) for c, n in gains]
        out += [(f, c, None, n) for c, n in losses]
    return out


def migration_usd(problem: Problem, target: dict[str, dict[str, int]]) -> float:
    """The objective's migration term: half the per-move cost for every replica started or stopped."""
    if not problem.current:
        return 0.0
    diff = moves(problem.current, target)
    changed = sum(m.replicas for m in diff)
    paired = sum(m.replicas for m in diff if m.from_class and m.to_class)
    return problem.migration_cost_usd / 2 * (changed + paired)


def breakdown(problem: Problem, assignments: tuple[Assignment, ...]) -> CostBreakdown:
    workload = {f.fragment: f.workload for f in problem.fragments}
    by_class: dict[str, float] = defaultdict(float)
    by_workload: dict[str, float] = defaultdict(float)
    for a in assignments:
        by_class[a.device_class] += a.usd_per_hour
        by_workload[workload[a.fragment]] += a.usd_per_hour
    return CostBreakdown(dict(by_class), dict(by_workload))


def explain(
    problem: Problem, candidates: dict[str, tuple[Candidate, ...]], assignments: tuple[Assignment, ...],
    critical: set[str],
) -> dict[str, Explanation]:
    """The module docstring's heuristic, per fragment with replicas in the plan."""
    free = {c.device_class: c.slices for c in problem.device_classes}
    cost: dict[str, dict[str, float]] = defaultdict(dict)
    placed: dict[str, dict[str, int]] = defaultdict(dict)
    for a in assignments:
        free[a.device_class] -= a.replicas * a.slices
        cost[a.fragment][a.device_class] = a.usd_per_hour
        placed[a.fragment][a.device_class] = a.replicas
    current = defaultdict(dict)
    for a in problem.current:
        current[a.fragment][a.device_class] = a.replicas
    workload = {f.fragment: f.workload for f in problem.fragments}
    out = {}
    for f in problem.fragments:
        if f.fragment not in cost:
            continue
        mine = sum(cost[f.fragment].values())
        primary = max(cost[f.fragment], key=cost[f.fragment].get)
        cands = {c.device_class: c for c in candidates[f.fragment]}
        need = needed_units(f, problem.headroom)
        alone = {name: (n, n * c.usd_per_replica) for name, c in cands.items()
                 if (n := replicas_alone(f, c, problem.headroom, need)) is not None}
        others = sorted((usd, name) for name, (_, usd) in alone.items() if name != primary)
        runner = others[0] if others else None
        cheaper = sorted((usd, name) for name, (_, usd) in alone.items() if usd < mine - _EPS)
        if f.pinned:
            binding = f"pinned to {', '.join(f.pinned)}"
        elif not cheaper:
            binding = "cheapest per throughput"
        else:
            name = cheaper[0][1]
            n = alone[name][0]
            if free[name] + placed[f.fragment].get(name, 0) * cands[name].slices < n * cands[name].slices:
                binding = f"capacity of {name}"
            elif f.fragment in critical and cands[name].latency_ms > cands[primary].latency_ms:
                binding = f"latency bound of workload {workload[f.fragment]}"
            elif current.get(f.fragment) == placed[f.fragment]:
                binding = "migration cost"
            else:
                binding = "joint optimum"
        out[f.fragment] = Explanation(binding, runner[1] if runner else None,
                                      runner[0] - mine if runner else None)
    return out


def plan_fields(
    problem: Problem, graph: Graph, classes: dict[str, ClassCapacity],
    candidates: dict[str, tuple[Candidate, ...]], assignments: tuple[Assignment, ...],
) -> dict:
    """Keyword arguments of `Plan` that follow from the assignments alone."""
    latency = {(f, c.device_class): c.latency_ms for f, cands in candidates.items() for c in cands}
    used: dict[str, dict[str, int]] = defaultdict(dict)
    for a in assignments:
        used[a.fragment][a.device_class] = a.replicas
    p99, critical = predicted_p99(problem, graph, classes, latency, used)
    return dict(
        predicted_p99_ms=p99,
        moves=moves(problem.current, used),
        explanations=explain(problem, candidates, assignments, critical),
        cost_breakdown=breakdown(problem, assignments),
        migration_usd_per_hour=migration_usd(problem, used),
    )
