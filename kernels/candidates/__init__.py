"""Candidate kernels as files: each module here (or in a folder given to `load`) defines `OP`,
`DTYPES` (names such as "float32"), optionally `DETERMINISTIC`, and `kernel` with the op's
signature. They go through the same verifier as the built-in alternatives."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from kernels.verify import Candidate

HERE = Path(__file__).parent


def load(folder: Path = HERE) -> list[Candidate]:
    found = []
    for path in sorted(Path(folder).glob("*.py")):
        if path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"kernel_candidate_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        dtypes = tuple(getattr(torch, d) for d in mod.DTYPES)
        found.append(Candidate(mod.OP, path.stem, mod.kernel, dtypes, getattr(mod, "DETERMINISTIC", True)))
    return found
