"""An independent check of a `Plan` against its `Problem`, written apart from the solver on purpose."""

from collections import defaultdict

from optimizer.types import FragmentDemand, Plan, Problem, ServiceProfile

_REL_TOL = 1e-9


def check(problem: Problem, plan: Plan) -> list[str]:
    """Every way `plan` breaks `problem` (capacity, demand x headroom, min replicas, latency, names)."""
    if not plan.feasible:
        violations = [] if plan.diagnosis else ["infeasible plan has no diagnosis"]
        if plan.assignments:
            violations.append("infeasible plan carries assignments")
        return violations

    classes = {c.device_class: c for c in problem.device_classes}
    fragments = {f.fragment: f for f in problem.fragments}
    violations: list[str] = []
    slices_used: dict[str, int] = defaultdict(int)
    served: dict[str, float] = defaultdict(float)
    replicas: dict[str, int] = defaultdict(int)
    cost = 0.0

    for a in plan.assignments:
        where = f"{a.fragment}@{a.device_class}"
        fragment, cls = fragments.get(a.fragment), classes.get(a.device_class)
        if fragment is None:
            violations.append(f"{where}: unknown fragment")
        if cls is None:
            violations.append(f"{where}: unknown device class")
        if fragment is None or cls is None:
            continue
        if a.replicas <= 0:
            violations.append(f"{where}: {a.replicas} replicas listed")
        profile = _profile(fragment, a.device_class)
        if profile is None:
            violations.append(f"{where}: fragment has no profile on this class")
            continue
        if a.slices != profile.slices:
            violations.append(f"{where}: {a.slices} slices per replica, profile says {profile.slices}")
        if fragment.latency_bound_ms is not None and profile.latency_ms > fragment.latency_bound_ms:
            violations.append(f"{where}: latency {profile.latency_ms} ms > bound {fragment.latency_bound_ms} ms")
        expected_usd = a.replicas * a.slices * cls.usd_per_hour / cls.slices_per_device
        if not _close(a.usd_per_hour, expected_usd):
            violations.append(f"{where}: costs {a.usd_per_hour} $/h, expected {expected_usd}")
        slices_used[a.device_class] += a.replicas * a.slices
        served[a.fragment] += a.replicas * profile.throughput_rps
        replicas[a.fragment] += a.replicas
        cost += expected_usd

    for name, used in slices_used.items():
        if used > classes[name].devices * classes[name].slices_per_device:
            violations.append(f"class {name}: {used} slices used > {classes[name].slices} available")
    for f in problem.fragments:
        required = f.demand_rps * problem.headroom
        if served[f.fragment] < required * (1 - _REL_TOL):
            violations.append(f"fragment {f.fragment}: serves {served[f.fragment]} rps < {required} rps required")
        if replicas[f.fragment] < f.min_replicas:
            violations.append(f"fragment {f.fragment}: {replicas[f.fragment]} replicas < min {f.min_replicas}")
    if not _close(plan.usd_per_hour, cost):
        violations.append(f"plan costs {plan.usd_per_hour} $/h but its assignments sum to {cost}")
    if plan.lower_bound_usd_per_hour > plan.usd_per_hour * (1 + _REL_TOL) + _REL_TOL:
        violations.append(f"lower bound {plan.lower_bound_usd_per_hour} exceeds cost {plan.usd_per_hour}")
    return violations


def _profile(fragment: FragmentDemand, device_class: str) -> ServiceProfile | None:
    # The documented precedence: a measured profile beats an estimate; the first listed wins otherwise.
    matching = [p for p in fragment.profiles if p.device_class == device_class]
    measured = [p for p in matching if p.measured]
    return (measured or matching or [None])[0]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _REL_TOL * max(1.0, abs(a), abs(b))
