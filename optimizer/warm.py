"""Which part of a re-solve may keep what runs: the neighbourhood a warm start re-optimises.

A re-solve with a current placement usually differs from the last problem in a few fragments'
demand. A fragment is *settled* when its current placement is still right for it on its own:

    * it runs whole replicas only (no pools, no buckets, and no pools it could now split into),
      all on classes still allowed for it;
    * they serve its demand x headroom and its min replicas;
    * no single replica could go (dropping any one would break demand or min replicas);
    * moving it wholly to one other allowed class with room for it (slices no current replica
      uses) would not pay for itself: that class's cost for it alone plus half the migration cost
      per replica stopped and started is not below what it costs now (new or freed cheaper
      capacity frees it).

Fragments connected by edges share path SLAs, so the unit is the connected component: a
component is *free* when any of its fragments is not settled, and fixed otherwise. The warm path
re-solves the free components with CP-SAT on the capacity the fixed ones leave, and keeps the
fixed ones exactly as they run: their moves cost nothing and their cost is what it was.

That is a neighbourhood, not the whole search space: a fixed fragment that would now be cheaper
elsewhere (capacity freed by others) stays put, and the plan's bound is the whole problem's
fractional bound, so its gap says how far it may be from the optimum. `solve` uses it only when the
free part is at most WARM_MAX_FREE_SHARE of the fragments, the fixed part fits the fleet, and the
joined plan meets every SLA; otherwise it solves the whole problem.
"""

from collections import Counter
from dataclasses import dataclass, replace

from optimizer.candidates import Candidate, needed_units, replicas_alone_each, supply_units
from optimizer.explain import units_of
from optimizer.packing import min_devices
from optimizer.prepare import Prepared
from optimizer.types import Assignment, ClassCapacity, FragmentDemand, Phase, Problem

WARM_MAX_FREE_SHARE = 0.5


@dataclass(frozen=True)
class Neighbourhood:
    """The free sub-problem (on the capacity left over) and the fixed assignments kept as they run."""

    problem: Problem
    classes: dict[str, ClassCapacity]
    fixed: tuple[Assignment, ...]


def neighbourhood(problem: Problem, prepared: Prepared) -> Neighbourhood | None:
    """The module docstring's split of `problem`, or None when the whole problem should be solved."""
    if not problem.current:
        return None
    units = units_of(problem.current)
    runs = {f: dict(by_class) for (f, phase), by_class in units.items() if phase is Phase.whole}
    pooled = {f for f, phase in units if phase is not Phase.whole}
    room = {c.device_class: c.slices for c in problem.device_classes}
    for a in problem.current:
        if a.device_class in room:
            room[a.device_class] -= a.replicas * a.slices
    component = _components(problem)
    free_components = {component[f.fragment] for f in problem.fragments
                       if f.fragment in pooled or not _settled(f, runs.get(f.fragment, {}), prepared, problem.headroom,
                                                               problem.migration_cost_usd, room)}
    free = tuple(f for f in problem.fragments if component[f.fragment] in free_components)
    if len(free) > WARM_MAX_FREE_SHARE * len(problem.fragments):
        return None
    names = {f.fragment for f in free}
    fixed = []
    reserved: dict[str, Counter[int]] = {}
    for f in problem.fragments:
        if f.fragment in names:
            continue
        by_class = {c.device_class: c for c in prepared.candidates[f.fragment]}
        for name, n in runs.get(f.fragment, {}).items():
            c = by_class[name]
            fixed.append(Assignment(f.fragment, name, n, c.slices, n * c.usd_per_replica))
            reserved.setdefault(name, Counter())[c.slices] += n
    left = {}
    for cls in problem.device_classes:
        used = min_devices(cls, reserved.get(cls.device_class, {}))
        if used is None:
            return None  # what runs no longer fits (devices went unhealthy): re-place everything
        # The devices the fixed part occupies are gone (their spare slices too), taken from the
        # smallest nodes first; `solve` checks that the joined plan packs.
        left[cls.device_class] = replace(cls, devices=cls.devices - used,
                                         node_devices=_without(cls.node_devices, used))
    workloads = {f.workload for f in free}
    sub = replace(
        problem,
        device_classes=tuple(left.values()),
        fragments=free,
        edges=tuple(e for e in problem.edges if e.parent in names),
        slas=tuple(s for s in problem.slas if s.workload in workloads),
        current=tuple(a for a in problem.current if a.fragment in names),
    )
    return Neighbourhood(sub, left, tuple(fixed))


def _without(nodes: tuple[int, ...], devices: int) -> tuple[int, ...]:
    """Node sizes after `devices` are taken, from the smallest nodes first."""
    out = []
    for d in sorted(nodes):
        take = min(d, devices)
        devices -= take
        out.append(d - take)
    return tuple(out)


def _settled(f: FragmentDemand, runs: dict[str, int], prepared: Prepared, headroom: float,
             migration_cost_usd: float, room: dict[str, int]) -> bool:
    if f.buckets or f.fragment in prepared.pools:
        return False
    if not runs:  # nothing runs: settled only if nothing has to
        return needed_units(f, headroom) == 0 and f.min_replicas == 0
    by_class: dict[str, Candidate] = {c.device_class: c for c in prepared.candidates[f.fragment]}
    if any(name not in by_class for name in runs):
        return False
    need = needed_units(f, headroom)
    supply = sum(n * supply_units(by_class[name].throughput_rps) for name, n in runs.items())
    count = sum(runs.values())
    if supply < need or count < f.min_replicas:
        return False
    if not all(supply - supply_units(by_class[name].throughput_rps) < need or count - 1 < f.min_replicas
               for name in runs):
        return False
    # Would moving it wholly to one class pay for the move (the objective's terms, capacity aside)?
    cost = sum(n * by_class[name].usd_per_replica for name, n in runs.items())
    half_move = migration_cost_usd / 2
    for c, n in zip(prepared.candidates[f.fragment], replicas_alone_each(f, prepared.candidates[f.fragment], headroom),
                    strict=True):
        fits = n is not None and n * c.slices <= room[c.device_class] + runs.get(c.device_class, 0) * c.slices
        if fits and n * c.usd_per_replica + half_move * (count + n) < cost - 1e-9:
            return False
    return True


def _components(problem: Problem) -> dict[str, str]:
    """Each fragment's connected component (by edges, either direction), named by one member."""
    parent = {f.fragment: f.fragment for f in problem.fragments}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in problem.edges:
        a, b = root(e.parent), root(e.child)
        if a != b:
            parent[a] = b
    return {f: root(f) for f in parent}
