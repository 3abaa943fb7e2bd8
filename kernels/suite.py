"""The candidate suite: every candidate of every op, built-in and from files, in one list.

Built-in candidates are the honest alternative formulations in `kernels.ops`; files come from
`kernels/candidates/` (or a folder given to `load`) through the same door. `verify`, `bench` and
the selection all iterate over `all_candidates()`, so a new op or a new file shows up everywhere.
"""

from __future__ import annotations

from pathlib import Path

from kernels import candidates, ops
from kernels.verify import Candidate

F = ops.FLOATS


def builtin() -> list[Candidate]:
    return [
        Candidate("rmsnorm", "rmsnorm_alt", ops.rmsnorm_alt, F),
        Candidate("swiglu", "swiglu_alt", ops.swiglu_alt, F),
        Candidate("softmax", "softmax_alt", ops.softmax_alt, F),
        Candidate("rotary", "rotary_alt", ops.rotary_alt, F),
        Candidate("rotary", "rotary_halves_in_place", ops.rotary_halves_in_place, F),
        Candidate("attention_prefill", "attention_prefill_blocked", ops.attention_prefill_blocked, F),
        Candidate("attention_decode", "attention_decode_ragged", ops.attention_decode_ragged, F),
        Candidate("sample", "sample_topk", ops.sample_topk, F),
        Candidate("mean_pool", "mean_pool_einsum", ops.mean_pool_einsum, F),
        Candidate("int8_matmul", "int8_matmul_scale_after", ops.int8_matmul_scale_after, F),
    ]


def all_candidates(folder: Path | None = None, compiled: bool = False) -> list[Candidate]:
    """Built-ins, then (when `compiled`) the built-ins compiled by inductor, then the files of
    `folder` (default `kernels/candidates/`). Compiled ones are opt-in: compiling costs seconds."""
    found = builtin()
    if compiled:
        from kernels import compiled as inductor  # imports torch's compiler stack only when asked

        found += inductor.candidates(builtin())
    return found + (candidates.load(folder) if folder else candidates.load())


def for_op(op: str, folder: Path | None = None, compiled: bool = False) -> list[Candidate]:
    if op not in ops.SPECS:
        raise KeyError(f"unknown op {op!r}; known: {', '.join(sorted(ops.SPECS))}")
    return [c for c in all_candidates(folder, compiled) if c.op == op]


__all__ = ["all_candidates", "builtin", "for_op"]
