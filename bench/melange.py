"""Mélange's ground: its Llama2-7b bucket table x Azure conv/code request mixes x 1, 4, 16, 64 req/s.

For each case, in the same run: the best single GPU type, Mélange's ILP (SCIP, slice factor 8) and
ours (CP-SAT, one fragment with bucketed demand, headroom 1.0, capacity ample, no SLA).

    .venv/bin/python bench/melange.py [--shared ../shared/data]
"""

import argparse
import csv
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optimizer.baselines import GpuOffer, best_single_class, melange  # noqa: E402
from optimizer.buckets import melange_problem  # noqa: E402
from optimizer.checker import check  # noqa: E402
from optimizer.profiles import bucket_of, load_bucket_table  # noqa: E402
from optimizer.solver import solve  # noqa: E402

RATES = (1, 4, 16, 64)
TRACES = ("conv", "code")


def request_mix(table, trace: Path) -> dict[tuple[int, int], float]:
    """Share of requests per (input bucket, output bucket); lengths past the last edge clamp to the last bucket."""
    counts: Counter[tuple[int, int]] = Counter()
    with trace.open() as fh:
        for row in csv.DictReader(fh):
            counts[bucket_of(table, float(row["ContextTokens"]), float(row["GeneratedTokens"]))] += 1
    total = sum(counts.values())
    return {b: n / total for b, n in sorted(counts.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    parser.add_argument("--shared", type=Path, default=default)
    args = parser.parse_args()
    table = load_bucket_table(args.shared / "melange" / "llama2-7b-profiles.json")
    gpus = [GpuOffer(row.device_class, row.usd_per_hour,
                     {(i, j): row.max_rps[i][j] for i in range(table.buckets) for j in range(table.buckets)})
            for row in table.rows]
    header = (f"{'case':<10} {'single $/h':>10} {'Mélange $/h':>11} {'ours $/h':>9} {'ours/Mél':>8} "
              f"{'ours/single':>11} {'t single':>9} {'t Mélange':>10} {'t ours':>8}  ours' devices")
    print(header)
    print("-" * len(header))
    cost_ratios, time_ratios = [], []
    for trace in TRACES:
        mix = request_mix(table, args.shared / "azure-llm-2023" / f"{trace}.csv")
        for rate in RATES:
            demand = {b: share * rate for b, share in mix.items()}
            single = best_single_class(demand, gpus)
            mel = melange(demand, gpus)
            problem = melange_problem(demand, gpus, headroom=1.0, time_limit_s=60.0)
            plan = solve(problem)
            violations = check(problem, plan)
            if violations or not plan.feasible:
                raise SystemExit(f"{trace}@{rate}: our plan fails the checker: {violations or plan.diagnosis}")
            cost_ratios.append(plan.usd_per_hour / mel.usd_per_hour)
            time_ratios.append(plan.solve_time_s / mel.solve_time_s)
            devices = ", ".join(f"{c} {n}" for c, n in sorted(plan.replicas_of("llm").items()))
            status = "" if plan.status.value == "optimal" else f" ({plan.status.value})"
            print(f"{f'{trace}@{rate}':<10} {single.usd_per_hour:>10.2f} {mel.usd_per_hour:>11.2f} "
                  f"{plan.usd_per_hour:>9.2f} {plan.usd_per_hour / mel.usd_per_hour:>8.3f} "
                  f"{plan.usd_per_hour / single.usd_per_hour:>11.3f} {single.solve_time_s * 1e3:>7.2f}ms "
                  f"{mel.solve_time_s * 1e3:>8.1f}ms {plan.solve_time_s * 1e3:>6.1f}ms  {devices}{status}"
                  + ("" if mel.optimal else "  [Mélange not proven optimal]"))
    print()
    print(f"worst ours/Mélange cost ratio: {max(cost_ratios):.4f} (target <= 1.0)")
    print(f"median ours/Mélange solve-time ratio: {statistics.median(time_ratios):.3f} (target < 1)")


if __name__ == "__main__":
    main()
