"""Baselines the optimizer is measured against, kept honest and in the package.

Both work on Mélange's ground: a request-size-bucketed rate to serve, and per GPU type the
maximum requests/s one GPU sustains for each bucket under the SLO (the SLO is folded into
that throughput). Neither has capacity limits, a graph or migration.

Mélange (Griggs et al., 2024), as described in shared/data/README.md:

    B buckets b with rate λ_b; G GPU types g with price p_g and throughput T_bg (req/s per GPU)
    each bucket's rate is cut into k equal slices λ_b / k (the slice factor)
    a_bsg ∈ {0, 1}  slice s of bucket b goes to GPU type g      Σ_g a_bsg = 1     for all b, s
    N_g ∈ ℤ≥0       GPUs of type g                    N_g ≥ Σ_{b,s} a_bsg · (λ_b / k) / T_bg
    minimise Σ_g p_g N_g

solved as a MIP with SCIP (Mélange used an off-the-shelf ILP solver). Slices assigned to a
type whose throughput for the bucket is 0 are forbidden.

Best single class: every bucket on one GPU type, N_g = ⌈Σ_b λ_b / T_bg⌉; the cheapest such g.
"""

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ortools.linear_solver import pywraplp

Bucket = tuple[int, int]  # (input-length bucket i, output-length bucket j)


@dataclass(frozen=True)
class GpuOffer:
    """One GPU type on Mélange's ground: its price and profiled max req/s per bucket."""

    name: str
    usd_per_hour: float
    throughput: Mapping[Bucket, float]


@dataclass(frozen=True)
class BaselineResult:
    name: str
    usd_per_hour: float
    devices: dict[str, int]
    solve_time_s: float
    optimal: bool


def best_single_class(demand: Mapping[Bucket, float], gpus: Sequence[GpuOffer]) -> BaselineResult:
    """The cheapest fleet of one GPU type that serves every bucket."""
    start = time.perf_counter()
    best: BaselineResult | None = None
    for gpu in gpus:
        if any(rate > 0 and gpu.throughput.get(b, 0) <= 0 for b, rate in demand.items()):
            continue
        load = sum(rate / gpu.throughput[b] for b, rate in demand.items() if rate > 0)
        count = math.ceil(load - 1e-9)
        cost = count * gpu.usd_per_hour
        if best is None or cost < best.usd_per_hour:
            best = BaselineResult("best single class", cost, {gpu.name: count}, 0.0, True)
    if best is None:
        raise ValueError("no single GPU type can serve every bucket")
    return BaselineResult(best.name, best.usd_per_hour, best.devices, time.perf_counter() - start, True)


def melange(
    demand: Mapping[Bucket, float],
    gpus: Sequence[GpuOffer],
    slice_factor: int = 8,
    time_limit_s: float = 60.0,
) -> BaselineResult:
    """Mélange's ILP, solved with SCIP."""
    start = time.perf_counter()
    solver = pywraplp.Solver.CreateSolver("SCIP")
    solver.SetTimeLimit(int(time_limit_s * 1000))
    count = {g.name: solver.IntVar(0, solver.infinity(), f"N_{g.name}") for g in gpus}
    load = {g.name: [] for g in gpus}
    for b, rate in sorted(demand.items()):
        if rate <= 0:
            continue
        for s in range(slice_factor):
            choices = []
            for g in gpus:
                tput = g.throughput.get(b, 0.0)
                if tput <= 0:
                    continue
                a = solver.BoolVar(f"a_{b[0]}_{b[1]}_{s}_{g.name}")
                choices.append(a)
                load[g.name].append(a * (rate / slice_factor / tput))
            if not choices:
                raise ValueError(f"no GPU type serves bucket {b}")
            solver.Add(sum(choices) == 1)
    for g in gpus:
        if load[g.name]:
            solver.Add(count[g.name] >= sum(load[g.name]))
    solver.Minimize(sum(g.usd_per_hour * count[g.name] for g in gpus))
    status = solver.Solve()
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        raise RuntimeError(f"Mélange's ILP found no solution (status {status})")
    devices = {name: round(var.solution_value()) for name, var in count.items() if round(var.solution_value())}
    cost = sum(g.usd_per_hour * devices.get(g.name, 0) for g in gpus)
    return BaselineResult("Mélange", cost, devices, time.perf_counter() - start, status == pywraplp.Solver.OPTIMAL)
