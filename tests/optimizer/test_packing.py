"""Replicas are packed per device: the solver, the greedy packer and the checker against brute force."""

from collections import Counter
from dataclasses import replace
from itertools import product
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from optimizer.checker import check
from optimizer.checker_packing import min_bins
from optimizer.greedy import greedy
from optimizer.packing import Room, min_devices, patterns
from optimizer.solver import solve
from optimizer.types import ClassCapacity, FragmentDemand, PlanStatus, Problem, ServiceProfile

H100 = ClassCapacity("H100", 6.88, devices=2, slices_per_device=7, node_devices=(1, 1))


def brute_bins(capacity: int, sizes: list[int]) -> int:
    """Fewest bins of `capacity` holding `sizes`, by trying every bin for every item (tiny inputs)."""
    sizes = sorted(sizes, reverse=True)
    for k in range(1, len(sizes) + 1):
        for choice in product(range(k), repeat=len(sizes)):
            load = [0] * k
            for size, b in zip(sizes, choice, strict=True):
                load[b] += size
            if max(load) <= capacity:
                return k
    return 0


def brute_nodes(nodes: list[int], groups: list[int]) -> bool:
    """Whether multi-device replicas of `groups` devices each fit on nodes, each on one node."""
    for choice in product(range(len(nodes)), repeat=len(groups)):
        load = [0] * len(nodes)
        for g, n in zip(groups, choice, strict=True):
            load[n] += g
        if all(used <= have for used, have in zip(load, nodes, strict=True)):
            return True
    return not groups


def pinned(name: str, cls: str, slices: int, replicas: int) -> FragmentDemand:
    """A fragment that must run exactly `replicas` replicas of `slices` on `cls` (each serves 1 rps)."""
    return FragmentDemand(name, "w", float(replicas), (ServiceProfile(cls, 1.0, 10.0, slices),), min_replicas=replicas)


def test_three_four_slice_replicas_do_not_fit_two_seven_slice_devices():
    # The case: 12 of 14 slices, but only one 4-slice replica fits a 7-slice device.
    problem = Problem((H100,), (pinned("a", "H100", 4, 3),), headroom=1.0)
    plan = solve(problem)
    assert plan.status is PlanStatus.infeasible and plan.assignments == ()
    two = Problem((H100,), (pinned("a", "H100", 4, 2),), headroom=1.0)
    plan = solve(two)
    assert check(two, plan) == [] and plan.devices_used == {"H100": 2}
    assert plan.usd_per_hour == pytest.approx(2 * 6.88)  # both devices, not 8/7 of one


def test_a_multi_device_replica_needs_its_devices_on_one_node():
    eights = ClassCapacity("H200", 7.91, devices=8, slices_per_device=1, node_devices=(4, 4))
    problem = Problem((eights,), (pinned("llm", "H200", 8, 1),), headroom=1.0)
    plan = solve(problem)
    assert plan.status is PlanStatus.infeasible
    assert "largest node has 4 healthy devices" in " ".join(plan.diagnosis)
    fours = Problem((eights,), (pinned("llm", "H200", 4, 2),), headroom=1.0)
    assert check(fours, plan := solve(fours)) == [] and plan.devices_used == {"H200": 8}
    # 3 + 3 devices do not fit nodes of 4 and 4, though 6 <= 8 devices.
    threes = Problem((replace(eights, node_devices=(4, 4)),), (pinned("llm", "H200", 3, 2),), headroom=1.0)
    assert solve(threes).feasible
    assert not solve(Problem((eights,), (pinned("llm", "H200", 3, 3),), headroom=1.0)).feasible
    # Without nodes known, only the device total limits them.
    anywhere = replace(eights, node_devices=())
    assert solve(Problem((anywhere,), (pinned("llm", "H200", 8, 1),), headroom=1.0)).feasible


def test_a_class_sold_by_the_slice_costs_its_slices():
    cpu = ClassCapacity("CPU", 3.709, devices=4, slices_per_device=8, sold_by_slice=True)
    problem = Problem((cpu,), (pinned("glue", "CPU", 1, 3),), headroom=1.0)
    plan = solve(problem)
    assert check(problem, plan) == [] and plan.usd_per_hour == pytest.approx(3 * 3.709 / 8)
    assert plan.cost_breakdown.idle_by_class == {}


def test_malformed_multi_device_sizes_are_rejected():
    problem = Problem((H100,), (pinned("a", "H100", 9, 1),))
    with pytest.raises(ValueError, match="multiple of it; got 9"):
        solve(problem)
    with pytest.raises(ValueError, match="node_devices must be >= 0 and sum to devices"):
        solve(Problem((replace(H100, node_devices=(1,)),), (pinned("a", "H100", 1, 1),)))


def test_patterns_are_the_maximal_fillings():
    assert set(patterns((4, 3), 7)) == {(4, 3), (3, 3)}
    assert set(patterns((2,), 7)) == {(2, 2, 2)}


SUB_SIZES = st.lists(st.sampled_from([1, 2, 3, 4]), min_size=0, max_size=7)


@settings(max_examples=150, deadline=None)
@given(SUB_SIZES, st.sampled_from([4, 7, 8]))
@example([3, 3, 2, 2, 2, 2], 7)  # first fit decreasing needs 3 devices, 2 suffice
def test_fewest_devices_match_brute_force(sizes, capacity):
    sizes = [s for s in sizes if s < capacity]
    expected = brute_bins(capacity, sizes)
    cls = ClassCapacity("c", 1.0, devices=10, slices_per_device=capacity)
    assert min_devices(cls, Counter(sizes)) == expected
    assert min_bins(capacity, Counter(sizes)) == expected  # the checker's own search


@st.composite
def packing_problems(draw):
    """1-2 classes of few devices (MIG-like, plain, or with small nodes); fragments pinned to one class
    with a fixed number of replicas of one size, so the plan is feasible iff they pack."""
    classes = []
    for i in range(draw(st.integers(1, 2))):
        per = draw(st.sampled_from([1, 4, 7]))
        nodes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
        classes.append(ClassCapacity(f"c{i}", draw(st.sampled_from([1.0, 2.5, 7.0])), sum(nodes), per,
                                     sold_by_slice=draw(st.booleans()), node_devices=tuple(nodes)))
    frags = []
    for j in range(draw(st.integers(1, 4))):
        cls = draw(st.sampled_from(classes))
        per = cls.slices_per_device
        slices = draw(st.sampled_from(sorted({1, 2, 3, per, 2 * per, 3 * per})))
        frags.append(pinned(f"f{j}", cls.device_class, slices, draw(st.integers(1, 3))))
    return Problem(tuple(classes), tuple(frags), headroom=1.0, time_limit_s=5.0)


def _fits_by_brute_force(problem: Problem) -> tuple[bool | None, dict[str, int]]:
    """Whether every pinned fragment fits its class, and the fewest devices each class then needs."""
    need: dict[str, int] = {}
    for cls in problem.device_classes:
        per = cls.slices_per_device
        mine = [(p.slices, f.min_replicas) for f in problem.fragments for p in f.profiles
                if p.device_class == cls.device_class]
        sub = [s for s, n in mine if s < per for _ in range(n)]
        groups = [s // per for s, n in mine if s >= per for _ in range(n)]
        if sum(sub) > per * cls.devices:
            return False, {}
        if len(sub) > 8:  # too many for brute force: the case says nothing
            return None, {}
        devices = brute_bins(per, sub) + sum(groups)
        multi = [g for g in groups if g > 1]
        if devices > cls.devices or not brute_nodes(list(cls.node_devices), multi):
            return False, {}
        if mine:
            need[cls.device_class] = devices
    return True, need


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(packing_problems())
def test_solver_packing_matches_an_exact_bin_packing(problem):
    fits, need = _fits_by_brute_force(problem)
    assume(fits is not None)
    plan = solve(problem)
    assert plan.feasible == fits, plan.diagnosis
    if not fits:
        return
    assert check(problem, plan) == []
    assert plan.devices_used == need
    classes = {c.device_class: c for c in problem.device_classes}
    expected = sum(n * classes[c].usd_per_hour for c, n in need.items() if not classes[c].sold_by_slice)
    expected += sum(a.usd_per_hour for a in plan.assignments if classes[a.device_class].sold_by_slice)
    assert plan.usd_per_hour == pytest.approx(expected)
    quick = greedy(problem)
    if quick.feasible:  # greedy may give up where packing is tight, never hand out what does not fit
        assert check(problem, quick) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([1, 2, 3, 4, 7, 14])), min_size=1, max_size=12))
def test_room_accepts_only_what_packs(steps):
    cls = ClassCapacity("c", 1.0, devices=4, slices_per_device=7, node_devices=(2, 2))
    room = Room({"c": cls})
    held: Counter[int] = Counter()
    for add, slices in steps:
        if add:
            before = room.fits("c", slices)
            placed = room.add("c", slices, 1)
            assert placed == (1 if before else 0)
            held[slices] += placed
        elif held[slices]:
            room.remove("c", slices, 1)
            held[slices] -= 1
        sub = [s for s, n in held.items() if s < 7 for _ in range(n)]
        groups = [s // 7 for s, n in held.items() if s >= 7 for _ in range(n)]
        assert brute_bins(7, sub) + sum(groups) <= 4
        assert brute_nodes([2, 2], [g for g in groups if g > 1])


def test_exact_packing_leaves_the_process_sigint_handler_alone():
    # [3, 3, 2, 2, 2, 2] on 7-slice devices: first fit needs 3, so the exact model runs. CP-SAT would
    # otherwise install its own SIGINT handler and leave SIGINT at its default (Ctrl-C killed the demo
    # instead of stopping it): after it, a SIGINT must still reach Python as KeyboardInterrupt.
    import subprocess
    import sys

    script = (
        "import os, signal\n"
        "from collections import Counter\n"
        "from optimizer.packing import min_devices\n"
        "from optimizer.types import ClassCapacity\n"
        "assert min_devices(ClassCapacity('c', 1.0, 10, 7), Counter({3: 2, 2: 4})) == 2\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    import time; time.sleep(1)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and done.stdout.strip() == "interrupted", done.stderr


def test_millions_of_replicas_pack_in_bulk():
    # 5 million 3-slice replicas on a 7-slice class (two a device) and 100,000 4-device replicas on
    # 100,000 nodes of 8: greedy, the solver and the checker place them by counts, not one by one.
    mig = Problem((ClassCapacity("c", 7.0, 10**7, 7),), (pinned("f", "c", 3, 5_000_000),), headroom=1.0)
    tp = Problem((ClassCapacity("c", 7.0, 8 * 10**5, 1, node_devices=(8,) * 10**5),), (pinned("f", "c", 4, 100_000),),
                 headroom=1.0)
    for problem, devices in ((mig, 2_500_000), (tp, 400_000)):
        for plan in (greedy(problem), solve(problem)):
            assert plan.devices_used == {"c": devices} and check(problem, plan) == []
