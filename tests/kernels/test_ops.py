"""The ops beyond the first slice (rotary, attention, sampling, pooling, int8 matmul): honest
alternatives are accepted, op-specific cheats are rejected, and the references keep their invariants."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import cheats, ops, suite
from kernels.verify import Candidate, verify

F = ops.FLOATS
NEW = ("rotary", "attention_prefill", "attention_decode", "sample", "mean_pool", "int8_matmul")


def small(op):
    """The spec's shapes without the largest one (that one is for the bench)."""
    return ops.SPECS[op].shapes[:-1]


@pytest.mark.parametrize("c", [c for c in suite.builtin() if c.op in NEW], ids=lambda c: c.name)
def test_honest_alternative_accepted(c):
    v = verify(c, seeds=(0, 1), shapes=small(c.op))
    assert v.accepted, v.failure


# --- op-specific cheats (kernels/cheats.py), each with the check that must catch it -------------

SPECIFIC = [c for c in cheats.CHEATS if c.stage == "verify" and c.op in NEW]


@pytest.mark.parametrize("cheat", SPECIFIC, ids=lambda c: c.name)
def test_cheat_rejected_with_case_recorded(cheat):
    cheats.reset()
    v = verify(Candidate(cheat.op, cheat.name, cheat.fn, F), seeds=(0, 1), shapes=small(cheat.op))
    assert not v.accepted
    assert (v.failure.op, v.failure.check) == (cheat.op, cheat.check), v.failure


def test_weight_cache_is_caught_when_the_same_int8_buffer_is_refilled():
    cheats.reset()
    v = verify(Candidate("int8_matmul", "by_address", cheats.int8_caches_weights_by_address, F), seeds=(0,),
               shapes=small("int8_matmul"))
    assert (v.failure.check, v.failure.detail, v.failure.shape) == ("values", "on the same buffers refilled", (1, 1, 1))


# --- invariants of the references ---------------------------------------------------------------

logit = st.one_of(st.sampled_from([-math.inf, 0.0, 0.5, 1.0]), st.floats(-30, 30))


@st.composite
def sampling_rows(draw):
    vocab = draw(st.integers(1, 12))
    rows = draw(st.lists(st.lists(logit, min_size=vocab, max_size=vocab), min_size=1, max_size=4))
    logits = torch.tensor(rows, dtype=torch.float64)
    logits[:, draw(st.integers(0, vocab - 1))] = draw(st.floats(-30, 30))  # one finite logit per row
    n = len(rows)
    k = torch.tensor(draw(st.lists(st.integers(1, vocab), min_size=n, max_size=n)))
    p = torch.tensor(draw(st.lists(st.floats(0.01, 1.0), min_size=n, max_size=n)), dtype=torch.float32)
    u = torch.tensor(draw(st.lists(st.floats(0.0, 0.999), min_size=n, max_size=n)), dtype=torch.float32)
    return logits.float(), k, p, u


@settings(max_examples=60, deadline=None)
@given(sampling_rows())
def test_sampled_id_is_in_top_k_and_nucleus_with_nonzero_probability(args):
    logits, k, p, u = args
    ids = ops.sample_ref(logits, k, p, u)
    assert torch.equal(ids, ops.sample_topk(logits, k, p, u))
    for row, i, kk, pp in zip(logits.double(), ids.tolist(), k.tolist(), p.tolist(), strict=True):
        ahead = (row > row[i]) | ((row == row[i]) & (torch.arange(len(row)) < i))  # ranked before i
        assert int(ahead.sum()) < kk
        w = torch.exp(row - row.max())
        assert w[i] > 0
        top_k = torch.zeros_like(ahead)
        top_k[torch.argsort(-row, stable=True)[:kk]] = True
        assert float(w[ahead].sum()) < pp * float(w[top_k].sum()) + 1e-12  # i is inside the nucleus


def test_u_zero_picks_the_first_highest_logit():
    logits = torch.tensor([[0.0, 2.0, 2.0, -math.inf], [1.0, 1.0, 1.0, 1.0]])
    ids = ops.sample_ref(logits, torch.tensor([4, 4]), torch.tensor([1.0, 1.0]), torch.zeros(2))
    assert ids.tolist() == [1, 0]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_mean_pool_is_unit_norm_and_blind_to_padding(b, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, n, d, generator=g)
    mask = (torch.rand(b, n, generator=g) < 0.6).long()
    out = ops.mean_pool_ref(hidden, mask)
    some = mask.sum(1) > 0
    torch.testing.assert_close(out[some].norm(dim=-1), torch.ones(int(some.sum())))
    assert not out[~some].any()
    nan_padding = hidden.masked_fill(~mask.bool()[..., None], float("nan"))
    assert torch.equal(ops.mean_pool_ref(nan_padding, mask), out)


def _pair_lengths(t):
    """Squared length of each (x_i, x_{i+d/2}) pair, the plane RoPE rotates."""
    half = t.shape[-1] // 2
    return t[..., :half] ** 2 + t[..., half:] ** 2


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 3), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_rotary_is_a_rotation_and_identity_at_position_zero(tokens, heads, half, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, heads, 2 * half, generator=g)
    table = ops.cos_sin_table(64, 2 * half)
    out = ops.rotary_ref(x, torch.randint(0, 64, (tokens,), generator=g), table)
    torch.testing.assert_close(_pair_lengths(out), _pair_lengths(x))
    torch.testing.assert_close(ops.rotary_ref(x, torch.zeros(tokens, dtype=torch.long), table), x)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(0, 8), st.integers(0, 2**31 - 1))
def test_prefill_row_i_ignores_keys_and_values_after_i(n, i, seed):
    i = min(i, n - 1)
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 2, n, 4, generator=g) for _ in range(3))
    k2, v2 = k.clone(), v.clone()
    k2[..., i + 1:, :], v2[..., i + 1:, :] = 1e3, -1e3
    for attend in (ops.attention_prefill_ref, ops.attention_prefill_blocked):
        assert torch.equal(attend(q, k, v)[..., i, :], attend(q, k2, v2)[..., i, :])


@pytest.mark.parametrize("op", sorted(ops.SPECS))
def test_inputs_moved_to_another_device_keep_sizes_strides_and_dtypes(op):
    """What verify and the timing race hand a CUDA candidate: the CPU-made inputs, strided as served
    (checked on the meta device, which every machine has); on the CPU, the very same objects."""
    spec = ops.SPECS[op]
    if op == "rmsnorm":  # x is a transposed buffer: strides the meta copy must keep
        assert not spec.make(spec.shapes[2], torch.float32, torch.Generator(), False)[0].is_contiguous()
    args = spec.make(spec.shapes[2], torch.bfloat16, torch.Generator().manual_seed(0), False)
    assert ops.on(args, "cpu") is args
    moved = ops.on(args, "meta")
    for a, m in zip(args, moved, strict=True):
        if isinstance(a, torch.Tensor):
            assert (m.device.type, m.shape, m.stride(), m.dtype) == ("meta", a.shape, a.stride(), a.dtype)
        else:
            assert m is a
