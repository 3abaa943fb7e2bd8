"""Sibling calls that overlap in time, and calls per parent visit at the 99th percentile."""

import math

from hypothesis import given
from hypothesis import strategies as st

from collectors.assembly import assemble
from collectors.fanout import calls_percentile, is_concurrent, overlapping
from collectors.normalise import normalise_request
from tests.collectors.otlp_builders import make_request, make_span

AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"}
TOOL = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
EDGE = ("agent:triage", "tool:search")


def test_overlap_needs_shared_time_not_a_shared_endpoint():
    assert overlapping([(0, 10), (5, 15)]) == [True, True]
    assert overlapping([(0, 10), (10, 20)]) == [False, False]  # back to back: one ends as the next starts
    assert overlapping([(0, 100), (10, 20), (200, 300)]) == [True, True, False]  # nested, and one alone
    assert overlapping([(5, 5), (0, 10)]) == [False, False]  # a call of no duration shares no time
    assert overlapping([(0, 10), (0, 10)]) == [True, True]


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20)).map(lambda t: (t[0], t[0] + t[1])), max_size=12))
def test_the_sweep_finds_exactly_the_pairs_that_share_time(intervals):
    def shares(a, b):
        return max(a[0], b[0]) < min(a[1], b[1])

    expected = [any(shares(a, b) for j, b in enumerate(intervals) if j != i) for i, a in enumerate(intervals)]
    assert overlapping(intervals) == expected


def test_an_edge_is_concurrent_when_most_of_its_calls_overlapped():
    assert is_concurrent(calls=10, calls_overlapping=6)
    assert not is_concurrent(calls=10, calls_overlapping=5)  # half is not most
    assert not is_concurrent(calls=0, calls_overlapping=0)


def test_p99_counts_the_visits_that_made_no_call():
    # 1,000 parent visits. 300 call once: 700 make no call, and rank 990 is a visit calling once.
    assert calls_percentile({1: 300}, 1000) == 1.0
    # Visits calling 1..5 times, 200 each: ranks 801-1000 call five times.
    assert calls_percentile({n: 200 for n in range(1, 6)}, 1000) == 5.0
    # 5 of 1,000 visits call (0.5%): 995 make none, more than the 990 the p99 reaches.
    assert calls_percentile({3: 5}, 1000) == 0.0
    assert calls_percentile({}, 1000) is None  # nothing tallied: not known


def exact_p99(per_visit: list[int]) -> float:
    """The nearest-rank 99th percentile: the value at rank ceil(0.99 N) of the sorted counts."""
    return float(sorted(per_visit)[math.ceil(0.99 * len(per_visit)) - 1])


def traces(per_visit: list[int], overlap: bool = False) -> list:
    """One trace per parent visit: an agent span and its tool calls, back to back or all at once."""
    spans = []
    for t, calls in enumerate(per_visit, start=1):
        spans.append(make_span("invoke_agent", trace=t, span=1, duration_ms=1000, attrs=AGENT))
        for j in range(calls):
            start = 10 if overlap else 10 + 40 * j
            spans.append(make_span("execute_tool", trace=t, span=10 + j, parent=1, start_ms=start, duration_ms=40,
                                   attrs=TOOL))
    return spans


def tallied(per_visit: list[int], overlap: bool = False):
    """The agent's visits and the agent -> tool edge, as one assembled batch has them."""
    batch = assemble(normalise_request(make_request(traces(per_visit, overlap))).records)
    visits = sum(v.visits for v in batch.visits if v.key == EDGE[0])
    return visits, next((e for e in batch.edges if (e.parent_key, e.child_key) == EDGE), None)


@given(st.lists(st.integers(0, 20), min_size=1, max_size=150))
def test_p99_from_the_tallies_is_the_exact_p99_of_calls_per_visit(per_visit):
    visits, edge = tallied(per_visit)
    assert visits == len(per_visit)
    if edge is None:  # no visit called: no edge at all
        assert not any(per_visit)
        return
    assert sum(n * count for n, count in edge.visits_by_calls) == edge.calls == sum(per_visit)
    assert calls_percentile(dict(edge.visits_by_calls), visits) == exact_p99(per_visit)


def test_calls_made_at_once_overlap_and_calls_made_in_turn_do_not():
    _, in_turn = tallied([3, 2])
    _, at_once = tallied([3, 2], overlap=True)
    assert (in_turn.calls, in_turn.calls_overlapping) == (5, 0)
    assert (at_once.calls, at_once.calls_overlapping) == (5, 5)
    assert in_turn.visits_by_calls == at_once.visits_by_calls == ((2, 1), (3, 1))
