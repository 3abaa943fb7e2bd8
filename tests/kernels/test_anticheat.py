"""Injected wrong candidates must all be rejected; honest alternatives must be accepted."""

import pytest
import torch

import kernels
from kernels import cheats, dispatch, ops
from kernels.verify import Candidate, verify

F = ops.FLOATS

# The generic cheats (on softmax and rmsnorm; the hanging one has its own test below);
# tests/kernels/test_ops.py runs the op-specific ones, tests/kernels/test_selection.py the timing ones.
GENERIC = [c for c in cheats.CHEATS
           if c.stage == "verify" and c.op in ("softmax", "rmsnorm") and c.check != "timeout"]


@pytest.fixture(autouse=True)
def _fresh_cheats():
    cheats.reset()
    yield
    cheats.reset()


def test_bf16_cheat_caught_in_bf16_only():
    v = verify(Candidate("softmax", "b", cheats.softmax_wrong_in_bf16, F), seeds=(0,))
    assert v.failure.dtype == str(torch.bfloat16)


def test_the_shared_list_has_ten_kinds_and_every_check_is_named():
    assert len(cheats.CHEATS) >= 10 and len({c.name for c in cheats.CHEATS}) == len(cheats.CHEATS)
    assert {c.stage for c in cheats.CHEATS} == {"verify", "select"}


@pytest.mark.parametrize("cheat", GENERIC, ids=lambda c: c.name)
def test_cheat_rejected_with_case_recorded(cheat):
    v = verify(Candidate(cheat.op, cheat.name, cheat.fn, F), seeds=(0, 1))
    assert not v.accepted
    assert v.failure.op == cheat.op and v.failure.check == cheat.check and v.failure.dtype


def test_hanging_candidate_times_out():
    [hang] = [c for c in cheats.CHEATS if c.check == "timeout"]
    try:
        v = verify(Candidate(hang.op, hang.name, hang.fn, F), seeds=(0,), timeout_s=0.2)
    finally:
        cheats.reset()
    assert not v.accepted and v.failure.check == "timeout"


@pytest.mark.parametrize("op,fn", [("rmsnorm", ops.rmsnorm_alt), ("swiglu", ops.swiglu_alt),
                                   ("softmax", ops.softmax_alt)])
def test_honest_alternative_accepted(op, fn):
    v = verify(Candidate(op, fn.__name__, fn, F), seeds=(0, 1))
    assert v.accepted, v.failure


def test_dispatch_selects_verified_and_falls_back_on_runtime_error(caplog):
    assert dispatch.get("swiglu", "cpu", torch.float32) is ops.SPECS["swiglu"].reference
    state = {"fail": False}

    def flaky(x):
        if state["fail"]:
            raise RuntimeError("device lost")
        return ops.swiglu_alt(x)

    assert dispatch.select(Candidate("swiglu", "flaky", flaky, (torch.float32,)), seeds=(0,)).accepted
    k = kernels.get("swiglu", "cpu", torch.float32, (2, 4))  # the package's door is dispatch's
    x = torch.randn(2, 4)
    torch.testing.assert_close(k(x), ops.swiglu_ref(x))
    assert dispatch.fallbacks("swiglu", "flaky") == 0  # a working kernel is not a fallback
    state["fail"] = True
    with caplog.at_level("WARNING", logger="kernels"):
        out = k(x)
    assert torch.equal(out, ops.swiglu_ref(x))
    assert dispatch.fallbacks("swiglu", "flaky") == 1
    assert "flaky" in caplog.text and "device lost" in caplog.text
    dispatch.REGISTRY.clear()


def test_dispatch_picks_the_kernel_of_the_shape_bucket():
    from kernels.registry import Row
    c = Candidate("softmax", "softmax_alt", ops.softmax_alt, (torch.float32,))
    row = Row("softmax", "cpu", "float32", 7, (2, 64), "softmax_alt", 1.5, 0.01, 1e-5, "softmax_alt", 1e-5,
              1e-5, 1e-4, (0,), torch.__version__, "cpu", "2026-12-05T00:00:00+00:00")
    try:
        assert dispatch.install([row], [c]) == 1
        ref = ops.SPECS["softmax"].reference
        assert dispatch.get("softmax", "cpu", torch.float32, (4, 32)) is not ref  # 128 elements: bucket 7
        assert dispatch.get("softmax", "cpu", torch.float32, (4, 64)) is ref  # 256: bucket 8, nothing chosen
        assert dispatch.get("softmax", "cpu", torch.bfloat16, (4, 32)) is ref
    finally:
        dispatch.REGISTRY.clear()


def test_rejected_candidate_is_not_selected():
    assert not dispatch.select(Candidate("softmax", "bad", cheats.softmax_wrong_on_prime, F), seeds=(0,)).accepted
    assert dispatch.get("softmax", "cpu", torch.float32) is ops.SPECS["softmax"].reference


def test_candidates_from_files_go_through_the_same_verifier(tmp_path):
    from kernels import candidates
    (tmp_path / "bad.py").write_text("OP = 'softmax'\nDTYPES = ('float32',)\n"
                                     "def kernel(x):\n    return x.softmax(-1) * 2\n")
    shipped = {c.name: verify(c, seeds=(0,)).accepted for c in candidates.load()}
    assert shipped == {"softmax_f32_accumulate": True}
    [bad] = candidates.load(tmp_path)
    assert not verify(bad, seeds=(0,)).accepted
