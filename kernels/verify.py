"""Verify candidate kernels against their plain-torch eager reference (issue 16, point 2).

A candidate is accepted only when, for every shape of the op's spec, every claimed dtype and
every seed, on fresh random inputs per trial, its output matches the reference's within the
dtype's tolerance (|c - r| <= atol + rtol |r|, NaN/Inf where and only where the reference has
them; integer outputs such as sampled token ids must be equal), has the reference's shape and
dtype, leaves its inputs unmodified, does not call the reference, does not return stale results
(the same buffers, integer ones included, refilled with new values must give new answers), is
deterministic when it claims to be, and returns within the per-call timeout.
The first failing case is recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from kernels import ops

# (atol, rtol) per dtype of the op's floating inputs. References compute in float32 and round once
# to the dtype, so a candidate that also accumulates in float32 differs by float32 noise plus at most
# one rounding step of the output dtype: bf16 keeps 8 significant bits (a step is 2^-8 ≈ 0.4 %
# relative), fp16 11 bits (2^-11 ≈ 0.05 %); rtol allows a few steps, atol covers results near 0.
TOLERANCE = {torch.float32: (1e-5, 1e-4), torch.bfloat16: (1e-2, 2e-2), torch.float16: (1e-3, 2e-3)}


@dataclass(frozen=True)
class Candidate:
    op: str
    name: str
    fn: Callable
    dtypes: tuple[torch.dtype, ...]
    deterministic: bool = True
    # Extra seconds the first call of each case may take (a JIT compiling for a new shape or dtype);
    # every other call gets the plain per-call timeout.
    compile_s: float = 0.0


@dataclass(frozen=True)
class Failure:
    op: str
    shape: tuple
    dtype: str
    seed: int
    check: str
    max_error: float = float("nan")
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    candidate: str
    op: str
    accepted: bool
    failure: Failure | None = None
    cases: int = 0
    notes: list[str] = field(default_factory=list)


class _Timeout(Exception):
    pass


def _call(fn: Callable, args: tuple, timeout_s: float):
    """Run fn(*args) in a daemon thread; a call past timeout_s is abandoned and reported."""
    box: dict = {}

    def target():
        try:
            with ops.reference_forbidden():
                box["out"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - any failure rejects the candidate
            box["err"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise _Timeout(f"no result in {timeout_s}s")
    if "err" in box:
        raise box["err"]
    return box["out"]


def _same(a, b) -> bool:
    """Bit-for-bit the same values, NaN equal to NaN (for inputs, and for determinism)."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return a is b or a == b
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def _mismatch(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> tuple[str, float] | None:
    if not isinstance(out, torch.Tensor):
        return "type", float("nan")
    if out.shape != ref.shape:
        return "shape", float("nan")
    if out.dtype != ref.dtype:
        return "dtype", float("nan")
    if not ref.is_floating_point():  # ids, counts: exact
        return ("values", float((out - ref).abs().max())) if not torch.equal(out, ref) else None
    o, r = out.double(), ref.double()
    if not torch.equal(torch.isnan(o), torch.isnan(r)):
        return "nan", float("nan")
    inf = torch.isinf(r)
    if not torch.equal(torch.isinf(o), inf) or not torch.equal(o[inf], r[inf]):
        return "inf", float("nan")
    finite = ~torch.isnan(r) & ~inf
    err = (o[finite] - r[finite]).abs()
    atol, rtol = TOLERANCE.get(dtype, (0.0, 0.0))
    worst = float(err.max()) if err.numel() else 0.0
    if bool((err > atol + rtol * r[finite].abs()).any()):
        return "values", worst
    return None


def verify(c: Candidate, seeds: tuple[int, ...] = (0, 1, 2), timeout_s: float = 10.0,
           shapes: tuple[tuple[int, ...], ...] | None = None, device: str = "cpu") -> Verdict:
    """Check `c` on `shapes` (default: all of its op's spec) x claimed dtypes x seeds x {plain, special},
    with inputs made on the CPU (the same values on every device) and moved to `device`."""
    spec = ops.SPECS[c.op]
    cases = 0
    for dtype in c.dtypes:
        if dtype not in spec.dtypes:
            return Verdict(c.name, c.op, False, Failure(c.op, (), str(dtype), -1, "unclaimed dtype"))
        for shape in spec.shapes if shapes is None else shapes:
            for seed in seeds:
                for special in (False, True):
                    fail = _one_case(c, spec, shape, dtype, seed, special, timeout_s, device)
                    cases += 1
                    if fail:
                        return Verdict(c.name, c.op, False, fail, cases)
    return Verdict(c.name, c.op, True, None, cases)


@dataclass(frozen=True)
class Refused:
    """A call that gave no output to compare: the check that failed and what happened."""
    check: str
    detail: str = ""


def _checked_call(fn: Callable, args: tuple, timeout_s: float):
    """fn(*args) through `_call`, or the Refused that names why it gave no output."""
    try:
        return _call(fn, args, timeout_s)
    except _Timeout as e:
        return Refused("timeout", str(e))
    except ops.ReferenceCalled:
        return Refused("calls reference")
    except Exception as e:  # noqa: BLE001 - any failure rejects the candidate
        return Refused("raised", repr(e))


def _one_case(c, spec, shape, dtype, seed, special, timeout_s, device="cpu") -> Failure | None:
    def fail(check, err=float("nan"), detail=""):
        return Failure(c.op, tuple(shape), str(dtype), seed, check, err, detail)

    g = torch.Generator().manual_seed(seed * 7919 + hash(tuple(shape)) % 1000)
    args = ops.on(spec.make(shape, dtype, g, special), device)
    copies = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
    ref = spec.reference(*copies)
    out = _checked_call(c.fn, args, timeout_s + c.compile_s)
    if isinstance(out, Refused):
        return fail(out.check, detail=out.detail)
    for a, b in zip(args, copies, strict=True):
        if not _same(a, b):
            return fail("input mutated")
    bad = _mismatch(out, ref, dtype)
    if bad:
        return fail(bad[0], bad[1])
    # Refill the same buffers (integer ones too: weights, ids, lengths) with new values: stale
    # (address- or value-cached) answers show here.
    g2 = torch.Generator().manual_seed(seed * 104729 + 1)
    fresh = spec.make(shape, dtype, g2, special)
    for a, f in zip(args, fresh, strict=True):
        if isinstance(a, torch.Tensor):
            a.copy_(f)
    ref2 = spec.reference(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args))
    out2 = _checked_call(c.fn, args, timeout_s)
    if isinstance(out2, Refused):
        return fail(out2.check, detail=out2.detail)
    bad = _mismatch(out2, ref2, dtype)
    if bad:
        stale = _mismatch(out2, ref, dtype) is None  # still the answer for the old values
        return fail(("stale result: " if stale else "") + bad[0], bad[1], "on the same buffers refilled")
    if isinstance(out2, torch.Tensor) and out2.untyped_storage().data_ptr() == out.untyped_storage().data_ptr():
        return fail("returns a cached buffer")
    if c.deterministic:
        out3 = _checked_call(c.fn, args, timeout_s)
        if isinstance(out3, Refused):
            return fail(out3.check, detail=out3.detail)
        if not _same(out3, out2):
            return fail("nondeterministic")
    return None
