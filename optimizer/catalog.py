"""The device catalog: what each device class can do and what one device of it costs, as data."""

import re
from dataclasses import dataclass

CATALOG_VERSION = "2025.06-1"

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class DeviceClassSpec:
    """Vendor spec and list price of one device class; measured calibrations override these numbers."""

    name: str
    vendor: str
    bf16_tflops: float  # dense (no 2:4 sparsity), peak
    memory_gib: float
    memory_gbps: float  # peak memory bandwidth, GB/s (10^9 bytes)
    fabric: str  # scale-up interconnect: nvlink | infinity-fabric | gaudi-roce | pcie | ethernet
    usd_per_hour: float  # one whole device, on-demand list price
    slices_per_device: int
    price_source: str
    cores: int = 0  # CPU cores per device; 0 for accelerators
    # Paid per slice (True) or per device occupied (False). GPUs are bought, or rented as whole GPUs,
    # so a device with any replica on it costs its whole price, MIG-partitioned or not; CPU cores are
    # rented by the core (m7a sizes from 8 to 64 cores are priced in proportion), so a CPU slice costs
    # its share.
    sold_by_slice: bool = False

    @property
    def is_cpu(self) -> bool:
        return self.cores > 0


# Specs: vendor data sheets, dense bf16 (half the "with sparsity" figure where only that is quoted).
# HBM capacities are quoted by vendors in binary units in practice (an "80 GB" H100 reports 80 GiB),
# so the vendor figure is used as GiB.
#
# Prices: public on-demand list prices, US regions, Linux, as published mid-2025 (after AWS's
# June 2025 reduction for P4/P5). Method: per-device share of the instance price, i.e. the
# instance $/hour divided by its accelerator count (8 for p5/p5en/p4de/ND MI300X v5/Gaudi nodes,
# 1 for the single-GPU g6e/g6/g5.xlarge). They were transcribed without network access from this
# session; re-check them against the named page before using them for real bills, and bump
# CATALOG_VERSION when any row changes.
#
# Slices: MIG-capable parts (H200, H100, A100) are partitioned into 7 compute slices (the 1g
# profile); other accelerators are not partitioned (1). The CPU class is one 64-core socket-sized
# host (AWS m7a.16xlarge: 64 physical EPYC 9R14 cores, SMT off, 256 GiB) split into 8 slices of
# 8 cores each; its bf16 figure is the AVX-512 BF16 peak (64 cores x ~3.1 GHz x 64 FLOP/cycle)
# and its bandwidth the share of a 12-channel DDR5-4800 socket those cores get.
CATALOG: tuple[DeviceClassSpec, ...] = (
    DeviceClassSpec("H200", "nvidia", 989.0, 141.0, 4800.0, "nvlink", 7.91, 7,
                    "AWS p5en.48xlarge on-demand $63.30/h / 8 GPUs"),
    DeviceClassSpec("H100-SXM", "nvidia", 989.0, 80.0, 3350.0, "nvlink", 6.88, 7,
                    "AWS p5.48xlarge on-demand $55.04/h / 8 GPUs"),
    DeviceClassSpec("A100-80GB", "nvidia", 312.0, 80.0, 2039.0, "nvlink", 3.43, 7,
                    "AWS p4de.24xlarge on-demand $27.45/h / 8 GPUs"),
    DeviceClassSpec("L40S", "nvidia", 362.0, 48.0, 864.0, "pcie", 1.861, 1,
                    "AWS g6e.xlarge on-demand $1.861/h, 1 GPU"),
    DeviceClassSpec("L4", "nvidia", 121.0, 24.0, 300.0, "pcie", 0.805, 1,
                    "AWS g6.xlarge on-demand $0.805/h, 1 GPU"),
    DeviceClassSpec("A10G", "nvidia", 70.0, 24.0, 600.0, "pcie", 1.006, 1,
                    "AWS g5.xlarge on-demand $1.006/h, 1 GPU"),
    DeviceClassSpec("MI300X", "amd", 1307.4, 192.0, 5300.0, "infinity-fabric", 6.00, 1,
                    "Azure ND MI300X v5 on-demand $48.00/h / 8 GPUs"),
    DeviceClassSpec("Gaudi2", "intel", 432.0, 96.0, 2460.0, "gaudi-roce", 1.30, 1,
                    "Intel Tiber AI Cloud Gaudi2 8-card node $10.42/h / 8"),
    DeviceClassSpec("Gaudi3", "intel", 1835.0, 128.0, 3700.0, "gaudi-roce", 3.60, 1,
                    "IBM Cloud gx3d Gaudi3 8-card profile ~$28.80/h / 8 (estimate)"),
    DeviceClassSpec("CPU-EPYC-64C", "amd", 12.7, 256.0, 307.0, "ethernet", 3.709, 8,
                    "AWS m7a.16xlarge on-demand $3.709/h (64 cores)", cores=64, sold_by_slice=True),
)

_BY_NAME = {spec.name: spec for spec in CATALOG}


def by_name(name: str) -> DeviceClassSpec:
    """The catalog entry for `name`; KeyError naming the known classes when there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        raise KeyError(f"unknown device class {name!r}; known classes: {known}") from None
