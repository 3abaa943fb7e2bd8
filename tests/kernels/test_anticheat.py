"""Injected wrong candidates must all be rejected; honest alternatives must be accepted."""

import threading

import pytest
import torch

from kernels import dispatch, ops
from kernels.verify import Candidate, verify

F = ops.FLOATS


def softmax_wrong_on_prime(x):
    out = ops.softmax_alt(x)
    return out + 1 if x.shape[-1] == 31 else out


seen_shapes = set()


def softmax_right_on_seen(x):
    ok = x.shape in seen_shapes or len(seen_shapes) == 0
    seen_shapes.add(x.shape)
    return ops.softmax_alt(x) if ok else torch.zeros_like(x)


addr_cache = {}


def softmax_addr_cache(x):
    k = x.data_ptr()
    if k not in addr_cache:
        addr_cache[k] = ops.softmax_alt(x)
    return addr_cache[k]


value_cache = {}


def softmax_value_cache(x):
    k = (x.shape, x.dtype, float(torch.nan_to_num(x).float().sum()))
    if k not in value_cache:
        value_cache[k] = ops.softmax_alt(x)
    return value_cache[k]


def softmax_calls_reference(x):
    return ops.softmax_ref(x)


def softmax_mutates(x):
    out = ops.softmax_alt(x)
    x.zero_()
    return out


def softmax_wrong_on_nan(x):
    return ops.softmax_alt(torch.nan_to_num(x))


def softmax_wrong_in_bf16(x):
    return ops.softmax_alt(x).to(torch.float32).to(x.dtype) * (1.1 if x.dtype == torch.bfloat16 else 1)


def test_bf16_cheat_caught_in_bf16_only():
    v = verify(Candidate("softmax", "b", softmax_wrong_in_bf16, F), seeds=(0,))
    assert v.failure.dtype == str(torch.bfloat16)


def softmax_nondeterministic(x):
    out = ops.softmax_alt(x)
    return out + torch.rand(()) * 1e-7 if out.numel() else out


def softmax_wrong_dtype(x):
    return ops.softmax_alt(x).float()


stop = threading.Event()


def softmax_hangs(x):
    stop.wait(5)
    return ops.softmax_alt(x)


def rmsnorm_raises(x, w):
    raise RuntimeError("boom")


CHEATS = [  # (op, candidate, the check that must catch it)
    ("softmax", softmax_wrong_on_prime, "values"), ("softmax", softmax_right_on_seen, "values"),
    ("softmax", softmax_addr_cache, "returns a cached buffer"), ("softmax", softmax_value_cache, "returns a cached buffer"),
    ("softmax", softmax_calls_reference, "calls reference"), ("softmax", softmax_mutates, "input mutated"),
    ("softmax", softmax_wrong_on_nan, "nan"), ("softmax", softmax_wrong_in_bf16, "values"),
    ("softmax", softmax_nondeterministic, "nondeterministic"), ("softmax", softmax_wrong_dtype, "dtype"),
    ("rmsnorm", rmsnorm_raises, "raised"),
]


@pytest.mark.parametrize("op,fn,check", CHEATS, ids=[f.__name__ for _, f, _ in CHEATS])
def test_cheat_rejected_with_case_recorded(op, fn, check):
    v = verify(Candidate(op, fn.__name__, fn, F), seeds=(0, 1))
    assert not v.accepted
    assert v.failure.op == op and v.failure.check == check and v.failure.dtype


def test_hanging_candidate_times_out():
    try:
        v = verify(Candidate("softmax", "hang", softmax_hangs, F), seeds=(0,), timeout_s=0.2)
    finally:
        stop.set()
    assert not v.accepted and v.failure.check == "timeout"


@pytest.mark.parametrize("op,fn", [("rmsnorm", ops.rmsnorm_alt), ("swiglu", ops.swiglu_alt),
                                   ("softmax", ops.softmax_alt)])
def test_honest_alternative_accepted(op, fn):
    v = verify(Candidate(op, fn.__name__, fn, F), seeds=(0, 1))
    assert v.accepted, v.failure


def test_dispatch_selects_verified_and_falls_back_on_runtime_error():
    assert dispatch.get("swiglu", "cpu", torch.float32) is ops.SPECS["swiglu"].reference
    state = {"fail": False}

    def flaky(x):
        if state["fail"]:
            raise RuntimeError("device lost")
        return ops.swiglu_alt(x)

    assert dispatch.select(Candidate("swiglu", "flaky", flaky, (torch.float32,)), seeds=(0,)).accepted
    k = dispatch.get("swiglu", "cpu", torch.float32, (2, 4))
    x = torch.randn(2, 4)
    state["fail"] = True
    before = dispatch.FALLBACKS[("swiglu", "flaky")]
    torch.testing.assert_close(k(x), ops.swiglu_ref(x))
    assert dispatch.FALLBACKS[("swiglu", "flaky")] == before + 1
    dispatch.REGISTRY.clear()


def test_rejected_candidate_is_not_selected():
    assert not dispatch.select(Candidate("softmax", "bad", softmax_wrong_on_prime, F), seeds=(0,)).accepted
    assert dispatch.get("softmax", "cpu", torch.float32) is ops.SPECS["softmax"].reference


def test_candidates_from_files_go_through_the_same_verifier(tmp_path):
    from kernels import candidates
    (tmp_path / "bad.py").write_text("OP = 'softmax'\nDTYPES = ('float32',)\n"
                                     "def kernel(x):\n    return x.softmax(-1) * 2\n")
    shipped = {c.name: verify(c, seeds=(0,)).accepted for c in candidates.load()}
    assert shipped == {"softmax_f32_accumulate": True}
    [bad] = candidates.load(tmp_path)
    assert not verify(bad, seeds=(0,)).accepted
