"""Op specs with a plain-torch eager reference each (issue 16, point 1; a first slice of the suite).

A spec names the op, its claimed dtypes, the shapes it is checked on (size 1, odd, prime, large,
and non-contiguous inputs made by transposing a buffer), and how to make random inputs, with an
option to plant special values (NaN, +-Inf, large magnitudes). References refuse to run while a
candidate is running (`reference_forbidden`), so a candidate that calls one is caught.
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


@dataclass(frozen=True)
class Spec:
    name: str
    reference: Callable
    make: Callable
    dtypes: tuple[torch.dtype, ...]
    shapes: tuple[tuple[int, int], ...]


FLOATS = (torch.float32, torch.bfloat16, torch.float16)
SHAPES = ((1, 1), (3, 7), (13, 31), (2, 64), (257, 1024))
EVEN = ((1, 2), (3, 14), (13, 62), (2, 64), (257, 1024))

SPECS = {
    "rmsnorm": Spec("rmsnorm", rmsnorm_ref,
                    lambda s, d, g, sp: (_x(s, d, g, sp), (torch.rand(s[1], generator=g) + 0.5).to(d)),
                    FLOATS, SHAPES),
    "swiglu": Spec("swiglu", swiglu_ref, lambda s, d, g, sp: (_x(s, d, g, sp),), FLOATS, EVEN),
    "softmax": Spec("softmax", softmax_ref, lambda s, d, g, sp: (_x(s, d, g, sp),), FLOATS, SHAPES),
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
