"""Dispatch (issue 16, point 5): `get(op, device, dtype, shape)` returns the kernel selected for the
shape's bucket (`kernels.selection.bucket`), the reference when none is selected. A selected kernel
that raises at run time falls back to the reference for that call: the fallback is counted in the
Prometheus counter `heteroplane_kernel_fallbacks_total{op,candidate}` and logged, and the caller gets
the reference's answer, never the exception.

The counter lives in this module's own registry (`METRICS`), never prometheus_client's global one,
as `controlplane.telemetry` does: re-importing the module cannot register it twice, and a process
that serves kernels exposes it by adding `METRICS` to what it serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter

from kernels import ops
from kernels.selection import bucket
from kernels.timing import REFERENCE
from kernels.verify import Candidate, Verdict, verify

log = logging.getLogger("kernels")
ANY_BUCKET = None
# (op, device, dtype, bucket or ANY_BUCKET) -> the selected candidate
REGISTRY: dict[tuple[str, str, object, int | None], Candidate] = {}
METRICS = CollectorRegistry()
FALLBACKS = Counter("heteroplane_kernel_fallbacks", "Calls of a selected kernel that raised and were answered "
                    "by the op's reference instead.", ["op", "candidate"], registry=METRICS)


def select(c: Candidate, device: str = "cpu", **kw) -> Verdict:
    """Verify a candidate; register it for each claimed dtype, every bucket, only when accepted."""
    verdict = verify(c, **kw)
    if verdict.accepted:
        for d in c.dtypes:
            REGISTRY[(c.op, device, d, ANY_BUCKET)] = c
    return verdict


def install(rows: Iterable, candidates: Iterable[Candidate], device: str = "cpu") -> int:
    """Register the candidates chosen by selection rows (`kernels.registry.Row`); returns how many."""
    by_name = {c.name: c for c in candidates}
    n = 0
    for r in rows:
        if r.chosen != REFERENCE and r.chosen in by_name:
            REGISTRY[(r.op, device, getattr(ops.torch, r.dtype), r.shape_bucket)] = by_name[r.chosen]
            n += 1
    return n


def fallbacks(op: str, candidate: str) -> float:
    """How many calls of `candidate` for `op` fell back to the reference so far."""
    return METRICS.get_sample_value("heteroplane_kernel_fallbacks_total", {"op": op, "candidate": candidate}) or 0.0


def get(op: str, device: str, dtype, shape=None) -> Callable:
    if op not in ops.SPECS:
        raise KeyError(f"unknown op {op!r}; known: {', '.join(sorted(ops.SPECS))}")
    ref = ops.SPECS[op].reference
    chosen = None if shape is None else REGISTRY.get((op, device, dtype, bucket(shape)))
    chosen = chosen or REGISTRY.get((op, device, dtype, ANY_BUCKET))
    if chosen is None:
        return ref

    def run(*args):
        try:
            return chosen.fn(*args)
        except Exception as e:  # noqa: BLE001 - any runtime failure falls back
            FALLBACKS.labels(op=op, candidate=chosen.name).inc()
            log.warning("kernel %s for %s failed (%r); falling back to the reference", chosen.name, op, e)
            return ref(*args)
    return run
