"""How a parent visit calls its children: which calls overlap in time, and calls per visit.

Pure functions, shared by the collectors (which count) and the control plane (which reads).

Overlap. A parent span's child calls are half-open intervals [start, end). A call overlaps
when it shares time with another child call of the same parent span, whatever fragment that
sibling belongs to: max(start_a, start_b) < min(end_a, end_b). Calls that only touch (one ends
when the next starts) do not overlap, nor does a call of zero duration. An edge whose calls
overlapped a sibling more often than not (overlapping > CONCURRENT_SHARE x calls) is
*concurrent*: the parent waits for the slowest of those calls, not for their sum.

Calls per visit. For each parent visit and child fragment, n = the calls the visit made to
that child. The collectors keep, per edge, how many parent visits made exactly n calls for
each n >= 1 (exact, no cap: a workload has few distinct counts). Visits that made no call
are not counted there; they are the parent's visits less those counted. The p99 is the
nearest-rank percentile over all N parent visits: the count at rank ceil(0.99 N) of the
counts sorted ascending, i.e. the smallest n with at least 99% of visits making <= n calls.
"""

import math
from collections.abc import Mapping, Sequence

CONCURRENT_SHARE = 0.5  # an edge is concurrent when more than this share of its calls overlapped a sibling
PERCENTILE = 99


def overlapping(intervals: Sequence[tuple[int, int]]) -> list[bool]:
    """For each [start, end) interval, whether it shares time with any other of `intervals`.

    Sorted by start, an interval overlaps an earlier one iff it starts before the latest end
    among the earlier non-empty ones, and a later one iff the next non-empty one starts before
    it ends (later ones start no earlier). O(k log k) for k intervals. The first pass flags the
    later of every overlapping pair, so when it flags none (calls made in turn, the common
    case) the second is skipped.
    """
    flags = [False] * len(intervals)
    order = sorted(range(len(intervals)), key=intervals.__getitem__)
    latest_end = -math.inf
    found = False
    for i in order:
        start, end = intervals[i]
        if start < end:
            if start < latest_end:
                flags[i] = found = True
            if end > latest_end:
                latest_end = end
    if not found:
        return flags
    next_start = math.inf
    for i in reversed(order):
        start, end = intervals[i]
        if start < end:
            if next_start < end:
                flags[i] = True
            next_start = start
    return flags


def is_concurrent(calls: int, calls_overlapping: int) -> bool:
    """Whether an edge's calls run concurrently with their siblings: most of them overlapped one."""
    return calls > 0 and calls_overlapping > CONCURRENT_SHARE * calls


def calls_percentile(visits_by_calls: Mapping[int, int], parent_visits: int, percent: int = PERCENTILE) -> float | None:
    """Calls of a child per parent visit at the nearest-rank `percent`-th percentile over all
    `parent_visits` (those missing from `visits_by_calls` made none); None when no visit was
    counted, so nothing is known.

    `visits_by_calls`: calls made n >= 1 -> parent visits that made exactly n calls.
    """
    counted = sum(visits_by_calls.values())
    if counted <= 0:
        return None
    total = max(parent_visits, counted)  # never fewer visits than were counted calling
    rank = -(-total * percent // 100)  # ceil(percent / 100 x total), in integers
    below = total - counted  # visits that made no call
    if below >= rank:
        return 0.0
    for calls in sorted(visits_by_calls):
        below += visits_by_calls[calls]
        if below >= rank:  # always by the largest count: below then equals total
            break
    return float(calls)
