"""Cheapest placement of every fragment's replicas on the fleet's device classes (OR-Tools CP-SAT).

Notation

    F                 fragments f, with demand d_f (visits/s), min replicas m_f, latency bound L_f
    C                 device classes c, with S_c = devices_c * slices_per_device_c slices and
                      price p_c $/hour for one whole device
    h                 headroom (demand is served with a margin: d_f * h)
    A                 allowed (f, c) pairs: f has a service profile on c, c is in the fleet, one
                      replica fits c's slices and memory (its slices' share of the device's GiB),
                      c is in f's pins (when f has any) and not in its forbids, and (when L_f is
                      set) latency_fc <= L_f. One profile per (f, c): a measured one beats an
                      estimate, otherwise the first listed wins.
    s_fc, r_fc, u_fc  slices per replica, throughput (visits/s) per replica and micro-dollars per
                      hour per replica (round(1e6 * s_fc / slices_per_device_c * p_c)) of f on c
    X_fc              min(floor(S_c / s_fc), max(n_fc, cur_fc, 1)) with n_fc the replicas f needs on c
                      alone: no optimal plan uses more (dropping surplus replicas keeps every
                      constraint and lowers cost), and tight X_fc keep y_fc >= x_fc / X_fc strong
                      in the LP relaxation
    E                 edges (f, g) with b_fg bytes per call and w_fg calls of g a visit of f makes at the
                      tail (optimizer.graph: ceil of the p99 or mean calls, 0 when at most 1% of visits
                      call); E_seq the edges whose calls run one after another, E_conc the concurrent ones
    W                 workloads w with an SLA P_w (p99 ms, end to end); R_w their roots (fragments
                      of w no edge from w leads into); V the fragments reachable from any R_w
    lat_fc            latency of one visit of f on c, in integer microseconds (rounded up)
    tau_fg(c, c')     transfer of b_fg bytes from class c to c' (optimizer.transfer), microseconds,
                      rounded up; 0 when c = c'
    cur_fc            replicas of f on c in the current placement; mu = ceil(1e6 * migration_cost / 2)

Variables

    x_fc in {0, .., X_fc}     replicas of f on c, for (f, c) in A
    y_fc in {0, 1}            f uses c
    l_f, B_f >= 0             for f in V: f's own latency and its worst path latency down from f (us)
    t_fg >= 0                 for (f, g) in E with f in V: transfer latency on the edge (us)
    z_fc >= 0                 for (f, c) in A, when a current placement is given: |x_fc - cur_fc|

Bucketed demand (Mélange's request-size buckets; a fragment with buckets has no plain d_f)

    B_f               buckets b of f with rate d_fb and T_fbc: max req/s of bucket b per replica of
                      f on c (0: c cannot serve b); Q = 1000 shares per bucket, each d_fb * h / Q req/s
    v_fbc in {0, .., Q}   served split: shares of bucket b of f served on c (T_fbc > 0)
    split      sum_c v_fbc = Q                                             f, b in B_f with d_fb > 0
    load       sum_b v_fbc * k_fbc <= K'_fc * x_fc                         (f, c) in A, f bucketed
               (the real sum_b v_fbc * (d_fb h / Q) / T_fbc <= x_fc times an integer K_fc, with
               k_fbc = ceil(K_fc * d_fb h / (Q T_fbc)) rounded up and K'_fc = K_fc + floor(1e-9 K_fc):
               optimizer.buckets). No term without x_fc: a class with no replicas carries no load.

This is Mélange's formulation (split each bucket's rate over GPU types; a type's load, rate over
its profiled throughput, fits its integer count) with a bucket cut into Q = 1000 shares instead
of Mélange's k = 8 slices (8 divides 1000, so every Mélange split is one of ours), plus integer replicas per fragment, capacity, memory, pins, SLAs and migration.
With ample capacity and headroom 1 any Mélange solution is a solution here, so this optimum is
never costlier than Mélange's (up to 1e-12 relative float noise in k_fbc).

Prefill/decode split (disaggregated serving) of an LLM fragment f in P: fragments with demand, no
buckets and no latency bound of their own whose profiles allow a prefill pool on some class and a
decode pool on some class (TTFT and TPOT bounds of f's workload already applied to every
candidate, whole or pool: optimizer.candidates)

    A_f^q             allowed classes of f's pool q in {pre, dec}; r_fcq, u_fcq, s_fcq, lat_fcq as above
    kv_f(c, c')       transfer of f's KV cache (kv_bytes_per_request) from c to c', us; 0 when c = c'
    sigma_f in {0, 1}          f runs as two pools instead of whole replicas
    p_fcq in {0, .., X_fcq}    replicas of f's pool q on c;  w_fcq in {0, 1} the pool uses c
    whole off  y_fc + sigma_f <= 1                                         c in A_f
    pool on    w_fcq <= sigma_f,  w_fcq <= p_fcq <= X_fcq * w_fcq
    pools      sum_c p_fcq * floor(1e6 * r_fcq) >= ceil(1e6 * d_f * h) * sigma_f      q in {pre, dec}
               sum_c p_fcq >= max(1, m_f) * sigma_f
    (demand and replicas of the whole form become  ... + ceil(1e6 d_f h) * sigma_f >= ceil(1e6 d_f h)
     and  sum_c x_fc + m_f * sigma_f >= m_f)
    own lat    lq_f >= lat_fcq * w_fcq;  k_f >= kv_f(c, c') * (w_fc,pre + w_fc',dec - 1) (c != c');
               l_f >= l_pre,f + l_dec,f + k_f                               f in V
    edges      t_fg counts every class f or g runs anything on: u_fc >= y_fc, u_fc >= w_fcq
    cost       sum p_fcq * u_fcq, the w tie-break and |p_fcq - cur_fcq| migration as for x

A split is chosen only when the two pools cost less than whole replicas and the KV hand-off still
fits every path's SLA; when it is not, sigma_f = 0 and nothing changes from the whole-replica model.

Objective (integer micro-dollars per hour; the plan's cost is recomputed from the floats)

    minimise  sum_A x_fc * u_fc  +  sum_c p_c * sum_p n_cp  +  mu * sum_A z_fc  +  sum_A y_fc

with u_fc the price of f's slices on c, except for sub-device replicas on a class sold by the device
(ClassCapacity.sold_by_slice false): those pay through the devices they occupy, p_c per n_cp, and
u_fc is 1 micro-dollar (no surplus replica on a device already paid for).

The last term (1 micro-dollar per hour per class a fragment uses) breaks ties toward fewer
classes per fragment; it can only override cost differences below $1e-6/h per class. A move
(one replica stopped on A, started on B) costs migration_cost once; a start or stop alone, half.

Constraints

    packing    per class c, optimizer.packing's exact rows over N_cs = sum of x_fc (and p_fcq) with
               s_fc = s: device patterns n_cp for sub-device sizes, node patterns m_cq for replicas
               of several devices (one node each), sum_p n_cp + N_{c,S} + sum_g g N_{c,gS} <= D_c
    demand     sum_c x_fc * floor(1e6 * r_fc) >= ceil(1e6 * d_f * h)       for every f
    replicas   sum_c x_fc >= m_f                                          for every f
    use        y_fc <= x_fc <= X_fc * y_fc                                for (f, c) in A
    own lat    l_f >= lat_fc * y_fc                                       f in V, (f, c) in A
    transfer   t_fg >= tau_fg(c, c') * (y_fc + y_gc' - 1)                 (f, g) in E, c != c'
    path       B_f >= l_f + sum_{(f,g) in E_seq} w_fg (t_fg + B_g) + M_f         f in V
               M_f >= t_fg + B_g                                          (f, g) in E_conc, w_fg > 0
               B_f >= l_f                                                 f in V
    sla        B_r <= floor(1000 * P_w)                                   w in W, r in R_w
    migration  z_fc >= x_fc - cur_fc,  z_fc >= cur_fc - x_fc
    limit      with max_changed_fragments N and a current placement: c_f in {0, 1} for every f
               running now; x_fc = cur_fc (pools: p_fcq = cur_fcq) unless c_f; c_f = 1 when f runs
               on a class it is no longer allowed; sum_f c_f <= N (fragments new to the fleet are free);
               sum_{f in G} c_f <= N_G for every change_limits group G

B_f is optimizer.graph's recurrence (sequential calls add, w_fg of them at the tail; concurrent
ones take the max; calls made by at most 1% of visits drop out of the p99) as inequalities: any
feasible B bounds the tail latency of every visit, counting transfers, so the
model needs no path enumeration. A fragment split over several classes is charged its slowest
class and its slowest transfer. Throughput is rounded so that an integer solution also
satisfies the real-valued constraints. Fragments no class can serve, SLAs no placement meets
even on the fastest classes, cycles and demand beyond the whole fleet are diagnosed before the
model is built; when the joint model is infeasible the diagnosis names the classes that run short
or, when capacity alone would do, the SLAs that compete for the fast classes.

With a current placement, `solve` first tries optimizer.warm's neighbourhood: components whose
fragments still fit what runs are kept as they are, and this model is built only for the rest, on
the capacity left over. It falls back to the whole model when more than half the fragments are
free, when what runs no longer fits the fleet, when the joined plan misses an SLA or does not pack.

The time limit bounds the whole call, in stages that each stop at one deadline: `prepare`
(validation, candidates, diagnosis), plain greedy (the fallback plan; its time is the unit the
stages after it are budgeted in), the capacity relaxation of optimizer.prices as a linear program
(every fragment on one class alone, capacity kept, SLAs and edges dropped; started with
RELAX_PASSES greedy passes left, GLOP stopped at LP_SHARE of the time left), whose duals price each
class's slices and whose whole choices seed a second greedy run (with one pass left), then building
and hinting the model (started with BUILD_PASSES left, abandoned at the deadline) and the search
(NUM_WORKERS threads, a fixed seed, hinted with the cheaper, cost plus migration, of the two greedy
plans; both keep the current placement where it is still allowed; stopped STOP_SHARE of the build
time early, since CP-SAT overruns its limit). The deadline leaves time for the plan's explanations
(RESERVE_PER_PREPARE times `prepare`'s time, at least EXPLAIN_PASSES greedy passes). When the limit
is too short for CP-SAT to find a solution, the greedy plan is returned as feasible, with its gap to
the bound; only `prepare` and plain greedy always run. The plan's lower bound is the best of
CP-SAT's own bound, the fractional bound and the Lagrangian bound at the LP's prices (every plan
costs at least that: optimizer.prices). When the cheapest classes run short, CP-SAT's bound comes
late and greedy alone hands each short class to whoever comes first; at 1,000 fragments the LP
start and the Lagrangian bound bring the proven gap from 12% at 10 s to 0.1-0.2% within 1 s.
The cost is reproducible whenever the solve ends optimal; ties between equal-cost placements are
broken by the y and z terms.
"""

import math
import time

from ortools.sat.python import cp_model

from optimizer.buckets import BucketLoads, bucket_loads, fill_buckets, replica_units
from optimizer.candidates import (
    USD_SCALE,
    Candidate,
    Pools,
    allowed_candidates,
    needed_units,
    replicas_alone,
    supply_units,
    validate,
)
from optimizer.diagnose import diagnose_capacity, diagnose_sla_with_capacity
from optimizer.explain import change_limit_broken, migration_usd, plan_fields, units_of
from optimizer.graph import Graph, build_graph, longest_paths, tail_calls, workload_p99
from optimizer.greedy import bucket_split, fractional_bound, greedy_assignments
from optimizer.packing import kind, node_counts, node_rows, pattern_counts, patterns
from optimizer.prepare import Prepared, prepare, unpack
from optimizer.prices import lagrangian_bound, relaxed_placement
from optimizer.types import (
    Assignment,
    ClassCapacity,
    Edge,
    FragmentDemand,
    Infeasibility,
    Phase,
    Plan,
    PlanStatus,
    Problem,
)
from optimizer.warm import Neighbourhood, neighbourhood

IntVar = cp_model.IntVar

__all__ = ["solve", "validate", "allowed_candidates", "Candidate"]

# CP-SAT's portfolio of 8 subsolvers (interleaved on 2 cores too) includes the LP-based ones. With
# 2 workers it has none: its bound stays at 0, a 10-fragment chain under a path SLA ran its whole
# 2 s limit without a proof (8: optimal in 0.05 s), and tiny-rate bucketed Mélange cases stalled for
# the whole limit (8: 0.1 s).
NUM_WORKERS = 8
RANDOM_SEED = 0
# Below this much time left there is no point building or searching the model: the greedy plan stands.
MIN_SEARCH_S = 0.02
# Time kept back from the search for the plan's explanations: 6 times what `prepare` took, which passes
# over the same fragments and candidates (prepare ~25 ms, explanations 25-150 ms at 1,000 fragments), at most
# this share of the limit.
RESERVE_PER_PREPARE = 6.0
RESERVE_SHARE = 0.2
# ... and at least this many times what plain greedy took (explanations took 1-4 greedy passes).
EXPLAIN_PASSES = 2.0
# CP-SAT overran its limit by 10-25% of the model's build time at 1,000 fragments (120-290 ms; 8 workers, 2 cores).
STOP_SHARE = 0.3
# The LP relaxation may use at most this share of the time left after greedy (it is a start, not a plan).
LP_SHARE = 0.25
# Building the LP, solving it and the Lagrangian bound took 4-6 greedy passes at 1,000 fragments;
# building and hinting the CP-SAT model 45-60 (and freeing an abandoned one another 5-8).
RELAX_PASSES = 6.0
BUILD_PASSES = 50.0
US_PER_MS = 1000


class _OutOfTime(Exception):
    """Building the model reached the deadline: the greedy plan is returned instead."""


def solve(problem: Problem) -> Plan:
    """The cheapest placement meeting capacity, demand x headroom, memory, pins and SLAs along the graph."""
    started = time.perf_counter()
    prepared = prepare(problem)
    classes, candidates, graph, diagnosis = unpack(prepared)
    if diagnosis:
        return Plan(PlanStatus.infeasible, solve_time_s=time.perf_counter() - started, diagnosis=diagnosis,
                    infeasibility=Infeasibility.proven)
    # The limit bounds the whole call: every stage after `prepare` stops at `deadline`, which leaves
    # time for the plan's explanations, a pass over fragments and their candidates like `prepare`'s.
    reserve = min(RESERVE_SHARE * problem.time_limit_s, RESERVE_PER_PREPARE * (time.perf_counter() - started))
    deadline = started + problem.time_limit_s - reserve
    # The fallback first: when the limit is too short for anything better, this is the plan.
    greedy_started = time.perf_counter()
    plain = greedy_assignments(problem, classes, candidates, graph)
    pass_s = time.perf_counter() - greedy_started
    # Greedy passes over the same fragments and candidates as the explanations: reserve for them by it too.
    deadline = min(deadline, started + problem.time_limit_s - EXPLAIN_PASSES * pass_s)
    relaxed = _Relaxed(problem, prepared, deadline, pass_s)
    if (hood := neighbourhood(problem, prepared)) is not None and (
            plan := _warm(problem, prepared, hood, relaxed, started, deadline)):
        return plan
    return _whole(problem, prepared, relaxed, started, deadline, plain)


class _Relaxed:
    """optimizer.prices on the whole problem: the LP's whole choices (the CP-SAT hint starts from
    them), and the Lagrangian lower bound at its capacity prices on any plan's cost ($/h). `pass_s`
    is what plain greedy took, a pass over every fragment's candidates: with less than
    RELAX_PASSES of them left before `deadline` (building the LP, solving it, the bound) the LP is
    skipped and the bound is the fractional one alone; GLOP itself stops at LP_SHARE of the time left."""

    def __init__(self, problem: Problem, prepared: Prepared, deadline: float, pass_s: float) -> None:
        classes, candidates = prepared.classes, prepared.candidates
        self.pass_s = pass_s
        self.bound = fractional_bound(problem, candidates, prepared.pools)
        self.prefer: dict[str, str] = {}
        left = deadline - time.perf_counter()
        budget = LP_SHARE * left
        if budget < MIN_SEARCH_S or left < RELAX_PASSES * pass_s:
            return
        lam, self.prefer = relaxed_placement(problem, classes, candidates, budget)
        capacity = {name: cls.slices for name, cls in classes.items()}
        self.bound = max(self.bound, lagrangian_bound(problem, candidates, lam, capacity, prepared.pools))


def _whole(problem: Problem, prepared: Prepared, relaxed: _Relaxed, started: float, deadline: float,
           plain: dict[tuple[str, str], int] | None) -> Plan:
    """The whole problem on CP-SAT, hinted with the greedy plan (`plain`, or greedy from the LP's
    choices when cheaper), searched until `deadline`; the greedy plan when there is no time for it."""
    classes, candidates, graph, _ = unpack(prepared)
    assignments, split, status, solver = _run(problem, classes, candidates, graph, prepared.pools, deadline,
                                              relaxed, plain, relaxed.pass_s)
    if assignments is None:
        infeasibility, diagnosis = _diagnose_infeasible(problem, classes, candidates, graph, status, prepared.pools,
                                                        started + problem.time_limit_s)
        return Plan(PlanStatus.infeasible, solve_time_s=time.perf_counter() - started, diagnosis=diagnosis,
                    infeasibility=infeasibility)
    fields = plan_fields(problem, graph, classes, candidates, assignments, prepared.pools)
    usd = fields["usd_per_hour"]
    optimal = status == cp_model.OPTIMAL
    # The bound is on the whole objective (cost + migration + tie-break >= the cost's fractional and
    # Lagrangian bounds); expressed in $/h it is the plan's cost less the objective's gap.
    best_bound = relaxed.bound
    if status == cp_model.FEASIBLE:
        best_bound = max(best_bound, solver.best_objective_bound / USD_SCALE)
        objective = solver.objective_value / USD_SCALE
    else:
        objective = usd + plan_fields_migration(problem, assignments)
    bound = usd if optimal else max(0.0, usd - max(0.0, objective - best_bound))
    return Plan(
        PlanStatus.optimal if optimal else PlanStatus.feasible,
        assignments=assignments,
        lower_bound_usd_per_hour=bound,
        solve_time_s=time.perf_counter() - started,
        bucket_split=split,
        **fields,
    )


def _warm(problem: Problem, prepared: Prepared, hood: Neighbourhood, relaxed: _Relaxed, started: float,
          deadline: float) -> Plan | None:
    """optimizer.warm's neighbourhood re-solve, searched until `deadline`; None when it finds nothing
    or its plan misses an SLA."""
    classes, candidates, graph, _ = unpack(prepared)
    sub = hood.problem
    names = {f.fragment for f in sub.fragments}
    sub_pools = {f: p for f, p in prepared.pools.items() if f in names}
    sub_candidates = {f: candidates[f] for f in names}
    found, split = (), {}
    if names:
        sub_graph = build_graph(sub)
        greedy_started = time.perf_counter()
        plain = greedy_assignments(sub, hood.classes, sub_candidates, sub_graph)
        found, split, _, _ = _run(sub, hood.classes, sub_candidates, sub_graph, sub_pools, deadline, relaxed, plain,
                                  time.perf_counter() - greedy_started)
        if found is None:
            return None
    assignments = hood.fixed + found
    try:
        fields = plan_fields(problem, graph, classes, candidates, assignments, prepared.pools)
    except ValueError:  # the fixed part's spare slices were not enough after all: solve it whole
        return None
    if any(fields["predicted_p99_ms"].get(s.workload, 0.0) > s.p99_ms + 1e-9 for s in problem.slas):
        return None
    return Plan(
        PlanStatus.feasible,
        assignments=assignments,
        lower_bound_usd_per_hour=min(fields["usd_per_hour"], relaxed.bound),
        solve_time_s=time.perf_counter() - started,
        bucket_split=split,
        **fields,
    )


def _run(problem: Problem, classes: dict[str, ClassCapacity], candidates: dict[str, tuple[Candidate, ...]],
         graph: Graph, pools: Pools, deadline: float, relaxed: _Relaxed, plain: dict[tuple[str, str], int] | None,
         pass_s: float):
    """Build, hint and solve the model by `deadline` (perf_counter; building counts): (assignments,
    bucket split, CP-SAT status, solver). The hint is the cheaper (with migration) of `plain` (greedy's
    placement, None when greedy found none; `pass_s` the time it took) and greedy from the LP's whole
    choices (`relaxed`).
    When the deadline comes before CP-SAT has a solution (or before the model is built), the hint
    is the plan. The assignments are None when CP-SAT proves it infeasible, or finds nothing and
    greedy has no plan."""
    hints = [plain]
    if relaxed.prefer and deadline - time.perf_counter() > pass_s:  # time for one more greedy pass
        hints.append(greedy_assignments(problem, classes, candidates, graph, prefer=relaxed.prefer))
    hint = min((h for h in hints if h is not None), key=lambda h: _objective_usd(problem, candidates, h), default=None)
    status, solver, model = cp_model.UNKNOWN, None, None
    # Building a model that the deadline then abandons costs its build and, after, freeing it: start
    # only with BUILD_PASSES greedy passes of time left.
    if deadline - time.perf_counter() > max(MIN_SEARCH_S, BUILD_PASSES * pass_s):
        building = time.perf_counter()
        try:
            model = _Model(problem, classes, candidates, graph, pools=pools, deadline=deadline)
            model.hint(hint)
        except _OutOfTime:
            model = None
        # CP-SAT stops some time after its limit, more the larger the model (its presolve and workers
        # finish their step): keep back STOP_SHARE of what building the model took.
        stop = STOP_SHARE * (time.perf_counter() - building)
        if model is not None and (left := deadline - time.perf_counter() - stop) > MIN_SEARCH_S:
            status, solver = model.solve(left)
    pooled: dict[tuple[str, str, Phase], int] = {}
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        replicas = {key: solver.value(x) for key, x in model.x.items()}
        pooled = {key: n for key, x in model.px.items() if (n := solver.value(x)) > 0}
        split = {f: model.loads[f].split_rps({b: {c: solver.value(v) for c, v in by_class.items()}
                               for b, by_class in by_bucket.items()})
                 for f, by_bucket in model.s.items()}
    elif status != cp_model.INFEASIBLE and hint and _within_limit(problem, hint):
        replicas = hint  # the deadline came before CP-SAT had a solution: the greedy plan still holds
        split = model.hint_split if model is not None else bucket_split(problem, candidates, hint)
    else:
        return None, {}, status, solver
    assignments = tuple(
        Assignment(f.fragment, c.device_class, n, c.slices, n * c.usd_per_replica)
        for f in problem.fragments
        for c in candidates[f.fragment]
        if (n := replicas.get((f.fragment, c.device_class), 0)) > 0
    ) + tuple(
        Assignment(f, c.device_class, n, c.slices, n * c.usd_per_replica, phase)
        for f, by_phase in pools.items()
        for phase, cands in by_phase.items()
        for c in cands
        if (n := pooled.get((f, c.device_class, phase), 0)) > 0
    )
    return assignments, split, status, solver


def _whole_units(replicas: dict[tuple[str, str], int]) -> dict[tuple[str, Phase], dict[str, int]]:
    units: dict[tuple[str, Phase], dict[str, int]] = {}
    for (f, c), n in replicas.items():
        units.setdefault((f, Phase.whole), {})[c] = n
    return units


def _objective_usd(problem: Problem, candidates: dict[str, tuple[Candidate, ...]],
                   replicas: dict[tuple[str, str], int]) -> float:
    """$/h plus migration of whole replicas per (fragment, class)."""
    price = {(f, c.device_class): c.usd_per_replica for f, cands in candidates.items() for c in cands}
    return sum(n * price[key] for key, n in replicas.items()) + migration_usd(problem, _whole_units(replicas))


def _within_limit(problem: Problem, replicas: dict[tuple[str, str], int]) -> bool:
    """Whether whole replicas per (fragment, class) change no more running fragments than allowed."""
    return change_limit_broken(problem, _whole_units(replicas)) is None


def plan_fields_migration(problem: Problem, assignments: tuple[Assignment, ...]) -> float:
    return migration_usd(problem, units_of(assignments))


class _Model:
    """The CP-SAT model of the module docstring; x and y keyed by (fragment, class)."""

    def __init__(self, problem: Problem, classes: dict[str, ClassCapacity],
                 candidates: dict[str, tuple[Candidate, ...]], graph: Graph, with_slas: bool = True,
                 pools: Pools | None = None, with_limit: bool = True, deadline: float = math.inf) -> None:
        self.model = m = cp_model.CpModel()
        self._deadline = deadline
        self.x: dict[tuple[str, str], cp_model.IntVar] = {}
        self.y: dict[tuple[str, str], cp_model.IntVar] = {}
        self.max_x: dict[tuple[str, str], int] = {}
        self.z: dict[tuple[str, str], tuple[cp_model.IntVar, int]] = {}
        # Split LLM fragments: sigma_f, and x/y/z of their prefill and decode pools keyed (f, c, phase).
        self.pools = pools or {}
        self.sigma: dict[str, cp_model.IntVar] = {}
        self.px: dict[tuple[str, str, Phase], cp_model.IntVar] = {}
        self.py: dict[tuple[str, str, Phase], cp_model.IntVar] = {}
        self.pz: dict[tuple[str, str, Phase], tuple[cp_model.IntVar, int]] = {}
        self.u: dict[tuple[str, str], cp_model.IntVar] = {}
        self.phase_lat: dict[tuple[str, Phase], cp_model.IntVar] = {}
        self.hand_off: dict[str, cp_model.IntVar] = {}
        self.own: dict[str, cp_model.IntVar] = {}
        self.below: dict[str, cp_model.IntVar] = {}
        self.max_below: dict[str, int] = {}
        self.side_by_side: dict[str, cp_model.IntVar] = {}
        self.edges: list[tuple[Edge, int, cp_model.IntVar]] = []
        self.loads: dict[str, BucketLoads] = {}
        self.s: dict[str, dict[str, dict[str, cp_model.IntVar]]] = {}  # v_fbc by f, b, c
        self.hint_split: dict[str, dict[str, dict[str, float]]] = {}
        self.cands = candidates
        self._classes = classes
        self._slices: dict[tuple[str, str], int] = {}
        self._by_size: dict[str, dict[int, list[cp_model.IntVar]]] = {}  # class -> slices -> x of that size
        self.patterns: dict[str, list[tuple[tuple[int, ...], cp_model.IntVar]]] = {}  # class -> (pattern, n_p)
        self.node_patterns: dict[str, list[tuple[tuple[int, ...], cp_model.IntVar]]] = {}
        self._cost: list[cp_model.LinearExpr] = []
        current = {(a.fragment, a.device_class, a.phase): a.replicas for a in problem.current}
        self._mu = math.ceil(problem.migration_cost_usd / 2 * USD_SCALE) if problem.current else 0
        for f in problem.fragments:
            self._check_time()
            cands = candidates[f.fragment]
            for c in cands:
                key = (f.fragment, c.device_class)
                cur = current.get((*key, Phase.whole), 0)
                self.x[key], self.y[key], z, self.max_x[key] = self._replicas(f, c, problem.headroom, cur, "")
                if z is not None:
                    self.z[key] = (z, cur)
            need = needed_units(f, problem.headroom)
            sigma = self._add_pools(f, need, current, problem.headroom) if f.fragment in self.pools else 0
            if need > 0:
                m.add(sum(self.x[f.fragment, c.device_class] * supply_units(c.throughput_rps) for c in cands)
                      + need * sigma >= need)
            if f.buckets:
                self._add_buckets(f.fragment, bucket_loads(f, cands, problem.headroom))
            if f.min_replicas > 0:
                m.add(sum(self.x[f.fragment, c.device_class] for c in cands) + f.min_replicas * sigma >= f.min_replicas)
        for cls in problem.device_classes:
            if cls.device_class in self._by_size:
                self._add_packing(cls, self._by_size[cls.device_class])
        if (problem.max_changed_fragments is not None or problem.change_limits) and with_limit:
            self._add_change_limit(current, problem)
        if with_slas and problem.slas:
            self._add_paths(problem, classes, candidates, graph)
        m.minimize(sum(self._cost))

    def _replicas(self, f: FragmentDemand, c: Candidate, headroom: float, cur: int, label: str):
        """x, y (and z with a current placement) of f on c, their capacity, cost and tie-break terms."""
        m, name = self.model, f"{f.fragment}{label}@{c.device_class}"
        top = _most_useful(f, c, headroom, cur)
        x = m.new_int_var(0, top, f"x[{name}]")
        y = m.new_bool_var(f"y[{name}]")
        m.add(x <= top * y)
        m.add(x >= y)
        self._by_size.setdefault(c.device_class, {}).setdefault(c.slices, []).append(x)
        self._slices[f.fragment, c.device_class] = c.slices
        # On a class sold by the device a sub-device replica's cost is its device's (the n_p terms).
        by_device = not self._classes[c.device_class].sold_by_slice
        if by_device and kind(c.slices, self._classes[c.device_class].slices_per_device)[0] == "sub":
            self._cost += [x, y]  # 1 micro-dollar a replica: no surplus replicas on a device already paid for
        else:
            self._cost += [x * round(c.usd_per_replica * USD_SCALE), y]
        z = None
        if self._mu:
            z = m.new_int_var(0, max(top, cur), f"z[{name}]")
            m.add_abs_equality(z, x - cur)
            self._cost.append(self._mu * z)
        return x, y, z, top

    def _check_time(self) -> None:
        if time.perf_counter() > self._deadline:
            raise _OutOfTime

    def _add_packing(self, cls: ClassCapacity, by_size: dict[int, list[cp_model.IntVar]]) -> None:
        """optimizer.packing's rows for one class: device patterns n_p for sub-device replicas, node
        patterns m_q for multi-device ones, and the device total; per-device cost from n_p."""
        m, name, s_per = self.model, cls.device_class, cls.slices_per_device
        counts: dict[tuple[str, int], cp_model.LinearExpr] = {}
        for slices, xs in by_size.items():
            counts[kind(slices, s_per)] = sum(xs)
        devices_used = []
        sub_sizes = tuple(sorted(size for what, size in counts if what == "sub"))
        if sub_sizes:
            rows = self.patterns[name] = [(p, m.new_int_var(0, cls.devices, f"n[{name}/{'+'.join(map(str, p))}]"))
                                          for p in patterns(sub_sizes, s_per)]
            for size in sub_sizes:
                m.add(counts["sub", size] <= sum(n * p.count(size) for p, n in rows if size in p))
            devices_used += [n for _, n in rows]
            if not cls.sold_by_slice:
                self._cost += [n * round(cls.usd_per_hour * USD_SCALE) for _, n in rows]
        if ("device", 1) in counts:
            devices_used.append(counts["device", 1])
        multi = tuple(sorted(size for what, size in counts if what == "multi"))
        devices_used += [g * counts["multi", g] for g in multi]
        if multi and cls.node_devices:
            cover: dict[int, list[cp_model.LinearExpr]] = {g: [] for g in multi}
            groups: dict[int, list[cp_model.IntVar]] = {}
            rows = self.node_patterns[name] = []
            for p, size in node_rows(cls, multi):
                v = m.new_int_var(0, cls.node_devices.count(size), f"m[{name}/{size}/{'+'.join(map(str, p))}]")
                rows.append((p, v))
                groups.setdefault(size, []).append(v)
                for g in set(p):
                    cover[g].append(v * p.count(g))
            for size, vs in groups.items():
                m.add(sum(vs) <= cls.node_devices.count(size))
            for g in multi:
                m.add(counts["multi", g] <= sum(cover[g]))
        m.add(sum(devices_used) <= cls.devices)

    def _add_change_limit(self, current: dict[tuple[str, str, Phase], int], problem: Problem) -> None:
        """The docstring's change limit: c_f for every fragment running now, sum_f c_f <= N, and the
        same sum over each ChangeLimit group's fragments."""
        m = self.model
        replicas: dict[str, list[tuple[cp_model.IntVar, int]]] = {}
        for (f, c), x in self.x.items():
            replicas.setdefault(f, []).append((x, current.get((f, c, Phase.whole), 0)))
        for (f, c, phase), x in self.px.items():
            replicas.setdefault(f, []).append((x, current.get((f, c, phase), 0)))
        modelled = {(f, c, Phase.whole) for f, c in self.x} | set(self.px)
        changed = {}
        for (f, c, phase), n in sorted(current.items()):
            if n <= 0:
                continue
            if f not in changed:
                changed[f] = m.new_bool_var(f"changed[{f}]")
                for x, cur in replicas.get(f, ()):
                    m.add(x == cur).only_enforce_if(changed[f].Not())
            if (f, c, phase) not in modelled:  # it runs where it is no longer allowed: it must change
                m.add(changed[f] == 1)
        if problem.max_changed_fragments is not None:
            m.add(sum(changed.values()) <= problem.max_changed_fragments)
        for group in problem.change_limits:
            inside = [changed[f] for f in group.fragments if f in changed]
            if len(inside) > group.limit:
                m.add(sum(inside) <= group.limit)

    def _add_pools(self, f: FragmentDemand, need: int, current: dict, headroom: float) -> cp_model.IntVar:
        """The docstring's split: sigma_f, and the prefill and decode pools that serve f when it is set."""
        m = self.model
        sigma = self.sigma[f.fragment] = m.new_bool_var(f"split[{f.fragment}]")
        for c in self.cands[f.fragment]:
            m.add(self.y[f.fragment, c.device_class] + sigma <= 1)
        for phase, cands in self.pools[f.fragment].items():
            for c in cands:
                key = (f.fragment, c.device_class, phase)
                cur = current.get(key, 0)
                x, y, z, top = self._replicas(f, c, headroom, cur, f"/{phase}")
                self.px[key], self.py[key] = x, y
                self.max_x[key] = top
                m.add(y <= sigma)
                if z is not None:
                    self.pz[key] = (z, cur)
            xs = [(self.px[f.fragment, c.device_class, phase], c) for c in cands]
            m.add(sum(x * supply_units(c.throughput_rps) for x, c in xs) >= need * sigma)
            m.add(sum(x for x, _ in xs) >= max(1, f.min_replicas) * sigma)
        return sigma

    def _add_buckets(self, fragment: str, loads: BucketLoads) -> None:
        """The split and load constraints of the docstring's bucketed demand for one fragment."""
        m = self.model
        self.loads[fragment] = loads
        by_bucket = self.s[fragment] = {}
        terms: dict[str, list[cp_model.LinearExpr]] = {}
        for b, need in loads.need.items():
            if need <= 0:
                continue
            vs = by_bucket[b] = {c: m.new_int_var(0, need, f"v[{fragment}/{b}@{c}]") for c in loads.classes_for(b)}
            m.add(sum(vs.values()) == need)
            for c, v in vs.items():
                terms.setdefault(c, []).append(v * loads.k[b, c])
        for c, load in terms.items():
            m.add(sum(load) <= replica_units(loads, c) * self.x[fragment, c])

    def _add_paths(self, problem: Problem, classes: dict[str, ClassCapacity],
                   candidates: dict[str, tuple[Candidate, ...]], graph: Graph) -> None:
        m = self.model
        lat = self.lat = {(f, c.device_class): math.ceil(c.latency_ms * US_PER_MS) for f in graph.order for c in candidates[f]}
        fragments = {f.fragment: f for f in problem.fragments}

        transfers: dict[tuple[float, str, str], int] = {}  # edges mostly share a few payload sizes

        def tau(e, a: str, b: str) -> int:
            if a == b:
                return 0
            key = (e.bytes_per_call, a, b)
            us = transfers.get(key)
            if us is None:
                us = transfers[key] = math.ceil(problem.transfer.ms(e.bytes_per_call, classes[a], classes[b]) * US_PER_MS)
            return us

        def kv(f: str, a: str, b: str) -> int:
            nbytes = fragments[f].kv_bytes_per_request
            return 0 if a == b else math.ceil(problem.transfer.ms(nbytes, classes[a], classes[b]) * US_PER_MS)

        uses = {f: self._uses(f) for f in graph.order}  # class -> 0/1 "f runs a replica of any kind there"

        def worst_tau(e) -> int:
            return max((tau(e, a, b) for a in uses[e.parent] for b in uses[e.child]), default=0)

        def slowest(f: str, phase: Phase) -> int:
            return max((math.ceil(c.latency_ms * US_PER_MS) for c in self.pools[f][phase]), default=0)

        def worst_own(f: str) -> int:
            whole = max((lat[f, c.device_class] for c in candidates[f]), default=0)
            if f not in self.pools:
                return whole
            hand_off = max((kv(f, a.device_class, b.device_class) for a in self.pools[f][Phase.prefill]
                            for b in self.pools[f][Phase.decode]), default=0)
            return max(whole, slowest(f, Phase.prefill) + slowest(f, Phase.decode) + hand_off)

        self.graph, self.tau, self.kv = graph, tau, kv
        # Upper bounds from the slowest class and transfer everywhere keep the domains tight.
        upper, _ = longest_paths(graph, worst_own, lambda e: worst_tau(e) + 1)
        own, below = self.own, self.below
        for f in graph.order:
            hi = self.max_below[f] = math.ceil(upper[f]) + 1
            own[f] = m.new_int_var(0, hi, f"l[{f}]")
            below[f] = m.new_int_var(0, hi, f"B[{f}]")
            for c in candidates[f]:
                m.add(own[f] >= lat[f, c.device_class] * self.y[f, c.device_class])
            if f in self.pools:
                self._add_split_latency(f, kv, slowest)
            m.add(below[f] >= own[f])
        for f in graph.order:
            self._check_time()
            added: list[cp_model.LinearExpr] = []
            side_by_side = None  # M_f: the slowest concurrent child, transfer included
            for e in graph.children.get(f, ()):
                w = tail_calls(e)
                if w == 0:
                    continue
                t = m.new_int_var(0, worst_tau(e), f"t[{e.parent}->{e.child}]")
                self.edges.append((e, w, t))
                for a, ya in uses[e.parent].items():
                    for b, yb in uses[e.child].items():
                        if (v := tau(e, a, b)) > 0:
                            m.add(t >= v * (ya + yb - 1))
                if e.concurrent:
                    if side_by_side is None:
                        side_by_side = self.side_by_side[f] = m.new_int_var(0, self.max_below[f], f"M[{f}]")
                        added.append(side_by_side)
                    m.add(side_by_side >= t + below[e.child])
                else:
                    added.append(w * (t + below[e.child]))
            if added:
                m.add(below[f] >= own[f] + sum(added))
        for sla in problem.slas:
            for r in graph.roots.get(sla.workload, ()):
                m.add(below[r] <= math.floor(sla.p99_ms * US_PER_MS + 1e-9))

    def _uses(self, f: str) -> dict[str, cp_model.IntVar]:
        """Per class, a 0/1 that is 1 when f runs anything there: y_fc, or for a fragment that may be
        split u_fc >= y_fc and >= its pools' y (only lower bounds matter: u only makes transfers count)."""
        out = {c.device_class: self.y[f, c.device_class] for c in self.cands[f]}
        if f not in self.pools:
            return out
        pooled: dict[str, list[cp_model.IntVar]] = {}
        for phase, cands in self.pools[f].items():
            for c in cands:
                pooled.setdefault(c.device_class, []).append(self.py[f, c.device_class, phase])
        for name, ys in pooled.items():
            u = self.model.new_bool_var(f"u[{f}@{name}]")
            for y in ys + ([out[name]] if name in out else []):
                self.model.add(u >= y)
            self.u[f, name] = u
            out[name] = u
        return out

    def _add_split_latency(self, f: str, kv, slowest) -> None:
        """l_f >= lp_f + ld_f + h_f: the slowest prefill pool, the slowest decode pool and the slowest
        KV-cache hand-off between a prefill class and a different decode class (all 0 unless split)."""
        m = self.model
        pools = self.pools[f]
        parts = {}
        for phase in (Phase.prefill, Phase.decode):
            v = parts[phase] = self.phase_lat[f, phase] = m.new_int_var(0, slowest(f, phase), f"l[{f}/{phase}]")
            for c in pools[phase]:
                m.add(v >= math.ceil(c.latency_ms * US_PER_MS) * self.py[f, c.device_class, phase])
        worst = max((kv(f, a.device_class, b.device_class) for a in pools[Phase.prefill]
                     for b in pools[Phase.decode]), default=0)
        h = self.hand_off[f] = m.new_int_var(0, worst, f"h[{f}]")
        for a in pools[Phase.prefill]:
            for b in pools[Phase.decode]:
                if (v := kv(f, a.device_class, b.device_class)) > 0:
                    m.add(h >= v * (self.py[f, a.device_class, Phase.prefill] + self.py[f, b.device_class, Phase.decode] - 1))
        m.add(self.own[f] >= parts[Phase.prefill] + parts[Phase.decode] + h)

    def hint(self, replicas: dict[tuple[str, str], int] | None) -> None:
        """A complete hint (every variable) from a placement of whole replicas (no fragment split),
        so CP-SAT starts from a known solution."""
        if not replicas:
            return
        m = self.model
        for v in (*self.sigma.values(), *self.px.values(), *self.py.values(), *self.phase_lat.values(),
                  *self.hand_off.values()):
            m.add_hint(v, 0)
        for z, cur in self.pz.values():
            m.add_hint(z, cur)
        for (f, name), u in self.u.items():
            m.add_hint(u, int(replicas.get((f, name), 0) > 0))
        for key, x in self.x.items():
            n = min(replicas.get(key, 0), self.max_x[key])
            m.add_hint(x, n)
            m.add_hint(self.y[key], int(n > 0))
            if key in self.z:
                z, cur = self.z[key]
                m.add_hint(z, abs(n - cur))
        self._check_time()
        self._hint_packing(replicas)
        for f, loads in self.loads.items():
            cands = {c.device_class: c for c in self.cands[f]}
            placed = {c: min(replicas.get((f, c), 0), self.max_x[f, c]) for c in cands}
            split = fill_buckets(loads, {c: cands[c].usd_per_replica for c in cands},
                                 {c: cands[c].slices for c in cands}, placed, None)
            if split is None:
                continue
            self.hint_split[f] = loads.split_rps(split)
            for b, vs in self.s[f].items():
                for c, v in vs.items():
                    m.add_hint(v, split.get(b, {}).get(c, 0))
        if not self.below:
            return
        used: dict[str, list[str]] = {}
        for (f, c), n in replicas.items():
            if n > 0:
                used.setdefault(f, []).append(c)
        own = {f: max((self.lat[f, c] for c in used.get(f, ())), default=0) for f in self.graph.order}
        t_value = {id(t): max((self.tau(e, a, b) for a in used.get(e.parent, ()) for b in used.get(e.child, ())),
                              default=0) for e, _, t in self.edges}
        by_parent: dict[str, list[tuple[Edge, int, IntVar]]] = {}
        for e, w, t in self.edges:
            by_parent.setdefault(e.parent, []).append((e, w, t))
        below: dict[str, int] = {}
        self._check_time()
        for f in self.graph.order:  # children first, the recurrence of optimizer.graph
            added, side_by_side = 0, None
            for e, w, t in by_parent.get(f, ()):
                one = t_value[id(t)] + below[e.child]
                if e.concurrent:
                    side_by_side = max(side_by_side or 0, one)
                else:
                    added += w * one
            below[f] = own[f] + added + (side_by_side or 0)
            if side_by_side is not None:
                m.add_hint(self.side_by_side[f], side_by_side)
            m.add_hint(self.own[f], own[f])
            m.add_hint(self.below[f], min(below[f], self.max_below[f]))
        for _, _, t in self.edges:
            m.add_hint(t, t_value[id(t)])

    def _hint_packing(self, replicas: dict[tuple[str, str], int]) -> None:
        """n_p and m_q of the hinted replicas: the fewest patterns that hold them (optimizer.packing)."""
        sizes: dict[str, dict[tuple[str, int], int]] = {}
        for f, name in self.x:
            n = min(replicas.get((f, name), 0), self.max_x[f, name])
            slices = self._slices[f, name]
            key = kind(slices, self._classes[name].slices_per_device)
            by_kind = sizes.setdefault(name, {})
            by_kind[key] = by_kind.get(key, 0) + n
        for name, rows in self.patterns.items():
            need = {size: n for (what, size), n in sizes.get(name, {}).items() if what == "sub"}
            counts = pattern_counts([(p, 0) for p, _ in rows], need)
            for (_, v), n in zip(rows, counts or [0] * len(rows), strict=True):
                self.model.add_hint(v, n)
        for name, rows in self.node_patterns.items():
            multi = {size: n for (what, size), n in sizes.get(name, {}).items() if what == "multi"}
            counts = node_counts(self._classes[name], multi) if any(multi.values()) else None
            for (_, v), n in zip(rows, counts or [0] * len(rows), strict=True):
                self.model.add_hint(v, n)

    def solve(self, time_limit_s: float) -> tuple[int, cp_model.CpSolver]:
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = time_limit_s
        solver.parameters.num_workers = NUM_WORKERS
        solver.parameters.random_seed = RANDOM_SEED
        # A library must not own the process's signals: CP-SAT would otherwise install a SIGINT handler
        # during the solve (from whatever thread runs it) and leave SIGINT at its default afterwards.
        solver.parameters.catch_sigint_signal = False
        status = solver.solve(self.model)
        if status == cp_model.MODEL_INVALID:
            raise RuntimeError(f"optimizer built an invalid CP-SAT model: {self.model.validate()}")
        return status, solver


def _most_useful(f: FragmentDemand, c: Candidate, headroom: float, current: int) -> int:
    """The most replicas of f on c any optimal plan uses: what c holds, but no more than f needs on c
    alone (or runs there now). More is never cheaper: dropping the surplus keeps demand, load, min
    replicas and every y_fc, frees capacity, and cuts cost and |x - cur|. Tight caps make y_fc >= x_fc / cap
    strong in the LP relaxation, so the latency terms lat_fc * y_fc bind there too."""
    alone = replicas_alone(f, c, headroom)
    if alone is None:
        return c.max_replicas
    return min(c.max_replicas, max(alone, current, 1))


def _diagnose_infeasible(problem: Problem, classes: dict[str, ClassCapacity],
                         candidates: dict[str, tuple[Candidate, ...]], graph: Graph, status: int,
                         pools: Pools, until: float) -> tuple[Infeasibility, tuple[str, ...]]:
    """Why the model is infeasible: relaxed models (no change limit, no SLAs) solved in the time left
    before `until` tell the change limit, the SLAs or capacity apart."""
    if status != cp_model.INFEASIBLE:
        return Infeasibility.not_proven, (
            f"no feasible plan found within the {problem.time_limit_s:g} s time limit (not proven infeasible); "
            "raise time_limit_s",)

    def feasible_without(**relax) -> bool | None:
        left = (until - time.perf_counter()) / 2
        if left < MIN_SEARCH_S:
            return None
        try:
            found, _ = _Model(problem, classes, candidates, graph, pools=pools, deadline=until, **relax).solve(left)
        except _OutOfTime:
            return None
        return found in (cp_model.OPTIMAL, cp_model.FEASIBLE) or (None if found == cp_model.UNKNOWN else False)

    limited = problem.max_changed_fragments is not None or problem.change_limits
    if limited and problem.current and feasible_without(with_limit=False):
        most = f"at most {problem.max_changed_fragments} running fragments (max_changed_fragments)" \
            if problem.max_changed_fragments is not None else "within its change_limits"
        return Infeasibility.change_limit, (
            f"no placement changes {most} and still serves demand within capacity and SLAs; raise the "
            "limit, or keep the current placement",)
    if problem.slas:
        without_slas = feasible_without(with_slas=False)
        if without_slas is None:
            return Infeasibility.proven, (
                "no placement meets capacity and every SLA together (proven); the time limit left no "
                "time to tell which; raise time_limit_s for a diagnosis",)
        if without_slas:
            fastest = {f: min((c.latency_ms for c in cands), default=0.0) for f, cands in candidates.items()}
            below, _ = longest_paths(graph, fastest.__getitem__, lambda e: 0.0)
            best = {w: v for w, (v, _) in workload_p99(graph, below).items()}
            return Infeasibility.proven, diagnose_sla_with_capacity(problem, best)
    return Infeasibility.proven, diagnose_capacity(problem, candidates)
