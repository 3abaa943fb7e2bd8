"""An independent check of a `Plan` against its `Problem`, written apart from the solver on purpose."""

import math
from collections import Counter, defaultdict

from optimizer.checker_packing import device_violations
from optimizer.types import ClassCapacity, Edge, FragmentDemand, Phase, Plan, Problem, ServiceProfile, WorkloadSla

_REL_TOL = 1e-9
# A class's bucketed load may exceed its replicas by this share of them: float rounding of the
# division rate / throughput, chosen here on its own (never the solver's tolerance).
_BUCKET_LOAD_REL_TOL = 1e-7


def check(problem: Problem, plan: Plan) -> list[str]:
    """Every way `plan` breaks `problem`: capacity, demand x headroom, min replicas, latency bounds,
    memory, pins and forbids, names, TTFT and TPOT, and every SLA along the call graph (with
    transfers). A split LLM fragment has prefill and decode pools (never whole replicas beside them),
    each serving the fragment's demand x headroom with at least min replicas. With
    max_changed_fragments, no more running fragments change their replicas than that; with
    change_limits, no more than each group's limit of its running fragments."""
    if not plan.feasible:
        violations = [] if plan.diagnosis else ["infeasible plan has no diagnosis"]
        if plan.assignments:
            violations.append("infeasible plan carries assignments")
        return violations

    classes = {c.device_class: c for c in problem.device_classes}
    fragments = {f.fragment: f for f in problem.fragments}
    violations: list[str] = []
    sizes: dict[str, Counter[int]] = defaultdict(Counter)
    served: dict[tuple[str, Phase], float] = defaultdict(float)
    replicas: dict[tuple[str, Phase], int] = defaultdict(int)
    slas = {s.workload: s for s in problem.slas}
    cost = 0.0

    for a in plan.assignments:
        where = f"{a.fragment}{'/' + a.phase if a.phase else ''}@{a.device_class}"
        fragment, cls = fragments.get(a.fragment), classes.get(a.device_class)
        if fragment is None:
            violations.append(f"{where}: unknown fragment")
        if cls is None:
            violations.append(f"{where}: unknown device class")
        if fragment is None or cls is None:
            continue
        if a.replicas <= 0:
            violations.append(f"{where}: {a.replicas} replicas listed")
        profile = _profile(fragment, a.device_class, a.phase)
        if profile is None:
            violations.append(f"{where}: fragment has no {a.phase or 'whole'} profile on this class")
            continue
        if a.phase and fragment.latency_bound_ms is not None:
            violations.append(f"{where}: a fragment with its own latency bound is never split")
        violations += _token_violations(where, profile, slas.get(fragment.workload))
        if a.slices != profile.slices:
            violations.append(f"{where}: {a.slices} slices per replica, profile says {profile.slices}")
        if fragment.pinned and a.device_class not in fragment.pinned:
            violations.append(f"{where}: fragment is pinned to {', '.join(fragment.pinned)}")
        if a.device_class in fragment.forbidden:
            violations.append(f"{where}: class is forbidden for this fragment")
        if fragment.memory_gib_per_replica is not None and cls.memory_gib_per_device > 0:
            has = cls.memory_gib_per_device * profile.slices / cls.slices_per_device
            if fragment.memory_gib_per_replica > has * (1 + _REL_TOL):
                violations.append(f"{where}: a replica needs {fragment.memory_gib_per_replica} GiB > {has} GiB")
        if fragment.latency_bound_ms is not None and profile.latency_ms > fragment.latency_bound_ms:
            violations.append(f"{where}: latency {profile.latency_ms} ms > bound {fragment.latency_bound_ms} ms")
        expected_usd = a.replicas * a.slices * cls.usd_per_hour / cls.slices_per_device
        if not _close(a.usd_per_hour, expected_usd):
            violations.append(f"{where}: costs {a.usd_per_hour} $/h, expected {expected_usd}")
        if a.slices > cls.slices_per_device and a.slices % cls.slices_per_device:
            violations.append(f"{where}: {a.slices} slices is more than a device but not whole devices")
        sizes[a.device_class][a.slices] += a.replicas
        served[a.fragment, a.phase] += a.replicas * profile.throughput_rps
        replicas[a.fragment, a.phase] += a.replicas

    for name, by_size in sizes.items():
        cls = classes[name]
        claimed = plan.devices_used.get(name)
        if claimed is None:
            violations.append(f"class {name}: plan does not say how many devices it occupies")
            continue
        violations += [f"class {name}: {v}" for v in device_violations(cls, by_size, claimed)]
        if cls.sold_by_slice:
            cost += sum(n * s for s, n in by_size.items()) * cls.usd_per_hour / cls.slices_per_device
        else:
            cost += claimed * cls.usd_per_hour
    on_class: dict[str, dict[str, int]] = defaultdict(dict)
    for a in plan.assignments:
        on_class[a.fragment][a.device_class] = on_class[a.fragment].get(a.device_class, 0) + a.replicas
    for f in problem.fragments:
        split = replicas[f.fragment, Phase.prefill] + replicas[f.fragment, Phase.decode] > 0
        if split and (f.buckets or replicas[f.fragment, Phase.whole]):
            violations.append(f"fragment {f.fragment}: split into pools but also has whole replicas or buckets")
        if f.buckets:
            violations += _bucket_violations(problem, plan, f, on_class[f.fragment])
        required = 0.0 if f.buckets else f.demand_rps * problem.headroom
        for phase in (Phase.prefill, Phase.decode) if split else (Phase.whole,):
            what = f"fragment {f.fragment}" + (f" {phase} pool" if phase else "")
            if served[f.fragment, phase] < required * (1 - _REL_TOL):
                violations.append(f"{what}: serves {served[f.fragment, phase]} rps < {required} rps required")
            if replicas[f.fragment, phase] < max(f.min_replicas, int(split)):
                violations.append(f"{what}: {replicas[f.fragment, phase]} replicas < min {f.min_replicas}")
    violations += _sla_violations(problem, plan, classes, fragments)
    running: dict[str, set[tuple[str, Phase, int]]] = defaultdict(set)
    for a in problem.current:
        running[a.fragment].add((a.device_class, a.phase, a.replicas))
    planned: dict[str, set[tuple[str, Phase, int]]] = defaultdict(set)
    for a in plan.assignments:
        planned[a.fragment].add((a.device_class, a.phase, a.replicas))
    changed = sorted(f for f, units in running.items() if units != planned[f])
    if problem.max_changed_fragments is not None and len(changed) > problem.max_changed_fragments:
        violations.append(f"{len(changed)} running fragments change ({', '.join(changed[:5])}...) > "
                          f"max_changed_fragments {problem.max_changed_fragments}")
    for group in problem.change_limits:
        members = set(group.fragments)
        changed_here = [f for f in changed if f in members]
        if len(changed_here) > group.limit:
            violations.append(f"{len(changed_here)} running fragments of a change-limit group change "
                              f"({', '.join(changed_here[:5])}) > its limit {group.limit}")
    if not _close(plan.usd_per_hour, cost):
        violations.append(f"plan costs {plan.usd_per_hour} $/h but its assignments sum to {cost}")
    if plan.lower_bound_usd_per_hour > plan.usd_per_hour * (1 + _REL_TOL) + _REL_TOL:
        violations.append(f"lower bound {plan.lower_bound_usd_per_hour} exceeds cost {plan.usd_per_hour}")
    return violations


def _bucket_violations(problem: Problem, plan: Plan, fragment: FragmentDemand, replicas: dict[str, int]) -> list[str]:
    """Bucketed demand: every bucket's rate x headroom is served by the plan's split, only on classes
    with throughput for it, and on each class sum_b served_b / T_bc <= the replicas there."""
    violations = []
    split = plan.bucket_split.get(fragment.fragment, {})
    load: dict[str, float] = defaultdict(float)
    known = {b.bucket for b in fragment.buckets}
    for name in split:
        if name not in known:
            violations.append(f"fragment {fragment.fragment}: split names unknown bucket {name!r}")
    for b in fragment.buckets:
        tput = dict(b.throughput)
        served = split.get(b.bucket, {})
        required = b.rate_rps * problem.headroom
        total = sum(served.values())
        if total < required * (1 - _REL_TOL) - _REL_TOL:
            violations.append(f"fragment {fragment.fragment} bucket {b.bucket}: serves {total} rps < {required} required")
        for c, rps in served.items():
            if rps < 0:
                violations.append(f"fragment {fragment.fragment} bucket {b.bucket}: {rps} rps on {c}")
            elif rps > 0:
                if tput.get(c, 0.0) <= 0:
                    violations.append(f"fragment {fragment.fragment} bucket {b.bucket}: served on {c}, "
                                      "which has no throughput for it")
                else:
                    load[c] += rps / tput[c]
    for c, replicas_needed in load.items():
        have = replicas.get(c, 0)
        # No tolerance creates capacity: a class without replicas carries nothing, and one with
        # replicas carries at most their throughput, up to float rounding relative to it.
        if replicas_needed > have * (1 + _BUCKET_LOAD_REL_TOL):
            violations.append(f"fragment {fragment.fragment}@{c}: bucket load {replicas_needed} replicas > {have}")
    return violations


def _sla_violations(
    problem: Problem, plan: Plan, classes: dict[str, ClassCapacity], fragments: dict[str, FragmentDemand]
) -> list[str]:
    """Each SLA workload's worst root-to-leaf path, recomputed from scratch.

    Path latency from f = f's own latency (its slowest used class; split: slowest prefill + slowest
    decode + slowest KV hand-off between them) + for the children it calls in turn, the sum of
    (calls a p99 visit makes) x (slowest transfer between a class f uses and a different class g
    uses + path latency from g) + for the children it calls concurrently, the largest one call of
    them; a root is a fragment of the workload that no edge from the same workload calls.
    """
    if not problem.slas:
        return []
    used: dict[str, set[str]] = defaultdict(set)
    by_phase: dict[tuple[str, Phase], set[str]] = defaultdict(set)
    for a in plan.assignments:
        if a.replicas > 0 and a.fragment in fragments and a.device_class in classes:
            used[a.fragment].add(a.device_class)
            by_phase[a.fragment, a.phase].add(a.device_class)

    def own_latency(f: str) -> float:
        """Slowest whole replica; for a split fragment, slowest prefill + slowest decode + slowest KV hand-off."""
        def slowest(phase: Phase) -> float:
            profiles = (_profile(fragments[f], c, phase) for c in by_phase[f, phase])
            return max((p.latency_ms for p in profiles if p is not None), default=0.0)
        if not by_phase[f, Phase.prefill] and not by_phase[f, Phase.decode]:
            return slowest(Phase.whole)
        kv = max((problem.transfer.ms(fragments[f].kv_bytes_per_request, classes[a], classes[b])
                  for a in by_phase[f, Phase.prefill] for b in by_phase[f, Phase.decode] if a != b), default=0.0)
        return max(slowest(Phase.whole), slowest(Phase.prefill) + slowest(Phase.decode) + kv)
    out_edges = defaultdict(list)
    for e in problem.edges:
        out_edges[e.parent].append(e)
    memo: dict[str, float] = {}
    active: set[str] = set()

    def latency_from(f: str) -> float:
        if f in memo:
            return memo[f]
        if f in active:
            raise _Cycle(f)
        active.add(f)
        own = own_latency(f)
        in_turn, side_by_side = 0.0, 0.0
        for e in out_edges[f]:
            calls = _calls_in_the_tail(e)
            if calls == 0:
                continue
            hop = max((problem.transfer.ms(e.bytes_per_call, classes[a], classes[b])
                       for a in used[f] for b in used[e.child] if a != b), default=0.0)
            one_call = hop + latency_from(e.child)
            if e.concurrent:
                side_by_side = max(side_by_side, one_call)
            else:
                in_turn += calls * one_call
        active.discard(f)
        memo[f] = own + in_turn + side_by_side
        return memo[f]

    violations = []
    for sla in problem.slas:
        members = [f for f in problem.fragments if f.workload == sla.workload]
        called = {e.child for e in problem.edges if fragments[e.parent].workload == sla.workload}
        try:
            worst = max((latency_from(f.fragment) for f in members if f.fragment not in called), default=0.0)
            if members and all(f.fragment in called for f in members):
                raise _Cycle(members[0].fragment)
        except _Cycle as cycle:
            violations.append(f"workload {sla.workload}: call graph has a cycle through {cycle.args[0]}")
            continue
        if worst > sla.p99_ms * (1 + _REL_TOL):
            violations.append(f"workload {sla.workload}: worst path {worst} ms > p99 {sla.p99_ms} ms")
        predicted = plan.predicted_p99_ms.get(sla.workload)
        if predicted is not None and not _close(predicted, worst):
            violations.append(f"workload {sla.workload}: predicted p99 {predicted} ms, recomputed {worst} ms")
    return violations


class _Cycle(Exception):
    pass


def _calls_in_the_tail(e: Edge) -> int:
    """Calls of the child a visit among the slowest 1% makes: the measured 99th percentile rounded
    up, else the mean rounded up; none when at most 1 visit in 100 calls it."""
    if e.calls_p99 is not None:
        return math.ceil(round(e.calls_p99, 6))
    if e.calls_per_parent_call <= 0.01:
        return 0
    return max(1, math.ceil(round(e.calls_per_parent_call, 6)))


def _token_violations(where: str, profile: ServiceProfile, sla: WorkloadSla | None) -> list[str]:
    """TTFT and TPOT bounds of the fragment's workload against what its profile states: a prefill
    replica's TTFT is its latency unless stated; a decode replica makes no first token."""
    if sla is None:
        return []
    ttft = profile.latency_ms if profile.phase is Phase.prefill and profile.ttft_ms is None else profile.ttft_ms
    out = []
    if sla.ttft_ms is not None and ttft is not None and profile.phase is not Phase.decode and ttft > sla.ttft_ms:
        out.append(f"{where}: TTFT {ttft} ms > bound {sla.ttft_ms} ms")
    if (sla.tpot_ms is not None and profile.tpot_ms is not None and profile.phase is not Phase.prefill
            and profile.tpot_ms > sla.tpot_ms):
        out.append(f"{where}: TPOT {profile.tpot_ms} ms > bound {sla.tpot_ms} ms")
    return out


def _profile(fragment: FragmentDemand, device_class: str, phase: Phase = Phase.whole) -> ServiceProfile | None:
    # The documented precedence: a measured profile beats an estimate; the first listed wins otherwise.
    matching = [p for p in fragment.profiles if p.device_class == device_class and p.phase == phase]
    measured = [p for p in matching if p.measured]
    return (measured or matching or [None])[0]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _REL_TOL * max(1.0, abs(a), abs(b))
