"""Measured efficiency and kernel speedups adjust the roofline: monotone, identity when nothing was measured."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optimizer.calibration import (
    DECODE_SHARES,
    E_B_ASSUMED,
    E_C_ASSUMED,
    KNOWN_OPS,
    PREFILL_SHARES,
    Calibration,
    amdahl,
    effective_spec,
)
from optimizer.catalog import CATALOG, by_name
from optimizer.perfmodel import estimate, estimate_profiles, replica_slices

ACCELERATORS = [s for s in CATALOG if not s.is_cpu]
# Bounded away from the tiny means that overflow the KV-cache division (a known perfmodel limit).
tokens = st.floats(min_value=1.0, max_value=8192.0)
efficiency = st.floats(min_value=0.01, max_value=1.0)
speedup = st.floats(min_value=0.25, max_value=8.0)


def test_the_share_tables_name_ops_of_the_kernel_suite():
    ops = pytest.importorskip("kernels.ops")
    assert KNOWN_OPS == set(ops.SPECS)
    assert set(PREFILL_SHARES) | set(DECODE_SHARES) <= KNOWN_OPS
    assert sum(PREFILL_SHARES.values()) < 1 and sum(DECODE_SHARES.values()) < 1


@given(spec=st.sampled_from(CATALOG), kind=st.sampled_from(["llm", "embedding", "rerank"]),
       params=st.floats(min_value=0.1, max_value=70.0), tin=tokens, tout=tokens)
def test_assumed_efficiency_and_unit_speedups_reproduce_uncalibrated_estimates_exactly(spec, kind, params, tin, tout):
    calibration = Calibration(spec.name, E_C_ASSUMED, E_B_ASSUMED)
    unit = dict.fromkeys(KNOWN_OPS, 1.0)
    adjusted = effective_spec(spec, calibration, unit, kind)
    assert adjusted == spec
    assert estimate(kind, params, tin, tout, adjusted) == estimate(kind, params, tin, tout, spec)
    model = f"m-{params:.3f}b"
    assert estimate_profiles(kind, model, tin, tout, (adjusted,), phases=True) == \
        estimate_profiles(kind, model, tin, tout, (spec,), phases=True)


@given(ops=st.lists(st.sampled_from(sorted(KNOWN_OPS)), unique=True))
def test_amdahl_with_all_speedups_one_is_identity(ops):
    speedups = dict.fromkeys(ops, 1.0)
    assert amdahl(PREFILL_SHARES, speedups) == 1.0
    assert amdahl(DECODE_SHARES, speedups) == 1.0


def test_amdahl_speeds_a_phase_by_the_share_of_the_sped_up_op():
    # attention_prefill takes 12% of prefill; twice as fast saves 6%: 1 / 0.94.
    assert amdahl(PREFILL_SHARES, {"attention_prefill": 2.0}) == pytest.approx(1 / 0.94)
    # An op prefill does not run leaves it alone; a kernel slower than eager slows it.
    assert amdahl(PREFILL_SHARES, {"attention_decode": 3.0}) == 1.0
    assert amdahl(DECODE_SHARES, {"attention_decode": 0.5}) < 1.0


@given(spec=st.sampled_from(ACCELERATORS), params=st.floats(min_value=0.5, max_value=70.0), tin=tokens, tout=tokens,
       kind=st.sampled_from(["llm", "embedding"]), e_low=efficiency, e_high=efficiency, which=st.sampled_from(["c", "b"]))
def test_lower_efficiency_never_lowers_latency_or_raises_throughput(spec, params, tin, tout, kind, e_low, e_high,
                                                                    which):
    e_low, e_high = sorted((e_low, e_high))
    slices = replica_slices(2 * params * 1e9 * 1.1, spec)
    if slices is None:
        return

    def at(e: float):
        c, b = (e, E_B_ASSUMED) if which == "c" else (E_C_ASSUMED, e)
        return estimate(kind, params, tin, tout, effective_spec(spec, Calibration(spec.name, c, b), kind=kind),
                        slices=slices)

    low, high = at(e_low), at(e_high)
    assert low.latency_ms >= high.latency_ms
    assert low.throughput_rps <= high.throughput_rps


@given(spec=st.sampled_from(ACCELERATORS), params=st.floats(min_value=0.5, max_value=70.0), tin=tokens, tout=tokens,
       op=st.sampled_from(sorted(set(PREFILL_SHARES) | set(DECODE_SHARES))), s_low=speedup, s_high=speedup)
def test_a_faster_kernel_never_makes_an_llm_slower(spec, params, tin, tout, op, s_low, s_high):
    s_low, s_high = sorted((s_low, s_high))
    slices = replica_slices(2 * params * 1e9 * 1.1, spec)
    if slices is None:
        return
    low, high = (estimate("llm", params, tin, tout, effective_spec(spec, speedups={op: s}), slices=slices)
                 for s in (s_low, s_high))
    assert low.latency_ms >= high.latency_ms
    assert low.throughput_rps <= high.throughput_rps


def test_efficiency_scales_utilisation_up_to_the_whole_peak():
    h100 = by_name("H100-SXM")
    half = effective_spec(h100, Calibration("H100-SXM", E_C_ASSUMED / 2, E_B_ASSUMED / 4))
    assert half.bf16_tflops == pytest.approx(h100.bf16_tflops / 2)  # MFU' = MFU / 2
    assert half.memory_gbps == pytest.approx(h100.memory_gbps / 4)
    # MFU' = min(1, 0.5 * 1.0 / 0.7) = 0.714..., MBU' = min(1, 0.6 * 5 / 0.8) = 1: never past the peak.
    best = effective_spec(h100, Calibration("H100-SXM", 1.0, 5.0))
    assert best.bf16_tflops == pytest.approx(h100.bf16_tflops / E_C_ASSUMED)
    assert best.memory_gbps == pytest.approx(h100.memory_gbps / 0.6)


def test_kernel_speedups_count_for_llms_only():
    h100 = by_name("H100-SXM")
    assert effective_spec(h100, speedups={"attention_decode": 2.0}, kind="embedding") == h100
    assert effective_spec(h100, speedups={"attention_decode": 2.0}, kind="llm").memory_gbps > h100.memory_gbps


@pytest.mark.parametrize("bad", [0.0, -0.5, math.nan, math.inf])
def test_bad_figures_are_refused_with_the_field_named(bad):
    with pytest.raises(ValueError, match="compute_efficiency must be a finite number > 0"):
        Calibration("L4", bad, 0.5)
    with pytest.raises(ValueError, match="kernel speedup of rmsnorm"):
        amdahl(PREFILL_SHARES, {"rmsnorm": bad})


def test_unknown_ops_and_mismatched_classes_are_refused():
    with pytest.raises(ValueError, match="unknown op 'matmul'.*known ops: attention_decode"):
        amdahl(DECODE_SHARES, {"matmul": 2.0})
    with pytest.raises(ValueError, match="calibration of 'L4' given for class 'L40S'"):
        effective_spec(by_name("L40S"), Calibration("L4", 0.5, 0.5))
