"""The simulated fleet's hardware: device classes as the sim's ground truth, and its node layout.

The sim is deliberately its own source of truth about hardware: it does not read
the optimizer's catalog, so the control plane has something real-ish to
discover. Spec numbers are public datasheet figures (dense bf16); the
efficiency factors say how much of the datasheet a serving stack achieves on
each vendor's parts, which is what the optimizer's estimates will be wrong about
until telemetry corrects them. Class names and slices per device do agree with
optimizer/catalog.py (a test checks it), so the optimizer's placements fit here.
"""

from dataclasses import dataclass

from controlplane.actuators.base import NodeInventory


@dataclass(frozen=True)
class SimDeviceClass:
    """One device class as the simulation models it."""

    name: str
    vendor: str
    model_name: str  # what DCGM would report as modelName
    bf16_tflops: float  # dense, whole device
    memory_gib: float
    memory_gbps: float
    slices_per_device: int
    compute_efficiency: float  # achieved / datasheet FLOP/s on prefill-like work
    bandwidth_efficiency: float  # achieved / datasheet GB/s on decode-like work
    idle_watts: float
    max_watts: float
    accelerator: bool = True


CPU_CORES_PER_SLICE = 8  # the CPU class: a 64-core socket in 8 slices

H100 = "H100-SXM"
L40S = "L40S"
GAUDI2 = "Gaudi2"
CPU = "CPU-EPYC-64C"

DEVICE_CLASSES: tuple[SimDeviceClass, ...] = (
    SimDeviceClass(H100, "nvidia", "NVIDIA H100 80GB HBM3", 989.0, 80.0, 3350.0, 7, 0.55, 0.80, 70.0, 700.0),
    SimDeviceClass(L40S, "nvidia", "NVIDIA L40S", 362.0, 48.0, 864.0, 1, 0.50, 0.75, 35.0, 350.0),
    SimDeviceClass(GAUDI2, "intel", "HL-225", 432.0, 96.0, 2450.0, 1, 0.45, 0.70, 100.0, 600.0),
    # One "device" of the CPU class is one 64-core socket; a slice is 8 cores.
    SimDeviceClass(
        CPU, "amd", "AMD EPYC 9554 64-Core", 12.7, 256.0, 307.0, 8, 0.40, 0.60, 90.0, 360.0, accelerator=False
    ),
)

# Host-memory offload bandwidth when a model's weights do not fit a replica's device memory.
OFFLOAD_GBPS = 25.0


def device_class(name: str) -> SimDeviceClass:
    """The sim's spec for `name`; KeyError names the known classes."""
    for spec in DEVICE_CLASSES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown device class {name!r}; the simulated fleet has {[d.name for d in DEVICE_CLASSES]}")


@dataclass(frozen=True)
class NodeLayout:
    """How many nodes of which class, with how many devices each."""

    device_class: str
    nodes: int
    devices_per_node: int
    prefix: str


DEFAULT_LAYOUT: tuple[NodeLayout, ...] = (
    NodeLayout(H100, 2, 8, "sim-h100"),
    NodeLayout(L40S, 2, 4, "sim-l40s"),
    NodeLayout(GAUDI2, 1, 8, "sim-gaudi2"),
    NodeLayout(CPU, 4, 2, "sim-cpu"),
)


def build_inventory(layout: tuple[NodeLayout, ...] = DEFAULT_LAYOUT) -> tuple[NodeInventory, ...]:
    """The nodes of a layout, all devices healthy, named like `sim-h100-0`."""
    for entry in layout:
        device_class(entry.device_class)  # fail early on a typo
    return tuple(
        NodeInventory(f"{entry.prefix}-{i}", entry.device_class, entry.devices_per_node, entry.devices_per_node)
        for entry in layout
        for i in range(entry.nodes)
    )
