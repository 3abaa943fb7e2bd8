"""Pure arithmetic of the reconciler: moves between placements, and usage of one minute."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from controlplane.metering import Interval, Seen, idle_for_minute, usage_for_minute
from controlplane.models import DeviceClass
from controlplane.policy import Move, diff
from optimizer.types import Phase

W, PRE, DEC = Phase.whole, Phase.prefill, Phase.decode


def test_diff_pairs_freed_replicas_with_new_ones():
    current = {(1, "H100", W): (3, 1), (2, "CPU", W): (1, 1)}
    target = {(1, "H100", W): (1, 1), (1, "L40S", W): (3, 1), (2, "CPU", W): (1, 1), (3, "CPU", W): (2, 1)}
    # fragment 1: H100 3 -> 1 frees 2, L40S 0 -> 3 needs 3: move 2 H100->L40S, scale up 1 on L40S.
    assert diff(current, target) == (
        Move(1, "H100", "L40S", 2),
        Move(1, None, "L40S", 1),
        Move(3, None, "CPU", 2),
    )
    assert diff(target, target) == ()


def test_splitting_a_fragment_starts_its_pools_and_stops_its_whole_replicas():
    # Whole replicas never turn into a pool's: 2 whole H100 stop, 1 prefill H100 and 3 decode Gaudi2 start.
    current = {(1, "H100", W): (2, 7)}
    target = {(1, "H100", PRE): (1, 7), (1, "Gaudi2", DEC): (3, 1)}
    assert diff(current, target) == (
        Move(1, "H100", None, 2, W),
        Move(1, None, "Gaudi2", 3, DEC),
        Move(1, None, "H100", 1, PRE),
    )


placements = st.dictionaries(
    st.tuples(st.integers(1, 4), st.sampled_from(["A", "B", "C"]), st.sampled_from([W, PRE, DEC])),
    st.tuples(st.integers(1, 5), st.just(1)), max_size=8,
)


@given(placements, placements)
def test_applying_the_moves_turns_current_into_target(current, target):
    replicas = {key: r for key, (r, _) in current.items()}
    for move in diff(current, target):
        assert move.replicas > 0
        if move.from_class:
            replicas[(move.fragment_id, move.from_class, move.phase)] -= move.replicas
        if move.to_class:
            key = (move.fragment_id, move.to_class, move.phase)
            replicas[key] = replicas.get(key, 0) + move.replicas
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
        Interval(minute - timedelta(minutes=5), minute + timedelta(seconds=20), {(10, 1, ""): (2, 7)}),
        # 12:00:20 on: fragment 10 has 1 replica of 7 slices on H100 and fragment 11 one CPU device.
        Interval(minute + timedelta(seconds=20), minute + timedelta(minutes=5), {(10, 1, ""): (1, 7), (11, 2, ""): (1, 1)}),
    ]
    observed = {(10, "H100"): Seen(100, 4000, 1000), (11, ""): Seen(50)}
    busy = {(10, "H100", W): 0.1, (11, "CPU", W): 2.0}
    now = minute + timedelta(seconds=50)  # the minute is still open: count up to now
    lines = {(line.fragment_id, line.device_class_id): line for line in usage_for_minute(minute, now, intervals, classes, observed, busy)}

    h100 = lines[(10, 1)]
    assert h100.allocated_s == 2 * 20 + 1 * 30  # 70 device-seconds
    assert h100.busy_s == 100 * 0.1  # 10 s
    assert (h100.tokens_in, h100.tokens_out) == (4000, 1000)
    assert abs(h100.cost_usd - 70 / 3600 * 7.0) < 1e-12
    cpu = lines[(11, 2)]
    assert cpu.allocated_s == 30
    assert cpu.busy_s == 30  # 50 visits x 2 s = 100 s, capped at the 30 s allocated


def test_both_pools_of_a_split_fragment_on_one_class_are_billed():
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    classes = {1: DeviceClass(id=1, name="H100", vendor="n", bf16_tflops=1, memory_gib=80, memory_gbps=1, fabric="x",
                              usd_per_hour=7.0, slices_per_device=7)}
    # A whole minute of 1 prefill replica of 7 slices and 2 decode replicas of 7 slices: 3 devices.
    items = {(10, 1, "prefill"): (1, 7), (10, 1, "decode"): (2, 7)}
    intervals = [Interval(minute - timedelta(minutes=5), minute + timedelta(minutes=5), items)]
    decode, prefill = usage_for_minute(minute, minute + timedelta(minutes=2), intervals, classes, {}, {})
    assert (decode.phase, decode.allocated_s) == (DEC, 2 * 60)
    assert (prefill.phase, prefill.allocated_s) == (PRE, 1 * 60)
    assert abs(prefill.cost_usd + decode.cost_usd - 180 / 3600 * 7.0) < 1e-12


def _classes():
    return {
        1: DeviceClass(id=1, name="H100", vendor="n", bf16_tflops=1, memory_gib=80, memory_gbps=1, fabric="x",
                       usd_per_hour=7.0, slices_per_device=7),
        2: DeviceClass(id=2, name="L4", vendor="n", bf16_tflops=1, memory_gib=24, memory_gbps=1, fabric="x",
                       usd_per_hour=0.8, slices_per_device=1),
    }


def test_busy_is_metered_per_phase_with_each_phase_its_own_time_per_visit():
    # Issue 14: busy time per visit was keyed by (fragment, class), so the decode pool's figure
    # replaced the whole replica's (and the prefill pool's) for every LLM fragment.
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    # A whole minute of fragment 10 split: 1 prefill replica of 7 slices on H100, 2 decode replicas on L4.
    items = {(10, 1, PRE): (1, 7), (10, 2, DEC): (2, 1)}
    intervals = [Interval(minute - timedelta(minutes=5), minute + timedelta(minutes=5), items)]
    busy = {(10, "H100", W): 0.9, (10, "H100", PRE): 0.05, (10, "L4", DEC): 0.4, (10, "L4", W): 0.9}
    observed = {(10, "L4"): Seen(120, 60_000, 24_000)}  # telemetry names the class that decoded each visit
    lines = {line.phase: line for line in usage_for_minute(minute, minute + timedelta(minutes=2), intervals,
                                                           _classes(), observed, busy)}
    # prefill: 120 visits x 0.05 s x 7/7 of a device = 6 device-seconds of 60.
    assert lines[PRE].busy_s == 120 * 0.05
    # decode: 120 visits x 0.4 s on 1-slice L4 replicas = 48 device-seconds of 120.
    assert lines[DEC].busy_s == 120 * 0.4
    # Tokens go with the visits, to the pool that served them.
    assert (lines[DEC].tokens_in, lines[DEC].tokens_out) == (60_000, 24_000)
    assert (lines[PRE].tokens_in, lines[PRE].tokens_out) == (0, 0)


def test_busy_is_in_device_seconds_so_a_slice_replica_is_as_busy_as_its_share():
    # Issue 14: a 1-slice replica on a 7-slice H100 showed 58% efficiency where 8% was right,
    # because busy (replica-seconds) was compared with allocated (device-seconds).
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    intervals = [Interval(minute - timedelta(minutes=5), minute + timedelta(minutes=5), {(10, 1, W): (1, 1)})]
    observed = {(10, "H100"): Seen(35)}
    (line,) = usage_for_minute(minute, minute + timedelta(minutes=2), intervals, _classes(), observed,
                               {(10, "H100", W): 1.0})
    # The replica is busy 35 s of 60 on 1/7 of a device: 5 of the 60/7 device-seconds allocated.
    assert abs(line.allocated_s - 60 / 7) < 1e-12
    assert abs(line.busy_s - 35 / 7) < 1e-12
    assert abs(line.busy_s / line.allocated_s - 35 / 60) < 1e-12


def test_visits_on_a_class_the_fragment_no_longer_runs_on_count_on_its_largest_serving_pool():
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    items = {(10, 1, W): (1, 7), (10, 2, W): (3, 1)}  # 60 device-seconds on H100, 180 on L4
    intervals = [Interval(minute - timedelta(minutes=5), minute + timedelta(minutes=5), items)]
    observed = {(10, "A100"): Seen(10, 100, 10)}
    lines = {line.device_class_id: line for line in usage_for_minute(
        minute, minute + timedelta(minutes=2), intervals, _classes(), observed, {(10, "L4", W): 1.0})}
    assert (lines[2].tokens_in, lines[2].busy_s) == (100, 10.0)
    assert lines[1].tokens_in == 0


def test_idle_is_healthy_capacity_less_what_replicas_held_per_class():
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    items = {(10, 1, W): (2, 1), (11, 1, W): (1, 7)}  # 2/7 + 1 H100 devices
    intervals = [Interval(minute - timedelta(minutes=5), minute + timedelta(minutes=5), items)]
    classes = _classes()
    lines = usage_for_minute(minute, minute + timedelta(seconds=30), intervals, classes, {}, {})
    idle = {i.device_class_id: i for i in idle_for_minute(minute, minute + timedelta(seconds=30), classes,
                                                          {1: 2, 2: 3}, lines)}
    # Open minute, 30 s in: H100 2 devices x 30 s = 60, held (2/7 + 1) x 30; L4 3 x 30 all idle.
    assert abs(idle[1].idle_s - (60 - 30 * (2 / 7 + 1))) < 1e-9
    assert abs(idle[1].cost_usd - idle[1].idle_s / 3600 * 7.0) < 1e-12
    assert idle[2].idle_s == 90 and idle[2].allocated_s == 0
