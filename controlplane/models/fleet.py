"""The fleet: device classes (the catalog, seeded), nodes and their devices."""

from datetime import datetime

from pydantic import StrictBool, ValidationInfo, field_validator
from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from controlplane.models._common import INT32_MAX, Input, input_config, utcnow
from controlplane.models.calibration import CalibrationPublic

# Datasheet bounds, far above any device sold (a B200 is 2.25 dense bf16 PFLOP/s, 192 GB, 8 TB/s):
# a figure past them is a typo or an attack, and one near float's limit would make a calibration's
# efficiency (achieved / datasheet) 0 and the planner's roofline times overflow.
MAX_TFLOPS = 100_000.0
CLASS_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_CLASS_NAME = 64
MAX_GIB = 100_000.0
MAX_GBPS = 1_000_000.0
MAX_USD_PER_HOUR = 1_000_000.0


class DeviceClassBase(Input):
    name: str = Field(min_length=1, max_length=MAX_CLASS_NAME, schema_extra={"pattern": CLASS_NAME_PATTERN})
    vendor: str = Field(min_length=1, max_length=32)
    bf16_tflops: float = Field(gt=0, le=MAX_TFLOPS, description="Dense bf16 TFLOP/s per device (CPU: per socket).")
    memory_gib: float = Field(gt=0, le=MAX_GIB, description="Device memory in GiB.")
    memory_gbps: float = Field(gt=0, le=MAX_GBPS, description="Device memory bandwidth in GB/s.")
    fabric: str = Field(min_length=1, max_length=32, description="Interconnect family, e.g. nvlink, infinity, ethernet.")
    usd_per_hour: float = Field(ge=0, le=MAX_USD_PER_HOUR, description="On-demand price of one device per hour, USD.")
    slices_per_device: int = Field(1, ge=1, le=64, description="How many slices one device can be partitioned into.")
    price_source: str = Field("", max_length=256)
    cores: int = Field(0, ge=0, le=INT32_MAX, description="CPU cores per device for CPU classes; 0 for accelerators.")
    sold_by_slice: StrictBool = Field(
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


class DeviceClassUpdate(Input):
    model_config = input_config("vendor", "bf16_tflops", "memory_gib", "memory_gbps", "fabric", "usd_per_hour",
                                "slices_per_device", "price_source", "cores", "sold_by_slice")
    vendor: str | None = Field(None, min_length=1, max_length=32)
    bf16_tflops: float | None = Field(None, gt=0, le=MAX_TFLOPS)
    memory_gib: float | None = Field(None, gt=0, le=MAX_GIB)
    memory_gbps: float | None = Field(None, gt=0, le=MAX_GBPS)
    fabric: str | None = Field(None, min_length=1, max_length=32)
    usd_per_hour: float | None = Field(None, ge=0, le=MAX_USD_PER_HOUR)
    slices_per_device: int | None = Field(None, ge=1, le=64)
    price_source: str | None = Field(None, max_length=256)
    cores: int | None = Field(None, ge=0, le=INT32_MAX)
    sold_by_slice: StrictBool | None = None

    @field_validator("*")
    @classmethod
    def _not_null(cls, value, info: ValidationInfo):
        # Runs only for the fields the client sent: null would clear a column that has no "unknown" (the
        # database refused it, answered as a misleading 409 conflict).
        if value is None:
            kind = "true or false" if info.field_name == "sold_by_slice" else "a value"
            raise ValueError(f"must be {kind}; leave it out to keep the current value")
        return value


class DeviceClassPublic(DeviceClassBase):
    id: int
    created_at: datetime
    calibration: CalibrationPublic | None = Field(
        None, description="What `heteroplane calibrate` last measured on a node of this class, with its "
                          "efficiency (achieved / datasheet) per dtype, source and date; null when never calibrated.")


class NodeBase(Input):
    name: str = Field(min_length=1, max_length=128, schema_extra={"pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"})
    device_class_id: int = Field(foreign_key="device_class.id", ondelete="RESTRICT", ge=1, le=INT32_MAX)
    device_count: int = Field(ge=0, le=64, description="Devices of the node's class installed in it.")


class NodeHealth(SQLModel):
    """A node's health as each owner sees it, and the effective health planning uses.

    Each source writes only its own columns: the actuator `ready` and `reported_at` (inventory sync),
    the operator `cordoned` (the API). `healthy` is derived from them by `refresh_health`, never
    written by anyone else, so no source can undo another's word.
    """

    ready: bool = Field(True, description="Actuator: the node was last reported present and ready.")
    reported_at: datetime | None = Field(
        None, description="Actuator: when it last reported the node; null for a node it never reported.")
    cordoned: bool = Field(False, description="Operator: keep placements off the node.")
    healthy: bool = Field(True, description="Effective: ready and not cordoned. Planning uses only this.")


class Node(NodeBase, NodeHealth, table=True):
    __tablename__ = "node"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    device_class_id: int = Field(foreign_key="device_class.id", index=True, ondelete="RESTRICT")
    created_at: datetime = Field(default_factory=utcnow)

    def refresh_health(self) -> None:
        """Derive the effective health from the owners' columns; call after writing any of them."""
        self.healthy = self.ready and not self.cordoned


class _Cordon(Input):
    """The operator's word on a node: `cordoned`, or its older spelling `healthy` (false cordons)."""

    model_config = input_config("cordoned", "healthy", schema={"not": {"required": ["cordoned", "healthy"]}})

    cordoned: StrictBool | None = Field(None, description="Keep placements off the node (true) or allow them (false).")
    healthy: StrictBool | None = Field(
        None, description="Older spelling of the cordon: false cordons the node, true uncordons it.")

    @field_validator("cordoned", "healthy")
    @classmethod
    def _not_null(cls, value: bool | None) -> bool:
        # Runs only when the client sent the field: null would clear a column that has no "unknown".
        if value is None:
            raise ValueError("must be true or false; leave it out to keep the current value")
        return value

    @field_validator("healthy")
    @classmethod
    def _not_both(cls, value: bool, info: ValidationInfo) -> bool:
        if info.data.get("cordoned") is not None:
            raise ValueError("send cordoned or its older spelling healthy, not both; send only cordoned")
        return value

    def cordon(self) -> bool | None:
        """The cordon the client asked for, or None to keep the current one."""
        if self.cordoned is not None:
            return self.cordoned
        return None if self.healthy is None else not self.healthy


class NodeCreate(NodeBase, _Cordon):
    pass


class NodeUpdate(_Cordon):
    device_count: int | None = Field(None, ge=0, le=64)


class NodePublic(NodeBase, NodeHealth):
    id: int
    created_at: datetime


class Device(SQLModel, table=True):
    """One accelerator (or CPU socket) in a node; its health gates capacity.

    Each source writes only its own columns: the actuator `ready` (present and ready), telemetry
    `xid_errors` and `xid_at` (DCGM's last XID code and when it was read), the operator `cordoned`.
    `healthy` is derived from them by `refresh_health`. A device is usable when it is healthy and
    so is its node.
    """

    __tablename__ = "device"
    __table_args__ = (UniqueConstraint("node_id", "index", name="uq_device_node_index"),)
    id: int | None = Field(default=None, primary_key=True)
    node_id: int = Field(foreign_key="node.id", index=True, ondelete="CASCADE")
    index: int = Field(ge=0)
    ready: bool = True
    xid_errors: int = 0
    xid_at: datetime | None = None
    cordoned: bool = False
    healthy: bool = True

    def refresh_health(self) -> None:
        """Derive the effective health from the owners' columns; call after writing any of them."""
        self.healthy = self.ready and self.xid_errors == 0 and not self.cordoned


class DevicePublic(SQLModel):
    id: int
    node_id: int
    index: int
    ready: bool = Field(description="Actuator: the device is present and ready.")
    xid_errors: int = Field(description="Telemetry: the last XID error code read; 0 when none.")
    xid_at: datetime | None = Field(description="Telemetry: when the XID was last read.")
    cordoned: bool = Field(description="Operator: placements are kept off the device.")
    healthy: bool = Field(description="Effective: ready, no XID error and not cordoned (its node must be healthy too).")


class DeviceUpdate(Input):
    cordoned: StrictBool = Field(description="Keep placements off the device (true) or allow them (false).")
