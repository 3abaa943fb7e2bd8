"""Pure arithmetic of the reconciler: moves between placements, and usage of one minute."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from controlplane.decide import Move, diff
from controlplane.metering import Interval, usage_for_minute
from controlplane.models import DeviceClass


def test_diff_pairs_freed_replicas_with_new_ones():
    current = {(1, "H100"): (3, 1), (2, "CPU"): (1, 1)}
    target = {(1, "H100"): (1, 1), (1, "L40S"): (3, 1), (2, "CPU"): (1, 1), (3, "CPU"): (2, 1)}
    # fragment 1: H100 3 -> 1 frees 2, L40S 0 -> 3 needs 3: move 2 H100->L40S, scale up 1 on L40S.
    assert diff(current, target) == (
        Move(1, "H100", "L40S", 2),
        Move(1, None, "L40S", 1),
        Move(3, None, "CPU", 2),
    )
    assert diff(target, target) == ()


placements = st.dictionaries(
    st.tuples(st.integers(1, 4), st.sampled_from(["A", "B", "C"])), st.tuples(st.integers(1, 5), st.just(1)), max_size=8
)


@given(placements, placements)
def test_applying_the_moves_turns_current_into_target(current, target):
    replicas = {key: r for key, (r, _) in current.items()}
    for move in diff(current, target):
        assert move.replicas > 0
        if move.from_class:
            replicas[(move.fragment_id, move.from_class)] -= move.replicas
        if move.to_class:
            replicas[(move.fragment_id, move.to_class)] = replicas.get((move.fragment_id, move.to_class), 0) + move.replicas
    assert {k: v for k, v in replicas.items() if v} == {key: r for key, (r, _) in target.items()}


def test_usage_of_a_minute_follows_the_placements_in_force():
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    classes = {
        1: DeviceClass(id=1, name="H100", vendor="n", bf16_tflops=1, memory_gib=80, memory_gbps=1, fabric="x",
                       usd_per_hour=7.0, slices_per_device=7),
        2: DeviceClass(id=2, name="CPU", vendor="a", bf16_tflops=1, memory_gib=1, memory_gbps=1, fabric="x",
                       usd_per_hour=3.6, slices_per_device=1),
    }
    intervals = [
        # 12:00:00-12:00:20: fragment 10 has 2 replicas of 7 slices (2 devices) on H100.
        Interval(minute - timedelta(minutes=5), minute + timedelta(seconds=20), {(10, 1): (2, 7)}),
        # 12:00:20 on: fragment 10 has 1 replica of 7 slices on H100 and fragment 11 one CPU device.
        Interval(minute + timedelta(seconds=20), minute + timedelta(minutes=5), {(10, 1): (1, 7), (11, 2): (1, 1)}),
    ]
    observed = {(10, "H100"): (100, 5000), (11, ""): (50, 0)}
    busy = {(10, "H100"): 0.1, (11, "CPU"): 2.0}
    now = minute + timedelta(seconds=50)  # the minute is still open: count up to now
    lines = {(line.fragment_id, line.device_class_id): line for line in usage_for_minute(minute, now, intervals, classes, observed, busy)}

    h100 = lines[(10, 1)]
    assert h100.allocated_s == 2 * 20 + 1 * 30  # 70 device-seconds
    assert h100.busy_s == 100 * 0.1  # 10 s
    assert h100.tokens == 5000
    assert abs(h100.cost_usd - 70 / 3600 * 7.0) < 1e-12
    cpu = lines[(11, 2)]
    assert cpu.allocated_s == 30
    assert cpu.busy_s == 30  # 50 visits x 2 s = 100 s, capped at the 30 s allocated
