"""Device calibration: what one device class was measured to achieve (`heteroplane calibrate`)."""

from datetime import datetime

from sqlmodel import Field, SQLModel

from controlplane.models._common import utcnow


class CalibrationFigures(SQLModel):
    """Achieved throughput per dtype and its efficiency, achieved / datasheet (controlplane.calibration)."""

    float32_gflops: float = Field(description="Achieved float32 matmul GFLOP/s.")
    bfloat16_gflops: float = Field(description="Achieved bfloat16 matmul GFLOP/s.")
    float16_gflops: float = Field(description="Achieved float16 matmul GFLOP/s.")
    copy_gbps: float = Field(description="Achieved memory bandwidth of a large copy, GB/s (read + write).")
    float32_efficiency: float = Field(description="float32 achieved / datasheet.")
    bfloat16_efficiency: float = Field(description="bfloat16 achieved / datasheet: the planner's compute efficiency.")
    float16_efficiency: float = Field(description="float16 achieved / datasheet.")
    memory_efficiency: float = Field(description="Copy achieved / datasheet bandwidth: the planner's memory efficiency.")
    threads: int = Field(ge=1, description="CPU threads the measurement ran on.")
    source: str = Field(max_length=256, description="What measured it: host, torch version, threads, device.")
    measured_at: datetime


class DeviceCalibration(CalibrationFigures, table=True):
    """The latest calibration of one device class; a new one replaces it."""

    __tablename__ = "device_calibration"
    id: int | None = Field(default=None, primary_key=True)
    device_class_id: int = Field(foreign_key="device_class.id", unique=True, ondelete="CASCADE")
    updated_at: datetime = Field(default_factory=utcnow)


class CalibrationPublic(CalibrationFigures):
    pass
