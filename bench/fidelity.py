"""Plan fidelity: the p99 the optimizer predicts against the p99 the simulated fleet measures (issue 10, point 5).

    PYTHONPATH=. python bench/fidelity.py [--requests 4000] [--generated 15] [--seed 0] [--quiet]

Method. For each case the optimizer (`optimizer.solve`) plans on the simulated fleet's own classes
and healthy devices; the plan's assignments are applied to a fresh `SimulatedFleet` through the
Actuator protocol (one `ReplicaSet` per assignment, phase included), and the sim's `LoadDriver`
replays requests through it in simulated time: `LoadDriver.run` gives every span explicit
timestamps from the latencies the fleet serves, nothing sleeps, so a case costs only the Python
that walks the graphs. The driver's `Server` is a thin recorder around `SimulatedFleet.serve`, and
its span exporter keeps root spans only: nothing in the sim is changed or bypassed.

Cases: the three sample apps (controlplane/simfleet/apps.py) planned together at ROOT_RPS; and
`--generated` seeded apps, each planned alone on the whole fleet, built from the sim's blocks: an
LLM chat (8B, 32B or 70B), embedding, retrieval with a database call, rerank, tools; calls in
sequence, chains, a child called on 30% of visits, a loop calling an LLM and a tool 2-7 times per
visit. Every third app has such an optional child, every third a loop, every third a chain.

The problem is what telemetry would tell the optimizer about these apps:

  * fragments per workload ("<workload>/<key>"); demand = root rps x expected visits per request;
  * tokens: each call's TokenRule over the trace rows the driver replays (with a loop's context
    growth): the exact means, and the tokens of the 99th-percentile visit, which planning reads from
    the token histograms (estimates take latency at those, throughput at the means);
  * profiles: model kinds from `optimizer.perfmodel.estimate_profiles` (roofline, with prefill and
    decode pools, as controlplane/planning.py builds them before telemetry); other kinds on the CPU
    class only, latency cpu_ms + 1 ms, 8 cores a slice at 70% utilisation (as bench/graphs.py);
  * edges: mean calls per parent visit, and `calls_p99` from the exact distribution of calls per
    parent visit (a 30% child: 1; a 3-6 turn loop: 6); never `concurrent` (the sim runs a
    parent's calls one after another); text-sized payloads, as bench/graphs.py;
  * SLA per workload: a factor (APP_SLA_FACTOR; generated apps draw one from GEN_SLA_FACTORS) x
    `sim_shaped` on the fastest classes: own latency + the sum over children of calls_p99 x the
    child's, which is how the sim composes a request. It does not use the optimizer's path rule,
    so the SLAs stay put when that rule changes.

Load: each workload at a fixed rate, the demand its plan was made for (`App.steady_rps`, the sim's
own fixed-rate mode; token counts still come from the trace). The sim's queueing is an analytic
wait from each fragment's recent arrival rate (decayed over TAU_S = 20 s), so WARMUP_S of simulated
time is driven first and not measured; then `--requests` requests per workload.

Measured: each workload's p99 of root-span duration; each fragment's visits per second of simulated
time against its planned demand, the sim's utilisation at that rate (`rho sim`,
physics.utilisation over the running replicas: at 1 or more the sim's replicas cannot keep up, and
it caps the wait at rho = 0.95), and the p50 and p99 of its own visits (queueing, jitter and
per-request tokens included; a parent's own visit excludes its children).

Columns of the summary table, all p99 in ms:
  pred    `plan.predicted_p99_ms`: the optimizer's path rule on its profile latencies
  seq     `sim_shaped` on the same profile latencies (no transfers): what a path rule composing as
          the sim does would predict from the same profiles
  recomp  the optimizer's path rule (`optimizer.explain.predicted_p99`, transfers included) on each
          fragment's measured own p99 instead of its profile latency
  meas    measured end to end
pred/meas = (pred/recomp) x (recomp/meas): the first factor is the profiles' error (fragment
latencies), the second the path rule's (composing them).

Figures printed last: workloads whose plan says the SLA is met but whose measured p99 is above it
(goal 0), and predicted/measured p99: median, worst, how many within +-20% (goal: all).
"""

import argparse
import math
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: E402

from controlplane.actuators.base import DesiredPlacement, ReplicaSet  # noqa: E402
from controlplane.simfleet import physics  # noqa: E402
from controlplane.simfleet.apps import (  # noqa: E402
    APPS,
    BGE_LARGE,
    BGE_RERANKER,
    LLAMA_8B,
    LLAMA_70B,
    MODEL_KINDS,
    QWEN_CODER_32B,
    App,
    Call,
    Fragment,
    Kind,
    Loop,
    ModelCost,
    Step,
    TokenRule,
    Trace,
)
from controlplane.simfleet.driver import LoadDriver, load_trace  # noqa: E402
from controlplane.simfleet.fleet import TAU_S, SimulatedFleet  # noqa: E402
from controlplane.simfleet.physics import Visit  # noqa: E402
from optimizer.catalog import by_name  # noqa: E402
from optimizer.explain import own_latency, predicted_p99, units_of  # noqa: E402
from optimizer.graph import build_graph  # noqa: E402
from optimizer.perfmodel import estimate_profiles, kv_bytes_per_token, params_from_model_name  # noqa: E402
from optimizer.solver import solve  # noqa: E402
from optimizer.types import (  # noqa: E402
    ClassCapacity,
    Edge,
    FragmentDemand,
    Phase,
    Plan,
    Problem,
    ServiceProfile,
    WorkloadSla,
)

ROOT_RPS = {"rag-chatbot": 4.0, "coding-agent": 1.0, "doc-pipeline": 0.5}  # about what the sim's fleet holds
APP_SLA_FACTOR = 1.5
GEN_SLA_FACTORS = (1.5, 4.0)  # a generated app's SLA factor is drawn uniformly from this range
WARMUP_S = 5 * TAU_S  # the sim's rate estimates are within 1% of a steady rate by then
START_S = 1_000_000.0  # simulated epoch seconds of the first arrival
TIME_LIMIT_S = 10.0
CPU_CLASS = "CPU-EPYC-64C"
WITHIN = 0.2  # predicted within +-20% of measured


# --- the problem ------------------------------------------------------------------------------


@dataclass
class _Node:
    """What the walk learns of one fragment: expected visits and token sums per request."""

    fragment: Fragment
    visits: float = 0.0
    tokens_in: float = 0.0
    tokens_out: float = 0.0
    # (tokens, weight) of every visit the walk makes: weight = visits per request it stands for
    samples_in: list[tuple[float, float]] = field(default_factory=list)
    samples_out: list[tuple[float, float]] = field(default_factory=list)

    def mean_tokens(self) -> tuple[float, float]:
        return (self.tokens_in / self.visits, self.tokens_out / self.visits) if self.visits else (0.0, 0.0)

    def p99_tokens(self) -> tuple[float, float]:
        """Input and output tokens of the 99th-percentile visit (what telemetry's histograms tell planning)."""
        def p99(samples: list[tuple[float, float]]) -> float:
            total, acc = sum(w for _, w in samples), 0.0
            for value, w in sorted(samples):
                acc += w
                if acc >= 0.99 * total:
                    return value
            return 0.0
        return p99(self.samples_in), p99(self.samples_out)


@dataclass
class Shape:
    """One app's graph as the driver walks it: per fragment key, expected visits and tokens per request;
    per (parent key, child key), the distribution of calls per parent visit (pmf by count)."""

    root: str
    nodes: dict[str, _Node] = field(default_factory=dict)
    calls: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add_calls(self, parent: str, child: str, pmf: list[float]) -> None:
        """Calls of one more step; a child called from two steps of one parent gets the sum of both."""
        if (old := self.calls.get((parent, child))) is not None:  # the sum's pmf: a convolution
            pmf = [sum(old[i] * pmf[k - i] for i in range(len(old)) if 0 <= k - i < len(pmf))
                   for k in range(len(old) + len(pmf) - 1)]
        self.calls[parent, child] = pmf


def calls_p99(pmf: Sequence[float]) -> int:
    """The 99th percentile of a count with distribution `pmf`."""
    acc = 0.0
    for k, p in enumerate(pmf):
        acc += p
        if acc >= 0.99 - 1e-12:
            return k
    return len(pmf) - 1


@cache
def shape(app: App) -> Shape:
    """Expected visits and tokens of every fragment per request, and calls per parent visit, as
    controlplane/simfleet/driver.py walks `app`: a call runs with its probability; a loop runs a
    uniform number of turns in [min, max], turn i > 0 on a fresh trace row with i x growth more context."""
    rows = load_trace(app.trace)
    out = Shape(app.root.fragment.key)

    def mean(fn: Callable) -> float:
        return sum(fn(r) for r in rows) / len(rows)

    def visit(call: Call, weight: float, growth: int) -> None:
        f = call.fragment
        node = out.nodes.setdefault(f.key, _Node(f))
        node.visits += weight
        if f.model is not None:
            node.tokens_in += weight * mean(lambda r: call.tokens.input_tokens(r.context_tokens + growth))
            node.samples_in += [(call.tokens.input_tokens(r.context_tokens + growth), weight / len(rows)) for r in rows]
        if f.kind is Kind.llm:
            node.tokens_out += weight * mean(lambda r: call.tokens.output_tokens(r.generated_tokens))
            node.samples_out += [(call.tokens.output_tokens(r.generated_tokens), weight / len(rows)) for r in rows]
        for step in call.children:
            if isinstance(step, Call):
                out.add_calls(f.key, step.fragment.key, [1 - step.probability, step.probability])
                visit(step, weight * step.probability, growth)
            else:
                loop(f.key, step, weight, growth)

    def loop(parent: str, step: Loop, weight: float, growth: int) -> None:
        turns = range(step.min_iterations, step.max_iterations + 1)
        for call in step.body:
            pmf = [0.0] * (step.max_iterations + 1)
            for n in turns:  # calls in n turns: binomial(n, probability)
                for k in range(n + 1):
                    pmf[k] += math.comb(n, k) * call.probability**k * (1 - call.probability) ** (n - k) / len(turns)
            out.add_calls(parent, call.fragment.key, pmf)
            for i in range(step.max_iterations):
                reached = sum(n > i for n in turns) / len(turns)
                visit(call, weight * reached * call.probability, i * step.context_growth_tokens if i else growth)

    visit(app.root, 1.0, 0)
    return out


def sim_shaped(s: Shape, latency: Callable[[str], float]) -> float:
    """Root-to-leaf latency composed as the sim serves a request: a fragment's own latency plus, for
    every child, calls_p99 x the child's (siblings in sequence add; a child called on any share of
    visits above 1% counts in full)."""
    children: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for (parent, child), pmf in s.calls.items():
        children[parent].append((child, calls_p99(pmf)))

    def below(key: str) -> float:
        return latency(key) + sum(k * below(c) for c, k in children[key])

    return below(s.root)


def sim_classes(fleet: SimulatedFleet) -> tuple[ClassCapacity, ...]:
    """The sim's healthy devices by class (and per node), priced and described by the optimizer's catalog."""
    nodes: dict[str, list[int]] = defaultdict(list)
    for n in fleet.inventory():
        nodes[n.device_class].append(n.healthy_devices)
    out = []
    for name, per_node in sorted(nodes.items()):
        s = by_name(name)
        out.append(ClassCapacity(name, s.usd_per_hour, sum(per_node), s.slices_per_device, s.vendor, s.fabric,
                                 s.memory_gib, s.sold_by_slice, tuple(per_node)))
    return tuple(out)


def fragment_name(app: App, key: str) -> str:
    return f"{app.workload}/{key}"


def profiles_of(node: _Node, specs: tuple) -> tuple[tuple[ServiceProfile, ...], float]:
    """A fragment's profiles on `specs`, and the KV bytes a split visit hands off (module docstring)."""
    f = node.fragment
    t_in, t_out = node.mean_tokens()
    if f.kind in MODEL_KINDS:
        kv = kv_bytes_per_token(params_from_model_name(f.name, "llm")) * t_in if f.kind is Kind.llm else 0.0
        return estimate_profiles(str(f.kind), f.name, t_in, t_out, specs, phases=True,
                                 tail_tokens=node.p99_tokens()), kv
    cpu = by_name(CPU_CLASS)
    cores = cpu.cores / cpu.slices_per_device
    return (ServiceProfile(cpu.name, 0.7 * cores * 1000 / f.cpu_ms, f.cpu_ms + 1.0),), 0.0


def problem_for(case: "Case", classes: tuple[ClassCapacity, ...]) -> Problem:
    """The optimizer's problem for a case's apps on `classes` (module docstring)."""
    specs = tuple(by_name(c.device_class) for c in classes)
    fragments, edges, slas = [], [], []
    for app in case.apps:
        s = shape(app)
        fastest: dict[str, float] = {}
        for key, node in s.nodes.items():
            profiles, kv = profiles_of(node, specs)
            fastest[key] = min(p.latency_ms for p in profiles if p.phase is Phase.whole)
            fragments.append(FragmentDemand(fragment_name(app, key), app.workload,
                                            case.rps[app.workload] * node.visits, profiles, kv_bytes_per_request=kv))
        for (parent, child), pmf in s.calls.items():
            node = s.nodes[child]
            payload = 4.0 * sum(node.mean_tokens()) if node.fragment.kind in MODEL_KINDS else 16384.0
            edges.append(Edge(fragment_name(app, parent), fragment_name(app, child),
                              sum(k * p for k, p in enumerate(pmf)), payload, calls_p99=float(calls_p99(pmf))))
        bound = case.sla_factor[app.workload] * sim_shaped(s, fastest.__getitem__)
        slas.append(WorkloadSla(app.workload, round(bound, 1)))
    return Problem(classes, tuple(fragments), edges=tuple(edges), slas=tuple(slas), time_limit_s=TIME_LIMIT_S)


# --- generated apps ---------------------------------------------------------------------------

MODELS: dict[int, ModelCost] = {8: LLAMA_8B, 32: QWEN_CODER_32B, 70: LLAMA_70B}


def generated_app(seed: int, i: int) -> tuple[App, float, float]:
    """A seeded app of the sim's blocks, its root rps and its SLA factor; i % 3 forces an optional
    child (0), a loop (1) or a chain (2), and one or two further blocks are drawn."""
    rng = random.Random(seed * 1000 + i)
    counter = iter(range(100))

    def chat(sizes=(8, 8, 8, 32, 32, 70), out_cap: int = 1024) -> Call:
        size = rng.choice(sizes)  # model names carry "<size>b", which the optimizer reads the size from
        return Call(Fragment(Kind.llm, f"chat{next(counter)}-{size}b", MODELS[size]), tokens=TokenRule(out_cap=out_cap))

    def tool(low: float = 5.0, high: float = 300.0, probability: float = 1.0) -> Call:
        return Call(Fragment(Kind.tool, f"tool{next(counter)}", cpu_ms=round(rng.uniform(low, high), 1)),
                    probability=probability)

    def rag() -> tuple[Call, ...]:
        db = Call(Fragment(Kind.db, f"db{next(counter)}", cpu_ms=round(rng.uniform(2, 8), 1)))
        search = Call(Fragment(Kind.retrieval, f"search{next(counter)}", cpu_ms=round(rng.uniform(5, 30), 1),
                               accelerated_speedup=4.0), children=(db,))
        steps = (Call(Fragment(Kind.embedding, f"embed{next(counter)}", BGE_LARGE), tokens=TokenRule(in_cap=512)),
                 search)
        if rng.random() < 0.5:
            steps += (Call(Fragment(Kind.rerank, f"rerank{next(counter)}", BGE_RERANKER),
                           tokens=TokenRule(0.0, rng.choice((1600, 3200, 6400)))),)
        return steps

    def optional() -> Call:
        if rng.random() < 0.5:
            return tool(probability=0.3)
        return replace(chat(sizes=(8,), out_cap=256), probability=0.3)

    def loop() -> Loop:
        low = rng.randint(2, 4)
        body = (chat(sizes=(8, 8, 32)), tool(5.0, 150.0, probability=rng.choice((1.0, 0.6))))
        return Loop(body, low, low + rng.randint(0, 3), context_growth_tokens=rng.choice((0, 200, 400)))

    def chain() -> Call:
        return Call(Fragment(Kind.tool, f"plan{next(counter)}", cpu_ms=round(rng.uniform(5, 50), 1)),
                    children=(chat(sizes=(8, 32)),))

    def single(make: Callable[[], Step]) -> Callable[[], tuple[Step, ...]]:
        return lambda: (make(),)

    blocks = [(single(optional), single(loop), single(chain))[i % 3]]
    blocks += rng.sample([single(chat), rag, single(tool), single(optional), single(chain)], rng.randint(1, 2))
    steps = [step for block in blocks for step in block()]
    rng.shuffle(steps)
    root = Call(Fragment(rng.choice((Kind.agent, Kind.cpu)), f"entry{next(counter)}",
                         cpu_ms=round(rng.uniform(2, 10), 1)), children=tuple(steps))
    trace = Trace.code if any(isinstance(s, Loop) for s in steps) else Trace.conv
    return (App("gen", f"gen-{seed}-{i}", root, trace), round(rng.uniform(0.2, 1.5), 2),
            round(rng.uniform(*GEN_SLA_FACTORS), 2))


@dataclass(frozen=True)
class Case:
    """Apps planned together, each at its rate (requests/s), with its SLA factor."""

    name: str
    apps: tuple[App, ...]
    rps: dict[str, float]
    sla_factor: dict[str, float]


def cases(generated: int, seed: int) -> list[Case]:
    out = [Case("the three sample apps", APPS, {a.workload: ROOT_RPS[a.workload] for a in APPS},
                {a.workload: APP_SLA_FACTOR for a in APPS})]
    for i in range(generated):
        app, rate, factor = generated_app(seed, i)
        out.append(Case(app.workload, (app,), {app.workload: rate}, {app.workload: factor}))
    return out


# --- running a plan on the sim ----------------------------------------------------------------


class _Recorder:
    """The driver's `Server` for one app: serves on the fleet and keeps (at, tokens in, out, visit) of every visit."""

    def __init__(self, fleet: SimulatedFleet, app: App) -> None:
        self.fleet, self.apps = fleet, (app,)
        self.visits: dict[str, list[tuple[float, int, int, Visit | None]]] = defaultdict(list)

    def serve(self, app: App, fragment: Fragment, input_tokens: int, output_tokens: int, at: float,
              rng: random.Random) -> Visit | None:
        visit = self.fleet.serve(app, fragment, input_tokens, output_tokens, at, rng)
        self.visits[fragment.key].append((at, input_tokens, output_tokens, visit))
        return visit


class _Roots(SpanExporter):
    """Keeps (start s, duration s) of root spans and drops every other span."""

    def __init__(self) -> None:
        self.roots: list[tuple[float, float]] = []

    def export(self, spans) -> SpanExportResult:
        for s in spans:
            if s.parent is None:
                self.roots.append((s.start_time / 1e9, (s.end_time - s.start_time) / 1e9))
        return SpanExportResult.SUCCESS


@dataclass(frozen=True)
class FragmentResult:
    key: str
    placed: str  # what the sim runs, e.g. "L40S x3, Gaudi2/decode x1"
    planned_rps: float
    served_rps: float
    failed: int  # visits that found no running replica
    plan_util: float  # planned demand over the plan's replicas x profile throughput (busier pool when split)
    sim_rho: float  # the sim's utilisation of the running replicas at the served rate
    pred_ms: float  # the fragment's own latency in the plan
    p50_ms: float  # of its measured own visits
    p99_ms: float


@dataclass(frozen=True)
class WorkloadResult:
    workload: str
    sla_ms: float
    pred_ms: float
    seq_ms: float
    recomp_ms: float
    meas_ms: float
    requests: int
    fragments: tuple[FragmentResult, ...]

    @property
    def plan_met(self) -> bool:
        return self.pred_ms <= self.sla_ms + 1e-9

    @property
    def met(self) -> bool:
        return self.meas_ms <= self.sla_ms


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank quantile (no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def placement(plan: Plan, apps: Sequence[App]) -> DesiredPlacement:
    """The plan as the Actuator protocol's desired placement."""
    owner = {fragment_name(app, f.key): (app, f.key) for app in apps for f in app.fragments()}
    sets = []
    for a in plan.assignments:
        app, key = owner[a.fragment]
        sets.append(ReplicaSet(app.tenant, app.workload, key, a.device_class, a.replicas, a.slices, a.phase))
    return DesiredPlacement(1, tuple(sets))


def run_case(case: Case, requests: int, seed: int) -> tuple[Plan, list[WorkloadResult], str]:
    """Plan a case on a fresh sim fleet, apply the plan, drive each app at its rate; per-workload
    results, and why there are none when the case has no plan or the sim refuses it."""
    fleet = SimulatedFleet(seed=seed, apps=case.apps)
    classes = sim_classes(fleet)
    problem = problem_for(case, classes)
    plan = solve(problem)
    if not plan.feasible:
        return plan, [], "no plan: " + "; ".join(plan.diagnosis[:2])
    desired = placement(plan, case.apps)
    applied = fleet.apply(desired)
    if not applied.ok:
        return plan, [], "the sim refused the plan: " + applied.message
    running = fleet.observe().replica_sets
    if set(running) != {replace(rs, phase=Phase(rs.phase)) for rs in desired.replica_sets if rs.replicas}:
        return plan, [], f"the sim runs other replicas than planned: {running}"

    class_of = {c.device_class: c for c in classes}
    units = units_of(plan.assignments)
    latency = {(f.fragment, p.device_class, p.phase): p.latency_ms for f in problem.fragments for p in f.profiles}
    own_pred = own_latency(problem, class_of, latency, units)
    used: dict[str, dict[str, int]] = defaultdict(dict)
    for (f, _), by_class in units.items():
        for c, n in by_class.items():
            used[f][c] = used[f].get(c, 0) + n
    demand = {f.fragment: f for f in problem.fragments}
    sla = {s.workload: s.p99_ms for s in problem.slas}

    out = []
    own_meas: dict[str, float] = {}
    measured: dict[str, tuple[float, int, tuple[FragmentResult, ...]]] = {}
    for app in case.apps:
        rate = case.rps[app.workload]
        warm = math.ceil(rate * WARMUP_S - 1e-9)  # requests driven before measuring
        recorder, roots = _Recorder(fleet, replace(app, steady_rps=rate)), _Roots()
        LoadDriver(recorder, seed=seed).run(warm + requests, roots, start_s=START_S)
        t0, t1 = START_S + warm / rate, START_S + (warm + requests - 1) / rate
        durations = [d for _, d in sorted(roots.roots)[warm:]]
        frags = []
        for f in app.fragments():
            name = fragment_name(app, f.key)
            visits = [v for v in recorder.visits[f.key] if t0 <= v[0] <= t1]
            served = [v for v in visits if v[3] is not None]
            own = [v[3].latency_s * 1000 for v in served] or [math.inf]
            own_meas[name] = quantile(own, 0.99)
            served_rps = len(served) / (t1 - t0)
            sets = [rs for rs in running if rs.workload == app.workload and rs.fragment_key == f.key]
            frags.append(FragmentResult(
                key=f.key,
                placed=", ".join(f"{rs.device_class}{'/' + rs.phase if rs.phase else ''} x{rs.replicas}"
                                 for rs in sets),
                planned_rps=demand[name].demand_rps,
                served_rps=served_rps,
                failed=len(visits) - len(served),
                plan_util=_plan_util(demand[name], plan),
                sim_rho=_sim_rho(f, sets, served, served_rps),
                pred_ms=own_pred[name],
                p50_ms=quantile(own, 0.5),
                p99_ms=own_meas[name],
            ))
        measured[app.workload] = (quantile(durations, 0.99) * 1000, len(durations), tuple(frags))
    recomposed, _ = predicted_p99(problem, build_graph(problem), class_of, own_meas, used)
    for app in case.apps:
        meas, count, frags = measured[app.workload]
        seq = sim_shaped(shape(app), lambda key, app=app: own_pred[fragment_name(app, key)])
        out.append(WorkloadResult(app.workload, sla[app.workload], plan.predicted_p99_ms[app.workload], seq,
                                  recomposed[app.workload], meas, count, frags))
    return plan, out, ""


def _plan_util(fd: FragmentDemand, plan: Plan) -> float:
    by_phase: dict[Phase, float] = defaultdict(float)
    for a in plan.assignments:
        if a.fragment == fd.fragment:
            profile = next(p for p in fd.profiles if p.device_class == a.device_class and p.phase == a.phase)
            by_phase[a.phase] += a.replicas * profile.throughput_rps
    return max((fd.demand_rps / cap for cap in by_phase.values() if cap > 0), default=math.inf)


def _sim_rho(fragment: Fragment, sets: Sequence[ReplicaSet], served: Sequence[tuple], rate: float) -> float:
    """physics.utilisation of the running replicas (the busier pool when split) at `rate`, at the visits'
    mean tokens."""
    if not sets or not served:
        return math.inf
    load = physics.Load(rate, statistics.fmean(v[1] for v in served), statistics.fmean(v[2] for v in served))
    rho = 0.0
    for phase in {Phase(rs.phase) for rs in sets}:
        deployments = [physics.Deployment(rs.device_class, rs.replicas, rs.slices) for rs in sets if rs.phase == phase]
        rho = max(rho, physics.utilisation(fragment, deployments, load, phase)[0])
    return rho


# --- report -----------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) else "-"


def print_case(case: Case, plan: Plan, results: Sequence[WorkloadResult], note: str) -> None:
    head = f"\n== {case.name}"
    if plan.feasible:
        head += f": ${plan.usd_per_hour:,.2f}/h, {plan.status}, gap {plan.gap:.1%}, solved in {plan.solve_time_s:.2f} s"
    print(head)
    if note:
        print(f"   {note}")
    for w in results:
        print(f"   {w.workload} at {case.rps[w.workload]:g} rps: SLA {_ms(w.sla_ms)} ms "
              f"({case.sla_factor[w.workload]:g}x) "
              f"| pred {_ms(w.pred_ms)} | seq {_ms(w.seq_ms)} | recomp {_ms(w.recomp_ms)} | meas {_ms(w.meas_ms)}")
        print(f"     {'fragment':32s} {'runs on':28s} {'plan rps':>8s} {'served':>7s} {'fail':>4s} "
              f"{'util':>5s} {'rho sim':>7s} {'own pred':>8s} {'p50':>7s} {'p99':>7s}")
        for f in w.fragments:
            print(f"     {f.key[:32]:32s} {f.placed[:28]:28s} {f.planned_rps:8.2f} {f.served_rps:7.2f} {f.failed:4d} "
                  f"{f.plan_util:5.2f} {f.sim_rho:7.2f} {_ms(f.pred_ms):>8s} {_ms(f.p50_ms):>7s} {_ms(f.p99_ms):>7s}")


def print_table(results: Sequence[WorkloadResult]) -> None:
    print(f"\n{'workload':14s} {'SLA':>7s} {'pred':>7s} {'seq':>7s} {'recomp':>7s} {'meas':>7s} {'pred/meas':>9s} "
          f"{'recomp/meas':>11s} {'met: plan':>9s} {'meas':>4s}  served/planned rps, fragments at sim rho >= 1")
    for w in results:
        served = [f.served_rps / f.planned_rps for f in w.fragments if f.planned_rps > 0]
        print(f"{w.workload:14s} {_ms(w.sla_ms):>7s} {_ms(w.pred_ms):>7s} {_ms(w.seq_ms):>7s} {_ms(w.recomp_ms):>7s} "
              f"{_ms(w.meas_ms):>7s} {w.pred_ms / w.meas_ms:9.2f} {w.recomp_ms / w.meas_ms:11.2f} "
              f"{'yes' if w.plan_met else 'no':>9s} {'yes' if w.met else 'NO':>4s}  "
              f"{min(served):.2f}-{max(served):.2f}, "
              f"{sum(f.sim_rho >= 1 for f in w.fragments)} of {len(w.fragments)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000, help="measured requests per workload (default 4000)")
    parser.add_argument("--generated", type=int, default=15, help="generated apps, each planned alone (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated apps and of the sim")
    parser.add_argument("--quiet", action="store_true", help="leave out the per-fragment tables")
    args = parser.parse_args()
    started = time.perf_counter()
    results: list[WorkloadResult] = []
    all_cases = cases(args.generated, args.seed)
    unplanned = 0
    for case in all_cases:
        plan, found, note = run_case(case, args.requests, args.seed)
        unplanned += bool(note)
        if not args.quiet or note:
            print_case(case, plan, found, note)
        results.extend(found)
    print_table(results)
    if not results:
        return

    ratios = [w.pred_ms / w.meas_ms for w in results]
    composed = [w.recomp_ms / w.meas_ms for w in results]
    seq = [w.seq_ms / w.meas_ms for w in results]
    missed = [w.workload for w in results if w.plan_met and not w.met]
    overloaded = sum(f.sim_rho >= 1 for w in results for f in w.fragments)
    print(f"\n{len(results)} workloads in {len(all_cases)} cases ({unplanned} cases not run), "
          f"{sum(w.requests for w in results):,} measured requests, {time.perf_counter() - started:.0f} s; "
          f"{overloaded} fragments past the sim's capacity (rho >= 1)")
    own = defaultdict(list)
    for w in results:
        for f in w.fragments:
            own[f.key.split(":")[0] == Kind.llm].append(f.p99_ms / f.pred_ms)
    print(f"fragments' own measured p99 / profile latency in the plan: LLM median {statistics.median(own[True]):.2f} "
          f"(range {min(own[True]):.2f}-{max(own[True]):.2f}), other kinds median {statistics.median(own[False]):.2f} "
          f"(range {min(own[False]):.2f}-{max(own[False]):.2f})")
    print(f"seq/measured p99 (profile latencies, composed as the sim runs requests): median "
          f"{statistics.median(seq):.2f}, range {min(seq):.2f}-{max(seq):.2f}")
    print(f"recomposed/measured p99 (the optimizer's path rule on measured fragment p99s): median "
          f"{statistics.median(composed):.2f}, range {min(composed):.2f}-{max(composed):.2f}, "
          f"{sum(abs(r - 1) <= WITHIN for r in composed)} of {len(composed)} within +-20%")
    worst = max(ratios, key=lambda r: abs(math.log(r)))
    print(f"predicted/measured p99: median {statistics.median(ratios):.2f}, worst {worst:.2f}, "
          f"{sum(abs(r - 1) <= WITHIN for r in ratios)} of {len(ratios)} within +-20% (goal: all)")
    print(f"plan says the SLA is met, measured p99 above it: {len(missed)} of {len(results)} workloads (goal 0)")


if __name__ == "__main__":
    main()
