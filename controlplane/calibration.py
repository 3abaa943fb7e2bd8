"""Device calibrations: record what a node measured for its device class, and read them back for
planning (optimizer.calibration), the API and the console.

Efficiency is achieved / datasheet, per dtype, against the class's stored spec:

    bfloat16, float16   bf16_tflops (dense tensor-core or AVX-512 BF16 peak; fp16 runs at the same rate)
    float32             bf16_tflops / 2 (TF32 tensor cores and AVX-512 FP32 FMAs run at half the bf16 rate)
    memory (copy)       memory_gbps

A CPU class's figures are a whole socket's (`cores` of them), so a measurement on `threads` threads
is held against the share threads / cores of them. Compute scales so; bandwidth does not (a few
cores draw far more than their share of a socket's), so a CPU class calibrated on few threads
overstates its memory efficiency, which the planner caps at the whole peak. The planner uses the bfloat16 efficiency as a
class's compute efficiency (the model's weights are bf16) and the copy's as its memory efficiency.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, select

from controlplane.models import DeviceCalibration, DeviceClass
from controlplane.models._common import to_utc
from controlplane.models.calibration import CalibrationPublic
from controlplane.models.fleet import MAX_CLASS_NAME
from optimizer.calibration import Calibration

DTYPES = ("float32", "bfloat16", "float16")
FP32_SHARE_OF_BF16 = 0.5
MAX_SOURCE = 256
MAX_THREADS = 1024


@dataclass(frozen=True)
class Measured:
    """What one node achieved: matmul GFLOP/s per dtype (DTYPES) and copy GB/s, on `threads` threads."""

    gflops: Mapping[str, float]
    copy_gbps: float
    threads: int
    source: str


def datasheet(row: DeviceClass, threads: int) -> tuple[dict[str, float], float]:
    """The class's peak GFLOP/s per dtype and GB/s, for a measurement on `threads` threads (module docstring)."""
    share = min(1.0, threads / row.cores) if row.cores > 0 else 1.0
    bf16 = row.bf16_tflops * 1e3 * share
    return ({"float32": bf16 * FP32_SHARE_OF_BF16, "bfloat16": bf16, "float16": bf16},
            row.memory_gbps * share)


def device_class_named(session: Session, name: str) -> DeviceClass:
    """The stored class `name`; ValueError naming the known classes when there is none."""
    # Checked before the query: PostgreSQL refuses a NUL in a text parameter (an uncaught DataError), and
    # an unknown name is echoed back, so it is bounded like the API's class names.
    if "\x00" in name or len(name) > MAX_CLASS_NAME:
        raise ValueError(f"a device class name is at most {MAX_CLASS_NAME} characters without NUL; got {len(name)} "
                         f"characters starting {name[:MAX_CLASS_NAME]!r}")
    row = session.exec(select(DeviceClass).where(DeviceClass.name == name)).first()
    if row is None:
        raise ValueError(f"unknown device class {name!r}; known classes: {known_classes(session)}")
    return row


def known_classes(session: Session, most: int = 20) -> str:
    """The stored classes' names for an error message: the first `most` by name, then how many more."""
    names = session.exec(select(DeviceClass.name).order_by(DeviceClass.name).limit(most + 1)).all()
    if len(names) <= most:
        return ", ".join(names) or "none"
    total = session.exec(select(func.count()).select_from(DeviceClass)).one()
    return f"{', '.join(names[:most])} and {total - most} more"


def figures(row: DeviceClass, measured: Measured, now: datetime) -> dict:
    """The columns of a calibration of `row` from `measured`; ValueError naming the first bad figure."""
    if set(measured.gflops) != set(DTYPES):
        raise ValueError(f"a calibration needs GFLOP/s for exactly {', '.join(DTYPES)}; got {sorted(measured.gflops)}")
    for name, value in [*((f"{d} GFLOP/s", measured.gflops[d]) for d in DTYPES), ("copy GB/s", measured.copy_gbps)]:
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"measured {name} must be a finite number > 0, got {value}; nothing was recorded")
    if not 1 <= measured.threads <= MAX_THREADS:
        raise ValueError(f"threads must be 1 to {MAX_THREADS}, got {measured.threads}")
    peaks, bandwidth = datasheet(row, measured.threads)
    if not all(p > 0 for p in peaks.values()):
        raise ValueError(f"device class {row.name!r} has no compute figure (bf16_tflops {row.bf16_tflops}): "
                         "set it before calibrating")
    efficiency = {**{f"{d}_efficiency": measured.gflops[d] / peaks[d] for d in DTYPES},
                  "memory_efficiency": measured.copy_gbps / bandwidth}
    # A finite but absurd datasheet figure (the API takes up to 1.8e308) overflows the peak or the
    # ratio: a stored efficiency of 0 or inf would make every planning cycle's Calibration raise.
    for key, value in efficiency.items():
        if not (math.isfinite(value) and value > 0):
            column = "memory_gbps" if key == "memory_efficiency" else "bf16_tflops"
            raise ValueError(f"device class {row.name!r}: its {column} ({getattr(row, column)}) gives a {key} of "
                             f"{value}; correct the class's datasheet figure; nothing was recorded")
    return {
        **{f"{d}_gflops": float(measured.gflops[d]) for d in DTYPES},
        "copy_gbps": float(measured.copy_gbps),
        **efficiency,
        "threads": measured.threads,
        "source": measured.source[:MAX_SOURCE],
        "measured_at": to_utc(now),
    }


def record_calibration(session: Session, name: str, measured: Measured, now: datetime) -> DeviceCalibration:
    """Store `measured` as the calibration of class `name`, replacing any earlier one, in one commit;
    ValueError (and nothing written) for an unknown class or a bad figure."""
    row = device_class_named(session, name)
    return store_figures(session, row, figures(row, measured, now), now)


def store_figures(session: Session, row: DeviceClass, values: dict, now: datetime) -> DeviceCalibration:
    """Store the columns `figures` gave for `row` as its calibration, replacing any earlier one, in one commit."""
    stored = session.exec(select(DeviceCalibration).where(DeviceCalibration.device_class_id == row.id)).first()
    if stored is None:
        stored = DeviceCalibration(device_class_id=row.id, **values)
    else:
        for key, value in values.items():
            setattr(stored, key, value)
        stored.updated_at = to_utc(now)
    session.add(stored)
    session.commit()
    session.refresh(stored)
    return stored


def calibrations(session: Session) -> dict[str, Calibration]:
    """Class name -> the planner's view of its calibration, for every calibrated class."""
    return {
        name: Calibration(name, c.bfloat16_efficiency, c.memory_efficiency, c.source, to_utc(c.measured_at))
        for c, name in session.exec(
            select(DeviceCalibration, DeviceClass.name).join(DeviceClass, DeviceClass.id == DeviceCalibration.device_class_id)
        ).all()
    }


def public_by_class(session: Session, class_ids: Iterable[int]) -> dict[int, CalibrationPublic]:
    """Class id -> its calibration as the API shows it, for those of `class_ids` that have one."""
    ids = list(class_ids)
    if not ids:
        return {}
    return {
        c.device_class_id: CalibrationPublic.model_validate(c)
        for c in session.exec(select(DeviceCalibration).where(DeviceCalibration.device_class_id.in_(ids))).all()
    }
