"""The automatic rollback decision (controlplane.rollback.due_rollbacks), and the placements it builds."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.policy import fits
from controlplane.rollback import (
    DueRollback,
    MinuteOutcome,
    MoveRecord,
    changed_fragments,
    classes_of,
    due_rollbacks,
    reapplied,
    restored,
)
from optimizer.types import ClassCapacity, Phase

M = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)  # the minute the migration finished in
MIN = timedelta(minutes=1)
MOVE = MoveRecord(migration_id=7, fragment_id=3, workload_id=1, placement_version=2,
                  finished_at=M + timedelta(seconds=20), took_replicas_away=True)
TARGETS = {1: 0.99}
JUDGED = M + 4 * MIN  # N = 3: minute M+3 has closed


def outcomes(before: list[tuple[int, int] | None], after: list[tuple[int, int] | None], workload: int = 1):
    """(requests, within SLA) for the minutes M-3..M-1 and M+1..M+3 (None: no row at all)."""
    out = {}
    for k, o in zip((-3, -2, -1), before, strict=True):
        if o is not None:
            out[workload, M + k * MIN] = MinuteOutcome(*o)
    for k, o in zip((1, 2, 3), after, strict=True):
        if o is not None:
            out[workload, M + k * MIN] = MinuteOutcome(*o)
    return out


def due(stats, moves=(MOVE,), now=JUDGED, minutes=3, targets=TARGETS):
    return due_rollbacks(moves, stats, targets, minutes, now)


def test_a_move_after_which_every_minute_missed_the_target_is_rolled_back_with_its_evidence():
    stats = outcomes([(100, 100)] * 3, [(100, 80), (50, 40), (200, 150)])
    # before: 300/300 = 1.0 >= 0.99; after: 0.8, 0.8, 0.75, each < 0.99
    assert due(stats) == (DueRollback(7, 3, 1, 2, 0.99, 1.0, (0.8, 0.8, 0.75)),)


def test_the_before_window_counts_as_one_share_and_one_good_minute_after_saves_the_move():
    # before: (100 + 100 + 98) / 300 = 0.99333 >= 0.99, although its last minute alone was 0.98
    assert len(due(outcomes([(100, 100), (100, 100), (100, 98)], [(100, 50)] * 3))) == 1
    # before: (100 + 100 + 96) / 300 = 0.98667 < 0.99: the workload was already missing its SLA
    assert due(outcomes([(100, 100), (100, 100), (100, 96)], [(100, 50)] * 3)) == ()
    # after: 99/100 = 0.99 is not below the target
    assert due(outcomes([(100, 100)] * 3, [(100, 50), (100, 99), (100, 50)])) == ()


def test_minutes_without_requests_count_neither_way_but_each_side_needs_one():
    one_each = outcomes([None, (0, 0), (10, 10)], [(0, 0), (10, 5), None])
    assert [d.after for d in due(one_each)] == [(0.5,)]
    assert due(outcomes([None, (0, 0), None], [(10, 5)] * 3)) == ()  # nothing to say it was within before
    assert due(outcomes([(10, 10)] * 3, [None, (0, 0), None])) == ()  # nothing to say it fell after


def test_it_is_judged_once_the_after_window_closed_and_only_while_it_is_fresh():
    stats = outcomes([(100, 100)] * 3, [(100, 50)] * 3)
    assert due(stats, now=JUDGED - timedelta(seconds=1)) == ()  # minute M+3 still open
    assert len(due(stats, now=JUDGED)) == 1
    assert len(due(stats, now=JUDGED + 3 * MIN - timedelta(seconds=1))) == 1
    assert due(stats, now=JUDGED + 3 * MIN) == ()  # in force 6 minutes: the planner's to change now
    assert due(stats, minutes=0) == ()  # the setting's off switch


def test_scale_ups_rollbacks_moves_rolled_back_once_and_superseded_moves_are_never_due():
    stats = outcomes([(100, 100)] * 3, [(100, 50)] * 3)
    assert due(stats, moves=(replace(MOVE, took_replicas_away=False),)) == ()
    assert due(stats, moves=(replace(MOVE, by_rollback=True),)) == ()
    assert due(stats, moves=(replace(MOVE, rolled_back=True),)) == ()
    assert due(stats, targets={}) == ()  # no SLA, no target to fall below
    later = replace(MOVE, migration_id=8, finished_at=MOVE.finished_at + timedelta(seconds=5), took_replicas_away=False)
    assert due(stats, moves=(MOVE, later)) == ()  # the fragment moved again since: this move's evidence is stale
    other = replace(later, fragment_id=4)
    assert [d.migration_id for d in due(stats, moves=(MOVE, other))] == [7]


def test_restored_and_reapplied_placements():
    whole = Phase.whole
    current = {(1, "L40S", whole): (2, 1), (2, "CPU", whole): (1, 4), (3, "L4", whole): (1, 1)}
    before = {(1, "H100", whole): (1, 1), (2, "CPU", whole): (3, 4)}
    # only fragment 1 goes back; 2 keeps its current items, 3 is untouched
    assert restored(current, {1: before}) == {(1, "H100", whole): (1, 1), (2, "CPU", whole): (1, 4),
                                               (3, "L4", whole): (1, 1)}
    # a whole earlier version: fragment 3, unknown to it, keeps running
    again = reapplied(current, before)
    assert again == {(1, "H100", whole): (1, 1), (2, "CPU", whole): (3, 4), (3, "L4", whole): (1, 1)}
    assert changed_fragments(current, again) == {1, 2}
    assert classes_of(again, {1, 2}) == {1: ("H100",), 2: ("CPU",)}


def test_a_rollback_fits_the_healthy_devices_of_the_classes_it_goes_back_to():
    h100 = {(1, "H100", Phase.whole): (3, 7), (2, "H100", Phase.whole): (2, 1)}
    # H100 (7 slices a device): three whole devices, and the two 1-slice replicas share a fourth.
    assert fits(h100, [ClassCapacity("H100", 0.0, 4, 7)])
    assert not fits(h100, [ClassCapacity("H100", 0.0, 3, 7)])
    assert not fits({(3, "L4", Phase.whole): (9, 1)}, [ClassCapacity("H100", 0.0, 4, 7)])  # no healthy L4 at all


# ---- properties -----------------------------------------------------------------------------------------

minute_outcome = st.one_of(st.none(), st.integers(0, 50).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))


@st.composite
def scenarios(draw):
    """Up to four migrations of up to three fragments (workloads 1, 2) within a few minutes, per-minute
    outcomes around them, and a time to judge at."""
    moves = []
    for i in range(draw(st.integers(1, 4))):
        fid = draw(st.integers(1, 3))
        moves.append(MoveRecord(i + 1, fid, 1 + fid % 2, 1, M + timedelta(seconds=draw(st.integers(0, 240))),
                                took_replicas_away=draw(st.booleans()), by_rollback=draw(st.booleans()),
                                rolled_back=draw(st.booleans())))
    stats = {}
    for wid in (1, 2):
        for k in range(-4, 10):
            o = draw(minute_outcome)
            if o is not None:
                stats[wid, M + k * MIN] = MinuteOutcome(*o)
    targets = {1: draw(st.sampled_from([0.5, 0.9, 0.99, 1.0])), 2: draw(st.sampled_from([0.5, 0.95]))}
    now = M + timedelta(seconds=draw(st.integers(0, 12 * 60)))
    return moves, stats, targets, now


def _before_share(stats, move, minutes):
    moved = move.finished_at.replace(second=0, microsecond=0)
    window = [stats.get((move.workload_id, moved - k * MIN)) for k in range(1, minutes + 1)]
    requests = sum(o.requests for o in window if o)
    return sum(o.within_sla for o in window if o) / requests if requests else None


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.integers(1, 4))
def test_never_rolls_back_a_move_made_while_already_below_target(scenario, minutes):
    moves, stats, targets, now = scenario
    by_id = {m.migration_id: m for m in moves}
    for d in due_rollbacks(moves, stats, targets, minutes, now):
        move = by_id[d.migration_id]
        share = _before_share(stats, move, minutes)
        assert share is not None and share >= targets[move.workload_id]
        assert d.after and all(a < d.target for a in d.after)
        assert move.took_replicas_away and not move.by_rollback and not move.rolled_back


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.integers(1, 4), st.integers(0, 15 * 60))
def test_never_rolls_back_the_same_move_twice(scenario, minutes, later_s):
    """Once due and rolled back (marked, and the fragment moved by the rollback), a move is never due
    again, whatever the later outcomes or time."""
    moves, stats, targets, now = scenario
    first = due_rollbacks(moves, stats, targets, minutes, now)
    assert len({d.migration_id for d in first}) == len(first)
    done = {d.migration_id for d in first}
    after = [replace(m, rolled_back=m.rolled_back or m.migration_id in done) for m in moves]
    after += [MoveRecord(100 + d.migration_id, d.fragment_id, d.workload_id, 2, now, True, by_rollback=True)
              for d in first]
    worse = {key: MinuteOutcome(o.requests, 0) for key, o in stats.items()}  # every later minute misses
    for outcome in (stats, worse):
        again = due_rollbacks(after, outcome, targets, minutes, now + timedelta(seconds=later_s))
        assert not done & {d.migration_id for d in again}
        assert all(d.migration_id < 100 for d in again)  # a rollback's own moves are never rolled back
