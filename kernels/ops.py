"""Op specs with a plain-torch eager reference each (issue 16, point 1).

Ops: rmsnorm, swiglu, softmax, rotary (GPT-NeoX half rotation), attention_prefill (causal),
attention_decode (one token per sequence over a KV cache with per-sequence lengths), sample
(top-k then top-p, uniform draws given as input, exact int64 ids), mean_pool (masked mean + L2
normalise) and int8_matmul (weight-only int8, per-output-channel scale). Each reference's docstring
states the maths and the layout of its arguments.

A spec names the op, its claimed dtypes, the shapes it is checked on (the op's own tuples: size 1,
odd, prime, one large; inputs strided as served: transposed buffers, q/k/v slices of a fused
projection, paged KV caches), and how to make random inputs, with an option to plant special values
(NaN, +-Inf, large magnitudes) where the op defines them; the input makers say where they leave one
out and why. References refuse to run while a candidate is running (`reference_forbidden`), so a
candidate that calls one is caught.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

_guard = threading.local()


class ReferenceCalled(RuntimeError):
    pass


@contextlib.contextmanager
def reference_forbidden():
    _guard.on = True
    try:
        yield
    finally:
        _guard.on = False


def reference(fn: Callable) -> Callable:
    def wrapped(*args):
        if getattr(_guard, "on", False):
            raise ReferenceCalled(fn.__name__)
        return fn(*args)
    wrapped.__name__ = fn.__name__
    wrapped.__wrapped__ = fn  # what timing measures: the guard's own cost is not the reference's
    return wrapped


def _x(shape, dtype, g, special):
    rows, cols = shape
    x = torch.randn(cols, rows, generator=g).t()  # non-contiguous when rows, cols > 1
    if special:
        x = x.clone() if rows * cols < 2 else x
        flat = x.reshape(-1) if x.is_contiguous() else None
        if flat is not None:
            flat[0] = float("nan")
            if flat.numel() > 2:
                flat[1], flat[2] = float("inf"), 1e4
        else:
            x[0, 0], x[-1, -1] = float("nan"), float("inf")
            x[rows // 2, cols // 2] = -1e4
    return x.to(dtype)


@reference
def rmsnorm_ref(x, w):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(x.dtype)


@reference
def swiglu_ref(x):
    a, b = x.float().chunk(2, dim=-1)
    return (torch.nn.functional.silu(a) * b).to(x.dtype)


@reference
def softmax_ref(x):
    return torch.softmax(x.float(), dim=-1).to(x.dtype)



def _plant(t: torch.Tensor) -> torch.Tensor:
    """Write NaN, +Inf, -1e4 and 1e4 at the first, last, middle and a third of the way through the
    elements of `t` (any rank, any strides; later writes win on tiny tensors)."""
    n = t.numel()
    for i, v in ((0, float("nan")), (n - 1, float("inf")), (n // 2, -1e4), (n // 3, 1e4)):
        if n > 1 or i == 0:
            t[tuple(int(j) for j in torch.unravel_index(torch.tensor(i), t.shape))] = v
    return t


# --- rotary embedding ------------------------------------------------------------------------

@reference
def rotary_ref(x, positions, cos_sin):
    """Rotary position embedding, GPT-NeoX convention (rotate the two halves of each head).

    x [tokens, heads, d], positions int64 [tokens], cos_sin float32 [max_position, d] holding
    cos(pos θ_i) in its first half and sin(pos θ_i) in its second, θ_i = base^(-2i/d), i < d/2.
    With x1 = x[..., :d/2], x2 = x[..., d/2:], c, s the row of `positions`:
        out = [x1 c - x2 s, x2 c + x1 s]   (float32 arithmetic, result in x's dtype).
    """
    h = x.shape[-1] // 2
    cs = cos_sin[positions].unsqueeze(1)
    c, s = cs[..., :h], cs[..., h:]
    xf = x.float()
    x1, x2 = xf[..., :h], xf[..., h:]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), -1).to(x.dtype)


def cos_sin_table(max_position: int, d: int, base: float = 10000.0) -> torch.Tensor:
    inv = base ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2 / d)
    ang = torch.arange(max_position, dtype=torch.float64)[:, None] * inv
    return torch.cat((ang.cos(), ang.sin()), -1).float()


def _rotary_inputs(shape, dtype, g, special):
    tokens, heads, d = shape
    x = torch.randn(tokens, 3 * heads, d, generator=g).to(dtype)[:, :heads]  # q of a fused qkv: strided
    if special:
        _plant(x)
    max_position = 2 * tokens + 5
    positions = torch.randint(0, max_position, (tokens,), generator=g)
    return x, positions, cos_sin_table(max_position, d)


# --- causal attention over a prompt (prefill) ------------------------------------------------------

@reference
def attention_prefill_ref(q, k, v):
    """Causal scaled dot-product attention, q, k, v [batch, heads, seq, d]:
        out_i = Σ_{j<=i} softmax_j(q_i·k_j / √d) v_j    (explicit scores, float32, result in q's dtype).
    """
    s = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    n = s.shape[-1]
    future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
    return (torch.softmax(s.masked_fill(future, float("-inf")), -1) @ v.float()).to(q.dtype)


def _prefill_inputs(shape, dtype, g, special):
    """q, k, v are views of one fused [batch, seq, 3, heads, d] projection (strided, as served).
    Specials: NaN/Inf/±1e4 in q and k; in v NaN and 1e4 at key 0, which every query attends to.
    No Inf in v: its product with a weight that underflowed to 0 is NaN in one order of evaluation
    and Inf in another (online softmax rescales later), a property of the arithmetic, not of
    attention; no NaN behind the causal mask, where 0·NaN likewise depends on the kernel."""
    b, h, n, d = shape
    qkv = torch.randn(b, n, 3, h, d, generator=g).to(dtype).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if special:
        _plant(q)
        _plant(k)
        v[..., 0, -1] = 1e4
        v[..., 0, 0] = float("nan")
    return q, k, v


# --- attention of one new token per sequence over its KV cache (decode) -----------------------

@reference
def attention_decode_ref(q, k_cache, v_cache, lengths):
    """Decode attention: q [batch, heads, d] (one token per sequence), caches [batch, heads,
    capacity, d], lengths int64 [batch] with 1 <= length <= capacity. Positions >= length hold
    stale data and are never read:
        out_b = Σ_{j<len_b} softmax_j(q_b·k_bj / √d) v_bj    (float32, result in q's dtype).
    """
    cap = k_cache.shape[2]
    valid = (torch.arange(cap, device=q.device) < lengths[:, None])[:, None, :]
    s = torch.einsum("bhd,bhjd->bhj", q.float(), k_cache.float()) * q.shape[-1] ** -0.5
    p = torch.softmax(s.masked_fill(~valid, float("-inf")), -1)
    v = v_cache.float().masked_fill(~valid[..., None], 0.0)
    return torch.einsum("bhj,bhjd->bhd", p, v).to(q.dtype)


def _decode_inputs(shape, dtype, g, special):
    """Stale cache slots (>= length) hold ±1e4 garbage, NaN/Inf in special trials; one sequence
    fills the cache and one has a single token when the batch allows."""
    b, h, cap, d = shape
    q = torch.randn(b, h, d, generator=g).to(dtype)
    k = torch.randn(b, cap, h, d, generator=g).to(dtype).transpose(1, 2)  # [b, cap, h, d] paged layout
    v = torch.randn(b, cap, h, d, generator=g).to(dtype).transpose(1, 2)
    lengths = torch.randint(1, cap + 1, (b,), generator=g)
    lengths[0] = cap
    lengths[-1] = 1 if b > 1 else lengths[-1]
    for i, n in enumerate(lengths.tolist()):
        k[i, :, n:] = float("nan") if special else 1e4
        v[i, :, n:] = float("inf") if special else -1e4
    if special:
        _plant(q)
        k[0, -1, 0, 0] = float("inf")  # in a full sequence: a lone key scoring -Inf has no softmax
        v[..., 0, 0] = float("nan")
    return q, k, v, lengths


# --- top-k / top-p sampling --------------------------------------------------------------------

@reference
def sample_ref(logits, k, p, u):
    """Top-k then top-p (nucleus) sampling, made deterministic by taking the uniform draws as input.

    logits [rows, vocab] (float), k int64 [rows] in [1, vocab] (k = vocab disables top-k),
    p float32 [rows] in (0, 1] (1 disables top-p), u float32 [rows] in [0, 1). Returns int64 ids.
    Tokens are ranked by logit, ties to the lower id. In float64, with w_r = exp(l_r - l_0) the
    weight of rank r:  keep r < k;  then keep r while the kept weight before it, Σ_{s<r} w_s, is
    below p Σ_kept w (the smallest prefix reaching p);  return the first rank whose cumulative
    kept weight exceeds u Σ_kept w. float64 keeps ids exact across formulations (a float32 cumsum
    over a large vocabulary moves boundaries by more than the gap between them).
    Logits may be -Inf (masked tokens) or large; each row needs one finite logit, and NaN and +Inf
    are outside the op (a NaN logit has no probability; callers mask before sampling).
    """
    sl, order = torch.sort(logits.double(), dim=-1, descending=True, stable=True)
    return order.gather(-1, _pick(sl, k, p, u)).squeeze(-1)


def _pick(sorted_logits, k, p, u):
    """Rank picked from descending logits (shared arithmetic of top-k, top-p and inverse CDF)."""
    w = torch.exp(sorted_logits - sorted_logits[:, :1])
    w = w.masked_fill(torch.arange(w.shape[-1], device=w.device) >= k[:, None], 0.0)
    c = w.cumsum(-1)
    w = w.masked_fill(c - w >= p[:, None].double() * c[:, -1:], 0.0)
    c = w.cumsum(-1)
    return (c <= u[:, None].double() * c[:, -1:]).sum(-1, keepdim=True)


def _sample_inputs(shape, dtype, g, special):
    """Half the rows are quantised to steps of 0.5 so ties meet the top-k and top-p boundaries.
    k is mostly small (<= 64) with one row at k = vocab; p has one row at 1. Specials: about a
    third of the logits -Inf (one finite per row kept), and ±1e4."""
    rows, vocab = shape
    logits = torch.randn(rows, vocab, generator=g) * 3
    logits[::2] = (logits[::2] * 2).round() / 2
    if special:
        logits[torch.rand(rows, vocab, generator=g) < 0.3] = float("-inf")
        logits[:, torch.randint(0, vocab, (1,), generator=g)] = 1.0
        logits[0, -1], logits[-1, 0] = 1e4, -1e4
    k = torch.randint(1, min(vocab, 64) + 1, (rows,), generator=g)
    k[-1] = vocab
    p = torch.rand(rows, generator=g) * 0.9 + 0.1
    p[0] = 1.0
    u = torch.rand(rows, generator=g)
    return logits.to(dtype), k, p, u


# --- embedding mean-pool + L2 normalise ----------------------------------------------------------

@reference
def mean_pool_ref(hidden, mask):
    """Sentence embedding: hidden [batch, seq, dim], mask int64 [batch, seq] (1 = token, 0 = pad);
        m_b = Σ_{t: mask=1} h_bt / max(1, #tokens),   out_b = m_b / max(‖m_b‖₂, 1e-12)
    in float32, result in hidden's dtype. Padded positions are never read (a NaN there does not
    propagate); a row with no tokens gives zeros."""
    keep = mask.bool()[..., None]
    s = hidden.float().masked_fill(~keep, 0.0).sum(1)
    m = s / keep.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(m, dim=-1, eps=1e-12).to(hidden.dtype)


def _pool_inputs(shape, dtype, g, special):
    """Random 0/1 masks (token 0 always kept). Specials: 1e4 and Inf at kept tokens, NaN in padding
    (must not leak) and, with batch > 3, at a kept token (must); with batch > 2 a row with no tokens."""
    b, n, d = shape
    hidden = torch.randn(b, d, n, generator=g).to(dtype).transpose(1, 2)
    mask = (torch.rand(b, n, generator=g) < 0.7).long()
    mask[:, 0] = 1
    if special:
        hidden[0, 0, d // 2] = 1e4
        if n > 1:
            mask[0, -1] = 0
            hidden[0, -1, 0] = float("nan")  # in padding: must not propagate
        hidden[-1, 0, 0] = float("inf")
        if b > 2:
            mask[1] = 0  # no tokens: zeros
        if b > 3:
            hidden[2, 0, 1 % d] = float("nan")
    return hidden, mask


# --- weight-only int8 matmul -------------------------------------------------------------------

@reference
def int8_matmul_ref(x, w, scale):
    """Weight-only int8 linear: x [m, k] float, w int8 [n, k], scale float32 [n] per output channel;
        out = x (w ⊙ scale[:, None])ᵀ   (dequantise, then matmul in float32; result in x's dtype)."""
    return (x.float() @ (w.float() * scale[:, None]).t()).to(x.dtype)


def _int8_inputs(shape, dtype, g, special):
    m, n, k = shape
    x = _x((m, k), dtype, g, special)
    w = torch.randint(-127, 128, (k, n), generator=g, dtype=torch.int8).t()  # column-major storage
    scale = (torch.rand(n, generator=g) + 0.5) / (127 * k ** 0.5)
    return x, w, scale


def on(args: tuple, device: str) -> tuple:
    """`args` on `device` with each tensor's sizes and strides kept (a transposed or sliced input
    stays non-contiguous there, as `Tensor.to` would not keep it); on "cpu", `args` themselves."""
    if device == "cpu":
        return args
    moved = []
    for a in args:
        if isinstance(a, torch.Tensor):
            t = torch.empty_strided(a.size(), a.stride(), dtype=a.dtype, device=device)
            moved.append(t.copy_(a))
        else:
            moved.append(a)
    return tuple(moved)


@dataclass(frozen=True)
class Spec:
    """An op: its reference, how to make its inputs (`make(shape, dtype, generator, special)`
    returns the argument tuple), the dtypes it is claimed for and the shapes it is checked on.
    A shape is the op's own tuple (rows and columns, or batch, heads, seq and head size, ...)."""
    name: str
    reference: Callable
    make: Callable
    dtypes: tuple[torch.dtype, ...]
    shapes: tuple[tuple[int, ...], ...]


FLOATS = (torch.float32, torch.bfloat16, torch.float16)
SHAPES = ((1, 1), (3, 7), (13, 31), (2, 64), (257, 1024))
EVEN = ((1, 2), (3, 14), (13, 62), (2, 64), (257, 1024))

SPECS = {
    "rmsnorm": Spec("rmsnorm", rmsnorm_ref,
                    lambda s, d, g, sp: (_x(s, d, g, sp), (torch.rand(s[1], generator=g) + 0.5).to(d)),
                    FLOATS, SHAPES),
    "swiglu": Spec("swiglu", swiglu_ref, lambda s, d, g, sp: (_x(s, d, g, sp),), FLOATS, EVEN),
    "softmax": Spec("softmax", softmax_ref, lambda s, d, g, sp: (_x(s, d, g, sp),), FLOATS, SHAPES),
    "rotary": Spec("rotary", rotary_ref, _rotary_inputs, FLOATS,
                   ((1, 1, 2), (3, 5, 6), (13, 7, 34), (31, 4, 64), (512, 16, 128))),
    "attention_prefill": Spec("attention_prefill", attention_prefill_ref, _prefill_inputs, FLOATS,
                              ((1, 1, 1, 1), (1, 2, 3, 8), (2, 3, 13, 17), (1, 4, 31, 64), (1, 8, 512, 64))),
    "attention_decode": Spec("attention_decode", attention_decode_ref, _decode_inputs, FLOATS,
                             ((1, 1, 1, 1), (3, 2, 7, 8), (5, 3, 31, 17), (2, 4, 257, 64), (8, 16, 1024, 64))),
    "sample": Spec("sample", sample_ref, _sample_inputs, FLOATS,
                   ((1, 1), (3, 7), (5, 31), (4, 257), (16, 32000))),
    "mean_pool": Spec("mean_pool", mean_pool_ref, _pool_inputs, FLOATS,
                      ((1, 1, 1), (3, 7, 5), (4, 13, 31), (2, 17, 64), (16, 256, 384))),
    "int8_matmul": Spec("int8_matmul", int8_matmul_ref, _int8_inputs, FLOATS,
                        ((1, 1, 1), (3, 5, 7), (13, 31, 61), (1, 257, 1024), (64, 512, 1024))),
}


# Honest alternative formulations (candidates).
def rmsnorm_alt(x, w):
    xf = x.float()
    return (xf / torch.sqrt((xf * xf).sum(-1, keepdim=True) / xf.shape[-1] + 1e-6) * w.float()).to(x.dtype)


def swiglu_alt(x):
    xf = x.float()
    h = xf.shape[-1] // 2
    a, b = xf[..., :h], xf[..., h:]
    return (a * torch.sigmoid(a) * b).to(x.dtype)


def softmax_alt(x):
    xf = x.float()
    e = torch.exp(xf - xf.amax(-1, keepdim=True))
    return (e / e.sum(-1, keepdim=True)).to(x.dtype)


def rotary_alt(x, positions, cos_sin):
    """x cos + rotate_half(x) sin with rotate_half(x) = [-x2, x1] (the Hugging Face form)."""
    h = x.shape[-1] // 2
    cs = cos_sin.index_select(0, positions)[:, None, :]
    cos, sin = cs[..., :h].repeat(1, 1, 2), cs[..., h:].repeat(1, 1, 2)
    xf = x.float()
    return (xf * cos + torch.cat((-xf[..., h:], xf[..., :h]), -1) * sin).to(x.dtype)


def rotary_halves_in_place(x, positions, cos_sin):
    """The reference's halves, [x1 c - x2 s, x2 c + x1 s], each written straight into its half of one
    float32 output (mul into the half, then addcmul) instead of four temporaries and a cat."""
    h = x.shape[-1] // 2
    cs = cos_sin.index_select(0, positions)[:, None, :]
    c, s = cs[..., :h], cs[..., h:]
    xf = x.float()
    x1, x2 = xf[..., :h], xf[..., h:]
    out = torch.empty(xf.shape, dtype=torch.float32, device=x.device)
    lo, hi = out[..., :h], out[..., h:]
    torch.mul(x1, c, out=lo).addcmul_(x2, s, value=-1)
    torch.mul(x2, c, out=hi).addcmul_(x1, s)
    return out.to(x.dtype)


def attention_prefill_blocked(q, k, v, block: int = 64):
    """Online softmax over key blocks (the flash-attention recurrence), each block applied only to
    the queries at or after its first key. Per query row, with running max m, sum l and output o:
        m' = max(m, max_j s_j),  l' = l e^(m-m') + Σ_j e^(s_j-m'),  o' = o e^(m-m') + Σ_j e^(s_j-m') v_j,
    out = o / l. A row whose max is still -Inf uses 0 as its shift, so 0/0 gives the reference's NaN.
    (F.scaled_dot_product_attention is not an alternative here: its CPU flash kernel zeroes the
    weight of a NaN score instead of propagating it.)"""
    qf, kf, vf = q.float(), k.float(), v.float()
    b, h, n, d = qf.shape
    m = torch.full((b, h, n, 1), float("-inf"), device=q.device)
    total = torch.zeros(b, h, n, 1, device=q.device)
    o = torch.zeros(b, h, n, vf.shape[-1], device=q.device)
    rows = torch.arange(n, device=q.device)[:, None]
    for j0 in range(0, n, block):
        j1 = min(j0 + block, n)
        s = (qf[:, :, j0:] @ kf[:, :, j0:j1].transpose(-1, -2)) * d ** -0.5
        s = s.masked_fill(torch.arange(j0, j1, device=q.device) > rows[j0:], float("-inf"))
        m_new = torch.maximum(m[:, :, j0:], s.amax(-1, keepdim=True))
        shift = m_new.masked_fill(m_new == float("-inf"), 0.0)
        alpha, e = torch.exp(m[:, :, j0:] - shift), torch.exp(s - shift)
        total[:, :, j0:] = total[:, :, j0:] * alpha + e.sum(-1, keepdim=True)
        o[:, :, j0:] = o[:, :, j0:] * alpha + e @ vf[:, :, j0:j1]
        m[:, :, j0:] = m_new
    return (o / total).to(q.dtype)


def attention_decode_ragged(q, k_cache, v_cache, lengths):
    """Per sequence, attention over exactly its first `length` cache slots (stale ones untouched)."""
    out = []
    for b, n in enumerate(lengths.tolist()):
        s = (q[b, :, None].float() @ k_cache[b, :, :n].float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        out.append((torch.softmax(s, -1) @ v_cache[b, :, :n].float())[:, 0])
    return torch.stack(out).to(q.dtype)


def sample_topk(logits, k, p, u):
    """Top-k by `torch.topk` instead of a full sort. topk orders ties arbitrarily, so it runs on a
    packed int64 key, (order-preserving int of the float32 logit) · 2^31 + (2^31 - 1 - id), whose
    values are distinct and order ties to the lower id; only max(k) columns are then sorted."""
    lf = logits.float() + 0.0  # -0.0 -> +0.0: equal floats must get equal keys
    bits = lf.view(torch.int32)
    key = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long() * 2**31
    key = key + (2**31 - 1 - torch.arange(lf.shape[-1], device=lf.device))
    _, idx = torch.topk(key, int(k.max()), dim=-1)
    return idx.gather(-1, _pick(logits.double().gather(-1, idx), k, p, u)).squeeze(-1)


def mean_pool_einsum(hidden, mask):
    """Masked sum as an einsum with the 0/1 mask (padded positions zeroed first), then x / ‖x‖."""
    keep = mask.bool()
    h = hidden.float().masked_fill(~keep[..., None], 0.0)
    m = torch.einsum("bs,bsd->bd", keep.float(), h) / keep.sum(1, keepdim=True).clamp(min=1)
    return (m / torch.linalg.vector_norm(m, dim=-1, keepdim=True).clamp(min=1e-12)).to(hidden.dtype)


def int8_matmul_scale_after(x, w, scale):
    """Scale the output columns instead of the weights: (x wᵀ) ⊙ scale, in float32."""
    return ((x.float() @ w.t().float()) * scale).to(x.dtype)
