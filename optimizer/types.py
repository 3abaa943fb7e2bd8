"""The typed stages of the optimizer: what a `Problem` holds and what a `Plan` answers."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from optimizer.transfer import TransferModel


@dataclass(frozen=True)
class ClassCapacity:
    """One device class as the solver sees it: what is healthy now and what it costs."""

    device_class: str
    usd_per_hour: float  # one whole device
    devices: int  # healthy devices
    slices_per_device: int = 1
    vendor: str = ""  # e.g. nvidia, amd, intel; "" when unknown (treated as its own vendor)
    fabric: str = ""  # scale-up interconnect, e.g. nvlink; "" when unknown
    memory_gib_per_device: float = 0.0  # 0 means memory is not checked
    # How the class is paid for: per device occupied (False: a device with any replica on it costs its
    # whole price, as bought GPUs and whole-GPU instances are), or per slice (True: the class is sold by
    # the slice, as CPU cores, or MIG profiles and DRA partitions rented on their own, are).
    sold_by_slice: bool = False
    # Healthy devices on each node of the class (a replica spanning several devices needs them on one
    # node, as tensor parallelism does). (): not known, and a replica may span any of the class's devices.
    node_devices: tuple[int, ...] = ()

    @property
    def slices(self) -> int:
        return self.devices * self.slices_per_device


class Phase(StrEnum):
    """What a replica of an LLM fragment serves: whole visits, or one pool of disaggregated serving."""

    whole = ""  # prefill and decode on the same replica (every non-LLM fragment)
    prefill = "prefill"  # prompt processing and the first token; hands its KV cache to a decode replica
    decode = "decode"  # the remaining tokens, from the KV cache it received


@dataclass(frozen=True)
class ServiceProfile:
    """How one replica of a fragment performs on one device class, at an SLA-safe operating point.

    An LLM fragment may also have `prefill` and `decode` profiles: replicas of a prefill pool
    (throughput: prompts/s; latency: prefill, i.e. its TTFT) and of a decode pool (throughput:
    visits/s; latency: every output token; tpot_ms: one token). With both, the optimizer may split
    the fragment over two pools on different classes (see FragmentDemand.kv_bytes_per_request)."""

    device_class: str
    throughput_rps: float  # visits per second one replica sustains
    latency_ms: float  # latency of one visit (of its phase) at that operating point
    slices: int = 1  # slices one replica occupies
    measured: bool = False  # True when it comes from telemetry, False when estimated
    phase: Phase = Phase.whole
    ttft_ms: float | None = None  # time to first token (LLM; None: not known, not checked)
    tpot_ms: float | None = None  # time per output token (LLM; None: not known, not checked)


@dataclass(frozen=True)
class BucketDemand:
    """Part of a fragment's demand: the rate of one request-size bucket and, per device class, the
    most requests/s of that bucket one replica sustains (Mélange's profiled tputs; SLO folded in).
    A class missing from `throughput` (or at 0) cannot serve the bucket."""

    bucket: str
    rate_rps: float
    throughput: tuple[tuple[str, float], ...]  # (device class, max req/s per replica)

    def throughput_on(self, device_class: str) -> float:
        return next((t for c, t in self.throughput if c == device_class), 0.0)


@dataclass(frozen=True)
class FragmentDemand:
    """One fragment to place: its load, its latency bound and where it can run."""

    fragment: str  # stable identifier, unique within the problem
    workload: str
    demand_rps: float
    profiles: tuple[ServiceProfile, ...]
    latency_bound_ms: float | None = None
    min_replicas: int = 1
    memory_gib_per_replica: float | None = None  # checked where the class states its memory
    pinned: tuple[str, ...] = ()  # when set, only these classes may run the fragment
    forbidden: tuple[str, ...] = ()  # classes that may never run it
    # Demand per request-size bucket. When set it *is* the fragment's demand: the profiles still
    # say which classes may run it (slices, latency, measured) but their throughput_rps is unused,
    # and demand_rps must be 0 or the buckets' total rate (kept for display).
    buckets: tuple[BucketDemand, ...] = ()
    # KV-cache bytes a prefill replica hands to a decode replica per visit, when the fragment is
    # split (profiles with phase prefill and decode); the transfer counts in its latency.
    kv_bytes_per_request: float = 0.0

    def scaled(self, factor: float) -> FragmentDemand:
        """This fragment with its demand (and every bucket's rate) times `factor`."""
        return replace(self, demand_rps=self.demand_rps * factor,
                       buckets=tuple(replace(b, rate_rps=b.rate_rps * factor) for b in self.buckets))


@dataclass(frozen=True)
class Edge:
    """A call from one fragment to another: per parent visit, how many child visits and bytes each."""

    parent: str
    child: str
    calls_per_parent_call: float = 1.0  # the mean over parent visits
    bytes_per_call: float = 0.0
    # The child's calls overlap other child calls of the same parent visit in time (their spans
    # overlap in the trace): they run concurrently, so they count by max, not by sum.
    concurrent: bool = False
    # Calls per parent visit at the 99th percentile, where telemetry measured it (None: not known).
    calls_p99: float | None = None


class Priority(StrEnum):
    """A workload's priority class: when no plan meets every SLA, batch is queued and shed first
    (optimizer.degrade)."""

    realtime = "realtime"  # interactive: its latency SLA and demand are the last to give
    batch = "batch"  # throughput work that may wait (queued: SLA relaxed) or be shed


@dataclass(frozen=True)
class WorkloadSla:
    """End-to-end p99 latency bound for every root-to-leaf path of one workload's graph, and
    bounds on time to first token and time per output token for each of its LLM fragments
    (checked against the profiles' ttft_ms / tpot_ms where they state them)."""

    workload: str
    p99_ms: float
    ttft_ms: float | None = None
    tpot_ms: float | None = None


@dataclass(frozen=True)
class ChangeLimit:
    """At most `limit` of these fragments, among those running now, may change their replicas
    (a tenant's or a workload's migration policy: its own disruption limit)."""

    fragments: tuple[str, ...]
    limit: int


@dataclass(frozen=True)
class Problem:
    """Everything `solve` needs; built by the control plane's snapshot, never mutated."""

    device_classes: tuple[ClassCapacity, ...]
    fragments: tuple[FragmentDemand, ...]
    headroom: float = 1.2
    time_limit_s: float = 5.0  # for the whole solve, model building and explanations included
    edges: tuple[Edge, ...] = ()
    slas: tuple[WorkloadSla, ...] = ()
    current: tuple[Assignment, ...] = ()  # the placement running now (warm start, migration cost)
    # $/hour charged per replica moved: the one-off cost of a move divided by the hours it is
    # amortised over. A move (one replica stopped on A, one started on B) costs this once; a
    # replica only started or only stopped costs half of it.
    migration_cost_usd: float = 0.0
    transfer: TransferModel = field(default_factory=TransferModel)
    # At most this many fragments that run now may change their replicas (a migration policy's
    # disruption limit); fragments with nothing running yet are placed regardless. None: no limit.
    max_changed_fragments: int | None = None
    change_limits: tuple[ChangeLimit, ...] = ()  # the same, over groups of fragments
    # Workloads of the batch priority class (every other workload is realtime); only the degraded
    # fallback (optimizer.degrade) reads it.
    batch_workloads: tuple[str, ...] = ()

    def priority_of(self, workload: str) -> Priority:
        return Priority.batch if workload in self.batch_workloads else Priority.realtime


class PlanStatus(StrEnum):
    optimal = "optimal"
    feasible = "feasible"
    # Feasible only for a relaxed problem: some SLA or demand is not met (Plan.shortfalls says which).
    degraded = "degraded"
    infeasible = "infeasible"


class Infeasibility(StrEnum):
    """How sure `solve` is that no plan exists: what a caller may do about an infeasible plan differs."""

    proven = "proven"  # no placement meets the problem as given (the diagnosis says what)
    change_limit = "change_limit"  # proven, and max_changed_fragments is the cause: without it a plan exists
    not_proven = "not_proven"  # none found within the time limit; one may exist


@dataclass(frozen=True)
class Assignment:
    """Replicas of one fragment (or of one phase pool of a split LLM fragment) on one device class."""

    fragment: str
    device_class: str
    replicas: int
    slices: int  # per replica
    usd_per_hour: float  # for all these replicas
    phase: Phase = Phase.whole


@dataclass(frozen=True)
class Plan:
    """A proposed placement with its cost, or a diagnosis of why none exists."""

    status: PlanStatus
    assignments: tuple[Assignment, ...] = ()
    usd_per_hour: float = 0.0  # the assignments' cost plus the idle slices of devices sold whole
    lower_bound_usd_per_hour: float = 0.0
    solve_time_s: float = 0.0
    diagnosis: tuple[str, ...] = field(default=())
    predicted_p99_ms: dict[str, float] = field(default_factory=dict)  # per workload with an SLA
    moves: tuple[ReplicaMove, ...] = ()  # against problem.current
    explanations: dict[str, Explanation] = field(default_factory=dict)  # per fragment
    cost_breakdown: CostBreakdown = field(default_factory=lambda: CostBreakdown())
    migration_usd_per_hour: float = 0.0  # the objective's migration term for this plan
    # For fragments with bucketed demand: req/s of each bucket served on each class.
    bucket_split: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # Per class, the devices the assignments occupy (the fewest that hold them: optimizer.packing).
    devices_used: dict[str, int] = field(default_factory=dict)
    # With status degraded: what the plan does not meet of the original problem, per workload.
    shortfalls: tuple[Shortfall, ...] = ()
    # With status infeasible, from `solve`: whether that is proven (None: the planner did not say).
    infeasibility: Infeasibility | None = None

    @property
    def feasible(self) -> bool:
        return self.status is not PlanStatus.infeasible

    @property
    def gap(self) -> float:
        """Relative optimality gap: 0 when proven optimal."""
        if self.usd_per_hour <= 0:
            return 0.0
        return max(0.0, (self.usd_per_hour - self.lower_bound_usd_per_hour) / self.usd_per_hour)

    def replicas_of(self, fragment: str, phase: Phase = Phase.whole) -> dict[str, int]:
        return {a.device_class: a.replicas for a in self.assignments
                if a.fragment == fragment and a.phase == phase and a.replicas}

    def is_split(self, fragment: str) -> bool:
        return any(a.fragment == fragment and a.phase is not Phase.whole for a in self.assignments)


@dataclass(frozen=True)
class ReplicaMove:
    """Replicas of a fragment that stop on one class and start on another (None: only start or stop)."""

    fragment: str
    from_class: str | None
    to_class: str | None
    replicas: int
    phase: Phase = Phase.whole  # moves pair within one phase: splitting stops whole replicas, starts pools


@dataclass(frozen=True)
class Explanation:
    """Why a fragment runs where it does, and what the next-best class would cost."""

    binding: str  # e.g. "cheapest per throughput", "capacity of L40S", "latency bound of workload w"
    runner_up: str | None = None
    runner_up_delta_usd_per_hour: float | None = None  # runner-up cost minus this plan's cost of the fragment


@dataclass(frozen=True)
class CostBreakdown:
    """A plan's $/hour split by device class and by workload. A class sold by the device also costs
    the slices of its occupied devices that no replica uses: `idle_by_class` (in `by_class` too, in no
    workload's share)."""

    by_class: dict[str, float] = field(default_factory=dict)
    by_workload: dict[str, float] = field(default_factory=dict)
    idle_by_class: dict[str, float] = field(default_factory=dict)


class ShortfallKind(StrEnum):
    """What a degraded plan fails to give a workload."""

    latency = "latency"  # its p99 (or TTFT / TPOT) SLA is relaxed: requests are served, later than agreed
    demand = "demand"  # part (or all) of its demand is shed: not served at all


class ShortfallCause(StrEnum):
    """Why it falls short, as the degraded fallback found it (optimizer.degrade)."""

    queued = "queued"  # batch: its latency SLA gave way so that realtime SLAs hold
    shed = "shed"  # batch demand shed so that realtime workloads are served
    no_fast_class = "no_fast_class"  # no device class of this fleet meets the SLA, whatever the capacity
    fast_classes_full = "fast_classes_full"  # classes fast enough exist, but too few of them are healthy
    capacity = "capacity"  # the healthy devices cannot serve the whole demand
    no_class = "no_class"  # a fragment of it has no healthy class it may run on (profiles, pins, forbids)


@dataclass(frozen=True)
class Shortfall:
    """One SLA a degraded plan does not meet for one workload, in plain units.

    latency: `predicted_p99_ms` (worst path of the plan) against `sla_p99_ms`; `sla_ttft_ms` /
    `sla_tpot_ms` when those bounds were dropped too. demand: `served_rps` of `demand_rps` (the
    workload's root visits/s; headroom aside). Both: where more devices would close the gap
    (`device_class`, `devices_needed` in all against `devices_healthy`) and what that adds ($/h)."""

    workload: str
    priority: Priority
    kind: ShortfallKind
    cause: ShortfallCause
    sla_p99_ms: float | None = None
    predicted_p99_ms: float | None = None
    best_p99_ms: float | None = None  # the fastest path any placement on this fleet could give
    sla_ttft_ms: float | None = None
    sla_tpot_ms: float | None = None
    demand_rps: float = 0.0
    served_rps: float = 0.0
    device_class: str | None = None
    devices_needed: int = 0
    devices_healthy: int = 0
    extra_usd_per_hour: float = 0.0
