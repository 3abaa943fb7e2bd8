"""Injected wrong candidates (issue 16, point 3): one list shared by the tests and bench/kernels.py,
each with the check that must catch it. 0 of them may be accepted.

A cheat of stage "verify" must be rejected by the verifier (`kernels.verify`), the check being its
`Failure.check`; a cheat of stage "select" may pass the verifier but must not be selected: the full
selection (`kernels.registry.select_shape`: verify, timing race, rule) must keep the reference, the
check being the reason the rule gives (`kernels.selection.rejection`).

Some cheats keep state (caches, the shapes seen, a thread they started): `reset()` clears it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kernels import ops, selection


@dataclass(frozen=True)
class Cheat:
    op: str
    fn: Callable
    check: str  # the verifier's Failure.check, or the selection's reason, that must catch it
    stage: str = "verify"  # "verify" or "select"

    @property
    def name(self) -> str:
        return self.fn.__name__


# --- generic cheats (on softmax, rmsnorm) --------------------------------------------------------

def softmax_wrong_on_prime(x):
    out = ops.softmax_alt(x)
    return out + 1 if x.shape[-1] == 31 else out


_seen_shapes: set = set()


def softmax_right_on_seen(x):
    ok = x.shape in _seen_shapes or len(_seen_shapes) == 0
    _seen_shapes.add(x.shape)
    return ops.softmax_alt(x) if ok else torch.zeros_like(x)


_addr_cache: dict = {}


def softmax_addr_cache(x):
    k = x.data_ptr()
    if k not in _addr_cache:
        _addr_cache[k] = ops.softmax_alt(x)
    return _addr_cache[k]


_value_cache: dict = {}


def softmax_value_cache(x):
    k = (x.shape, x.dtype, float(torch.nan_to_num(x).float().sum()))
    if k not in _value_cache:
        _value_cache[k] = ops.softmax_alt(x)
    return _value_cache[k]


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


def softmax_nondeterministic(x):
    out = ops.softmax_alt(x)
    return out + torch.rand(()) * 1e-7 if out.numel() else out


def softmax_wrong_dtype(x):
    return ops.softmax_alt(x).float()


_stop = threading.Event()


def softmax_hangs(x):
    _stop.wait(5)
    return ops.softmax_alt(x)


def rmsnorm_raises(x, w):
    raise RuntimeError("boom")


# --- op-specific cheats ---------------------------------------------------------------------------

def sample_ties_to_higher_id(logits, k, p, u):
    order = torch.argsort(logits.double(), dim=-1, stable=True).flip(-1)  # ties: higher id first
    return order.gather(-1, ops._pick(logits.double().gather(-1, order), k, p, u)).squeeze(-1)


def sample_ignores_top_p(logits, k, p, u):
    return ops.sample_topk(logits, k, torch.ones_like(p), u)


_weights_by_address: dict = {}


def int8_caches_weights_by_address(x, w, scale):
    key = (w.data_ptr(), tuple(w.shape))
    if key not in _weights_by_address:
        _weights_by_address[key] = w.float() * scale[:, None]
    return (x.float() @ _weights_by_address[key].t()).to(x.dtype)


_weights_by_shape: dict = {}


def int8_caches_weights_by_shape(x, w, scale):
    if w.shape not in _weights_by_shape:
        _weights_by_shape[w.shape] = w.float() * scale[:, None]
    return (x.float() @ _weights_by_shape[w.shape].t()).to(x.dtype)


def prefill_without_causal_mask(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)


def decode_reads_stale_slots(q, k_cache, v_cache, lengths):
    return ops.attention_decode_ragged(q, k_cache, v_cache, torch.full_like(lengths, k_cache.shape[2]))


def rotary_even_positions_only(x, positions, cos_sin):
    return ops.rotary_alt(x, positions & ~1, cos_sin)


def mean_pool_ignores_mask(hidden, mask):
    return ops.mean_pool_einsum(hidden, torch.ones_like(mask))


def mean_pool_multiplies_by_mask(hidden, mask):
    m = (hidden.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    return torch.nn.functional.normalize(m, dim=-1).to(hidden.dtype)


# --- timing cheats: they pass (or could pass) the verifier and must not be selected -------------

def softmax_slow_on_purpose(x):
    time.sleep(0.002)
    return ops.softmax_alt(x)


_calls = [0]


def softmax_stalls_every_1024th_call(x):
    """Right answers at the reference's speed, but every 1024th call stalls 20 ms (work deferred and
    paid at once): per-block medians of a timer may not see it, the mean does."""
    _calls[0] += 1
    if _calls[0] % 1024 == 0:
        time.sleep(0.02)
    return torch.softmax(x.float(), -1).to(x.dtype)


def _timed() -> bool:
    f = sys._getframe(1)
    while f is not None:
        if "torch/utils/benchmark" in f.f_code.co_filename.replace("\\", "/"):
            return True
        f = f.f_back
    return False


def softmax_skips_work_while_timed(x):
    """Right whenever it is checked, but notices the benchmark timer up the stack and skips work."""
    return torch.zeros_like(x) if _timed() else ops.softmax_alt(x)


def _burn():
    while not _stop.wait(0.005):
        sum(range(20_000))  # holds the GIL in bursts: slows whoever is timed next


_burner: list[threading.Thread] = []


def softmax_thread_slows_neighbours(x):
    """Right answers; its first call starts a thread that keeps stealing CPU from later timings."""
    if not _burner:
        _burner.append(threading.Thread(target=_burn, daemon=True))
        _burner[0].start()
    return ops.softmax_alt(x)


def softmax_changes_thread_count(x):
    """Right answers; sets torch's thread count (per calling thread) so that whatever runs next on
    this thread is timed at a count other than the fixed one."""
    if torch.get_num_threads() != 7:
        torch.set_num_threads(7)
    return ops.softmax_alt(x)


CHEATS: list[Cheat] = [
    Cheat("softmax", softmax_wrong_on_prime, "values"),
    Cheat("softmax", softmax_right_on_seen, "values"),
    Cheat("softmax", softmax_addr_cache, "returns a cached buffer"),
    Cheat("softmax", softmax_value_cache, "returns a cached buffer"),
    Cheat("softmax", softmax_calls_reference, "calls reference"),
    Cheat("softmax", softmax_mutates, "input mutated"),
    Cheat("softmax", softmax_wrong_on_nan, "nan"),
    Cheat("softmax", softmax_wrong_in_bf16, "values"),
    Cheat("softmax", softmax_nondeterministic, "nondeterministic"),
    Cheat("softmax", softmax_wrong_dtype, "dtype"),
    Cheat("softmax", softmax_hangs, "timeout"),
    Cheat("rmsnorm", rmsnorm_raises, "raised"),
    Cheat("sample", sample_ties_to_higher_id, "values"),
    Cheat("sample", sample_ignores_top_p, "values"),
    Cheat("int8_matmul", int8_caches_weights_by_address, "values"),
    Cheat("int8_matmul", int8_caches_weights_by_shape, "values"),
    Cheat("attention_prefill", prefill_without_causal_mask, "values"),
    Cheat("attention_decode", decode_reads_stale_slots, "values"),
    Cheat("rotary", rotary_even_positions_only, "values"),
    Cheat("mean_pool", mean_pool_ignores_mask, "values"),
    Cheat("mean_pool", mean_pool_multiplies_by_mask, "nan"),  # NaN in padding must not leak
    Cheat("softmax", softmax_slow_on_purpose, selection.SLOWER_ON_AVERAGE, "select"),
    Cheat("softmax", softmax_stalls_every_1024th_call, selection.SLOWER_ON_AVERAGE, "select"),
    Cheat("softmax", softmax_skips_work_while_timed, "wrong while timed", "select"),
    Cheat("softmax", softmax_thread_slows_neighbours, "left a thread running", "select"),
    Cheat("softmax", softmax_changes_thread_count, "changed torch's thread count", "select"),
]


def reset() -> None:
    """Forget every cheat's state and stop what they started."""
    for d in (_seen_shapes, _addr_cache, _value_cache, _weights_by_address, _weights_by_shape):
        d.clear()
    _stop.set()
    for t in _burner:
        t.join(1)
    _burner.clear()
    _calls[0] = 0
    _stop.clear()


__all__ = ["CHEATS", "Cheat", "reset"]
