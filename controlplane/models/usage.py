"""Metering: per-minute usage, idle capacity and request outcomes, the ground truth of cost and SLA
attainment; and the ledger's watermark, how far metering has written minutes for good
(controlplane.metering)."""

from datetime import datetime

from sqlalchemy import BigInteger, UniqueConstraint
from sqlmodel import Field, SQLModel


class UsageRecord(SQLModel, table=True):
    """Device time, tokens and cost of one fragment's replicas of one phase on one device class
    during one minute. Device-seconds are whole devices × seconds (a replica on 1 of 7 slices
    holds 1/7 of a device); tokens are split by type, `tokens` being all of them (every kind)."""

    __tablename__ = "usage_record"
    __table_args__ = (
        UniqueConstraint("minute", "fragment_id", "device_class_id", "phase", name="uq_usage_minute"),
    )
    id: int | None = Field(default=None, primary_key=True)
    minute: datetime = Field(index=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True, ondelete="CASCADE")
    workload_id: int = Field(foreign_key="workload.id", index=True, ondelete="CASCADE")
    fragment_id: int = Field(foreign_key="fragment.id", ondelete="CASCADE")
    device_class_id: int = Field(foreign_key="device_class.id", ondelete="RESTRICT")
    phase: str = Field("", max_length=8, description="'' for whole replicas, or prefill / decode (a split LLM).")
    device_seconds_allocated: float = 0.0
    device_seconds_busy: float = 0.0
    tokens: int = Field(0, sa_type=BigInteger)
    llm_input_tokens: int = Field(0, sa_type=BigInteger)
    llm_output_tokens: int = Field(0, sa_type=BigInteger)
    embedding_tokens: int = Field(0, sa_type=BigInteger)
    rerank_tokens: int = Field(0, sa_type=BigInteger)
    cost_usd: float = 0.0


class IdleRecord(SQLModel, table=True):
    """Healthy capacity of one device class that no replica held during one minute, and its price.
    No tenant's: it is shared to tenants only when a cost report asks for it (GET /costs)."""

    __tablename__ = "idle_record"
    __table_args__ = (UniqueConstraint("minute", "device_class_id", name="uq_idle_minute"),)
    id: int | None = Field(default=None, primary_key=True)
    minute: datetime = Field(index=True)
    device_class_id: int = Field(foreign_key="device_class.id", ondelete="RESTRICT")
    device_seconds_healthy: float = 0.0
    device_seconds_allocated: float = 0.0
    device_seconds_idle: float = 0.0
    cost_usd: float = 0.0


class MeteringWatermark(SQLModel, table=True):
    """The ledger's position: the last closed minute metered for good (one row, id 1)."""

    __tablename__ = "metering_watermark"
    id: int = Field(primary_key=True)
    last_closed_minute: datetime


class RequestStat(SQLModel, table=True):
    """End-to-end requests of one workload during one minute, and how many met the SLA."""

    __tablename__ = "request_stat"
    __table_args__ = (UniqueConstraint("workload_id", "minute", name="uq_request_stat_minute"),)
    id: int | None = Field(default=None, primary_key=True)
    workload_id: int = Field(foreign_key="workload.id", ondelete="CASCADE")
    minute: datetime = Field(index=True)
    requests: int = Field(0, sa_type=BigInteger)
    within_sla: int = Field(0, sa_type=BigInteger)
    latency_ms_sum: float = 0.0
    tokens: int = Field(0, sa_type=BigInteger)
