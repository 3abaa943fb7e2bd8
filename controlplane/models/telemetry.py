"""Fleet telemetry pulled from Prometheus: the latest device and model readings of each minute.

Readings are gauges, not counters: a second pull in the same minute overwrites
the row (the latest reading wins), it never adds to it. A column is NULL when
Prometheus did not report that metric for the device or model.
"""

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from controlplane.models._common import utcnow


class DeviceTelemetry(SQLModel, table=True):
    """One device (DCGM exporter) during one minute, keyed by the host name it reports and its index."""

    __tablename__ = "device_telemetry"
    __table_args__ = (UniqueConstraint("minute", "hostname", "index", name="uq_device_telemetry_minute"),)
    id: int | None = Field(default=None, primary_key=True)
    minute: datetime = Field(index=True)
    hostname: str = Field(max_length=128)
    index: int = Field(ge=0)
    uuid: str = Field("", max_length=128)
    utilisation: float | None = Field(None, description="Fraction of time busy, 0..1 (DCGM reports percent).")
    memory_used_mib: float | None = None
    xid: int | None = Field(None, description="Last XID error code; 0 when healthy.")
    power_w: float | None = Field(None, description="Power draw, watts.")
    updated_at: datetime = Field(default_factory=utcnow)


class ModelTelemetry(SQLModel, table=True):
    """One served model (vLLM) on one device class during one minute; device_class is '' when unlabelled."""

    __tablename__ = "model_telemetry"
    __table_args__ = (UniqueConstraint("minute", "model", "device_class", name="uq_model_telemetry_minute"),)
    id: int | None = Field(default=None, primary_key=True)
    minute: datetime = Field(index=True)
    model: str = Field(max_length=256)
    device_class: str = Field("", max_length=64)
    queue_depth: float | None = Field(None, description="Requests waiting, summed over replicas.")
    running: float | None = Field(None, description="Requests running, summed over replicas.")
    kv_cache_usage: float | None = Field(None, description="KV-cache use, 0..1, averaged over replicas.")
    # Latency quantiles in seconds over the puller's rate() window: time to first token, inter-token latency.
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    ttft_p99: float | None = None
    itl_p50: float | None = None
    itl_p95: float | None = None
    itl_p99: float | None = None
    updated_at: datetime = Field(default_factory=utcnow)
