"""The data model: every table heteroplane stores, one module per area."""

from controlplane.models.calibration import DeviceCalibration
from controlplane.models.fleet import Device, DeviceClass, Node
from controlplane.models.kernels import KernelSelection
from controlplane.models.observed import Observation, ObservationItem
from controlplane.models.placements import (
    FragmentPin,
    LeaderEpoch,
    Migration,
    MigrationState,
    Placement,
    PlacementChoice,
    PlacementItem,
    PlacementState,
)
from controlplane.models.runtime_templates import RuntimeTemplate
from controlplane.models.telemetry import DeviceTelemetry, ModelTelemetry
from controlplane.models.tenancy import ApiToken, AuditEvent, ConsoleSession, Role, Tenant
from controlplane.models.usage import IdleRecord, MeteringWatermark, RequestStat, UsageRecord
from controlplane.models.workloads import (
    Edge,
    EdgeVisitCalls,
    Fragment,
    FragmentKind,
    FragmentProfile,
    MeasuredCapacity,
    MigrationPolicy,
    ProfileBucket,
    Sla,
    Workload,
)

__all__ = [
    "ApiToken",
    "AuditEvent",
    "ConsoleSession",
    "Device",
    "DeviceCalibration",
    "DeviceClass",
    "DeviceTelemetry",
    "Edge",
    "EdgeVisitCalls",
    "Fragment",
    "FragmentKind",
    "FragmentPin",
    "FragmentProfile",
    "IdleRecord",
    "KernelSelection",
    "LeaderEpoch",
    "MeasuredCapacity",
    "MeteringWatermark",
    "Migration",
    "MigrationPolicy",
    "MigrationState",
    "ModelTelemetry",
    "Node",
    "Observation",
    "ObservationItem",
    "Placement",
    "PlacementChoice",
    "PlacementItem",
    "PlacementState",
    "ProfileBucket",
    "RequestStat",
    "RuntimeTemplate",
    "Role",
    "Sla",
    "Tenant",
    "UsageRecord",
    "Workload",
]
