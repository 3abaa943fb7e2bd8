"""Maintenance windows against an independent reading: the set of minutes of the week each one covers."""

from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from controlplane.windows import DAYS, WINDOW_PATTERN, parse_window

WEEK = 7 * 1440
MONDAY = datetime(2026, 11, 30, tzinfo=UTC)


def covered(days: set[int], start: int, end: int) -> set[int]:
    """Minutes of the week (Monday 00:00 = 0) the window covers, counted one by one."""
    length = end - start if end > start else end + 1440 - start
    return {(day * 1440 + start + k) % WEEK for day in days for k in range(length)}


@given(days=st.sets(st.integers(0, 6), min_size=1), start=st.integers(0, 1439), end=st.integers(0, 1440),
       minute=st.integers(0, WEEK - 1))
@example(days={4}, start=22 * 60, end=2 * 60, minute=5 * 1440 + 60)  # Friday night into Saturday
@example(days={6}, start=23 * 60, end=60, minute=0)  # Sunday night wraps into Monday
@example(days={2}, start=600, end=600, minute=3 * 1440 + 599)  # ends when it starts: 24 h, to Thursday 09:59
def test_a_window_contains_exactly_the_minutes_it_covers(days, start, end, minute):
    text = f"{','.join(DAYS[d][:3] for d in sorted(days))} {start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    window = parse_window(text)
    at = MONDAY + timedelta(minutes=minute, seconds=30)
    assert window.contains(at) == (minute in covered(days, start, end)), text


@settings(max_examples=500)
@given(st.from_regex(WINDOW_PATTERN, fullmatch=True))
def test_every_window_the_api_documents_parses(text):
    # The OpenAPI document's pattern is what clients (and schemathesis) generate from: a text it
    # matches must never be refused.
    assert parse_window(text).text == text
