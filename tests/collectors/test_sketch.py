"""The latency sketch keeps p50/p95/p99 within 1% of the exact quantiles, also after merging."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.sketch import ZERO_BUCKET, latency_bucket, merge, quantiles, token_bucket

latencies = st.lists(st.floats(min_value=0.001, max_value=1e7, allow_nan=False), min_size=1, max_size=500)


def counts(values):
    out = {}
    for v in values:
        out[latency_bucket(v)] = out.get(latency_bucket(v), 0) + 1
    return out


def exact(values, q):
    # DDSketch's rank convention: the value of rank floor(q * (n - 1)) in sorted order.
    return sorted(values)[math.floor(q * (len(values) - 1))]


@settings(max_examples=300, deadline=None)
@given(latencies, latencies)
def test_quantiles_of_merged_sketches_are_within_one_percent(a, b):
    merged = merge(counts(a), counts(b))  # what two collectors adding rows to one table produce
    got = quantiles(merged, (0.5, 0.95, 0.99))
    for q in (0.5, 0.95, 0.99):
        want = exact(a + b, q)
        assert abs(got[q] - want) <= 0.01 * want + 1e-12, (q, got[q], want)


def test_zero_and_empty():
    assert latency_bucket(0.0) == ZERO_BUCKET
    assert quantiles({ZERO_BUCKET: 3}, (0.5,)) == {0.5: 0.0}
    assert quantiles({}, (0.5, 0.99)) == {0.5: None, 0.99: None}


def test_token_buckets_follow_the_edges():
    # edges 0/25/100/250/500/1000/2000/inf
    assert [token_bucket(t) for t in (0, 24, 25, 99, 100, 249, 250, 499, 500, 999, 1000, 1999, 2000, 10**9)] == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
        5,
        5,
        6,
        6,
    ]
