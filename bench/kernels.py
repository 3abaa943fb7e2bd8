"""Selected kernels against eager torch on the op suite, and false accepts on the injected cheats.

    .venv/bin/python bench/kernels.py [--quick] [--no-compiled] [--dtype float32 ...] [--threads 1]

Every candidate of every op (the built-in alternatives, their inductor-compiled versions unless
--quick or --no-compiled, and the files of kernels/candidates/) goes through the verifier, then the
verified ones race the eager reference per (op, dtype, shape) in interleaved rounds
(kernels.timing), and the selection rule (kernels.selection) keeps a candidate only when it is
clearly faster. The baseline is the eager reference, timed in the same rounds.

Printed: per op and shape the reference's time, the best verified candidate's time and speedup, and
what was selected; the geometric mean over all (op, dtype, shape) rows of the selected kernel's
speedup over eager (1.0 where the reference was kept); KernelBench's fast_0 and fast_1 with each
row's fastest candidate as the kernel under test (the reference never counts): fast_0 is the share
of rows where that kernel is correct (some candidate passed the verifier), fast_1 the share where it
is correct and its median time beats eager's; and the false accepts on kernels/cheats.py (a verify-stage cheat accepted by
the verifier, or a select-stage cheat selected). The figure printed last is the geomean speedup.

First compile of the inductor candidates costs minutes on a small CPU; inductor's cache
(kernels.compiled.cache_dir) makes later runs load them instead.
"""

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from kernels import cheats, ops, registry, suite  # noqa: E402
from kernels.timing import REFERENCE  # noqa: E402
from kernels.verify import Candidate, verify  # noqa: E402


def false_accepts(s: registry.Settings) -> tuple[int, int, list[str]]:
    """(false accepts, cheats tried, names of those accepted) over kernels.cheats.CHEATS."""
    accepted = []
    for cheat in cheats.CHEATS:
        cheats.reset()
        c = Candidate(cheat.op, cheat.name, cheat.fn, ops.FLOATS)
        small = ops.SPECS[cheat.op].shapes[:-1]
        if cheat.stage == "verify":
            if verify(c, seeds=s.seeds, timeout_s=1.0, shapes=small).accepted:
                accepted.append(cheat.name)
        else:
            k = registry.check(c, registry.Settings(s.seeds, s.rounds, s.min_run_time, s.num_threads,
                                                    verify_shapes={cheat.op: small}))
            row = registry.select_shape(cheat.op, torch.float32, small[-1], [k], s)
            if row.chosen != REFERENCE:
                accepted.append(cheat.name)
    cheats.reset()
    return len(accepted), len(cheats.CHEATS), accepted


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="spec shapes but the largest, 3 short rounds, no compile")
    p.add_argument("--no-compiled", action="store_true", help="leave out the inductor-compiled candidates")
    p.add_argument("--dtype", action="append", choices=["float32", "bfloat16", "float16"],
                   help="dtypes timed (repeatable; default float32)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while timed (default 1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 5, quick 3)")
    a = p.parse_args()
    if a.threads < 1 or (a.rounds is not None and not 1 <= a.rounds <= 100):
        p.error("--threads must be >= 1 and --rounds between 1 and 100")
    dtypes = [getattr(torch, d) for d in (a.dtype or ["float32"])]
    compiled = not (a.quick or a.no_compiled)
    rounds = a.rounds or (3 if a.quick else 5)
    shapes = {o: s.shapes[:-1] if a.quick else s.shapes for o, s in ops.SPECS.items()}
    s = registry.Settings(seeds=(0, 1), rounds=rounds, min_run_time=0.01 if a.quick else 0.05,
                          num_threads=a.threads, verify_shapes={o: sh[:-1] for o, sh in shapes.items()} if a.quick else None)
    console = Console(width=max(Console().width, 150))  # the table unwrapped, also in a log file
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available, timed at {a.threads}; "
                  f"compiled candidates: {'yes' if compiled else 'no'}; dtypes {', '.join(map(str, dtypes))}")
    candidates = suite.all_candidates(compiled=compiled)
    started = time.monotonic()
    with Progress(console=console, transient=True) as bar:
        steps = len(candidates) + sum(len(v) for v in shapes.values()) * len(dtypes)
        task = bar.add_task("kernels", total=steps)
        checked, rows = registry.run(candidates, s, shapes=shapes, dtypes=dtypes,
                                     progress=lambda what: bar.update(task, advance=1, description=what))
    verified = {k.candidate.name for k in checked if k.ok}
    for k in checked:
        if not k.ok:
            f = k.verdict.failure
            console.print(f"[red]rejected[/red] {k.candidate.name}: {k.side_effect or (f.check, f.shape, f.dtype)}")
    table = Table("op", "dtype", "shape", "eager µs", "best verified", "µs", "speedup", "selected", "sel. speedup",
                  "spread")
    for r in rows:
        best = r.best_verified
        table.add_row(r.op, r.dtype, "x".join(map(str, r.shape)), f"{r.reference_s * 1e6:.1f}", best or "-",
                      f"{r.best_verified_s * 1e6:.1f}" if best else "-",
                      f"{r.reference_s / r.best_verified_s:.2f}x" if best else "-", r.chosen, f"{r.speedup:.2f}x",
                      f"{r.spread:.1%}")
    console.print(table)
    assert all(r.chosen == REFERENCE or r.chosen in verified for r in rows), "an unverified kernel was selected"
    fast_0 = sum(bool(r.best_verified) for r in rows) / len(rows)
    fast_1 = sum(bool(r.best_verified) and r.best_verified_s < r.reference_s for r in rows) / len(rows)
    geomean = math.exp(sum(math.log(r.speedup) for r in rows) / len(rows))
    console.print(f"suite: {len(rows)} (op, dtype, shape) rows, {len(candidates)} candidates "
                  f"({len(verified)} verified), {time.monotonic() - started:.0f} s")
    console.print(f"fast_0 (fastest candidate correct): {fast_0:.2f}   "
                  f"fast_1 (correct and faster than eager): {fast_1:.2f}")
    bad, tried, names = false_accepts(s)
    console.print(f"false accepts on the injected suite: {bad} of {tried} cheats"
                  f" ({len({c.stage + c.check for c in cheats.CHEATS})} kinds of check){': ' + ', '.join(names) if names else ''}")
    console.print(f"geomean speedup of selected kernels over eager: {geomean:.3f}x")


if __name__ == "__main__":
    main()
