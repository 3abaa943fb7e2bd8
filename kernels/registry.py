"""The selection shell (issue 16, point 4): verify candidates, race the verified ones against the
reference per (dtype, shape), apply `kernels.selection.choose`, and record each decision with its
evidence as a `Row`; rows go to a JSON export file, the `kernel_selection` table and the dispatch
registry.

Verification and timing are measured here; the decision is the pure rule in `kernels.selection`.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from kernels import ops, selection, timing
from kernels.verify import TOLERANCE, Candidate, Verdict, _mismatch, verify

SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Settings:
    """How hard to look: seeds and shapes verified, and the race's rounds and run time per block."""
    seeds: tuple[int, ...] = SEEDS
    rounds: int = 5
    min_run_time: float = 0.05
    num_threads: int = 1
    timeout_s: float = 10.0
    verify_shapes: dict[str, tuple] | None = None  # per op; an op not named: every shape of its spec
    device: str = "cpu"  # where candidates are verified and timed: "cpu", "cuda"


@dataclass(frozen=True)
class Row:
    """One selection with its evidence (one row of the export file and of the table)."""
    op: str
    device_class: str
    dtype: str
    shape_bucket: int
    shape: tuple[int, ...]
    chosen: str  # a candidate's name, or "reference"
    speedup: float
    spread: float
    reference_s: float
    best_verified: str  # the fastest verified candidate, chosen or not ("" when none verified)
    best_verified_s: float
    atol: float
    rtol: float
    seeds: tuple[int, ...]
    torch_version: str
    device: str
    measured_at: str
    passed_over: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True)
class Checked:
    """A candidate after verification, with what it changed in the process while verified."""
    candidate: Candidate
    verdict: Verdict
    side_effect: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict.accepted and not self.side_effect


def check(c: Candidate, s: Settings) -> Checked:
    """Verify `c`, and watch that it leaves no thread running and torch's thread count as it was."""
    before, n = set(threading.enumerate()), torch.get_num_threads()
    verdict = verify(c, seeds=s.seeds, timeout_s=s.timeout_s, shapes=(s.verify_shapes or {}).get(c.op),
                     device=s.device)
    return Checked(c, verdict, timing.side_effects(before, n))


def select_shape(op: str, dtype: torch.dtype, shape: tuple[int, ...], checked: Sequence[Checked],
                 s: Settings, device_class: str = "cpu", now: datetime | None = None) -> Row:
    """Race the reference and the verified candidates claiming `dtype` on one shape, and choose."""
    spec = ops.SPECS[op]
    args = ops.on(spec.make(shape, dtype, torch.Generator().manual_seed(s.seeds[0]), False), s.device)
    claiming = [k for k in checked if dtype in k.candidate.dtypes]
    racing = {k.candidate.name: k.candidate.fn for k in claiming if k.ok}
    times = timing.race(spec.reference, racing, args, lambda out, ref: _mismatch(out, ref, dtype) is None,
                        rounds=s.rounds, min_run_time=s.min_run_time, num_threads=s.num_threads)
    ref = times[timing.REFERENCE]
    contenders = [selection.Contender(k.candidate.name, k.ok, times.get(k.candidate.name)) for k in claiming]
    choice = selection.choose(ref, contenders)
    clean = [t for n, t in times.items() if n != timing.REFERENCE and not t.problem]
    best = min(clean, key=lambda t: t.median_s, default=None)
    atol, rtol = TOLERANCE.get(dtype, (0.0, 0.0))
    passed_over = dict(choice.reasons)
    passed_over.update((k.candidate.name, k.side_effect or _failure(k.verdict)) for k in claiming if not k.ok)
    return Row(op, device_class, str(dtype).removeprefix("torch."), selection.bucket(shape), tuple(shape),
               choice.chosen, choice.speedup, choice.spread, ref.median_s,
               best.name if best else "", best.median_s if best else float("nan"), atol, rtol, s.seeds,
               torch.__version__, str(args[0].device), (now or datetime.now(UTC)).isoformat(),
               tuple(passed_over.items()))


def _failure(v: Verdict) -> str:
    f = v.failure
    return f"{selection.NOT_VERIFIED}: {f.check} at shape {f.shape} {f.dtype} seed {f.seed}" if f else ""


def run(candidates: Iterable[Candidate], s: Settings, shapes: dict[str, Sequence[tuple]] | None = None,
        dtypes: Sequence[torch.dtype] = ops.FLOATS, device_class: str = "cpu",
        progress: Callable[[str], None] | None = None) -> tuple[list[Checked], list[Row]]:
    """Verify every candidate, then select per (op, dtype, shape) for every op that has one.
    `shapes` overrides an op's spec shapes (the bench's sweep, a quick run's small ones)."""
    by_op: dict[str, list[Checked]] = {}
    checked = []
    for c in candidates:
        if progress:
            progress(f"verify {c.name}")
        k = check(c, s)
        checked.append(k)
        by_op.setdefault(c.op, []).append(k)
    rows = []
    for op, ks in by_op.items():
        for dtype in dtypes:
            for shape in (shapes or {}).get(op, ops.SPECS[op].shapes):
                if progress:
                    progress(f"time {op} {str(dtype).removeprefix('torch.')} {shape}")
                rows.append(select_shape(op, dtype, tuple(shape), ks, s, device_class))
    return checked, rows


def per_bucket(rows: Sequence[Row]) -> list[Row]:
    """One row per (op, device class, dtype, bucket): of shapes that share a bucket, the largest
    one measured stands for it (what is stored and dispatched on)."""
    keep: dict[tuple, Row] = {}
    for r in rows:
        key = (r.op, r.device_class, r.dtype, r.shape_bucket)
        if key not in keep or _size(r.shape) >= _size(keep[key].shape):
            keep[key] = r
    return list(keep.values())


def _size(shape) -> int:
    return math.prod(shape)


def export(rows: Sequence[Row], path: Path) -> None:
    """Write the rows as JSON ({"rows": [...]}), replacing the file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"rows": [asdict(r) for r in rows]}, indent=1, allow_nan=True))
    tmp.replace(path)


__all__ = ["SEEDS", "Checked", "Row", "Settings", "check", "export", "per_bucket", "run", "select_shape"]
