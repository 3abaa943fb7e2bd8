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

from optimizer.candidates import Candidate, Pools, replicas_alone_each
from optimizer.graph import Graph, longest_paths, path_from, workload_p99
from optimizer.packing import device_costs
from optimizer.types import Assignment, ClassCapacity, CostBreakdown, Edge, Explanation, Phase, Problem, ReplicaMove

K = TypeVar("K", int, str, tuple)  # a fragment: its id in the control plane, its (name, phase) in the optimizer

Unit = tuple[str, Phase]  # what replicas are counted for: a fragment's whole replicas, or one pool of it

_EPS = 1e-9


def predicted_p99(
    problem: Problem, graph: Graph, classes: dict[str, ClassCapacity],
    own: dict[str, float], used: dict[str, dict[str, int]],
) -> tuple[dict[str, float], set[str]]:
    """Per SLA workload its worst path latency (each fragment's `own` latency; transfers between the
    classes fragments use), and the fragments on those worst paths."""
    link_ms: dict[tuple[float, str, str], float] = {}  # transfer.ms memoised: few (bytes, class pair)s recur

    def ms(nbytes: float, a: str, b: str) -> float:
        if (value := link_ms.get((nbytes, a, b))) is None:
            value = link_ms[nbytes, a, b] = problem.transfer.ms(nbytes, classes[a], classes[b])
        return value

    def xfer(e: Edge) -> float:
        return max((ms(e.bytes_per_call, a, b)
                    for a in used.get(e.parent, {}) for b in used.get(e.child, {}) if a != b), default=0.0)

    below, via = longest_paths(graph, lambda f: own.get(f, 0.0), xfer)
    out, critical = {}, set()
    for w, (value, root) in workload_p99(graph, below).items():
        out[w] = value
        if root is not None:
            critical.update(path_from(root, via))
    return out, critical


def own_latency(problem: Problem, classes: dict[str, ClassCapacity], latency: Mapping[tuple[str, str, Phase], float],
                units: Mapping[Unit, Mapping[str, int]]) -> dict[str, float]:
    """Each placed fragment's latency: its slowest whole class, or when split the slowest prefill
    class + the slowest decode class + the slowest KV hand-off between two different ones."""
    kv = {f.fragment: f.kv_bytes_per_request for f in problem.fragments}
    slowest: dict[tuple[str, Phase], float] = {}
    for (f, phase), by_class in units.items():
        slowest[f, phase] = max((latency[f, c, phase] for c in by_class), default=0.0)
    out: dict[str, float] = {}
    for (f, phase), value in slowest.items():
        if phase is Phase.whole:
            out[f] = max(out.get(f, 0.0), value)
        elif phase is Phase.prefill:
            hand_off = max((problem.transfer.ms(kv[f], classes[a], classes[b]) for a in units[f, Phase.prefill]
                            for b in units.get((f, Phase.decode), {}) if a != b), default=0.0)
            out[f] = max(out.get(f, 0.0), value + slowest.get((f, Phase.decode), 0.0) + hand_off)
    return out


def units_of(assignments: tuple[Assignment, ...]) -> dict[Unit, dict[str, int]]:
    """Replicas per class of every (fragment, phase) in `assignments`."""
    out: dict[Unit, dict[str, int]] = defaultdict(dict)
    for a in assignments:
        by_class = out[a.fragment, a.phase]
        by_class[a.device_class] = by_class.get(a.device_class, 0) + a.replicas
    return out


def moves(current: tuple[Assignment, ...], target: Mapping[Unit, Mapping[str, int]]) -> tuple[ReplicaMove, ...]:
    """Freed replicas paired with new ones of the same fragment and phase, then plain starts and stops."""
    delta: dict[Unit, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for unit, by_class in target.items():
        for c, n in by_class.items():
            delta[unit][c] += n
    for a in current:
        delta[a.fragment, a.phase][a.device_class] -= a.replicas
    return tuple(ReplicaMove(f, a, b, n, phase) for (f, phase), a, b, n in pair_moves(delta))


def pair_moves(delta: Mapping[K, Mapping[str, int]]) -> list[tuple[K, str | None, str | None, int]]:
    """Moves from per-class replica changes of each fragment: freed replicas pair with new ones.

    `delta[f][c]` is target minus current replicas of f on c. Returns (f, from class, to class, n);
    an empty side is a scale-up or scale-down.
    """
    out: list[tuple[K, str | None, str | None, int]] = []
    for f in sorted(delta):
        changes = sorted(delta[f].items())
        gains = [[c, n] for c, n in changes if n > 0]
        losses = [[c, -n] for c, n in changes if n < 0]
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


def changed_fragments(current: tuple[Assignment, ...], target: Mapping[Unit, Mapping[str, int]]) -> set[str]:
    """Fragments running in `current` whose replicas (per class and phase) differ in `target`."""
    running = units_of(current)
    fragments = {f for f, _ in running}
    return {f for f in fragments
            if any({c: n for c, n in running.get((f, phase), {}).items() if n}
                   != {c: n for c, n in target.get((f, phase), {}).items() if n} for phase in Phase)}


def change_limit_broken(problem: Problem, target: Mapping[Unit, Mapping[str, int]]) -> str | None:
    """Which change limit `target` breaks (the fleet's max_changed_fragments, or a ChangeLimit
    group's), in words; None when it keeps them all."""
    changed = changed_fragments(problem.current, target)
    if problem.max_changed_fragments is not None and len(changed) > problem.max_changed_fragments:
        return f"{len(changed)} running fragments change > max_changed_fragments {problem.max_changed_fragments}"
    for group in problem.change_limits:
        inside = changed & set(group.fragments)
        if len(inside) > group.limit:
            return f"{len(inside)} running fragments of a change limit's group change > its limit {group.limit}"
    return None


def migration_usd(problem: Problem, target: Mapping[Unit, Mapping[str, int]]) -> float:
    """The objective's migration term: half the per-move cost for every replica started or stopped."""
    if not problem.current:
        return 0.0
    diff = moves(problem.current, target)
    changed = sum(m.replicas for m in diff)
    paired = sum(m.replicas for m in diff if m.from_class and m.to_class)
    return problem.migration_cost_usd / 2 * (changed + paired)


def breakdown(problem: Problem, assignments: tuple[Assignment, ...], idle: dict[str, float]) -> CostBreakdown:
    workload = {f.fragment: f.workload for f in problem.fragments}
    by_class: dict[str, float] = defaultdict(float)
    by_workload: dict[str, float] = defaultdict(float)
    for a in assignments:
        by_class[a.device_class] += a.usd_per_hour
        by_workload[workload[a.fragment]] += a.usd_per_hour
    for name, usd in idle.items():
        by_class[name] += usd
    return CostBreakdown(dict(by_class), dict(by_workload), dict(idle))


def explain(
    problem: Problem, candidates: dict[str, tuple[Candidate, ...]], assignments: tuple[Assignment, ...],
    critical: set[str],
) -> dict[str, Explanation]:
    """The module docstring's heuristic, per fragment with replicas in the plan."""
    free = {c.device_class: c.slices for c in problem.device_classes}
    cost: dict[str, dict[str, float]] = defaultdict(dict)
    placed: dict[str, dict[str, int]] = defaultdict(dict)
    split: dict[str, dict[Phase, list[str]]] = defaultdict(lambda: defaultdict(list))
    for a in assignments:
        free[a.device_class] -= a.replicas * a.slices
        cost[a.fragment][a.device_class] = cost[a.fragment].get(a.device_class, 0.0) + a.usd_per_hour
        placed[a.fragment][a.device_class] = placed[a.fragment].get(a.device_class, 0) + a.replicas
        if a.phase is not Phase.whole:
            split[a.fragment][a.phase].append(a.device_class)
    current = defaultdict(dict)
    for a in problem.current:
        current[a.fragment][a.device_class] = a.replicas
    out = {}
    for f in problem.fragments:
        if f.fragment not in cost:
            continue
        mine = sum(cost[f.fragment].values())
        primary = max(cost[f.fragment], key=cost[f.fragment].get)
        cands = candidates[f.fragment]
        # (alone $/h, class, alone replicas) of the cheapest class other than primary, and of the
        # cheapest class cheaper alone than f's plan cost (ties go to the first class by name)
        runner = cheapest = None
        for c, n in zip(cands, replicas_alone_each(f, cands, problem.headroom), strict=True):
            if n is None:
                continue
            option = (n * c.usd_per_replica, c.device_class, n)
            if c.device_class != primary and (runner is None or option < runner):
                runner = option
            if option[0] < mine - _EPS and (cheapest is None or option < cheapest):
                cheapest = option
        if f.fragment in split:
            pools = split[f.fragment]
            binding = (f"split: prefill on {', '.join(sorted(pools[Phase.prefill]))}, decode on "
                       f"{', '.join(sorted(pools[Phase.decode]))} (cheaper than whole replicas, KV hand-off included)")
        elif f.pinned:
            binding = f"pinned to {', '.join(f.pinned)}"
        elif cheapest is None:
            binding = "cheapest per throughput"
        else:
            _, name, n = cheapest
            by_class = {c.device_class: c for c in cands}
            if free[name] + placed[f.fragment].get(name, 0) * by_class[name].slices < n * by_class[name].slices:
                binding = f"capacity of {name}"
            elif f.fragment in critical and by_class[name].latency_ms > by_class[primary].latency_ms:
                binding = f"latency bound of workload {f.workload}"
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
    pools: Pools | None = None,
) -> dict:
    """Keyword arguments of `Plan` that follow from the assignments alone, its cost included."""
    units = units_of(assignments)
    devices, idle = device_costs(classes, assignments)
    used: dict[str, dict[str, int]] = defaultdict(dict)
    for (f, _), by_class in units.items():
        for c, n in by_class.items():
            used[f][c] = used[f].get(c, 0) + n
    latency = {(f, c.device_class, Phase.whole): c.latency_ms
               for (f, phase), by_class in units.items() if phase is Phase.whole
               for c in candidates[f] if c.device_class in by_class}
    for f, by_phase in (pools or {}).items():
        for phase, cands in by_phase.items():
            latency.update({(f, c.device_class, phase): c.latency_ms for c in cands})
    p99, critical = predicted_p99(problem, graph, classes, own_latency(problem, classes, latency, units), used)
    return dict(
        predicted_p99_ms=p99,
        moves=moves(problem.current, units),
        explanations=explain(problem, candidates, assignments, critical),
        usd_per_hour=sum((a.usd_per_hour for a in assignments), 0.0) + sum(idle.values(), 0.0),
        devices_used=devices,
        cost_breakdown=breakdown(problem, assignments, idle),
        migration_usd_per_hour=migration_usd(problem, units),
    )
