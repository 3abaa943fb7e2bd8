"""The fast path: a placement in milliseconds from the same candidates, and the CP-SAT hint.

1. Keep the current placement of every fragment whose current classes are all still allowed
   (as much of it as capacity holds): a warm re-solve starts from what runs.
2. Place the rest of each fragment's demand x headroom (and min replicas) on its classes in order
   of the price of serving it alone there (replicas needed x price per replica, so rounding up to
   whole replicas counts), spilling to the next class when one runs out of slices. Fragments
   that lose most when they miss their first class (the gap to their second) go first, so a
   class that runs short goes to those that gain most from it. (`solve` passes the classes its
   linear relaxation chose, optimizer.prices: those are tried first.)
3. Repair SLAs: while a workload's worst path exceeds its p99, move one fragment on that path
   wholly to another class (faster, or the same class as a neighbour, saving a transfer) where
   capacity allows, choosing the move that cuts the path most per extra $/h.

The plan's lower bound is `fractional_bound`: every fragment at its best price per visit/s (or
its min replicas at the cheapest price per replica), ignoring capacity and whole replicas.
"""

import time
from collections import defaultdict
from math import inf

from optimizer.buckets import bucket_loads, fill_buckets
from optimizer.candidates import Candidate, Pools, needed_units, replicas_alone, replicas_alone_each, supply_units
from optimizer.explain import change_limit_broken, plan_fields, units_of
from optimizer.graph import Graph, longest_paths, path_from, reachable, workload_p99
from optimizer.packing import Room
from optimizer.prepare import prepare, unpack
from optimizer.types import Assignment, ClassCapacity, FragmentDemand, Phase, Plan, PlanStatus, Problem

_MAX_REPAIRS_PER_FRAGMENT = 3


def greedy(problem: Problem) -> Plan:
    """A feasible plan fast, or an infeasible one naming why (a diagnosis, or that greedy gave up)."""
    started = time.perf_counter()
    classes, candidates, graph, diagnosis = unpack(prepare(problem))
    placed = None if diagnosis else greedy_assignments(problem, classes, candidates, graph)
    if placed is None:
        diagnosis = diagnosis or ("the greedy fast path found no placement (not proven infeasible); run solve",)
        return Plan(PlanStatus.infeasible, solve_time_s=time.perf_counter() - started, diagnosis=diagnosis)
    assignments = tuple(
        Assignment(f, c, n, cand.slices, n * cand.usd_per_replica)
        for (f, c), n in placed.items() if n > 0
        for cand in candidates[f] if cand.device_class == c  # the one candidate of (f, c)
    )
    if broken := change_limit_broken(problem, units_of(assignments)):
        diagnosis = (f"the greedy fast path breaks a change limit ({broken}; not proven infeasible); run solve",)
        return Plan(PlanStatus.infeasible, solve_time_s=time.perf_counter() - started, diagnosis=diagnosis)
    bound = fractional_bound(problem, candidates)
    split = bucket_split(problem, candidates, placed)
    if any(f.buckets and f.fragment not in split for f in problem.fragments):
        # The split re-derived from the final replicas did not fit: never hand out a plan that violates.
        diagnosis = ("the greedy fast path could not split bucketed demand over its replicas (not proven "
                     "infeasible); run solve",)
        return Plan(PlanStatus.infeasible, solve_time_s=time.perf_counter() - started, diagnosis=diagnosis)
    fields = plan_fields(problem, graph, classes, candidates, assignments)
    return Plan(PlanStatus.feasible, assignments, lower_bound_usd_per_hour=min(fields["usd_per_hour"], bound),
                solve_time_s=time.perf_counter() - started, bucket_split=split, **fields)


def bucket_split(problem: Problem, candidates: dict[str, tuple[Candidate, ...]],
                 replicas: dict[tuple[str, str], int]) -> dict[str, dict[str, dict[str, float]]]:
    """The served split of every bucketed fragment over the replicas it has (fill_buckets, no new replicas)."""
    out = {}
    for f in problem.fragments:
        if not f.buckets:
            continue
        cands = {c.device_class: c for c in candidates[f.fragment]}
        placed = {c: replicas.get((f.fragment, c), 0) for c in cands}
        loads = bucket_loads(f, candidates[f.fragment], problem.headroom)
        split = fill_buckets(loads, {c: x.usd_per_replica for c, x in cands.items()},
                             {c: x.slices for c, x in cands.items()}, placed, None)
        if split is not None:
            out[f.fragment] = loads.split_rps(split)
    return out


def fractional_bound(problem: Problem, candidates: dict[str, tuple[Candidate, ...]], pools: Pools | None = None) -> float:
    """sum_f max(min_c (d_f * h / r_fc) * u_fc, m_f * min_c u_fc) in $/h: a lower bound on any
    plan's cost (each fragment at its best price per visit/s, and at least m_f of its cheapest replicas).
    A fragment that may be split counts the cheaper of that and the same sum over its two pools."""
    return sum(fractional_single(problem, f, candidates[f.fragment], pools) for f in problem.fragments)


def fractional_single(problem: Problem, f: FragmentDemand, cands: tuple[Candidate, ...], pools: Pools | None = None) -> float:
    """`fractional_bound`'s term for one fragment."""
    split = None
    if pools and f.fragment in pools:
        split = sum(_fractional(f.demand_rps * problem.headroom, max(1, f.min_replicas), phase)
                    for phase in pools[f.fragment].values())
    if f.buckets:
        by_class = {c.device_class: c for c in cands}
        per_rps = sum(min((b.rate_rps * problem.headroom / t * by_class[name].usd_per_replica
                           for name, t in b.throughput if t > 0 and name in by_class), default=0.0)
                      for b in f.buckets)
    else:
        load = f.demand_rps * problem.headroom
        per_rps = min((load / c.throughput_rps * c.usd_per_replica for c in cands if c.throughput_rps > 0),
                      default=0.0)
    whole = max(per_rps, f.min_replicas * min((c.usd_per_replica for c in cands), default=0.0))
    if split is None:
        return whole
    return min(whole, split) if cands else split  # without whole candidates the fragment can only be split


def _fractional(load: float, min_replicas: int, cands: tuple[Candidate, ...]) -> float:
    per_rps = min((load / c.throughput_rps * c.usd_per_replica for c in cands if c.throughput_rps > 0), default=0.0)
    return max(per_rps, min_replicas * min((c.usd_per_replica for c in cands), default=0.0))


def greedy_assignments(
    problem: Problem, classes: dict[str, ClassCapacity], candidates: dict[str, tuple[Candidate, ...]], graph: Graph,
    prefer: dict[str, str] | None = None,
) -> dict[tuple[str, str], int] | None:
    """Replicas per (fragment, class) by the module docstring's steps; None when they find none.
    `prefer`: a class per fragment to try first (solve's LP choices), these fragments placed first."""
    free = Room(classes)
    placed: dict[str, dict[str, int]] = defaultdict(dict)
    current: dict[str, dict[str, int]] = defaultdict(dict)
    for a in problem.current:
        if a.phase is Phase.whole:  # greedy places whole replicas only; a split fragment starts afresh
            current[a.fragment][a.device_class] = a.replicas
    by_class = {f: {c.device_class: c for c in cs} for f, cs in candidates.items()}
    prefer = prefer or {}
    alone: dict[str, dict[str, float]] = {}  # per fragment: class -> replicas alone x price per replica
    for f in problem.fragments:
        cands = candidates[f.fragment]
        alone[f.fragment] = {c.device_class: inf if n is None else n * c.usd_per_replica
                             for c, n in zip(cands, replicas_alone_each(f, cands, problem.headroom), strict=True)}

    def regret(f: FragmentDemand) -> float:
        costs = sorted(alone[f.fragment].values())
        return costs[1] - costs[0] if len(costs) > 1 else inf

    order = sorted(problem.fragments, key=lambda f: (f.fragment not in prefer, -regret(f)))
    for f in order:
        cands = by_class[f.fragment]
        need, count = needed_units(f, problem.headroom), f.min_replicas
        mine = placed[f.fragment]
        if current[f.fragment] and all(c in cands for c in current[f.fragment]):
            for name, n in current[f.fragment].items():
                n = free.add(name, cands[name].slices, n)
                if n > 0:
                    mine[name] = n
                    need -= n * supply_units(cands[name].throughput_rps)
                    count -= n
        if f.buckets:
            before = sum(mine.values())
            split = fill_buckets(bucket_loads(f, candidates[f.fragment], problem.headroom),
                                 {c: x.usd_per_replica for c, x in cands.items()},
                                 {c: x.slices for c, x in cands.items()}, mine, free)
            if split is None:
                return None
            count -= sum(mine.values()) - before
        for name in sorted(cands, key=lambda c: (c != prefer.get(f.fragment), alone[f.fragment][c])):
            if need <= 0 and count <= 0:
                break
            c = cands[name]
            supply = supply_units(c.throughput_rps)
            wanted = max(count, -(-need // supply) if supply else (0 if need <= 0 else 0))
            n = free.add(name, c.slices, wanted)
            if n > 0:
                mine[name] = mine.get(name, 0) + n
                need -= n * supply
                count -= n
        if need > 0 or count > 0:
            return None
    if problem.slas and not _repair_slas(problem, classes, by_class, graph, placed, free):
        return None
    return {(f, c): n for f, by_class in placed.items() for c, n in by_class.items()}


def _repair_slas(problem: Problem, classes: dict[str, ClassCapacity], cands: dict[str, dict[str, Candidate]],
                 graph: Graph, placed: dict[str, dict[str, int]], free: Room) -> bool:
    """Step 3 of the module docstring, workload by workload over the fragments its paths reach
    (`cands`: each fragment's candidates by class)."""
    repair = _Repair(problem, classes, cands, graph, placed, free)
    p99 = {s.workload: s.p99_ms for s in problem.slas}
    orders = {w: reachable(graph, roots) for w, roots in graph.roots.items()}
    for _ in range(2):  # a repair for one workload may slow a fragment another workload shares
        moves_before = repair.moves
        for w, roots in graph.roots.items():
            if not repair.workload(roots, orders[w], p99[w]):
                return False
        if repair.moves == moves_before:  # every workload was checked on the placement as it stands
            return True
    below, _ = repair.evaluate(graph.order)
    return all(v <= p99[w] + 1e-9 for w, (v, _) in workload_p99(graph, below).items())


class _Repair:
    """The placement being repaired (`placed`, `free` are updated in place) and how to evaluate it.

    The classes each fragment uses and its latency there are kept beside `placed` (updated with
    every move), and transfer times are memoised per (bytes, classes at each end): evaluating a
    workload is then one pass of dictionary look-ups over its fragments.
    """

    def __init__(self, problem: Problem, classes: dict[str, ClassCapacity], cands: dict[str, dict[str, Candidate]],
                 graph: Graph, placed: dict[str, dict[str, int]], free: Room) -> None:
        self.problem, self.classes, self.graph, self.placed, self.free = problem, classes, graph, placed, free
        self.fragments = {f.fragment: f for f in problem.fragments}
        self.cands = cands
        self.repairs: dict[str, int] = defaultdict(int)
        self.moves = 0
        self.used: dict[str, tuple[str, ...]] = {}
        self.latency: dict[str, float] = {}
        for f in problem.fragments:
            self._update(f.fragment)
        self._transfers: dict[tuple[float, tuple[str, ...], tuple[str, ...]], float] = {}

    def _update(self, f: str) -> None:
        self.used[f] = used = tuple(self.placed[f])
        self.latency[f] = max((self.cands[f][c].latency_ms for c in used), default=0.0)

    def _transfer_ms(self, nbytes: float, src: tuple[str, ...], dst: tuple[str, ...]) -> float:
        """The slowest transfer of `nbytes` from any class in `src` to any other class in `dst`."""
        key = (nbytes, src, dst)
        ms = self._transfers.get(key)
        if ms is None:
            ms = self._transfers[key] = max((self.problem.transfer.ms(nbytes, self.classes[a], self.classes[b])
                                             for a in src for b in dst if a != b), default=0.0)
        return ms

    def evaluate(self, order: tuple[str, ...], override: tuple[str, str] | None = None):
        """longest_paths over `order` with the current placement, or with one fragment moved."""
        if override is None:
            used, latency = self.used.__getitem__, self.latency.__getitem__
        else:
            moved, name = override
            moved_ms = self.cands[moved][name].latency_ms

            def used(f: str) -> tuple[str, ...]:
                return (name,) if f == moved else self.used[f]

            def latency(f: str) -> float:
                return moved_ms if f == moved else self.latency[f]

        def xfer(e) -> float:
            return self._transfer_ms(e.bytes_per_call, used(e.parent), used(e.child))
        return longest_paths(self.graph, latency, xfer, order)

    def workload(self, roots: tuple[str, ...], order: tuple[str, ...], p99: float) -> bool:
        """Move fragments of the worst path until it meets p99; False when no move helps."""
        while True:
            below, via = self.evaluate(order)
            worst, root = max(((below[r], r) for r in roots), default=(0.0, None))
            if root is None or worst <= p99 + 1e-9:
                return True
            best = None
            for f in path_from(root, via):
                if self.repairs[f] >= _MAX_REPAIRS_PER_FRAGMENT:
                    continue
                for option in self._options(f):
                    gain = worst - self.evaluate(order, (f, option[0]))[0][root]
                    if gain > 1e-9 and (best is None or gain / option[2] > best[0]):
                        best = (gain / option[2], f, option)
            if best is None:
                return False
            _, f, (name, n, _) = best
            for c, k in self.placed[f].items():
                self.free.remove(c, self.cands[f][c].slices, k)
            self.placed[f] = {name: n}
            self.free.add(name, self.cands[f][name].slices, n)
            self._update(f)
            self.repairs[f] += 1
            self.moves += 1

    def _options(self, f: str):
        """(class, replicas, extra $/h, at least 1e-6) for moving all of f to one other class that has room."""
        mine = self.placed[f]
        before = sum(n * self.cands[f][c].usd_per_replica for c, n in mine.items())
        for name, c in self.cands[f].items():
            if set(mine) == {name}:
                continue
            n = replicas_alone(self.fragments[f], c, self.problem.headroom)
            if n is not None and n - mine.get(name, 0) <= self.free.fits(name, c.slices):
                yield name, n, max(n * c.usd_per_replica - before, 1e-6)
