"""The selection rule (issue 16, point 4): pure functions over timing results, no measuring here.

Selection is per (op, device class, dtype, shape bucket), the bucket of a shape being
    bucket(shape) = floor(log2(product of the op's shape tuple)), 0 for a product <= 1,
so shapes within a factor of two in size share a kernel (a kernel's speed changes with size far
more than with the exact layout).

A candidate qualifies when it was verified, its timed outputs and side effects were clean
(`Timing.problem` empty), its mean time per call is below the reference's (a stall every few
thousand calls hides from medians, not from the mean), it won every round against the reference
(median per round), and its margin exceeds the noise:
    margin = t_ref / t_c - 1  >  max(spread_ref, spread_c) + MIN_MARGIN
where t is the median seconds per call and spread is IQR / median. The fastest qualifying candidate
is chosen; with none, the reference is kept (speedup 1.0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kernels.timing import REFERENCE, Timing

MIN_MARGIN = 0.05  # a win must also clear 5 % on top of the measured spread


def bucket(shape: Sequence[int]) -> int:
    """floor(log2(elements)), 0 for empty or single-element shapes."""
    n = math.prod(shape)
    return n.bit_length() - 1 if n > 1 else 0


@dataclass(frozen=True)
class Contender:
    """A candidate as the rule sees it: did it verify, and how did it time."""
    name: str
    verified: bool
    timing: Timing | None  # None when it was never timed (not verified)


@dataclass(frozen=True)
class Choice:
    """The decision for one (op, device class, dtype, bucket): the chosen name (REFERENCE when the
    reference is kept), its speedup over the reference, the spread the margin had to beat, and why
    each other candidate was passed over."""
    chosen: str
    speedup: float
    spread: float
    reasons: tuple[tuple[str, str], ...]  # (candidate, why it was not chosen)


NOT_VERIFIED = "not verified"
NOT_CLEARLY_FASTER = "not clearly faster"  # lost a round, or its margin is within the spread
SLOWER_ON_AVERAGE = "slower on average"


def rejection(ref: Timing, c: Contender, min_margin: float = MIN_MARGIN) -> str:
    """Why `c` cannot be chosen over the reference ("" when it qualifies)."""
    if not c.verified or c.timing is None:
        return NOT_VERIFIED
    t = c.timing
    if t.problem:
        return t.problem
    if t.mean_s >= ref.mean_s:
        return SLOWER_ON_AVERAGE
    if len(t.rounds_s) != len(ref.rounds_s) or any(a >= b for a, b in zip(t.rounds_s, ref.rounds_s, strict=True)):
        return NOT_CLEARLY_FASTER
    if not ref.median_s / t.median_s - 1 > max(ref.spread, t.spread) + min_margin:
        return NOT_CLEARLY_FASTER
    return ""


def choose(ref: Timing, contenders: Sequence[Contender], min_margin: float = MIN_MARGIN) -> Choice:
    """The fastest qualifying contender, else the reference."""
    reasons = {c.name: rejection(ref, c, min_margin) for c in contenders}
    ok = [c for c in contenders if not reasons[c.name]]
    if not ok:
        return Choice(REFERENCE, 1.0, ref.spread, tuple(reasons.items()))
    best = min(ok, key=lambda c: c.timing.median_s)
    reasons[best.name] = ""
    others = tuple((n, r or "slower than " + best.name) for n, r in reasons.items() if n != best.name)
    return Choice(best.name, ref.median_s / best.timing.median_s, max(ref.spread, best.timing.spread), others)


__all__ = ["MIN_MARGIN", "NOT_CLEARLY_FASTER", "NOT_VERIFIED", "SLOWER_ON_AVERAGE", "Choice", "Contender", "bucket", "choose",
           "rejection"]
