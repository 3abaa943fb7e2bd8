"""Dispatch (issue 16, point 5): `get(op, device, dtype, shape)` returns the selected kernel, the
reference when none is selected; a selected kernel that raises at run time falls back to the
reference, counted in `FALLBACKS` and logged, never crashing the caller."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from kernels import ops
from kernels.verify import Candidate, Verdict, verify

log = logging.getLogger("kernels")
REGISTRY: dict[tuple[str, str, object], Candidate] = {}
FALLBACKS: Counter = Counter()


def select(c: Candidate, device: str = "cpu", **kw) -> Verdict:
    """Verify a candidate; register it for each claimed dtype only when accepted."""
    verdict = verify(c, **kw)
    if verdict.accepted:
        for d in c.dtypes:
            REGISTRY[(c.op, device, d)] = c
    return verdict


def get(op: str, device: str, dtype, shape=None) -> Callable:
    ref = ops.SPECS[op].reference
    chosen = REGISTRY.get((op, device, dtype))
    if chosen is None:
        return ref

    def run(*args):
        try:
            return chosen.fn(*args)
        except Exception as e:  # noqa: BLE001 - any runtime failure falls back
            FALLBACKS[(op, chosen.name)] += 1
            log.warning("kernel %s for %s failed (%r); falling back to the reference", chosen.name, op, e)
            return ref(*args)
    return run
