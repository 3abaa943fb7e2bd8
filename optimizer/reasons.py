"""How the optimizer's reasons read: plain units (ms, requests/s, $/h, devices), never scientific
notation, and a sentence for each `Shortfall` with the workload's name the caller gives it."""

import math

from optimizer.types import Priority, Shortfall, ShortfallCause, ShortfallKind


def ms(value: float) -> str:
    """A latency: whole milliseconds from 10 ms up, one decimal below (e.g. '23,400 ms', '4.2 ms')."""
    return f"{value:,.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"


def number(value: float) -> str:
    """Thousands separated, no trailing zeros, never scientific notation: whole from 100 up, two
    decimals down to 1, three significant digits below (e.g. '1,234', '12.5', '0.00123')."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    decimals = 2 if abs(value) >= 1 or value == 0 else min(12, 2 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}".rstrip("0").rstrip(".")


def rps(value: float) -> str:
    """A rate: requests (visits) per second (e.g. '12.5 requests/s')."""
    return f"{number(value)} requests/s"


def gib(value: float) -> str:
    return f"{number(value)} GiB"


def usd_per_hour(value: float) -> str:
    return f"${value:,.2f}/h"


def devices(count: int, device_class: str) -> str:
    return f"{count} {device_class} device{'' if count == 1 else 's'}"


def describe(shortfall: Shortfall, name: str) -> str:
    """One sentence saying which SLA `name` (the workload, as the reader knows it) misses and why."""
    s = shortfall
    who = f"{name} ({s.priority.value})"
    if s.kind is ShortfallKind.demand:
        if s.cause is ShortfallCause.no_class:
            return f"{who}: not served ({rps(s.demand_rps)} demanded): no healthy device class can run one of its fragments"
        head = f"{who}: serving {rps(s.served_rps)} of {rps(s.demand_rps)} demanded"
        why = ("batch is shed first so that realtime workloads are served" if s.priority is Priority.batch
               else "the healthy devices cannot serve it all")
        return f"{head}; {why}{_more(s)}"
    head = f"{who}: predicted p99 {ms(s.predicted_p99_ms or 0.0)} vs SLA {ms(s.sla_p99_ms or 0.0)}"
    tokens = [f"{what} SLA {ms(bound)} not met" for what, bound in (("TTFT", s.sla_ttft_ms), ("TPOT", s.sla_tpot_ms))
              if bound is not None]
    if tokens:
        head += f" ({', '.join(tokens)})"
    if s.cause is ShortfallCause.queued:
        return f"{head}; batch is queued (served later than its SLA) so that realtime SLAs hold"
    if s.cause is ShortfallCause.no_fast_class:
        best = f" (the fastest placement gives {ms(s.best_p99_ms)})" if s.best_p99_ms else ""
        return f"{head}; no device class of this fleet is fast enough{best}"
    return f"{head}; the classes fast enough for it are too few for every realtime workload at once"


def _more(s: Shortfall) -> str:
    if s.device_class is None or s.devices_needed <= s.devices_healthy:
        return ""
    return (f"; serving it all needs {devices(s.devices_needed, s.device_class)}, {s.devices_healthy} healthy "
            f"(+{usd_per_hour(s.extra_usd_per_hour)})")
