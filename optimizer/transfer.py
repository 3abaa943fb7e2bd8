"""How long moving bytes between two device classes takes, by the kind of link between them.

Four kinds of link, from the classes' vendor and fabric (``ClassCapacity.vendor`` / ``.fabric``):

    same class    both ends on one class: the scheduler co-locates them on one device or one
                  scale-up node (NVLink-class, ~450 GB/s: 10 MB in 0.02 ms), counted as 0.
    same fabric   different classes, same vendor and fabric (e.g. H100 -> B200 over an RDMA
                  network of the same family): 400 Gb/s, 50 GB/s, plus 0.01 ms.
    cross fabric  same vendor, different or unknown fabric: a 200 Gb/s Ethernet hop,
                  25 GB/s, plus 0.05 ms.
    cross vendor  different (or unknown) vendors: device -> host memory -> network -> host ->
                  device at an effective 10 GB/s, plus a 1 ms layout-conversion penalty
                  (tensor layouts and dtypes differ between runtimes; KV caches are repacked).

The figures are public order-of-magnitude numbers for 2024-25 fleets; calibrate them per fleet by
building a `TransferModel` with measured values.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Link(StrEnum):
    same_class = "same class"
    same_fabric = "same fabric"
    cross_fabric = "cross fabric"
    cross_vendor = "cross vendor"


class Endpoint(Protocol):
    """What a transfer needs to know of a device class (``ClassCapacity`` satisfies it)."""

    device_class: str
    vendor: str
    fabric: str


@dataclass(frozen=True)
class TransferModel:
    """Seconds to move bytes between two classes: fixed latency plus bytes over bandwidth, per link kind."""

    same_fabric_gbps: float = 50.0  # GB/s (10^9 bytes)
    same_fabric_latency_s: float = 10e-6
    cross_fabric_gbps: float = 25.0
    cross_fabric_latency_s: float = 50e-6
    cross_vendor_gbps: float = 10.0
    cross_vendor_penalty_s: float = 1e-3  # layout conversion through host memory

    def seconds(self, nbytes: float, src: Endpoint, dst: Endpoint) -> float:
        kind = link(src, dst)
        if kind is Link.same_class:
            return 0.0
        if kind is Link.same_fabric:
            return self.same_fabric_latency_s + nbytes / (self.same_fabric_gbps * 1e9)
        if kind is Link.cross_fabric:
            return self.cross_fabric_latency_s + nbytes / (self.cross_fabric_gbps * 1e9)
        return self.cross_vendor_penalty_s + nbytes / (self.cross_vendor_gbps * 1e9)

    def ms(self, nbytes: float, src: Endpoint, dst: Endpoint) -> float:
        return 1000.0 * self.seconds(nbytes, src, dst)


def link(src: Endpoint, dst: Endpoint) -> Link:
    """The kind of link between two classes; an unknown ("") vendor or fabric never matches."""
    if src.device_class == dst.device_class:
        return Link.same_class
    if not src.vendor or src.vendor != dst.vendor:
        return Link.cross_vendor
    if src.fabric and src.fabric == dst.fabric:
        return Link.same_fabric
    return Link.cross_fabric
