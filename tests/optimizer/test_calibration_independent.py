"""An independent check of optimizer.calibration: F' and B' recomputed from its docstring formulas alone,
in exact rational arithmetic, for generated calibrations and kernel speedups, degenerate ones included.

Nothing but the public inputs (Calibration, effective_spec, a DeviceClassSpec) is imported from the code
under test; the constants below are restated from the docstrings of optimizer.calibration and
optimizer.perfmodel, so a change to either is caught here rather than silently shared:

    F' = F * min(1 / MFU, e_c / E_C_ASSUMED) * speedup_prefill
    B' = B * min(1 / MBU, e_b / E_B_ASSUMED) * speedup_decode
    speedup_phase = 1 / (1 - sum_o f_o * (1 - 1 / s_o)),  s_o = 1 for an op without a speedup
"""

from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from optimizer.calibration import Calibration, effective_spec
from optimizer.catalog import DeviceClassSpec

MFU = Fraction(1, 2)  # perfmodel PREFILL_MFU
MBU = Fraction(3, 5)  # perfmodel DECODE_MBU
E_C = Fraction(7, 10)  # "cuBLAS bf16 GEMMs reach about 70% of an H100's dense peak"
E_B = Fraction(4, 5)  # "a device copy about 80% of its HBM bandwidth"
PREFILL = {"attention_prefill": Fraction(12, 100), "rmsnorm": Fraction(3, 100), "swiglu": Fraction(3, 100),
           "rotary": Fraction(2, 100)}
DECODE = {"attention_decode": Fraction(15, 100), "rmsnorm": Fraction(3, 100), "swiglu": Fraction(3, 100),
          "rotary": Fraction(1, 100), "sample": Fraction(2, 100)}
OPS = sorted({*PREFILL, *DECODE, "softmax", "mean_pool", "int8_matmul"})
REL = 1e-12  # float evaluation of a handful of products and one reciprocal sum: a few ulps, far below this

SPEC = DeviceClassSpec(name="X", vendor="v", bf16_tflops=989.0, memory_gib=80.0, memory_gbps=3350.0,
                       fabric="nvlink", usd_per_hour=6.88, slices_per_device=7, price_source="test")


def phase_speedup(shares: dict[str, Fraction], speedups: dict[str, float]) -> Fraction:
    remaining = 1 - sum((f * (1 - 1 / Fraction(speedups.get(op, 1.0))) for op, f in shares.items()), Fraction(0))
    return 1 / remaining


def expected(spec: DeviceClassSpec, e_c: float | None, e_b: float | None, speedups: dict[str, float],
             kind: str) -> tuple[Fraction, Fraction]:
    compute = bandwidth = Fraction(1)
    if e_c is not None:
        compute = min(1 / MFU, Fraction(e_c) / E_C)
        bandwidth = min(1 / MBU, Fraction(e_b) / E_B)
    if kind == "llm":
        compute *= phase_speedup(PREFILL, speedups)
        bandwidth *= phase_speedup(DECODE, speedups)
    return Fraction(spec.bf16_tflops) * compute, Fraction(spec.memory_gbps) * bandwidth


def close(got: float, want: Fraction) -> bool:
    return abs(Fraction(got) - want) <= Fraction(REL) * abs(want)


# Efficiencies from 1e-9 to far above the cap, with the assumed values, the cap's edges and 1 as examples.
efficiencies = st.one_of(
    st.sampled_from([1e-9, 0.7, 0.8, 0.35, 0.48, 1.0, 1.4, 1.3333333333333333, 50.0]),
    st.floats(min_value=1e-9, max_value=1e3, allow_nan=False, allow_infinity=False))
speedup_values = st.one_of(st.sampled_from([1.0, 1e-6, 1e12, 2.0]),
                           st.floats(min_value=1e-6, max_value=1e12, allow_nan=False, allow_infinity=False))
speedup_maps = st.dictionaries(st.sampled_from(OPS), speedup_values, max_size=len(OPS))
figures = st.floats(min_value=1e-3, max_value=1e7, allow_nan=False, allow_infinity=False)


@given(bf16=figures, gbps=figures, calibrated=st.booleans(), e_c=efficiencies, e_b=efficiencies,
       speedups=speedup_maps, kind=st.sampled_from(["llm", "embedding", "tool"]))
@example(bf16=989.0, gbps=3350.0, calibrated=True, e_c=1e-9, e_b=1e-9, speedups={}, kind="llm")
@example(bf16=989.0, gbps=3350.0, calibrated=True, e_c=0.7, e_b=0.8, speedups={}, kind="llm")
@example(bf16=989.0, gbps=3350.0, calibrated=True, e_c=5.0, e_b=5.0, speedups={"rmsnorm": 1e12}, kind="llm")
@example(bf16=989.0, gbps=3350.0, calibrated=False, e_c=1.0, e_b=1.0,
         speedups=dict.fromkeys(OPS, 1.0), kind="llm")
@example(bf16=989.0, gbps=3350.0, calibrated=False, e_c=1.0, e_b=1.0,
         speedups=dict.fromkeys(OPS, 1e12), kind="llm")
def test_the_effective_spec_is_the_docstring_formula_in_exact_arithmetic(bf16, gbps, calibrated, e_c, e_b,
                                                                        speedups, kind):
    spec = DeviceClassSpec(name="X", vendor="v", bf16_tflops=bf16, memory_gib=80.0, memory_gbps=gbps,
                           fabric="pcie", usd_per_hour=1.0, slices_per_device=1, price_source="test")
    calibration = Calibration("X", e_c, e_b) if calibrated else None
    got = effective_spec(spec, calibration, speedups, kind)
    want_f, want_b = expected(spec, e_c if calibrated else None, e_b if calibrated else None, speedups, kind)
    assert close(got.bf16_tflops, want_f), (got.bf16_tflops, float(want_f))
    assert close(got.memory_gbps, want_b), (got.memory_gbps, float(want_b))
    # Everything but the two scaled figures is the class's own.
    assert (got.name, got.memory_gib, got.usd_per_hour, got.slices_per_device) == ("X", 80.0, 1.0, 1)


@pytest.mark.parametrize("speedups", [None, {}, dict.fromkeys(OPS, 1.0)])
def test_nothing_measured_or_exactly_the_assumed_efficiencies_keep_the_spec_to_the_bit(speedups):
    assert effective_spec(SPEC, None, speedups) == SPEC
    assert effective_spec(SPEC, Calibration("X", float(E_C), float(E_B)), speedups) == SPEC


def test_the_cap_and_the_floor_of_the_docstring():
    capped = effective_spec(SPEC, Calibration("X", 1e6, 1e6))
    assert Fraction(capped.bf16_tflops) == Fraction(SPEC.bf16_tflops) / MFU
    assert close(capped.memory_gbps, Fraction(SPEC.memory_gbps) / MBU)
    tiny = effective_spec(SPEC, Calibration("X", 1e-9, 1e-9))
    assert 0 < tiny.bf16_tflops and close(tiny.bf16_tflops, Fraction(SPEC.bf16_tflops) * Fraction(1e-9) / E_C)
    # Every op infinitely fast leaves the BLAS remainder: prefill 1 / (1 - 0.20), decode 1 / (1 - 0.24).
    fastest = effective_spec(SPEC, None, dict.fromkeys(OPS, 1e300))
    assert close(fastest.bf16_tflops, Fraction(SPEC.bf16_tflops) / Fraction(8, 10))
    assert close(fastest.memory_gbps, Fraction(SPEC.memory_gbps) / Fraction(76, 100))
