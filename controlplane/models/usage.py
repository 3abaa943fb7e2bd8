"""Metering: per-minute usage and request outcomes, the ground truth of cost and SLA attainment."""

from datetime import datetime

from sqlalchemy import BigInteger, UniqueConstraint
from sqlmodel import Field, SQLModel


class UsageRecord(SQLModel, table=True):
    """Device time, tokens and cost of one fragment on one device class during one minute."""

    __tablename__ = "usage_record"
    __table_args__ = (UniqueConstraint("minute", "fragment_id", "device_class_id", name="uq_usage_minute"),)
    id: int | None = Field(default=None, primary_key=True)
    minute: datetime = Field(index=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True, ondelete="CASCADE")
    workload_id: int = Field(foreign_key="workload.id", index=True, ondelete="CASCADE")
    fragment_id: int = Field(foreign_key="fragment.id", ondelete="CASCADE")
    device_class_id: int = Field(foreign_key="device_class.id", ondelete="RESTRICT")
    device_seconds_allocated: float = 0.0
    device_seconds_busy: float = 0.0
    tokens: int = Field(0, sa_type=BigInteger)
    cost_usd: float = 0.0


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
