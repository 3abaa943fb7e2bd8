"""Which (fragment, device class) pairs a placement may use, with the integer units the solvers share."""

import math
from collections import Counter
from typing import NamedTuple

from optimizer.packing import fits_somewhere
from optimizer.reasons import gib, ms
from optimizer.types import ClassCapacity, FragmentDemand, Phase, Problem, ServiceProfile, WorkloadSla

RPS_SCALE = 1_000_000  # micro-visits per second
USD_SCALE = 1_000_000  # micro-dollars per hour
_ROUNDING_SLACK = 1e-6  # in scaled units: absorbs float noise such as 1.2 * 100 = 120.00000000000001


class Candidate(NamedTuple):
    """One allowed (fragment, class) pair with the numbers the model needs (a tuple: thousands are built per solve)."""

    fragment: str
    device_class: str
    slices: int  # per replica
    throughput_rps: float  # per replica
    latency_ms: float
    usd_per_replica: float
    max_replicas: int  # replicas the class could hold if f had it alone


# Per fragment that may be split into disaggregated pools: its prefill and its decode candidates.
Pools = dict[str, dict[Phase, tuple[Candidate, ...]]]


def validate(problem: Problem) -> None:
    """Raise ValueError naming the field when `problem` cannot be solved as given."""
    if problem.headroom <= 0:
        raise ValueError(f"headroom must be > 0, got {problem.headroom}")
    if problem.time_limit_s <= 0:
        raise ValueError(f"time_limit_s must be > 0, got {problem.time_limit_s}")
    if problem.migration_cost_usd < 0:
        raise ValueError(f"migration_cost_usd must be >= 0, got {problem.migration_cost_usd}")
    if problem.max_changed_fragments is not None and problem.max_changed_fragments < 0:
        raise ValueError(f"max_changed_fragments must be >= 0 or null, got {problem.max_changed_fragments}")
    for group in problem.change_limits:
        if group.limit < 0:
            raise ValueError(f"a change limit must be >= 0, got {group.limit}")
    _require_unique([c.device_class for c in problem.device_classes], "device_classes[].device_class")
    _require_unique([f.fragment for f in problem.fragments], "fragments[].fragment")
    _require_unique([s.workload for s in problem.slas], "slas[].workload")
    for cls in problem.device_classes:
        if cls.devices < 0 or cls.slices_per_device < 1 or cls.usd_per_hour < 0 or cls.memory_gib_per_device < 0:
            raise ValueError(
                f"device class {cls.device_class!r}: need devices >= 0, slices_per_device >= 1, "
                f"usd_per_hour >= 0 and memory_gib_per_device >= 0, got {cls.devices}, "
                f"{cls.slices_per_device}, {cls.usd_per_hour}, {cls.memory_gib_per_device}"
            )
        if cls.node_devices and (any(n < 0 for n in cls.node_devices) or sum(cls.node_devices) != cls.devices):
            raise ValueError(
                f"device class {cls.device_class!r}: node_devices must be >= 0 and sum to devices ({cls.devices}), "
                f"got {list(cls.node_devices)}"
            )
    classes = {c.device_class: c for c in problem.device_classes}
    for f in problem.fragments:
        if f.demand_rps < 0 or f.min_replicas < 0:
            raise ValueError(
                f"fragment {f.fragment!r}: demand_rps and min_replicas must be >= 0, "
                f"got {f.demand_rps} and {f.min_replicas}"
            )
        if f.buckets:
            _require_unique([b.bucket for b in f.buckets], f"fragment {f.fragment!r} buckets[].bucket")
            total = sum(b.rate_rps for b in f.buckets)
            if any(b.rate_rps < 0 or any(t < 0 for _, t in b.throughput) for b in f.buckets):
                raise ValueError(f"fragment {f.fragment!r}: bucket rate_rps and throughputs must be >= 0")
            if f.demand_rps and abs(f.demand_rps - total) > 1e-9 * max(1.0, total):
                raise ValueError(
                    f"fragment {f.fragment!r}: demand_rps must be 0 or the buckets' total rate "
                    f"({total:g}) when buckets are given, got {f.demand_rps:g}"
                )
        if f.memory_gib_per_replica is not None and f.memory_gib_per_replica < 0:
            raise ValueError(f"fragment {f.fragment!r}: memory_gib_per_replica must be >= 0")
        for p in f.profiles:
            if p.slices < 1 or p.throughput_rps < 0 or p.latency_ms < 0:
                raise ValueError(
                    f"fragment {f.fragment!r} profile on {p.device_class!r}: need slices >= 1, "
                    f"throughput_rps >= 0 and latency_ms >= 0"
                )
            cls = classes.get(p.device_class)
            if cls is not None and p.slices > cls.slices_per_device and p.slices % cls.slices_per_device:
                raise ValueError(
                    f"fragment {f.fragment!r} profile on {p.device_class!r}: a replica of more than one device "
                    f"takes whole devices, so slices must be at most {cls.slices_per_device} or a multiple of it; "
                    f"got {p.slices}"
                )
    names = {f.fragment for f in problem.fragments}
    for e in problem.edges:
        if e.parent not in names or e.child not in names:
            raise ValueError(f"edge {e.parent!r} -> {e.child!r}: both ends must be fragments of the problem")
        if e.calls_per_parent_call < 0 or e.bytes_per_call < 0:
            raise ValueError(f"edge {e.parent!r} -> {e.child!r}: calls_per_parent_call and bytes_per_call must be >= 0")
    for s in problem.slas:
        if s.p99_ms <= 0:
            raise ValueError(f"sla of workload {s.workload!r}: p99_ms must be > 0, got {s.p99_ms}")


def allowed_candidates(fragment: FragmentDemand, classes: dict[str, ClassCapacity], sla: WorkloadSla | None = None,
                       phase: Phase = Phase.whole) -> tuple[Candidate, ...]:
    """The (fragment, class) pairs the model may use for whole replicas (or one pool of a split
    LLM fragment), in the fleet's class order.

    A pair is allowed when f has a profile of that phase on c, one replica fits in c's slices and
    memory, c is in f's pins (if any) and not in its forbids, the profile's latency is within f's own
    bound (whole replicas), and its TTFT and TPOT are within the workload's `sla` (`meets_token_slas`).
    """
    profiles = effective_profiles(fragment, phase)
    # The per-class checks below are skipped where the fragment sets nothing they could rule out.
    restricted = fragment.pinned or fragment.forbidden
    bounded = fragment.latency_bound_ms is not None and phase is Phase.whole
    memory = fragment.memory_gib_per_replica is not None
    tokens = sla is not None and (sla.ttft_ms is not None or sla.tpot_ms is not None)
    out = []
    for name, cls in classes.items():
        p = profiles.get(name)
        if p is None:
            continue
        slices = p.slices
        room = fits_somewhere(cls, slices)
        if not room or (bounded and not _within_bound(p, fragment)) or (tokens and not meets_token_slas(p, sla)):
            continue
        if (restricted and not _permitted(fragment, name)) or (memory and not memory_fits(fragment, p, cls)):
            continue
        out.append(Candidate(fragment.fragment, name, slices, p.throughput_rps, p.latency_ms,
                             slices / cls.slices_per_device * cls.usd_per_hour, room))
    return tuple(out)


def pool_candidates(problem: Problem, classes: dict[str, ClassCapacity]) -> Pools:
    """For every fragment that may be split: its allowed prefill and decode candidates. A fragment may
    be split when it has demand, no buckets and no latency bound of its own, and both pools have at
    least one allowed class."""
    slas = {s.workload: s for s in problem.slas}
    out: Pools = {}
    for f in problem.fragments:
        if f.buckets or f.latency_bound_ms is not None or f.demand_rps <= 0:
            continue
        if not any(p.phase is not Phase.whole for p in f.profiles):
            continue
        pools = {phase: allowed_candidates(f, classes, slas.get(f.workload), phase)
                 for phase in (Phase.prefill, Phase.decode)}
        if all(pools.values()):
            out[f.fragment] = pools
    return out


def meets_token_slas(profile: ServiceProfile, sla: WorkloadSla) -> bool:
    """TTFT and TPOT within the SLA where both state them. A prefill replica's TTFT is its latency
    unless stated; it makes no further tokens. A decode replica makes no first token."""
    ttft = profile.ttft_ms
    if profile.phase is Phase.prefill and ttft is None:
        ttft = profile.latency_ms
    if sla.ttft_ms is not None and ttft is not None and profile.phase is not Phase.decode and ttft > sla.ttft_ms:
        return False
    return not (sla.tpot_ms is not None and profile.tpot_ms is not None and profile.phase is not Phase.prefill
                and profile.tpot_ms > sla.tpot_ms)


def effective_profiles(fragment: FragmentDemand, phase: Phase = Phase.whole) -> dict[str, ServiceProfile]:
    """One profile of `phase` per class: a measured one beats an estimate, else the first listed wins."""
    chosen: dict[str, ServiceProfile] = {}
    for p in fragment.profiles:
        if p.phase != phase:
            continue
        current = chosen.get(p.device_class)
        if current is None or (p.measured and not current.measured):
            chosen[p.device_class] = p
    return chosen


def memory_fits(fragment: FragmentDemand, profile: ServiceProfile, cls: ClassCapacity) -> bool:
    """A replica gets its slices' share of the device's memory; 0 GiB on the class means unchecked."""
    if fragment.memory_gib_per_replica is None or cls.memory_gib_per_device <= 0:
        return True
    return fragment.memory_gib_per_replica <= cls.memory_gib_per_device * profile.slices / cls.slices_per_device


def _permitted(fragment: FragmentDemand, device_class: str) -> bool:
    if fragment.pinned and device_class not in fragment.pinned:
        return False
    return device_class not in fragment.forbidden


def _within_bound(profile: ServiceProfile, fragment: FragmentDemand) -> bool:
    return fragment.latency_bound_ms is None or profile.latency_ms <= fragment.latency_bound_ms


def needed_units(fragment: FragmentDemand, headroom: float) -> int:
    """Micro-visits/s of plain (unbucketed) demand; 0 for a bucketed fragment (see optimizer.buckets)."""
    if fragment.buckets:
        return 0
    return max(0, math.ceil(fragment.demand_rps * headroom * RPS_SCALE - _ROUNDING_SLACK))


def supply_units(throughput_rps: float) -> int:
    return math.floor(throughput_rps * RPS_SCALE + _ROUNDING_SLACK)


def replicas_alone(fragment: FragmentDemand, cand: Candidate, headroom: float, need: int | None = None) -> int | None:
    """Replicas f needs on one candidate class alone, ignoring capacity; None if it cannot serve.
    `need` is needed_units(fragment, headroom) when the caller has it already."""
    if fragment.buckets:
        from optimizer.buckets import bucket_loads, replicas_for_buckets

        n = replicas_for_buckets(bucket_loads(fragment, (cand,), headroom), cand.device_class)
        return None if n is None else max(fragment.min_replicas, n)
    need = needed_units(fragment, headroom) if need is None else need
    supply = supply_units(cand.throughput_rps)
    if need > 0 and supply == 0:
        return None
    by_demand = -(-need // supply) if need > 0 else 0
    return max(fragment.min_replicas, by_demand)


def replicas_alone_each(fragment: FragmentDemand, cands: tuple[Candidate, ...], headroom: float) -> list[int | None]:
    """`replicas_alone` on each of `cands`, in their order, with the fragment's need computed once."""
    if fragment.buckets:
        return [replicas_alone(fragment, c, headroom) for c in cands]
    need, least = needed_units(fragment, headroom), fragment.min_replicas
    if need <= 0:
        return [max(least, 0)] * len(cands)
    out: list[int | None] = []
    for c in cands:
        supply = supply_units(c.throughput_rps)
        if supply:
            n = -(-need // supply)
            out.append(n if n > least else least)
        else:
            out.append(None)
    return out


def why_no_class(fragment: FragmentDemand, classes: dict[str, ClassCapacity], sla: WorkloadSla | None = None) -> str:
    """Why `allowed_candidates` returned nothing for `fragment`, in words."""
    profiles = effective_profiles(fragment)
    if not profiles:
        return "it has no service profile"
    in_fleet = {name: p for name, p in profiles.items() if name in classes}
    if not in_fleet:
        return f"its profiles are only for classes not in the fleet ({', '.join(sorted(profiles))})"
    reasons = []
    fitting = {}
    for name, p in in_fleet.items():
        cls = classes[name]
        if not fits_somewhere(cls, p.slices):
            devices = p.slices // cls.slices_per_device
            if p.slices <= cls.slices and cls.node_devices:
                reasons.append(f"one replica needs {devices} devices of {name} on one node but its largest node "
                               f"has {max(cls.node_devices)} healthy devices")
            else:
                reasons.append(f"one replica needs {p.slices} slices of {name} but the fleet has {cls.slices}")
        elif not _permitted(fragment, name):
            reasons.append(f"{name} is {'not pinned' if fragment.pinned else 'forbidden'}")
        elif not memory_fits(fragment, p, cls):
            have = cls.memory_gib_per_device * p.slices / cls.slices_per_device
            reasons.append(f"a replica needs {gib(fragment.memory_gib_per_replica)} but {name} gives it {gib(have)}")
        else:
            fitting[name] = p
    if fitting and fragment.latency_bound_ms is not None:
        best_name, best = min(fitting.items(), key=lambda item: item[1].latency_ms)
        reasons.append(
            f"latency bound too tight: best latency {ms(best.latency_ms)} (on {best_name}) "
            f"> bound {ms(fragment.latency_bound_ms)}"
        )
    if sla is not None:
        for name, p in fitting.items():
            for what, bound, value in (("TTFT", sla.ttft_ms, p.ttft_ms), ("TPOT", sla.tpot_ms, p.tpot_ms)):
                if bound is not None and value is not None and value > bound:
                    reasons.append(f"{what} on {name} {ms(value)} > workload {sla.workload!r} SLA {ms(bound)}")
    return "; ".join(reasons)


def _require_unique(names: list[str], field_name: str) -> None:
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"{field_name} must be unique; duplicated: {', '.join(duplicates)}")
