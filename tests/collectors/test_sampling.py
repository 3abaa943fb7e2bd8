"""Consistent probability sampling: a span's ``ot=th`` threshold gives it an integer weight whose mean
is its adjusted count, and every profile count is weighted by it.

Expected values are worked out here with exact fractions, sharing no code with the normaliser.
"""

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collectors.assembly import assemble
from collectors.normalise import MAX_WEIGHT, adjusted_count, normalise_request, span_weight
from collectors.records import Series
from tests.collectors.otlp_builders import agent_loop, key_values, make_request

TWO_56 = 2**56


def exact_adjusted_count(th: str) -> Fraction:
    """2^56 / (2^56 - T), T being th padded right with zeros to 14 hex digits."""
    return Fraction(TWO_56, TWO_56 - int(th.ljust(14, "0"), 16))


def random_trace_id(rng: random.Random, randomness: int) -> bytes:
    """A trace id whose low 56 bits (the spec's randomness R) are `randomness`."""
    return rng.getrandbits(72).to_bytes(9) + randomness.to_bytes(7)


@pytest.mark.parametrize(
    ("trace_state", "count"),
    [
        ("ot=th:0", 1),  # 100%
        ("ot=th:8", 2),  # T = 2^55: 50%
        ("ot=th:c", 4),  # 25%
        ("ot=th:C", 4),  # the spec's hexdigit takes either case
        ("vendor=x,ot=rv:0123456789abcd;th:f", 16),  # th among other sub-keys and list members
        ("ot=th:fd70a4", float(exact_adjusted_count("fd70a4"))),  # the spec's 1% at 5 digits of precision
        ("", 1),  # unsampled
        ("ot=th:", 1),  # malformed: the adjusted count is unknown, the span counts once
        ("ot=th:123456789abcdef", 1),  # 15 digits
        ("ot=th:0x8", 1),
        ("ot=rv:0123456789abcd", 1),  # randomness but no threshold
        ("vendor=th:8", 1),  # not the ot member
    ],
)
def test_adjusted_count_of_a_trace_state(trace_state, count):
    assert adjusted_count(trace_state) == pytest.approx(count, rel=1e-15)


@given(th=st.text("0123456789abcdef", min_size=1, max_size=14), rng=st.randoms(use_true_random=False))
def test_weight_is_the_adjusted_count_rounded_up_or_down(th, rng):
    exact = min(exact_adjusted_count(th), Fraction(MAX_WEIGHT))
    threshold = int(th.ljust(14, "0"), 16)
    trace_id = random_trace_id(rng, rng.randrange(threshold, TWO_56))  # sampled: R >= T
    weight = span_weight(f"ot=th:{th}", trace_id)
    assert math.floor(exact - Fraction(1, 10**9)) <= weight <= math.ceil(exact + Fraction(1, 10**9))
    assert weight >= 1
    assert span_weight(f"ot=th:{th}", trace_id) == weight  # every span of the trace draws the same


def test_a_threshold_inconsistent_with_the_trace_randomness_counts_once():
    """R < T: the span could not have been sampled with that threshold; the spec erases it."""
    rng = random.Random(1)
    half = TWO_56 // 2
    assert span_weight("ot=th:8", random_trace_id(rng, half - 1)) == 1
    assert span_weight("ot=th:8", random_trace_id(rng, half)) == 2
    # Explicit randomness (rv) overrides the trace id's.
    assert span_weight("ot=th:8;rv:7fffffffffffff", random_trace_id(rng, TWO_56 - 1)) == 1


def test_fractional_adjusted_counts_are_unbiased():
    """p = 2/3: a = 1.5, so the weight is 1 or 2 with equal chance; over n sampled traces the mean
    is within 4 standard errors (sd of one weight 0.5) of 1.5."""
    th = f"{TWO_56 // 3:014x}"
    exact = exact_adjusted_count(th)
    threshold = int(th, 16)
    rng = random.Random(7)
    n = 40_000
    weights = [span_weight(f"ot=th:{th}", random_trace_id(rng, rng.randrange(threshold, TWO_56))) for _ in range(n)]
    assert set(weights) == {1, 2}
    assert abs(sum(weights) / n - float(exact)) < 4 * 0.5 / math.sqrt(n)


def test_every_profile_count_is_weighted():
    """One agent request sampled at 25% (th:c, weight 4): it stands for 4 of everything."""
    spans = agent_loop(tool_calls=3)
    for tool in spans[2:]:
        tool.attributes.extend(key_values({"http.request.body.size": 100}))
    for span in spans:
        span.trace_id = b"\x00" * 9 + b"\xff" * 7  # R = 2^56 - 1 >= T: sampled
        span.trace_state = "ot=th:c"
    batch = assemble(normalise_request(make_request(spans)).records)

    visits = {v.key: v for v in batch.visits}
    assert {key: v.visits for key, v in visits.items()} == {"agent:triage": 4, "llm:gpt-4o": 4, "tool:search": 12}
    chat = visits["llm:gpt-4o"]
    assert (chat.tokens_in, chat.tokens_out, chat.latency_ms_sum) == (400, 80, 800.0)
    counts = {(b.key, b.series): b.count for b in batch.buckets}
    assert counts[("tool:search", Series.latency_ms)] == 12
    assert counts[("llm:gpt-4o", Series.tokens_in)] == 4
    edges = {(e.parent_key, e.child_key): e for e in batch.edges}
    tool = edges[("agent:triage", "tool:search")]
    assert (tool.calls, tool.bytes) == (12, 1200)  # 3 calls of 100 bytes, 4 times over
    assert tool.visits_by_calls == ((3, 4),)  # 4 agent visits, each making 3 calls
    (request,) = batch.requests
    assert (request.weight, request.tokens) == (4, 480)
