"""Store kernel selections (kernels.registry.Row) in the `kernel_selection` table.

A new measurement of an (op, device class, dtype, shape bucket) replaces the stored one; all rows of
one run are written in one transaction, so a failed run leaves the previous selection whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session, delete

from controlplane.models import KernelSelection

if TYPE_CHECKING:
    from kernels.registry import Row


def save(session: Session, rows: Sequence[Row]) -> int:
    """Upsert `rows` (one per key; later rows of the same key win) and commit; returns rows written."""
    latest = {(r.op, r.device_class, r.dtype, r.shape_bucket): r for r in rows}
    for (op, device_class, dtype, bucket), r in latest.items():
        session.exec(delete(KernelSelection).where(
            KernelSelection.op == op, KernelSelection.device_class == device_class,
            KernelSelection.dtype == dtype, KernelSelection.shape_bucket == bucket))
        session.add(KernelSelection(
            op=op, device_class=device_class, dtype=dtype, shape_bucket=bucket,
            shape="x".join(map(str, r.shape)), chosen=r.chosen, speedup=r.speedup, spread=r.spread,
            reference_s=r.reference_s, atol=r.atol, rtol=r.rtol, seeds=",".join(map(str, r.seeds)),
            torch_version=r.torch_version, device=r.device, measured_at=datetime.fromisoformat(r.measured_at)))
    session.commit()
    return len(latest)
