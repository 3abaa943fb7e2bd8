"""Bucketed demand (Mélange-style request-size buckets) in the integer units the solvers share.

A bucketed fragment f has buckets b with rate λ_b and, per class c, T_bc: max req/s of bucket b
one replica of f on c sustains. λ_b x headroom is cut into SHARES equal units u_b; the served split
s_bc (units) sums to SHARES, and the replicas of f on c carry their load: sum_b s_bc u_b / T_bc <= x_c.
Multiplied through by an integer K_c this is

    sum_b s_bc * k_bc <= x_c * K_c * (1 + LOAD_REL_TOL),     k_bc = ceil(K_c * u_b / T_bc)

rounded up so that any integer solution satisfies the real constraint (up to LOAD_REL_TOL of the
replicas' throughput, and none at all on a class without replicas). K_c is chosen per (fragment,
class) so that the largest k_bc is about 10^9, lowered by
powers of ten when the constraint's terms could overflow int64.
"""

import math
from dataclasses import dataclass

from optimizer.candidates import Candidate
from optimizer.packing import Room
from optimizer.types import FragmentDemand

_INT_LIMIT = 2**62
_FLOAT_NOISE = 1e-12
_DIGITS = 10
# A replica carries its throughput times (1 + LOAD_REL_TOL) in these units: room for the ceil rounding
# of k across shares (at most one unit of K per share), so an exactly integral load (0.75 req/s at
# 0.25 req/s per replica is 3 replicas) needs no fourth. Relative to replicas, it never lets a class
# without replicas carry load (optimizer.checker has its own, looser, tolerance).
LOAD_REL_TOL = 1e-9
# Each bucket's rate x headroom is placed in SHARES equal units (Mélange uses 8 equal slices; 1000 is a
# multiple of 8, so every Mélange split is one of ours, and finer ones too).
SHARES = 1000


@dataclass(frozen=True)
class BucketLoads:
    """One bucketed fragment's coefficients: need[b], k[(b, c)] and K[c] of the module docstring."""

    need: dict[str, int]  # units of the bucket's rate x headroom to place (SHARES, or 0)
    k: dict[tuple[str, str], int]  # only where T_bc > 0 and c is an allowed candidate
    K: dict[str, int]
    unit_rps: dict[str, float]  # req/s one unit of the bucket stands for

    def split_rps(self, split: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
        return {b: {c: v * self.unit_rps[b] for c, v in by_class.items() if v > 0} for b, by_class in split.items()}

    def classes_for(self, bucket: str) -> list[str]:
        return [c for (b, c) in self.k if b == bucket]

    def load_units(self, device_class: str) -> int | None:
        """Load, in K units of this class, of the whole demand on it alone; None if it misses a bucket."""
        total = 0
        for b, need in self.need.items():
            if need <= 0:
                continue
            k = self.k.get((b, device_class))
            if k is None:
                return None
            total += need * k
        return total


def bucket_loads(fragment: FragmentDemand, cands: tuple[Candidate, ...], headroom: float) -> BucketLoads:
    unit = {b.bucket: b.rate_rps * headroom / SHARES for b in fragment.buckets}
    need = {b.bucket: SHARES if b.rate_rps > 0 else 0 for b in fragment.buckets}
    k: dict[tuple[str, str], int] = {}
    K: dict[str, int] = {}
    for c in cands:
        tputs = {b.bucket: t for b in fragment.buckets if (t := b.throughput_on(c.device_class)) > 0}
        if not tputs:
            continue
        # load of one unit, in replicas: unit_b / T_bc; scale so that the largest is 10^digits
        unit_load = {b: unit[b] / t for b, t in tputs.items() if need[b] > 0}
        if not unit_load:
            continue
        hi = max(unit_load.values())
        total_need = sum(need[b] for b in unit_load)
        for digits in range(_DIGITS, -1, -1):
            scale = max(1, round(10**digits / hi))
            if total_need * (scale * hi + 1) + c.max_replicas * scale < _INT_LIMIT:
                break
        K[c.device_class] = scale
        for b, v in unit_load.items():
            k[b, c.device_class] = max(1, math.ceil(scale * v * (1 - _FLOAT_NOISE)))
    return BucketLoads(need, k, K, unit)


def replica_units(loads: BucketLoads, device_class: str) -> int:
    """Load units one replica carries: K, plus LOAD_REL_TOL of it for rounding (never below K)."""
    K = loads.K[device_class]
    return K + math.floor(LOAD_REL_TOL * K)


def capacity_units(loads: BucketLoads, device_class: str, replicas: int) -> int:
    """Load units `replicas` replicas carry; none without replicas."""
    return replicas * replica_units(loads, device_class)


def replicas_for_buckets(loads: BucketLoads, device_class: str) -> int | None:
    """Replicas on one class alone for the whole bucketed demand: ceil(load); None if it cannot."""
    units = loads.load_units(device_class)
    if units is None:
        return None
    return -(-units // replica_units(loads, device_class))


def fill_buckets(
    loads: BucketLoads,
    price: dict[str, float],  # $/h per replica, per candidate class
    slices: dict[str, int],  # slices per replica, per candidate class
    placed: dict[str, int],  # replicas already there (updated in place)
    free: Room | None,  # free space per class (optimizer.packing; updated in place); None: add no replicas
) -> dict[str, dict[str, int]] | None:
    """Split every bucket's need over classes: first into the spare load of replicas already placed,
    then by adding replicas on the class cheapest per throughput for the bucket (spilling when a
    class runs out of slices). Returns micro-req/s per bucket per class, or None when it cannot."""
    used = {c: 0 for c in loads.K}  # load units taken per class
    split: dict[str, dict[str, int]] = {}
    for b in sorted(loads.need, key=lambda b: -loads.need[b]):
        rem = loads.need[b]
        if rem <= 0:
            continue
        order = sorted(loads.classes_for(b), key=lambda c: price[c] * loads.k[b, c] / loads.K[c])
        mine = split.setdefault(b, {})

        def take(c: str, b: str = b, mine: dict[str, int] = mine) -> None:
            nonlocal rem
            spare = capacity_units(loads, c, placed.get(c, 0)) - used[c]
            amount = min(rem, max(0, spare) // loads.k[b, c])
            if amount > 0:
                mine[c] = mine.get(c, 0) + amount
                used[c] += amount * loads.k[b, c]
                rem -= amount

        for c in order:
            if rem <= 0:
                break
            take(c)
        if free is not None:
            for c in order:
                if rem <= 0:
                    break
                # replicas so that capacity_units(placed + n) covers what is used plus the rest of b
                required = used[c] + rem * loads.k[b, c]
                wanted = max(1, -(-required // replica_units(loads, c)) - placed.get(c, 0))
                n = free.add(c, slices[c], wanted)
                if n > 0:
                    placed[c] = placed.get(c, 0) + n
                    take(c)
        if rem > 0:
            return None
    return split




def melange_problem(demand, gpus, headroom: float = 1.0, time_limit_s: float = 60.0, fragment: str = "llm"):
    """Mélange's ground as a `Problem`: one fragment whose demand is the buckets, one whole-device
    replica per GPU, and capacity ample enough that no Mélange solution is cut off (each type gets
    devices for the whole demand on it alone, plus one per bucket).

    `demand` maps a bucket key (e.g. (i, j)) to its rate; `gpus` are objects with name,
    usd_per_hour and throughput (bucket key -> max req/s per GPU), as optimizer.baselines.GpuOffer.
    """
    from optimizer.types import BucketDemand, ClassCapacity, FragmentDemand, Problem, ServiceProfile

    live = {b: r for b, r in demand.items() if r > 0}
    classes, profiles = [], []
    for g in gpus:
        tputs = [t for b in live if (t := g.throughput.get(b, 0.0)) > 0]
        if not tputs:
            continue
        load = sum(r / g.throughput[b] for b, r in live.items() if g.throughput.get(b, 0.0) > 0)
        classes.append(ClassCapacity(g.name, g.usd_per_hour, math.ceil(load * headroom) + len(live) + 1))
        profiles.append(ServiceProfile(g.name, max(tputs), 0.0, 1, measured=True))
    buckets = tuple(
        BucketDemand(_bucket_name(b), r, tuple((g.name, t) for g in gpus if (t := g.throughput.get(b, 0.0)) > 0))
        for b, r in sorted(live.items())
    )
    frag = FragmentDemand(fragment, fragment, 0.0, tuple(profiles), min_replicas=0, buckets=buckets)
    return Problem(tuple(classes), (frag,), headroom=headroom, time_limit_s=time_limit_s)


def _bucket_name(key) -> str:
    return "x".join(str(k) for k in key) if isinstance(key, tuple) else str(key)
