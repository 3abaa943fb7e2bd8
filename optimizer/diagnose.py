"""Why no placement exists: which fragment, capacity or SLA cannot be met, and by how much."""

from optimizer.candidates import (
    RPS_SCALE,
    Candidate,
    Pools,
    needed_units,
    replicas_alone,
    supply_units,
    why_no_class,
)
from optimizer.graph import Graph, longest_paths, path_from, workload_p99
from optimizer.reasons import ms, rps
from optimizer.types import ClassCapacity, Edge, Problem


def diagnose_fragments(
    problem: Problem, classes: dict[str, ClassCapacity], candidates: dict[str, tuple[Candidate, ...]],
    pools: Pools | None = None,
) -> tuple[str, ...]:
    """Fragments that cannot be served even with the whole fleet to themselves (whole, or split
    into prefill and decode pools where it may be)."""
    messages = []
    slas = {s.workload: s for s in problem.slas}
    for f in problem.fragments:
        need = needed_units(f, problem.headroom)
        if need == 0 and f.min_replicas == 0 and not any(b.rate_rps > 0 for b in f.buckets):
            continue
        if pools and f.fragment in pools and all(_fleet_supply(c, need) >= need for c in pools[f.fragment].values()):
            continue
        cands = candidates[f.fragment]
        if not cands:
            why = why_no_class(f, classes, slas.get(f.workload))
            messages.append(f"fragment {f.fragment!r}: no allowed device class: {why}")
            continue
        allowed = {c.device_class for c in cands} if f.buckets else set()
        for b in f.buckets:
            if b.rate_rps > 0 and not any(t > 0 and c in allowed for c, t in b.throughput):
                messages.append(
                    f"fragment {f.fragment!r}: bucket {b.bucket!r} ({rps(b.rate_rps)}) has no throughput on any "
                    f"allowed class ({', '.join(sorted(allowed))})"
                )
        if (supply := _fleet_supply(cands, need)) < need:  # then the whole supply was counted
            detail = ", ".join(f"{c.device_class}: {c.max_replicas} replicas x {rps(c.throughput_rps)}" for c in cands)
            messages.append(
                f"fragment {f.fragment!r}: needs {rps(f.demand_rps * problem.headroom)} "
                f"({rps(f.demand_rps)} demanded x headroom {problem.headroom:g}) but the whole fleet serves at "
                f"most {rps(supply / RPS_SCALE)} of it ({detail})"
            )
        # room is at least the first class's: sum the rest only when that falls short
        if f.min_replicas > cands[0].max_replicas and (room := sum(c.max_replicas for c in cands)) < f.min_replicas:
            messages.append(
                f"fragment {f.fragment!r}: needs at least {f.min_replicas} replicas "
                f"but the fleet has room for {room}"
            )
    return tuple(messages)


def _fleet_supply(cands: tuple[Candidate, ...], enough: int) -> int:
    """Micro-visits/s of a fragment with every class to itself, counted only until it reaches `enough`."""
    total = 0
    for c in cands:
        total += c.max_replicas * supply_units(c.throughput_rps)
        if total >= enough:
            break
    return total


def diagnose_slas(
    problem: Problem, graph: Graph, classes: dict[str, ClassCapacity], candidates: dict[str, tuple[Candidate, ...]]
) -> tuple[str, ...]:
    """SLAs no placement can meet even with unlimited capacity: each fragment on its fastest class.

    The bound uses, per fragment, its lowest allowed latency and, per edge, no transfer when both
    ends may share a class and otherwise the cheapest transfer between allowed classes.
    """
    if graph.cycle:
        return (f"the call graph has a cycle ({' -> '.join(graph.cycle)}): its path latency is unbounded",)
    fastest = {f: min((c.latency_ms for c in candidates[f]), default=0.0) for f in graph.order}
    allowed = {f: {c.device_class for c in candidates[f]} for f in graph.order}

    def transfer_ms(e: Edge) -> float:  # min_transfer_ms, with its common case (a shared class) first
        if not allowed[e.parent].isdisjoint(allowed[e.child]):
            return 0.0
        return min_transfer_ms(problem, classes, candidates, e)

    below, via = longest_paths(graph, fastest.__getitem__, transfer_ms)
    messages = []
    worst = workload_p99(graph, below)
    for sla in problem.slas:
        best, root = worst.get(sla.workload, (0.0, None))
        if root is not None and best > sla.p99_ms:
            messages.append(
                f"workload {sla.workload!r}: predicted p99 at best {ms(best)} vs SLA {ms(sla.p99_ms)}: no device "
                f"class of this fleet is fast enough, even with every fragment on its fastest class "
                f"(slowest path: {' -> '.join(path_from(root, via))})"
            )
    return tuple(messages)


def min_transfer_ms(
    problem: Problem, classes: dict[str, ClassCapacity], candidates: dict[str, tuple[Candidate, ...]], edge: Edge
) -> float:
    ends = [c.device_class for c in candidates[edge.parent]], [c.device_class for c in candidates[edge.child]]
    if set(ends[0]) & set(ends[1]):
        return 0.0
    return min(
        (problem.transfer.ms(edge.bytes_per_call, classes[a], classes[b]) for a in ends[0] for b in ends[1]),
        default=0.0,
    )


def diagnose_capacity(problem: Problem, candidates: dict[str, tuple[Candidate, ...]]) -> tuple[str, ...]:
    """Which classes run short when every fragment fits alone but not all of them together."""
    capacity = {cls.device_class: cls.slices for cls in problem.device_classes}
    pinned: dict[str, list[tuple[str, int]]] = {}
    cheapest: dict[str, list[tuple[str, int]]] = {}
    for f in problem.fragments:
        options = [(c, n) for c in candidates[f.fragment] if (n := replicas_alone(f, c, problem.headroom))]
        if not options:
            continue
        if len(options) == 1:
            cand, n = options[0]
            pinned.setdefault(cand.device_class, []).append((f.fragment, n * cand.slices))
        cand, n = min(options, key=lambda o: o[1] * o[0].usd_per_replica)
        cheapest.setdefault(cand.device_class, []).append((f.fragment, n * cand.slices))

    per_device = {cls.device_class: cls.slices_per_device for cls in problem.device_classes}
    messages = [
        _shortage(name, needs, capacity[name], per_device[name], "fragments that can only run there")
        for name, needs in pinned.items()
        if sum(s for _, s in needs) > capacity[name]
    ]
    if not messages:
        messages = [
            _shortage(name, needs, capacity[name], per_device[name], "fragments for which it is the cheapest class")
            for name, needs in cheapest.items()
            if sum(s for _, s in needs) > capacity[name]
        ]
    if not messages:
        fleet = ", ".join(f"{cls.devices} {cls.device_class}" for cls in problem.device_classes)
        messages = [f"every fragment fits alone but not all together on the healthy devices ({fleet}); "
                    "more devices are needed"]
    return tuple(messages)


def diagnose_sla_with_capacity(problem: Problem, best_paths: dict[str, float]) -> tuple[str, ...]:
    """Capacity alone and each SLA alone can be met, but not all of them together: the classes fast
    enough for the SLAs are too few for all of their workloads at once. (Each SLA is above its best
    possible path, so its slack is no cause and is not shown.)"""
    detail = ", ".join(
        f"{s.workload!r} (SLA {ms(s.p99_ms)}, {ms(best_paths.get(s.workload, 0.0))} on the fastest classes)"
        for s in problem.slas
    )
    return (
        "the healthy devices can serve the demand, and each SLA alone can be met, but the device classes fast "
        f"enough are too few for all of these workloads at once: {detail}; add devices of the fast classes, "
        "or relax a p99",
    )


def _shortage(device_class: str, needs: list[tuple[str, int]], capacity: int, slices_per_device: int, who: str) -> str:
    """A class short of devices: the devices its fragments need (slices rounded up) against its healthy ones."""
    def whole(slices: int) -> int:
        return -(-slices // slices_per_device)

    total = sum(s for _, s in needs)
    detail = ", ".join(f"{name} {_in_devices(s, slices_per_device)}" for name, s in needs)
    return (
        f"class {device_class!r} is short by {whole(total) - capacity // slices_per_device} devices: {who} need "
        f"{_in_devices(total, slices_per_device)} ({detail}) but it has {capacity // slices_per_device} healthy"
    )


def _in_devices(slices: int, slices_per_device: int) -> str:
    if slices_per_device == 1 or slices % slices_per_device == 0:
        return f"{slices // slices_per_device} devices"
    return f"{slices / slices_per_device:.1f} devices ({slices} slices)"
