"""The selection rule (pure) and the timing race: only verified, clean, clearly faster candidates are
chosen, and the timing cheats of kernels/cheats.py never are."""

import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import cheats, ops, registry, selection, timing
from kernels.selection import Contender, bucket, choose
from kernels.timing import REFERENCE, Timing
from kernels.verify import Candidate


def t(name, median, iqr=0.0, rounds=None, problem=""):
    return Timing(name, median, iqr, tuple(rounds or (median,) * 3), problem)


def test_a_clear_win_is_chosen_and_a_win_within_the_spread_is_not():
    ref = t(REFERENCE, 10.0, iqr=0.2)  # spread 0.02
    # 10 / 8 - 1 = 0.25 > max(0.02, 0.0) + 0.05 = 0.07: chosen, speedup 1.25
    c = choose(ref, [Contender("fast", True, t("fast", 8.0))])
    assert (c.chosen, c.speedup, c.spread) == ("fast", 1.25, 0.02)
    # 10 / 9.5 - 1 = 0.053 <= 0.07: the reference is kept
    c = choose(ref, [Contender("close", True, t("close", 9.5))])
    assert (c.chosen, c.speedup) == (REFERENCE, 1.0)
    assert c.reasons == (("close", selection.NOT_CLEARLY_FASTER),)


def test_a_candidate_that_loses_one_round_is_not_chosen():
    ref = t(REFERENCE, 10.0, rounds=(10.0, 10.0, 10.0))
    c = choose(ref, [Contender("fluke", True, t("fluke", 5.0, rounds=(5.0, 11.0, 5.0)))])
    assert c.chosen == REFERENCE and c.reasons == (("fluke", selection.NOT_CLEARLY_FASTER),)


def test_bucket_is_floor_log2_of_the_shape_size():
    assert [bucket(s) for s in [(1, 1), (2, 1), (3, 1), (2, 64), (257, 1024), (0, 5)]] == [0, 1, 1, 7, 18, 0]


timings = st.builds(  # median, IQR, per-round medians, mean
    lambda m, iqr, rs, mean: (m, iqr * m, tuple(m * r for r in rs), mean * m),
    st.floats(1e-6, 1.0), st.floats(0.0, 0.5), st.lists(st.floats(0.5, 1.5), min_size=3, max_size=3),
    st.floats(0.8, 3.0))


@settings(max_examples=300, deadline=None)
@given(timings, st.lists(st.tuples(timings, st.booleans(), st.sampled_from(["", "wrong while timed"])),
                         max_size=5))
def test_rule_never_picks_unverified_noisy_or_slower_and_picks_the_fastest_qualifying(ref_t, cands):
    def timed(name, tt, problem=""):
        median, iqr, rounds, mean = tt
        return Timing(name, median, iqr, rounds, problem, mean)

    ref = timed(REFERENCE, ref_t)
    contenders = [Contender(f"c{i}", ok, timed(f"c{i}", tt, problem)) for i, (tt, ok, problem) in enumerate(cands)]

    def qualifies(c):
        x = c.timing
        won_all = all(a < b for a, b in zip(x.rounds_s, ref.rounds_s, strict=True)) and x.mean_s < ref.mean_s
        margin = ref.median_s / x.median_s - 1
        return c.verified and not x.problem and won_all and margin > max(ref.spread, x.spread) + 0.05

    choice = choose(ref, contenders)
    ok = [c for c in contenders if qualifies(c)]
    if not ok:
        assert (choice.chosen, choice.speedup) == (REFERENCE, 1.0)
    else:
        best = min(ok, key=lambda c: c.timing.median_s)
        assert choice.chosen == best.name and choice.speedup == ref.median_s / best.timing.median_s


def test_race_finds_a_clearly_faster_kernel():
    def slow():
        time.sleep(0.003)

    def quick():
        time.sleep(0.0003)

    times = timing.race(slow, {"quick": quick}, (), lambda out, ref: True, rounds=3, min_run_time=0.01)
    assert choose(times[REFERENCE], [Contender("quick", True, times["quick"])]).chosen == "quick"
    assert len(times["quick"].rounds_s) == 3 and times["quick"].problem == ""


FAST = registry.Settings(seeds=(0,), rounds=3, min_run_time=0.01, verify_shapes={"softmax": ((13, 31),)})
TIMING_CHEATS = [c for c in cheats.CHEATS if c.stage == "select"]


@pytest.mark.parametrize("cheat", TIMING_CHEATS, ids=lambda c: c.name)
def test_timing_cheat_is_not_selected(cheat):
    cheats.reset()
    threads = torch.get_num_threads()
    try:
        checked = registry.check(Candidate(cheat.op, cheat.name, cheat.fn, (torch.float32,)), FAST)
        row = registry.select_shape(cheat.op, torch.float32, (13, 31), [checked], FAST)
    finally:
        cheats.reset()
    assert row.chosen == REFERENCE and row.speedup == 1.0
    assert dict(row.passed_over)[cheat.name] == cheat.check
    assert torch.get_num_threads() == threads  # the thread-count cheat was undone


def test_an_honest_candidate_is_raced_and_its_evidence_recorded(tmp_path):
    c = Candidate("softmax", "softmax_alt", ops.softmax_alt, (torch.float32,))
    checked, rows = registry.run([c], FAST, shapes={"softmax": [(13, 31), (2, 64)]}, dtypes=(torch.float32,))
    assert checked[0].ok and [r.shape for r in rows] == [(13, 31), (2, 64)]
    r = rows[0]
    assert (r.op, r.dtype, r.shape_bucket, r.best_verified, r.seeds) == ("softmax", "float32", 8, "softmax_alt", (0,))
    assert (r.atol, r.rtol) == (1e-5, 1e-4) and r.torch_version == torch.__version__ and r.reference_s > 0
    registry.export(rows, tmp_path / "sel.json")
    import json
    saved = json.loads((tmp_path / "sel.json").read_text())["rows"]
    assert [s["chosen"] for s in saved] == [r.chosen for r in rows]
