"""Time a reference and its verified candidates on the same inputs, in interleaved rounds (issue 16,
points 3 and 4).

`race` measures with `torch.utils.benchmark.Timer.blocked_autorange` (it warms up while sizing its
blocks; we add explicit warm-up calls first) at a fixed thread count (`num_threads`, 1 by default so
figures do not depend on what else the machine runs). Each round times every contender once, the
order rotating from round to round (round-robin): a contender that slows the machine for whoever runs
next slows itself in the next round too, and the selection demands a win in every round.

Timing is not trusted blindly: every call made while timed keeps its last output, which must still
match the reference's answer on those inputs (a kernel that notices it is being timed and skips work
is caught), and a contender must leave the process as it found it: no thread of its own left
running (one that burns CPU would slow its neighbours' windows; torch's own workers, such as
inductor's compile pool, are not the candidate's) and the same torch thread count. A thread that
runs only standard-library or torch code (no frame of the candidate's) is not seen; the
every-round rule still holds against it, since it slows the candidate's own windows too.

A `Timing` carries the median of all timed runs, the spread, IQR / median, over them, and the mean
(all timed seconds / all calls), which a stall every few thousand calls cannot hide from. The
reference is timed without its guard (`ops.reference` keeps the raw function as `__wrapped__`).
"""

from __future__ import annotations

import os
import statistics
import sys
import sysconfig
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch.utils import benchmark

REFERENCE = "reference"


@dataclass(frozen=True)
class Timing:
    """One contender's timed runs: seconds per call, overall and per round."""
    name: str
    median_s: float
    iqr_s: float
    rounds_s: tuple[float, ...]  # the median of each round, in round order
    problem: str = ""  # why the timed runs cannot be trusted ("" when they can)
    mean_s: float = float("nan")  # all timed seconds / all timed calls: what a rare stall cannot hide in

    def __post_init__(self):
        if self.mean_s != self.mean_s:  # NaN: no mean given, take the median
            object.__setattr__(self, "mean_s", self.median_s)

    @property
    def spread(self) -> float:
        """IQR / median: the relative noise of this contender's figure."""
        return self.iqr_s / self.median_s if self.median_s > 0 else float("inf")


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def race(reference: Callable, candidates: Mapping[str, Callable], args: tuple,
         check: Callable[[object, object], bool], rounds: int = 5, min_run_time: float = 0.05,
         num_threads: int = 1, warmup: int = 3) -> dict[str, Timing]:
    """Time `reference` (named REFERENCE) and each candidate on `args`, `rounds` interleaved rounds.

    `check(out, expected)` says whether an output timed is the reference's answer. Returns a Timing
    per name; a candidate whose timed outputs or side effects are wrong gets a `problem`."""
    if rounds < 1 or num_threads < 1:
        raise ValueError(f"rounds and num_threads must be >= 1 (got {rounds}, {num_threads})")
    fns = {REFERENCE: getattr(reference, "__wrapped__", reference), **candidates}
    last: dict[str, object] = {}
    problems: dict[str, str] = {}
    expected = reference(*args)

    def keeping(name, fn):
        def run(*a):
            out = fn(*a)
            last[name] = out
            return out
        return run

    kept = {n: keeping(n, f) for n, f in fns.items()}
    threads_before = set(threading.enumerate())
    torch_threads = torch.get_num_threads()
    for fn in kept.values():
        for _ in range(warmup):
            fn(*args)
    times: dict[str, list[float]] = {n: [] for n in fns}
    total = {n: [0.0, 0] for n in fns}  # seconds, calls
    per_round: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            last.pop(name, None)
            timer = benchmark.Timer("fn(*args)", globals={"fn": kept[name], "args": args},
                                    num_threads=num_threads)
            m = timer.blocked_autorange(min_run_time=min_run_time)
            times[name] += m.times
            total[name][0] += sum(m.raw_times)
            total[name][1] += m.number_per_run * len(m.raw_times)
            per_round[name].append(m.median)
            if name != REFERENCE and name not in problems:
                problems[name] = side_effects(threads_before, torch_threads) or (
                    "" if name in last and check(last[name], expected) else "wrong while timed")
    result = {}
    for name in names:
        q1, q3 = _quartiles(times[name])
        result[name] = Timing(name, statistics.median(times[name]), q3 - q1, tuple(per_round[name]),
                              problems.get(name, ""), total[name][0] / total[name][1])
    return result


def side_effects(threads_before: set, torch_threads: int) -> str:
    """What a contender changed that would skew its neighbours' timing ("" when nothing)."""
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
        return "changed torch's thread count"
    frames = sys._current_frames()
    if any(t.is_alive() and _runs_foreign_code(frames.get(t.ident))
           for t in set(threading.enumerate()) - threads_before):
        return "left a thread running"
    return ""


_OWN_CODE = (sysconfig.get_paths()["stdlib"], os.path.dirname(torch.__file__))


def _runs_foreign_code(frame) -> bool:
    """Whether a thread's stack holds code other than the standard library's and torch's. Torch
    starts threads of its own (inductor's compile pool: an idle concurrent.futures worker); a thread
    a candidate started has the candidate's code on its stack for as long as it lives."""
    while frame is not None:
        if not frame.f_code.co_filename.startswith(_OWN_CODE):
            return True
        frame = frame.f_back
    return False


__all__ = ["REFERENCE", "Timing", "race", "side_effects"]
