"""Wall time of `heteroplane plan` on a small problem against the solver's own import (issue 10, point 7).

    .venv/bin/python bench/cli_start.py [--runs 9] [--checkout PATH] [--problem FILE]

Each round starts three fresh interpreters, one after another, and times each from spawn to exit:

  * `python -c pass`: the interpreter's start;
  * `python -c "import ortools.sat.python.cp_model"`: the baseline, the import no plan can skip
    (it brings numpy and pandas with it);
  * `python -m controlplane.cli plan PROBLEM`: the command, run in the checkout (`-m` from its root,
    so it times that checkout's code whatever `heteroplane` on PATH points at; point --checkout at
    an unpacked older commit for a before/after).

One round of each is run first and thrown away (it warms the file cache). The table gives the median
and range of each over the rounds. The figure printed last is the command's time over the baseline's,
taken within each round (the machine is shared, so neighbours in time see the same load): its median
and range. 1.0x would be a command that costs nothing but the solver's import.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall_s(argv: list[str], cwd: Path) -> float:
    """Seconds from spawning `argv` to its exit; a failed run (plan: any exit but 0) stops the benchmark."""
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def spread(values: list[float], unit: float = 1.0, fmt: str = "{:.0f}") -> str:
    """'median (min–max)' of `values` scaled by `unit`."""
    low, mid, high = (fmt.format(v * unit) for v in (min(values), statistics.median(values), max(values)))
    return f"{mid} ({low}–{high})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9, help="timed rounds (default 9)")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose CLI to time (default: this one)")
    parser.add_argument("--problem", type=Path, default=ROOT / "examples" / "problem.json",
                        help="the Problem to plan (default: examples/problem.json)")
    args = parser.parse_args()
    commands = {
        "interpreter start (python -c pass)": [sys.executable, "-c", "pass"],
        "solver import (baseline)": [sys.executable, "-c", "import ortools.sat.python.cp_model"],
        "heteroplane plan": [sys.executable, "-m", "controlplane.cli", "plan", str(args.problem.resolve())],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(args.runs + 1):
        for name, argv in commands.items():
            took = wall_s(argv, args.checkout)
            if round_:
                times[name].append(took)

    print(f"{args.runs} rounds, checkout {args.checkout.resolve()}")
    print(f"{'':38} {'median (range), ms':>22}")
    for name, values in times.items():
        print(f"{name:38} {spread(values, 1000):>22}")
    plan, baseline = times["heteroplane plan"], times["solver import (baseline)"]
    print(f"{'plan less solver import':38} {spread([p - b for p, b in zip(plan, baseline, strict=True)], 1000):>22}")
    ratios = [p / b for p, b in zip(plan, baseline, strict=True)]
    print(f"heteroplane plan / solver import: {spread(ratios, fmt='{:.2f}x')}")


if __name__ == "__main__":
    main()
