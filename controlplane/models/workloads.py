"""What runs: workloads (agent applications), their graph of fragments and edges, profiles, SLAs, policies."""

from datetime import datetime

from pydantic import StrictBool, field_validator
from sqlalchemy import JSON, BigInteger, Index, String, UniqueConstraint
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel

from controlplane.models._common import INT32_MAX, Input, input_config, utcnow
from controlplane.windows import WINDOW_PATTERN, parse_window
from optimizer.types import Priority
from optimizer.vocabulary import FragmentKind  # noqa: F401 - re-exported: shared words live there

PRIORITY_DESCRIPTION = (
    "Priority class: 'realtime' (interactive; its SLA and demand give way last) or 'batch' (may wait: "
    "when no plan meets every SLA, batch workloads are queued, their latency SLA relaxed, and then shed "
    "before any realtime workload is)."
)


class WorkloadBase(Input):
    name: str = Field(min_length=1, max_length=63, schema_extra={"pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"})
    description: str = Field("", max_length=500)
    priority: Priority = Field(Priority.realtime, sa_type=String(16), sa_column_kwargs={"server_default": "realtime"},
                               description=PRIORITY_DESCRIPTION)


class Workload(WorkloadBase, table=True):
    __tablename__ = "workload"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_workload_tenant_name"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    fragments_folded: int = Field(0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})
    visits_folded: int = Field(0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})


class WorkloadCreate(WorkloadBase):
    tenant_id: int = Field(ge=1, le=INT32_MAX)


class WorkloadUpdate(Input):
    model_config = input_config("priority")
    description: str | None = Field(None, max_length=500)
    priority: Priority | None = Field(None, description=PRIORITY_DESCRIPTION)

    @field_validator("priority")
    @classmethod
    def _not_null(cls, value: Priority | None) -> Priority:
        # Runs only when the client sent the field: every workload has a class.
        if value is None:
            raise ValueError("must be 'realtime' or 'batch'; leave it out to keep the current value")
        return value


class WorkloadPublic(WorkloadBase):
    id: int
    tenant_id: int
    created_at: datetime
    fragments_folded: int = Field(
        0, description="Fragment names folded into the workload's overflow fragments (key '<kind>:~overflow') "
                       "because it already had HETEROPLANE_MAX_FRAGMENTS_PER_WORKLOAD fragments; counted once "
                       "per flush that folded them.")
    visits_folded: int = Field(0, description="Visits recorded against those overflow fragments instead.")


class Fragment(SQLModel, table=True):
    """A node of a workload's graph. `key` is its stable identity across traces: kind + model or tool name."""

    __tablename__ = "fragment"
    __table_args__ = (UniqueConstraint("workload_id", "key", name="uq_fragment_workload_key"),)
    id: int | None = Field(default=None, primary_key=True)
    workload_id: int = Field(foreign_key="workload.id", index=True, ondelete="CASCADE")
    key: str = Field(max_length=200)
    kind: FragmentKind = Field(sa_type=String(16))
    name: str = Field(max_length=200)
    model: str = Field("", max_length=200)
    first_seen: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)


class FragmentPublic(SQLModel):
    id: int
    workload_id: int
    key: str
    kind: FragmentKind
    name: str
    model: str
    first_seen: datetime
    last_seen: datetime
    visits: int = 0
    mean_latency_ms: float | None = None
    mean_queue_ms: float | None = Field(
        None, description="Mean wait for a replica, over the visits whose spans reported one "
                          "(gen_ai.latency.time_in_queue); empty when none did.")
    capacity_per_replica: dict[str, float] = Field(
        default_factory=dict,
        description="By device class: the most visits/s one whole replica completed, as last measured from "
                    "queue waits; the planner sizes replicas by it instead of the performance model's estimate.")


class Edge(SQLModel, table=True):
    """A call from one fragment to another, counted across traces."""

    __tablename__ = "edge"
    __table_args__ = (UniqueConstraint("parent_id", "child_id", name="uq_edge_parent_child"),)
    id: int | None = Field(default=None, primary_key=True)
    workload_id: int = Field(foreign_key="workload.id", index=True, ondelete="CASCADE")
    parent_id: int = Field(foreign_key="fragment.id", ondelete="CASCADE")
    child_id: int = Field(foreign_key="fragment.id", index=True, ondelete="CASCADE")
    calls: int = Field(0, sa_type=BigInteger)
    bytes_total: int = Field(0, sa_type=BigInteger)
    # Calls that overlapped another child call of the same parent visit in time (collectors.fanout).
    calls_overlapping: int = Field(0, sa_type=BigInteger)


class EdgeVisitCalls(SQLModel, table=True):
    """Parent visits that made exactly `calls` (>= 1) calls along an edge, additive like the edge.

    Visits that made none are the parent's visits less these; with them, the rows give the
    percentiles of calls per parent visit (collectors.fanout.calls_percentile).
    """

    __tablename__ = "edge_visit_calls"
    __table_args__ = (UniqueConstraint("edge_id", "calls", name="uq_edge_visit_calls"),)
    id: int | None = Field(default=None, primary_key=True)
    edge_id: int = Field(foreign_key="edge.id", ondelete="CASCADE")
    calls: int
    visits: int = Field(0, sa_type=BigInteger)


class EdgePublic(SQLModel):
    id: int
    workload_id: int
    parent_id: int
    child_id: int
    calls: int
    bytes_total: int
    calls_per_parent_call: float | None = None
    bytes_per_call: float | None = None
    concurrent: bool = Field(
        False, description="Most of the edge's calls overlapped another call of the same parent visit in time "
                           "(their spans overlap): they run concurrently, so a path waits for the slowest, not the sum.")
    calls_p99: float | None = Field(
        None, description="Calls per parent visit at the 99th percentile (nearest rank) over all the parent's "
                          "visits, those making none included; empty until visits are tallied.")


class FragmentProfile(SQLModel, table=True):
    """Per-minute, additive observations of one fragment on one device class ('' when unknown).

    Additive so any number of collectors can upsert into the same row.
    """

    __tablename__ = "fragment_profile"
    __table_args__ = (
        UniqueConstraint("fragment_id", "device_class", "minute", name="uq_fragment_profile_minute"),
    )
    id: int | None = Field(default=None, primary_key=True)
    fragment_id: int = Field(foreign_key="fragment.id", ondelete="CASCADE")
    device_class: str = Field("", max_length=64)
    minute: datetime = Field(index=True)
    visits: int = Field(0, sa_type=BigInteger)
    latency_ms_sum: float = 0.0
    tokens_in: int = Field(0, sa_type=BigInteger)
    tokens_out: int = Field(0, sa_type=BigInteger)
    # Visits whose span said how long they queued (vLLM's gen_ai.latency.time_in_queue), and the sum.
    queue_visits: int = Field(0, sa_type=BigInteger)
    queue_ms_sum: float = 0.0


class MeasuredCapacity(SQLModel, table=True):
    """The most visits/s one whole replica of a fragment completed on a device class, read from how
    long visits queued for it (controlplane.planning.measured_capacity), as last measured."""

    __tablename__ = "measured_capacity"
    __table_args__ = (UniqueConstraint("fragment_id", "device_class", name="uq_measured_capacity"),)
    id: int | None = Field(default=None, primary_key=True)
    fragment_id: int = Field(foreign_key="fragment.id", ondelete="CASCADE")
    device_class: str = Field(max_length=64)
    visits_per_s: float
    measured_at: datetime = Field(default_factory=utcnow)


class ProfileBucket(SQLModel, table=True):
    """One bucket of a per-minute distribution of a fragment on a device class, additive like the profile.

    series: latency_ms, ttft_ms, tpot_ms (bucket = a 1%-relative-accuracy log-sketch key, see
    collectors.sketch) or tokens_in, tokens_out (bucket = index over edges 0/25/100/250/500/1000/2000/inf).
    """

    __tablename__ = "profile_bucket"
    __table_args__ = (
        UniqueConstraint("fragment_id", "device_class", "minute", "series", "bucket", name="uq_profile_bucket"),
    )
    id: int | None = Field(default=None, primary_key=True)
    fragment_id: int = Field(foreign_key="fragment.id", ondelete="CASCADE")
    device_class: str = Field("", max_length=64)
    minute: datetime = Field(index=True)
    series: str = Field(max_length=16)
    bucket: int
    count: int = Field(0, sa_type=BigInteger)


class SlaBase(Input):
    p99_ms: float = Field(gt=0, le=3_600_000, description="End-to-end p99 latency bound of one request, ms.")
    ttft_ms: float | None = Field(None, gt=0, le=3_600_000, description="Time-to-first-token bound for LLM fragments, ms.")
    tpot_ms: float | None = Field(None, gt=0, le=3_600_000, description="Time-per-output-token bound for LLM fragments, ms.")
    attainment_target: float = Field(0.99, gt=0, le=1, description="Share of requests that must meet p99_ms.")


class Sla(SlaBase, table=True):
    __tablename__ = "sla"
    id: int | None = Field(default=None, primary_key=True)
    workload_id: int = Field(foreign_key="workload.id", unique=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class SlaCreate(SlaBase):
    workload_id: int = Field(ge=1, le=INT32_MAX)


class SlaUpdate(Input):
    p99_ms: float | None = Field(None, gt=0, le=3_600_000)
    ttft_ms: float | None = Field(None, gt=0, le=3_600_000)
    tpot_ms: float | None = Field(None, gt=0, le=3_600_000)
    attainment_target: float | None = Field(None, gt=0, le=1)


class SlaPublic(SlaBase):
    id: int
    workload_id: int
    created_at: datetime
    updated_at: datetime


_WINDOW_ITEMS = {"json_schema_extra": {"items": {"type": "string", "maxLength": 64, "pattern": WINDOW_PATTERN}}}


class MigrationPolicyBase(Input):
    name: str = Field(min_length=1, max_length=63, schema_extra={"pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"})
    tenant_id: int | None = Field(
        None, ge=1, le=INT32_MAX, description="Scope: this tenant's workloads; empty for the whole fleet. A workload's policy records "
                          "its workload's tenant here.")
    workload_id: int | None = Field(None, ge=1, le=INT32_MAX, description="Scope: one workload; overrides a tenant or fleet policy.")
    min_improvement_pct: float = Field(5.0, ge=0, le=100, description="Move only if $/hour drops by at least this.")
    cooldown_s: int = Field(
        300, ge=0, le=INT32_MAX,
        description="Seconds a fragment stays on its device classes after a migration (it may still scale "
                    "there). Lifted for a cycle when no plan within it serves demand.")
    max_moves_per_cycle: int = Field(
        10, ge=0, le=INT32_MAX,
        description="Most running fragments whose replicas change in one reconciler cycle; fragments new to "
                    "the fleet are placed regardless. Lifted for a cycle when no plan within it serves demand.")
    approval_required: StrictBool = Field(False, description="Migrations wait for an operator's approval.")
    dry_run: StrictBool = Field(False, description="Plan and record, never actuate.")
    enabled: StrictBool = True
    maintenance_windows: list[str] = Field(
        default_factory=list, max_length=16, sa_type=JSON, schema_extra=_WINDOW_ITEMS,
        description="Weekly UTC windows in which fragments may move between device classes, e.g. "
                    "'Sat 02:00-04:00 UTC', 'Mon-Fri 22:00-02:00', 'daily 03:00-04:00'. Empty: any time. "
                    "Outside them fragments only scale on the classes they run on; a placement that no "
                    "longer serves demand is replaced regardless.")
    proposal_ttl_s: int = Field(
        3600, ge=60, le=30 * 86400,
        description="Seconds a proposal (approval required, or dry run) stays open before it expires.")
    supersede_cost_pct: float = Field(
        10.0, ge=0, le=1000,
        description="An open proposal is superseded only by a plan whose $/hour differs from it by more than this.")
    supersede_demand_pct: float = Field(
        20.0, ge=0, le=1000,
        description="... or once the fleet's demand has changed by more than this since it was made.")
    demand_margin_pct: float = Field(
        0.0, ge=0, le=1000,
        description="Hysteresis against flapping: a workload's demand is planned with this much more, and its "
                    "placement grows only once demand outgrows it and shrinks only once a smaller one holds "
                    "demand plus this much. 0: planned at demand x headroom.")

    @field_validator("maintenance_windows")
    @classmethod
    def _windows(cls, value: list[str] | None) -> list[str]:
        return _checked_windows(value)


class MigrationPolicy(MigrationPolicyBase, table=True):
    """A policy's name is unique within its tenant (tenant_id; for a workload's policy, the workload's
    tenant) and among fleet-wide policies, so a name taken elsewhere tells no tenant anything."""

    __tablename__ = "migration_policy"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_migration_policy_tenant_name"),
        Index("uq_migration_policy_fleet_name", "name", unique=True,
              sqlite_where=sql_text("tenant_id IS NULL"), postgresql_where=sql_text("tenant_id IS NULL")),
    )
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=63)
    tenant_id: int | None = Field(default=None, foreign_key="tenant.id", index=True, ondelete="CASCADE")
    workload_id: int | None = Field(default=None, foreign_key="workload.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class MigrationPolicyCreate(MigrationPolicyBase):
    pass


class MigrationPolicyUpdate(Input):
    model_config = input_config(
        "min_improvement_pct", "cooldown_s", "max_moves_per_cycle", "approval_required", "dry_run", "enabled",
        "maintenance_windows", "proposal_ttl_s", "supersede_cost_pct", "supersede_demand_pct", "demand_margin_pct")
    min_improvement_pct: float | None = Field(None, ge=0, le=100)
    cooldown_s: int | None = Field(None, ge=0, le=INT32_MAX)
    max_moves_per_cycle: int | None = Field(None, ge=0, le=INT32_MAX)
    approval_required: StrictBool | None = None
    dry_run: StrictBool | None = None
    enabled: StrictBool | None = None
    maintenance_windows: list[str] | None = Field(None, max_length=16, schema_extra=_WINDOW_ITEMS)
    proposal_ttl_s: int | None = Field(None, ge=60, le=30 * 86400)
    supersede_cost_pct: float | None = Field(None, ge=0, le=1000)
    supersede_demand_pct: float | None = Field(None, ge=0, le=1000)
    demand_margin_pct: float | None = Field(None, ge=0, le=1000)

    @field_validator("maintenance_windows")
    @classmethod
    def _windows(cls, value: list[str] | None) -> list[str]:
        return _checked_windows(value)

    @field_validator("min_improvement_pct", "cooldown_s", "max_moves_per_cycle", "approval_required", "dry_run",
                     "enabled", "proposal_ttl_s", "supersede_cost_pct", "supersede_demand_pct", "demand_margin_pct")
    @classmethod
    def _not_null(cls, value):
        # Runs only when the client sent the field: null would clear a setting that has no "unset".
        if value is None:
            raise ValueError("cannot be null; leave it out to keep the current value")
        return value


def _checked_windows(value: list[str] | None) -> list[str]:
    """Each window parsed (controlplane.windows), so a bad one is a 422 naming it."""
    if value is None:
        raise ValueError("maintenance_windows cannot be null; send [] for no windows")
    out = []
    for text in value:
        if len(text) > 64:
            raise ValueError(f"maintenance window {text[:64]!r}... is longer than 64 characters")
        out.append(parse_window(text).text)
    return out


class MigrationPolicyPublic(MigrationPolicyBase):
    id: int
    created_at: datetime
    updated_at: datetime
