"""Measured calibration and verified kernels, as the roofline model's effective device spec.

The performance model (optimizer.perfmodel) prices a class from its datasheet peaks F (compute)
and B (bandwidth) at assumed utilisations MFU = PREFILL_MFU and MBU = DECODE_MBU. Two measured
facts correct that, per device class:

Calibration (``heteroplane calibrate``). A large matmul reaches e_c = achieved / datasheet of the
class's compute, a large copy e_b of its bandwidth. An uncalibrated class is assumed to reach
E_C_ASSUMED and E_B_ASSUMED on those micro-benchmarks (cuBLAS bf16 GEMMs reach about 70% of an
H100's dense peak, a device copy about 80% of its HBM bandwidth), so a measured efficiency scales
the utilisation serving reaches::

    MFU' = min(1, MFU * e_c / E_C_ASSUMED)
    MBU' = min(1, MBU * e_b / E_B_ASSUMED)

Kernel speedups (the kernel registry). A verified kernel that runs op o s_o times faster than
the eager reference shortens the phase spending a share f_o of its time in o, by Amdahl's law::

    time' / time = 1 - sum_o f_o * (1 - 1 / s_o)        speedup_phase = time / time'

over the op shares below (PREFILL_SHARES, DECODE_SHARES: rough splits of a dense transformer's
time; the rest, mostly the weight matmuls, runs in the vendor's BLAS and is not sped up). An op
without a measured speedup counts s_o = 1. Prefill is compute-bound and decode bandwidth-bound,
so the prefill speedup scales compute and the decode speedup bandwidth. They apply to LLM
fragments only: the shares are an LLM's.

Both become one effective spec the unchanged roofline prices, since its compute and bandwidth
terms divide by MFU * F and MBU * B::

    F' = F * min(1 / MFU, e_c / E_C_ASSUMED) * speedup_prefill
    B' = B * min(1 / MBU, e_b / E_B_ASSUMED) * speedup_decode

A class with no calibration (or one at exactly the assumed efficiencies) and no speedups keeps
its spec unchanged, so its estimates are today's to the bit.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from optimizer.catalog import DeviceClassSpec
from optimizer.perfmodel import DECODE_MBU, PREFILL_MFU

E_C_ASSUMED = 0.7  # matmul efficiency an uncalibrated class is assumed to reach
E_B_ASSUMED = 0.8  # copy efficiency an uncalibrated class is assumed to reach

# The kernel suite's ops (kernels/ops.py SPECS keys; a test keeps the two in step).
KNOWN_OPS = frozenset({"rmsnorm", "swiglu", "softmax", "rotary", "attention_prefill", "attention_decode", "sample",
                       "mean_pool", "int8_matmul"})
# Share of a phase's time each op takes in a dense transformer at moderate context; softmax runs
# inside attention and sampling, int8_matmul only for int8 weights, mean_pool only in encoders.
PREFILL_SHARES = {"attention_prefill": 0.12, "rmsnorm": 0.03, "swiglu": 0.03, "rotary": 0.02}
DECODE_SHARES = {"attention_decode": 0.15, "rmsnorm": 0.03, "swiglu": 0.03, "rotary": 0.01, "sample": 0.02}

KernelSpeedups = Mapping[str, float]  # op -> speedup of the selected kernel over the eager reference


@dataclass(frozen=True)
class Calibration:
    """What one device class was measured to reach, as a fraction of its datasheet."""

    device_class: str
    compute_efficiency: float  # e_c: bf16 matmul achieved / datasheet (the model's weights are bf16)
    memory_efficiency: float  # e_b: copy achieved / datasheet bandwidth
    source: str = ""
    measured_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("compute_efficiency", "memory_efficiency"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{self.device_class}: {name} must be a finite number > 0, got {value}")


def amdahl(shares: Mapping[str, float], speedups: KernelSpeedups) -> float:
    """speedup_phase of a phase spending `shares` of its time in ops sped up by `speedups` (module docstring)."""
    for op, s in speedups.items():
        if op not in KNOWN_OPS:
            raise ValueError(f"unknown op {op!r} in kernel speedups; known ops: {', '.join(sorted(KNOWN_OPS))}")
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"kernel speedup of {op} must be a finite number > 0, got {s}")
    # 1 - sum f (1 - 1/s), not (1 - sum f) + sum f / s: all speedups 1 then give exactly 1.
    remaining = 1.0 - sum(f * (1.0 - 1.0 / speedups.get(op, 1.0)) for op, f in shares.items())
    return 1.0 / remaining


def effective_spec(spec: DeviceClassSpec, calibration: Calibration | None = None,
                   speedups: KernelSpeedups | None = None, kind: str = "llm") -> DeviceClassSpec:
    """`spec` with compute and bandwidth scaled so the roofline prices what the class was measured
    to reach (F' and B' of the module docstring); kernel speedups count for an `kind` "llm" only."""
    if calibration is None and not speedups:
        return spec
    compute = bandwidth = 1.0
    if calibration is not None:
        if calibration.device_class != spec.name:
            raise ValueError(f"calibration of {calibration.device_class!r} given for class {spec.name!r}")
        compute = min(1 / PREFILL_MFU, calibration.compute_efficiency / E_C_ASSUMED)
        bandwidth = min(1 / DECODE_MBU, calibration.memory_efficiency / E_B_ASSUMED)
    if speedups and kind == "llm":
        compute *= amdahl(PREFILL_SHARES, speedups)
        bandwidth *= amdahl(DECODE_SHARES, speedups)
    if compute == 1.0 and bandwidth == 1.0:
        return spec
    return replace(spec, bf16_tflops=spec.bf16_tflops * compute, memory_gbps=spec.memory_gbps * bandwidth)


def effective_specs(specs: tuple[DeviceClassSpec, ...], calibrations: Mapping[str, Calibration],
                    speedups: Mapping[str, KernelSpeedups], kind: str) -> tuple[DeviceClassSpec, ...]:
    """`effective_spec` of each class, with its calibration and kernel speedups where it has them."""
    return tuple(effective_spec(s, calibrations.get(s.name), speedups.get(s.name), kind) for s in specs)
