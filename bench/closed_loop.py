"""The closed-loop proof (issue 11, point 9): a compressed day through the simulated fleet under four controllers.

    PYTHONPATH=. python bench/closed_loop.py [--run-s 3600] [--period-s 60] [--day-s RUN_S] [--rate 1.0]
                                             [--solver-time-limit-s 2] [--only NAME ...] [--periods]

Method (controlplane/simfleet/replay.py). The hour of Azure requests in ../shared/data/azure-llm-2023
(conv drives rag-chatbot, code drives coding-agent; doc-pipeline is the sim's steady 0.5 rps batch
app, also shaped) is time-warped by a 24-hour load curve compressed into `--day-s` simulated seconds
(default: the run, so one compressed day): mean 1, peak:trough 5:1 (lowest at 04:00, highest at 16:00),
and a sharp x2 burst from 10:00 for 0.6 h of the day. At `--rate 1` the run consumes trace time at
the trace's own pace on average, so a 3600 s run replays the hour. Simulated time advances one period
at a time; requests replay through the fleet as the controller left it, their spans go through the
collectors (OTLP encoding, normalise, assemble, store) into a fresh SQLite database, and the
controller acts at each period's end on the simulated clock. Controllers (controlplane/simfleet/controllers.py):

  unmanaged    the apps' starting deployment (models on H100, the rest on CPU), never changed
  static       every LLM on H100 sized for its busiest period of the unmanaged run (the same
               requests): ceil(peak visits/s x H100 occupancy per visit / 0.7); the rest as the
               starting deployment; H100 nodes are added if the fleet has too few
  reactive     each fragment on its starting class, replicas as a Kubernetes HPA on a 70% target
               would set them (10% tolerance, 300 s scale-down stabilisation) from the sim's
               utilisation at the period's load
  heteroplane  controlplane.reconciler.Reconciler.run_once every period, settings for compressed
               time (controllers.compressed_time_settings): cooldown two periods, solver limit 2 s

Measured: cost per 1M LLM tokens ($ of the devices each controller's replicas hold, at the catalog's
$/h, over the LLM input + output tokens served), share of requests within their workload's p99 SLA
(a request with a failed visit misses), placements per hour of simulated time (periods whose end
changed what runs) and per compressed day. Printed last: heteroplane against static and reactive
($/1M tokens) and against unmanaged (SLA share), with the issue's goals.
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane.simfleet.controllers import (  # noqa: E402
    Heteroplane,
    Reactive,
    Static,
    Unmanaged,
    peak_loads,
    static_placement,
    with_enough_h100,
)
from controlplane.simfleet.replay import ClosedLoop, LoadCurve, ReplayConfig, RunResult  # noqa: E402

CONTROLLERS = ("unmanaged", "static", "reactive", "heteroplane")


def print_periods(result: RunResult, curve: LoadCurve) -> None:
    workloads = sorted({w.workload for p in result.periods for w in p.workloads})
    print(f"\n-- {result.controller}: per period (load = the curve's multiplier at the period's middle)")
    print(f"{'period':>6s} {'load':>5s} {'reqs':>5s} {'in SLA':>7s} {'failed':>6s} {'$':>6s} {'moved':>5s}  "
          + " ".join(f"{w[:12]:>12s}" for w in workloads))
    for p in result.periods:
        share = {w.workload: w.within_sla / w.requests for w in p.workloads if w.requests}
        mid = p.start_s + result.config.period_s / 2
        print(f"{p.index:6d} {curve.multiplier(mid):5.2f} {p.requests:5d} {p.within_sla / max(1, p.requests):7.1%} "
              f"{p.failed_requests:6d} {p.cost_usd:6.2f} {p.fragments_changed if p.placement_changed else '':>5}  "
              + " ".join(f"{share[w]:12.1%}" if w in share else f"{'-':>12s}" for w in workloads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-s", type=float, default=3600.0, help="simulated seconds (default 3600)")
    parser.add_argument("--period-s", type=float, default=60.0, help="simulated seconds per period (default 60)")
    parser.add_argument("--day-s", type=float, default=None, help="simulated seconds per compressed day (default: the run)")
    parser.add_argument("--rate", type=float, default=1.0, help="trace seconds per simulated second at load 1 (default 1)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--solver-time-limit-s", type=float, default=2.0)
    parser.add_argument("--only", nargs="*", choices=CONTROLLERS, default=CONTROLLERS)
    parser.add_argument("--periods", action="store_true", help="print every controller's periods")
    args = parser.parse_args()
    curve = LoadCurve(day_s=args.day_s or args.run_s)
    config = ReplayConfig(run_s=args.run_s, period_s=args.period_s, curve=curve, rate=args.rate, seed=args.seed)
    print(f"closed loop: {args.run_s:g} s simulated in {config.periods} periods of {args.period_s:g} s, "
          f"one day per {curve.day_s:g} s ({86400 / curve.day_s:g}x), rate {args.rate:g}, peak:trough "
          f"{curve.peak_to_trough:g}:1, burst x{curve.burst_factor:g} at {curve.burst_hour:g}:00 for "
          f"{curve.burst_hours:g} h")
    started = time.perf_counter()
    results: dict[str, RunResult] = {}
    unmanaged = ClosedLoop(Unmanaged(), config).run()  # static is sized from its loads: always run
    for name in CONTROLLERS:
        if name not in args.only:
            continue
        if name == "unmanaged":
            results[name] = unmanaged
        elif name == "static":
            sets, sizing = static_placement(config.apps, peak_loads(unmanaged), config.period_s)
            for fid, rule in sizing.items():
                print(f"static sizing {fid[1]}/{fid[2]}: {rule}")
            results[name] = ClosedLoop(Static(sets), replace(config, layout=with_enough_h100(sets, config.layout))).run()
        elif name == "reactive":
            results[name] = ClosedLoop(Reactive(), config).run()
        else:
            controller = Heteroplane(solver_time_limit_s=args.solver_time_limit_s)
            results[name] = ClosedLoop(controller, config).run()
            infeasible = sum(r.reason.startswith("no feasible plan") for r in controller.reports)
            print(f"heteroplane: {len(controller.reports)} cycles, {infeasible} with no feasible plan (kept the placement)")
        if args.periods:
            print_periods(results[name], curve)

    print(f"\n{'controller':12s} {'requests':>8s} {'in SLA':>7s} {'$ total':>8s} {'$/h':>7s} {'LLM Mtok':>8s} "
          f"{'$/1M tok':>8s} {'plc/h':>6s} {'plc/day':>7s} {'wall s':>6s}  SLA share by workload")
    for r in results.values():
        workloads = sorted({w.workload for p in r.periods for w in p.workloads})
        print(f"{r.controller:12s} {r.requests:8d} {r.sla_share:7.2%} {r.cost_usd:8.2f} "
              f"{r.cost_usd / (args.run_s / 3600):7.2f} {r.llm_tokens / 1e6:8.2f} {r.usd_per_million_tokens:8.3f} "
              f"{r.placements_per_hour:6.1f} {r.placements_per_day:7.1f} {r.wall_s:6.1f}  "
              + ", ".join(f"{w} {r.workload_share(w):.1%}" for w in workloads))
    print(f"\nwall time {time.perf_counter() - started:.0f} s (unmanaged is always run: static is sized from it)")
    if "heteroplane" not in results:
        return
    h = results["heteroplane"]
    lines = []
    if "static" in results:
        ratio = h.usd_per_million_tokens / results["static"].usd_per_million_tokens
        lines.append(f"heteroplane/static $/1M tokens    {ratio:.2f}  (goal <= 0.20: {'met' if ratio <= 0.2 else 'MISSED'})")
    if "reactive" in results:
        ratio = h.usd_per_million_tokens / results["reactive"].usd_per_million_tokens
        lines.append(f"heteroplane/reactive $/1M tokens  {ratio:.2f}  (goal <= 0.70: {'met' if ratio <= 0.7 else 'MISSED'})")
    u = results["unmanaged"] if "unmanaged" in results else unmanaged
    ok = h.sla_share >= 0.99 and h.sla_share >= u.sla_share
    lines.append(f"heteroplane within SLA {h.sla_share:.2%} vs unmanaged {u.sla_share:.2%}  "
                 f"(goal >= 99% and >= unmanaged: {'met' if ok else 'MISSED'})")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
