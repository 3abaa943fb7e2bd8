"""Chargeback: the ledger's usage and idle capacity shared to tenants and grouped into report lines.

Pure: values in, values out. The API (controlplane.api.costs) reads the ledger into `Allocation`s
and `Idle`s, one per item (fragment, device class, phase) or device class and time bucket (the
whole range when a report has no series), and names the lines this module returns.

Cost follows OpenCost: an allocation costs its allocated device-seconds × its class's price, and
capacity no replica held is idle, visible as its own cost and shared to tenants only on request.
Within each bucket b, for each device class c with idle cost I(c, b):

- `none`: I stays idle, a line of its own with no tenant.
- `weighted`: I goes to the allocations of class c in b in proportion to their cost; when no
  allocation of class c ran in b, to every allocation in b in proportion to its cost (the fleet's
  idle follows the fleet's cost, as OpenCost shares a cluster's).
- `even`: I goes in equal parts to the tenants with an allocation in b; a tenant's part goes to its
  allocations of class c in b in proportion to their cost, or to all its allocations in b when it
  ran nothing on c.

A split in proportion to cost is an equal split where every recipient costs nothing (a free
class). Idle of a bucket in which nothing ran has no one to go to and stays idle. Idle
device-seconds are shared exactly as idle cost is. So, under weighted and even,

    Σ over tenants (allocated cost + shared idle) = Σ allocated cost + Σ idle cost

over every bucket in which anything ran.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class ShareIdle(StrEnum):
    """How a cost report shares idle capacity (see the module's docstring)."""

    none = "none"
    weighted = "weighted"
    even = "even"


class GroupBy(StrEnum):
    """What a cost report's lines are keyed by."""

    tenant = "tenant"
    workload = "workload"
    device_class = "device_class"
    fragment = "fragment"
    fragment_kind = "fragment_kind"
    phase = "phase"


class TokenType(StrEnum):
    llm_input = "llm_input"
    llm_output = "llm_output"
    embedding = "embedding"
    rerank = "rerank"


@dataclass(frozen=True)
class Tokens:
    """Tokens of an allocation: all of them, and those of each type."""

    total: int = 0
    llm_input: int = 0
    llm_output: int = 0
    embedding: int = 0
    rerank: int = 0

    def __add__(self, other: "Tokens") -> "Tokens":
        return Tokens(self.total + other.total, self.llm_input + other.llm_input, self.llm_output + other.llm_output,
                      self.embedding + other.embedding, self.rerank + other.rerank)


@dataclass(frozen=True)
class Allocation:
    """What one item (fragment, device class, phase) was allocated and did during one bucket."""

    bucket: datetime
    tenant_id: int
    workload_id: int
    fragment_id: int
    fragment_kind: str
    device_class_id: int
    phase: str
    cost_usd: float
    allocated_s: float
    busy_s: float
    tokens: Tokens = Tokens()

    def key(self, group_by: tuple[GroupBy, ...]) -> tuple:
        values = {
            GroupBy.tenant: self.tenant_id,
            GroupBy.workload: self.workload_id,
            GroupBy.device_class: self.device_class_id,
            GroupBy.fragment: self.fragment_id,
            GroupBy.fragment_kind: self.fragment_kind,
            GroupBy.phase: self.phase,
        }
        return tuple(values[g] for g in group_by)


@dataclass(frozen=True)
class Idle:
    """Healthy capacity of one device class that nothing held during one bucket."""

    bucket: datetime
    device_class_id: int
    cost_usd: float
    idle_s: float


@dataclass(frozen=True)
class Shared:
    """Idle cost and device-seconds given to one allocation."""

    cost_usd: float = 0.0
    idle_s: float = 0.0


@dataclass
class Point:
    """One line's figures in one bucket."""

    bucket: datetime
    allocated_cost_usd: float = 0.0
    idle_cost_usd: float = 0.0
    allocated_s: float = 0.0
    busy_s: float = 0.0
    idle_s: float = 0.0
    tokens: Tokens = Tokens()

    @property
    def cost_usd(self) -> float:
        return self.allocated_cost_usd + self.idle_cost_usd


@dataclass
class Line:
    """A report line: its key (one value per group key; None where an idle line has none) and its
    figures per bucket, in bucket order."""

    key: tuple
    idle: bool
    points: dict[datetime, Point] = field(default_factory=dict)

    def point(self, bucket: datetime) -> Point:
        return self.points.setdefault(bucket, Point(bucket))

    def total(self) -> Point:
        """The line's figures over every bucket, summed in bucket order."""
        total = Point(min(self.points))
        for bucket in sorted(self.points):
            p = self.points[bucket]
            total.allocated_cost_usd += p.allocated_cost_usd
            total.idle_cost_usd += p.idle_cost_usd
            total.allocated_s += p.allocated_s
            total.busy_s += p.busy_s
            total.idle_s += p.idle_s
            total.tokens += p.tokens
        return total


def share_idle(allocations: list[Allocation], idle: list[Idle], rule: ShareIdle) -> tuple[list[Shared], list[Idle]]:
    """The idle each allocation receives under `rule` (one per allocation, in order), and the idle
    no one receives."""
    if rule is ShareIdle.none:
        return [Shared() for _ in allocations], list(idle)
    shares = [[0.0, 0.0] for _ in allocations]
    in_bucket: dict[datetime, list[int]] = defaultdict(list)
    for index, a in enumerate(allocations):
        in_bucket[a.bucket].append(index)
    unshared = []
    for item in idle:
        everyone = in_bucket.get(item.bucket, [])
        if not everyone:
            unshared.append(item)
            continue
        if rule is ShareIdle.weighted:
            parts = [(_on_class(allocations, everyone, item.device_class_id), 1.0)]
        else:
            tenants: dict[int, list[int]] = defaultdict(list)
            for index in everyone:
                tenants[allocations[index].tenant_id].append(index)
            parts = [(_on_class(allocations, own, item.device_class_id), 1 / len(tenants)) for own in tenants.values()]
        for recipients, fraction in parts:
            for index, weight in _proportional(allocations, recipients):
                shares[index][0] += item.cost_usd * fraction * weight
                shares[index][1] += item.idle_s * fraction * weight
    return [Shared(cost, seconds) for cost, seconds in shares], unshared


def _on_class(allocations: list[Allocation], indices: list[int], class_id: int) -> list[int]:
    """The allocations among `indices` of class `class_id`, or all of them when none is."""
    return [i for i in indices if allocations[i].device_class_id == class_id] or indices


def _proportional(allocations: list[Allocation], indices: list[int]) -> list[tuple[int, float]]:
    """Each recipient's fraction: in proportion to its cost, or equal where all cost nothing."""
    total = sum(allocations[i].cost_usd for i in indices)
    if total > 0:
        return [(i, allocations[i].cost_usd / total) for i in indices]
    return [(i, 1 / len(indices)) for i in indices]


def lines_of(
    allocations: list[Allocation],
    shared: list[Shared],
    unshared: list[Idle],
    group_by: tuple[GroupBy, ...],
    visible: set[int] | None = None,
) -> list[Line]:
    """Report lines keyed by `group_by`: the allocations of tenants in `visible` (every tenant when
    None) with the idle shared to them, and, when every tenant is visible, one idle line per key of
    what was not shared (keyed by its device class where the report groups by class)."""
    lines: dict[tuple, Line] = {}
    for a, s in zip(allocations, shared, strict=True):
        if visible is not None and a.tenant_id not in visible:
            continue
        key = a.key(group_by)
        p = lines.setdefault(key, Line(key, idle=False)).point(a.bucket)
        p.allocated_cost_usd += a.cost_usd
        p.idle_cost_usd += s.cost_usd
        p.allocated_s += a.allocated_s
        p.busy_s += a.busy_s
        p.idle_s += s.idle_s
        p.tokens += a.tokens
    if visible is None:
        for item in unshared:
            key = tuple(item.device_class_id if g is GroupBy.device_class else None for g in group_by)
            p = lines.setdefault(("idle", *key), Line(key, idle=True)).point(item.bucket)
            p.idle_cost_usd += item.cost_usd
            p.idle_s += item.idle_s
    return list(lines.values())


def token_costs(allocations: list[Allocation], shared: list[Shared]) -> dict[TokenType, tuple[int, float]]:
    """Tokens of each type and the cost of producing them (allocated cost and any idle shared to it).

    Embedding and rerank tokens cost what their fragments cost. An LLM's prefill pools cost its input
    tokens and its decode pools its output tokens; a whole replica serves both, and the cost of whole
    replicas is split between them in proportion to the input and output tokens whole replicas
    served (one blended $/1M for both where no fragment is split; halves where they served none). Fragments of other kinds (tools, retrieval, CPU glue) and unshared idle
    produce no tokens and are in no type."""
    cost: dict[TokenType, float] = defaultdict(float)
    tokens = Tokens()
    whole_llm, whole_tokens = 0.0, Tokens()
    for a, s in zip(allocations, shared, strict=True):
        tokens += a.tokens
        paid = a.cost_usd + s.cost_usd
        if a.fragment_kind == "embedding":
            cost[TokenType.embedding] += paid
        elif a.fragment_kind == "rerank":
            cost[TokenType.rerank] += paid
        elif a.fragment_kind == "llm":
            if a.phase == "prefill":
                cost[TokenType.llm_input] += paid
            elif a.phase == "decode":
                cost[TokenType.llm_output] += paid
            else:
                whole_llm += paid
                whole_tokens += a.tokens
    llm_tokens = whole_tokens.llm_input + whole_tokens.llm_output
    input_part = whole_tokens.llm_input / llm_tokens if llm_tokens else 0.5
    cost[TokenType.llm_input] += whole_llm * input_part
    cost[TokenType.llm_output] += whole_llm * (1 - input_part)
    return {t: (getattr(tokens, t.value), cost[t]) for t in TokenType}
