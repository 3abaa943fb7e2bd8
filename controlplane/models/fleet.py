"""The fleet: device classes (the catalog, seeded), nodes and their devices."""

from datetime import datetime

from pydantic import field_validator
from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from controlplane.models._common import utcnow


class DeviceClassBase(SQLModel):
    name: str = Field(min_length=1, max_length=64, schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$"})
    vendor: str = Field(min_length=1, max_length=32)
    bf16_tflops: float = Field(ge=0, description="Dense bf16 TFLOP/s per device (CPU: per socket).")
    memory_gib: float = Field(gt=0, description="Device memory in GiB.")
    memory_gbps: float = Field(gt=0, description="Device memory bandwidth in GB/s.")
    fabric: str = Field(min_length=1, max_length=32, description="Interconnect family, e.g. nvlink, infinity, ethernet.")
    usd_per_hour: float = Field(ge=0, description="On-demand price of one device per hour, USD.")
    slices_per_device: int = Field(1, ge=1, le=64, description="How many slices one device can be partitioned into.")
    price_source: str = Field("", max_length=256)
    cores: int = Field(0, ge=0, description="CPU cores per device for CPU classes; 0 for accelerators.")
    sold_by_slice: bool = Field(
        False, description="Paid per slice (true: CPU cores, MIG profiles rented on their own) or per device "
                           "occupied (false: a device with any replica on it costs its whole price).")


class DeviceClass(DeviceClassBase, table=True):
    __tablename__ = "device_class"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow)

    def devices_for(self, replicas: int, slices: int) -> float:
        """Whole devices that `replicas` replicas of `slices` slices each occupy."""
        return replicas * slices / self.slices_per_device

    def usd_per_hour_for(self, replicas: int, slices: int) -> float:
        """What `replicas` replicas of `slices` slices each cost per hour."""
        return self.devices_for(replicas, slices) * self.usd_per_hour


class DeviceClassCreate(DeviceClassBase):
    pass


class DeviceClassUpdate(SQLModel):
    vendor: str | None = Field(None, min_length=1, max_length=32)
    bf16_tflops: float | None = Field(None, ge=0)
    memory_gib: float | None = Field(None, gt=0)
    memory_gbps: float | None = Field(None, gt=0)
    fabric: str | None = Field(None, min_length=1, max_length=32)
    usd_per_hour: float | None = Field(None, ge=0)
    slices_per_device: int | None = Field(None, ge=1, le=64)
    price_source: str | None = Field(None, max_length=256)
    cores: int | None = Field(None, ge=0)
    sold_by_slice: bool | None = None

    @field_validator("sold_by_slice")
    @classmethod
    def _not_null(cls, value: bool | None) -> bool:
        # Runs only when the client sent the field: null would clear a column that has no "unknown".
        if value is None:
            raise ValueError("must be true or false; leave it out to keep the current value")
        return value


class DeviceClassPublic(DeviceClassBase):
    id: int
    created_at: datetime


class NodeBase(SQLModel):
    name: str = Field(min_length=1, max_length=128, schema_extra={"pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"})
    device_class_id: int = Field(foreign_key="device_class.id", ondelete="RESTRICT")
    device_count: int = Field(ge=0, le=64, description="Devices of the node's class installed in it.")
    healthy: bool = True


class Node(NodeBase, table=True):
    __tablename__ = "node"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    device_class_id: int = Field(foreign_key="device_class.id", index=True, ondelete="RESTRICT")
    created_at: datetime = Field(default_factory=utcnow)


class NodeCreate(NodeBase):
    pass


class NodeUpdate(SQLModel):
    device_count: int | None = Field(None, ge=0, le=64)
    healthy: bool | None = None


class NodePublic(NodeBase):
    id: int
    created_at: datetime


class Device(SQLModel, table=True):
    """One accelerator (or CPU socket) in a node; its health gates capacity."""

    __tablename__ = "device"
    __table_args__ = (UniqueConstraint("node_id", "index", name="uq_device_node_index"),)
    id: int | None = Field(default=None, primary_key=True)
    node_id: int = Field(foreign_key="node.id", index=True, ondelete="CASCADE")
    index: int = Field(ge=0)
    healthy: bool = True
    xid_errors: int = 0


class DevicePublic(SQLModel):
    id: int
    node_id: int
    index: int
    healthy: bool
    xid_errors: int
