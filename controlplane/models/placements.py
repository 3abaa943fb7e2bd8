"""Decisions and their history: versioned placements and the migrations between them."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, Column, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from controlplane.models._common import utcnow


class PlacementState(StrEnum):
    """A placement is written before it is actuated; the current one is the newest `applied`."""

    proposed = "proposed"  # waiting for an operator's approval, not actuated
    recorded = "recorded"  # a dry-run policy's plan: recorded, never actuated
    applying = "applying"  # written durably (or approved), actuation under way (a restart resumes it)
    applied = "applied"
    failed = "failed"
    rejected = "rejected"  # an operator turned the proposal down
    superseded = "superseded"  # an open proposal replaced by a materially different plan
    expired = "expired"  # an open proposal nobody decided on within its policy's TTL


class Placement(SQLModel, table=True):
    """One version of the fleet-wide placement."""

    __tablename__ = "placement"
    id: int | None = Field(default=None, primary_key=True)
    version: int = Field(unique=True)
    state: PlacementState = Field(default=PlacementState.applying, sa_type=String(16), index=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)  # when it was written; never changes
    applied_at: datetime | None = Field(default=None, index=True)  # when actuation succeeded: in force from then
    # Who approved or rejected it (Principal.actor, as the audit trail names them) and when; for a
    # rollback an operator asked for, who asked. None for what the reconciler decided on its own.
    decided_by: str | None = Field(default=None, max_length=200)
    decided_at: datetime | None = None
    rollback_to: int | None = None  # the earlier version it re-applies (for some fragments, when automatic)
    usd_per_hour: float = 0.0
    solver_status: str = Field("", max_length=32)
    solve_time_s: float = 0.0
    reason: str = Field("", max_length=500)
    # What a proposal was made against, so that it can tell when it no longer holds.
    base_version: int | None = None
    demand_rps: float = Field(0.0, sa_column_kwargs={"server_default": "0"})


PHASE_DESCRIPTION = (
    "Empty for whole replicas that serve every visit; 'prefill' or 'decode' for the pools of an LLM "
    "fragment split for disaggregated serving."
)


class PlacementItem(SQLModel, table=True):
    """Replicas of one fragment on one device class, each replica taking `slices` slices; `phase`
    (optimizer.types.Phase) says whether they are whole replicas or one pool of a split fragment."""

    __tablename__ = "placement_item"
    __table_args__ = (
        UniqueConstraint("placement_id", "fragment_id", "device_class_id", "phase", name="uq_placement_item"),
    )
    id: int | None = Field(default=None, primary_key=True)
    placement_id: int = Field(foreign_key="placement.id", index=True, ondelete="CASCADE")
    fragment_id: int = Field(foreign_key="fragment.id", index=True, ondelete="CASCADE")
    device_class_id: int = Field(foreign_key="device_class.id", ondelete="RESTRICT")
    phase: str = Field("", max_length=8, sa_column_kwargs={"server_default": ""})
    replicas: int = Field(ge=0)
    slices: int = Field(1, ge=1, description="Slices per replica.")


class PlacementChoice(SQLModel, table=True):
    """Why a placement put one fragment where it did, as the optimizer explained its plan
    (optimizer.types.Explanation): the deciding constraint, and the next-best device class with
    what it would cost more (or less) per hour. Written only for fragments placed as the plan
    says (not those the policy gate kept where they run)."""

    __tablename__ = "placement_choice"
    __table_args__ = (UniqueConstraint("placement_id", "fragment_id", name="uq_placement_choice"),)
    id: int | None = Field(default=None, primary_key=True)
    placement_id: int = Field(foreign_key="placement.id", index=True, ondelete="CASCADE")
    fragment_id: int = Field(foreign_key="fragment.id", ondelete="CASCADE")
    binding: str = Field(max_length=300)
    runner_up: str | None = Field(default=None, max_length=64)
    runner_up_delta_usd_per_hour: float | None = None


class PlacementChoicePublic(SQLModel):
    fragment_id: int
    fragment_key: str
    workload_id: int
    binding: str = Field(description="The deciding constraint, e.g. 'cheapest per throughput', 'capacity of L40S', "
                                     "'latency bound of workload rag', 'migration cost'.")
    runner_up: str | None = Field(description="The next-best device class for this fragment alone, if any.")
    runner_up_delta_usd_per_hour: float | None = Field(
        description="What the runner-up would cost per hour minus what this placement's replicas cost.")


class PlacementItemPublic(SQLModel):
    fragment_id: int
    fragment_key: str
    workload_id: int
    device_class: str
    phase: str = Field("", description=PHASE_DESCRIPTION)
    replicas: int
    slices: int
    usd_per_hour: float


class PlacementPublic(SQLModel):
    id: int
    version: int
    state: PlacementState
    created_at: datetime
    applied_at: datetime | None
    decided_by: str | None = Field(description="Who approved or rejected it, or asked for this rollback.")
    decided_at: datetime | None
    rollback_to: int | None = Field(description="The earlier version this placement re-applies, when a rollback.")
    usd_per_hour: float
    solver_status: str
    solve_time_s: float
    reason: str
    items: list[PlacementItemPublic] = []
    choices: list[PlacementChoicePublic] = Field(
        default=[], description="Why here: per fragment, the deciding constraint and the runner-up class.")


class MigrationState(StrEnum):
    """Life of one move: written durably before actuation, then applied."""

    pending = "pending"
    awaiting_approval = "awaiting_approval"
    applying = "applying"
    succeeded = "succeeded"
    failed = "failed"
    rejected = "rejected"
    skipped = "skipped"  # recorded by a dry run, never to be actuated
    superseded = "superseded"  # its proposal was superseded
    expired = "expired"  # its proposal expired


class Migration(SQLModel, table=True):
    """One move of replicas of a fragment between device classes (either side empty for scale up/down)."""

    __tablename__ = "migration"
    id: int | None = Field(default=None, primary_key=True)
    placement_id: int = Field(foreign_key="placement.id", index=True, ondelete="CASCADE")
    fragment_id: int = Field(foreign_key="fragment.id", index=True, ondelete="CASCADE")
    from_device_class_id: int | None = Field(default=None, foreign_key="device_class.id", ondelete="RESTRICT")
    to_device_class_id: int | None = Field(default=None, foreign_key="device_class.id", ondelete="RESTRICT")
    phase: str = Field("", max_length=8, sa_column_kwargs={"server_default": ""})
    replicas: int = Field(ge=0)
    state: MigrationState = Field(default=MigrationState.pending, sa_type=String(24), index=True)
    reason: str = Field("", max_length=500)
    error: str = Field("", max_length=1000)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # The placement that rolled this move back automatically: set once, so it is never rolled back twice.
    rollback_placement_id: int | None = Field(default=None, foreign_key="placement.id", ondelete="SET NULL")


class MigrationPublic(SQLModel):
    id: int
    placement_id: int
    fragment_id: int
    workload_id: int
    from_device_class: str | None
    to_device_class: str | None
    phase: str = Field("", description=PHASE_DESCRIPTION)
    replicas: int
    state: MigrationState
    reason: str
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rollback_placement_id: int | None = Field(
        None, description="The placement that rolled this migration back automatically (its workload fell below SLA)."
    )


class FragmentPin(SQLModel, table=True):
    """Holds a fragment on `device_classes`: the planner may scale it there, not move it elsewhere,
    until an operator clears the pin. A rollback writes one, so the planner does not move the fragment
    straight back to where its SLA suffered. One pin per fragment; clearing deletes it (the audit
    trail keeps the history)."""

    __tablename__ = "fragment_pin"
    id: int | None = Field(default=None, primary_key=True)
    fragment_id: int = Field(foreign_key="fragment.id", unique=True, ondelete="CASCADE")
    device_classes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reason: str = Field("", max_length=500)
    created_by: str = Field(max_length=200)  # Principal.actor, or "reconciler"
    created_at: datetime = Field(default_factory=utcnow)


class FragmentPinPublic(SQLModel):
    id: int
    fragment_id: int
    fragment_key: str
    workload_id: int
    device_classes: list[str]
    reason: str
    created_by: str
    created_at: datetime


class LeaderEpoch(SQLModel, table=True):
    """The fencing token of a leader lock (controlplane.leadership): `epoch` grows by one at every
    acquisition of lock `name`, and a write checks it still holds the epoch it acquired."""

    __tablename__ = "leader_epoch"
    name: str = Field(primary_key=True, max_length=100)
    epoch: int = Field(0, sa_type=BigInteger)
    acquired_at: datetime = Field(default_factory=utcnow)
