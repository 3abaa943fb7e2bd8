"""`torch.compile` (inductor) candidates: every built-in alternative, compiled, through the same door.

Compiling costs seconds per graph on a small CPU, so these candidates are opt-in
(`suite.all_candidates(compiled=True)`, used by verify and bench, not by the tests), compile lazily on
their first call, and keep inductor's artifacts in a persistent cache outside the repository
(`TORCHINDUCTOR_CACHE_DIR` when set, else `$XDG_CACHE_HOME/heteroplane/inductor`, default
`~/.cache/...`), so a later run loads compiled code instead of compiling again. Shapes are compiled
dynamic (one graph serves every size of a dtype and layout); ops with data-dependent sizes (decode
lengths, the largest k) break the graph there and run those steps eagerly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from kernels.verify import Candidate

# Seconds the first call of a verification case may add for compiling (a new dtype or layout).
COMPILE_ALLOWANCE_S = 300.0
# Graphs per function before dynamo gives up and runs it eagerly: dtypes x layouts x graph breaks
# of one op stay well below this, so a verified compiled candidate is compiled code throughout.
RECOMPILE_LIMIT = 64


def cache_dir() -> Path:
    """Where inductor keeps compiled artifacts across runs (never inside the git tree)."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "heteroplane" / "inductor"


def compiled(c: Candidate, dynamic: bool = True) -> Candidate:
    """`c` compiled by inductor, claiming the same dtypes and determinism."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir()))
    fn = torch.compile(c.fn, dynamic=dynamic)
    return Candidate(c.op, f"{c.name}+inductor", _within_limit(fn), c.dtypes, c.deterministic,
                     compile_s=COMPILE_ALLOWANCE_S)


def _within_limit(fn: Callable) -> Callable:
    def run(*args):
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            return fn(*args)
    return run


def candidates(base: list[Candidate]) -> list[Candidate]:
    return [compiled(c) for c in base]
