"""Mergeable distributions for profiles: a log-bucket latency sketch and fixed token histograms.

Latency uses DDSketch's logarithmic mapping (``ddsketch``, relative accuracy 1%): a value
v > 0 falls in bucket k = ceil(log_γ v) with γ = (1 + α) / (1 − α), α = 0.01, and every
value in bucket k is within α of the bucket's representative value. Buckets are plain
integer keys with counts, so two collectors' sketches merge by adding counts — in memory,
or in the database with ``count = count + excluded.count`` — and any quantile read back is
within 1% relative error of the exact quantile of the merged data. Zero (and negative)
durations go to ``ZERO_BUCKET``; so does NaN, and +Inf goes to the bucket of the largest double,
so a hostile value never raises here (the normaliser keeps them out before this).

Token counts use the fixed bucket edges 0/25/100/250/500/1000/2000/∞ (7 buckets).
"""

import sys
from bisect import bisect_right
from collections.abc import Iterable, Mapping

from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.01
MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
ZERO_BUCKET = -(2**31)  # below any key the mapping produces for representable doubles
_MIN_VALUE = MAPPING.min_possible
_MAX_VALUE = sys.float_info.max
_MAX_KEY = MAPPING.key(_MAX_VALUE)

TOKEN_EDGES = (0, 25, 100, 250, 500, 1000, 2000)  # bucket i holds [TOKEN_EDGES[i], TOKEN_EDGES[i+1]); the last is open


def latency_bucket(value: float) -> int:
    """The sketch bucket of a latency (any unit; heteroplane stores milliseconds)."""
    if not value >= _MIN_VALUE:  # negatives, zero and NaN
        return ZERO_BUCKET
    if value > _MAX_VALUE:  # +Inf
        return _MAX_KEY
    return MAPPING.key(value)


def bucket_value(bucket: int) -> float:
    """The representative value of a sketch bucket (within 1% of every value in it)."""
    return 0.0 if bucket == ZERO_BUCKET else MAPPING.value(bucket)


def token_bucket(tokens: float) -> int:
    """The token-histogram bucket of a token count (negative counts and NaN go to the first bucket)."""
    if tokens != tokens:
        return 0
    return max(0, bisect_right(TOKEN_EDGES, tokens) - 1)


def quantiles(counts: Mapping[int, int], qs: Iterable[float]) -> dict[float, float | None]:
    """Quantiles of a stored latency sketch (bucket -> count); None for every q when it is empty."""
    sketch = DDSketch(RELATIVE_ACCURACY)
    for bucket, count in counts.items():
        if count > 0:
            sketch.add(bucket_value(bucket), count)
    if sketch.count == 0:
        return {q: None for q in qs}
    return {q: max(0.0, sketch.get_quantile_value(q)) for q in qs}


def merge(*histograms: Mapping[int, int]) -> dict[int, int]:
    """The sum of bucket counts: how sketches and token histograms merge."""
    out: dict[int, int] = {}
    for histogram in histograms:
        for bucket, count in histogram.items():
            out[bucket] = out.get(bucket, 0) + count
    return out
