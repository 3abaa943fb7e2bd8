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

Graph-unaware placement (`graph_unaware`) works on heteroplane's own ground (a `Problem`) with
the same classes, profiles and capacity, but places each fragment on its own, as a per-model
autoscaler would: edges and transfers are ignored. Each SLA workload's p99 P_w is split over
its fragments in proportion to their best latency: with L*_w the worst root-to-leaf path of w
when every fragment runs on its fastest allowed class (calls counted, transfers not), fragment f
gets the budget P_w * best_f / L*_w, so any path of classes within budget meets P_w as long as
transfers cost nothing. Each fragment (fewest allowed classes first, then the most expensive)
takes its classes within budget in order of the price of serving it alone there, spilling to the
next when one runs out of slices; when those are full it spills to its other classes, fastest
first. It may miss SLAs where heavy edges cross vendors or fabrics; `solve` does not.
"""

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ortools.linear_solver import pywraplp

from optimizer.candidates import Candidate, needed_units, replicas_alone, supply_units
from optimizer.explain import plan_fields
from optimizer.graph import Graph, longest_paths, reachable, workload_p99
from optimizer.greedy import fractional_bound
from optimizer.packing import Room
from optimizer.prepare import prepare, unpack
from optimizer.types import Assignment, Plan, PlanStatus, Problem

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


def graph_unaware(problem: Problem) -> Plan:
    """Each fragment placed alone within its share of its workload's p99, ignoring edges (module docstring)."""
    started = time.perf_counter()
    classes, candidates, graph, _ = unpack(prepare(problem, diagnose=False))
    if graph.cycle:
        return Plan(PlanStatus.infeasible, solve_time_s=time.perf_counter() - started,
                    diagnosis=(f"call graph has a cycle through {graph.cycle[0]}",))
    budget = _latency_budgets(problem, graph, candidates)
    free = Room(classes)
    placed: dict[tuple[str, str], int] = {}

    def alone_usd(f, c: Candidate) -> float:
        n = replicas_alone(f, c, problem.headroom)
        return math.inf if n is None else n * c.usd_per_replica

    def order_key(f) -> tuple[int, float]:
        return len(candidates[f.fragment]), -min((alone_usd(f, c) for c in candidates[f.fragment]), default=0.0)

    for f in sorted(problem.fragments, key=order_key):
        bound = budget.get(f.fragment, math.inf)
        within = sorted((c for c in candidates[f.fragment] if c.latency_ms <= bound), key=lambda c: alone_usd(f, c))
        rest = sorted((c for c in candidates[f.fragment] if c.latency_ms > bound), key=lambda c: c.latency_ms)
        need, replicas = needed_units(f, problem.headroom), 0
        for c in within + rest:
            if need <= 0 and replicas >= f.min_replicas:
                break
            supply = supply_units(c.throughput_rps)
            if supply == 0 and replicas >= f.min_replicas:
                continue
            want = max(f.min_replicas - replicas, -(-max(need, 0) // supply) if supply else 0)
            n = free.add(c.device_class, c.slices, want)
            if n > 0:
                placed[f.fragment, c.device_class] = n
                need -= n * supply
                replicas += n
        if need > 0 or replicas < f.min_replicas:
            return Plan(PlanStatus.infeasible, solve_time_s=time.perf_counter() - started,
                        diagnosis=(f"fragment {f.fragment}: its allowed classes run out of slices",))

    assignments = tuple(
        Assignment(f.fragment, c.device_class, n, c.slices, n * c.usd_per_replica)
        for f in problem.fragments for c in candidates[f.fragment]
        if (n := placed.get((f.fragment, c.device_class), 0)) > 0
    )
    fields = plan_fields(problem, graph, classes, candidates, assignments)
    return Plan(PlanStatus.feasible, assignments,
                lower_bound_usd_per_hour=min(fields["usd_per_hour"], fractional_bound(problem, candidates)),
                solve_time_s=time.perf_counter() - started, **fields)


def _latency_budgets(problem: Problem, graph: Graph, candidates: dict[str, tuple[Candidate, ...]]) -> dict[str, float]:
    """Per fragment of an SLA workload: P_w * best_f / L*_w (module docstring); the tightest when
    a fragment is reachable from several workloads."""
    best = {f: min((c.latency_ms for c in cands), default=0.0) for f, cands in candidates.items()}
    below, _ = longest_paths(graph, best.__getitem__, lambda e: 0.0)
    p99 = {s.workload: s.p99_ms for s in problem.slas}
    out: dict[str, float] = {}
    for w, (worst, root) in workload_p99(graph, below).items():
        if root is None or worst <= 0:
            continue
        for f in reachable(graph, graph.roots[w]):
            out[f] = min(out.get(f, math.inf), best[f] * p99[w] / worst)
    return out
