"""Forecast a workload's arrival rate over the time a migration takes to settle, at an upper quantile.

Pure: values in, values out, no clock and no database (planning reads the history). The models are
statsmodels' ETS (`ETSModel`, additive errors, so its prediction intervals are analytical):

- Short term, every cycle: a level model (ETS A,N,N) fitted to the requests per second of the last
  complete minutes (at most `SHORT_MINUTES`). Its upper `quantile` over the `horizon` minutes
  (the interval widens with the steps ahead) captures minute-to-minute noise and a drifting level.
- Seasonal, once history allows: the same history summed into coarse buckets
  (`bucket_seconds`: a 24th of the shortest period, in whole minutes, so an hour for a day and a
  day is 24 buckets, a week 168), and an ETS model with an additive seasonal component whose
  period is the longest of `periods_s` the history covers at least twice (a week contains the
  day, so one seasonal component carries both). Its upper quantile for the buckets the horizon
  touches (the current one and those up to `now + horizon`) anticipates a daily or weekly rise
  before it happens. A period the history does not cover twice is not fitted at all.

The planned rate is

    planned = max(observed, short-term upper, seasonal upper)

where observed is the mean rate of the last `recent_minutes` complete minutes. The plan never
goes below what is observed: a forecast fall (the evening's drop) is not planned for before it
happens, since under-provisioning costs SLA while the other costs dollars, and the regular cycle
scales down once demand has fallen. With fewer than `MIN_FIT_POINTS` minutes there is nothing to
fit: the upper quantile is then the empirical one of the minutes seen (their maximum for one or
two). A fit that fails numerically, or returns anything not finite, falls back the same way:
the forecast never raises and never returns a negative or non-finite rate.

Fits are cached on their inputs (the bucket and minute tuples), so a model is refitted only
when a new minute or bucket completes, not on every cycle.
"""

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

SHORT_MINUTES = 120  # minutes the level model sees: enough to fit, few enough to follow today's level
MIN_FIT_POINTS = 10  # fewer points than this: no model, the empirical quantile
BUCKETS_PER_SHORTEST_PERIOD = 24
FULL_PERIODS = 2  # a seasonal period is fitted only from this many periods of history
HISTORY_PERIODS = 3  # history kept for the seasonal fit, in longest periods (caps its cost)


@dataclass(frozen=True)
class ForecastConfig:
    """How demand is forecast (controlplane.settings: forecast_*)."""

    horizon_s: float = 300.0  # time a migration takes to settle: what the plan must cover
    quantile: float = 0.9
    periods_s: tuple[float, ...] = (86_400.0, 604_800.0)  # daily, weekly; shorter in compressed time
    recent_minutes: int = 5

    def __post_init__(self) -> None:
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError(f"quantile must be in [0.5, 1), got {self.quantile}")
        if not (self.horizon_s >= 0 and self.recent_minutes >= 1 and all(p > 0 for p in self.periods_s)):
            raise ValueError("horizon_s must be >= 0, recent_minutes >= 1 and every period > 0")

    @property
    def bucket_s(self) -> float:
        return bucket_seconds(self.periods_s)

    @property
    def history_s(self) -> float:
        """How far back the seasonal fit reads."""
        return HISTORY_PERIODS * max(self.periods_s, default=0.0)


@dataclass(frozen=True)
class DemandHistory:
    """One workload's requests, oldest first: per complete minute (the last `SHORT_MINUTES` at most),
    and per complete bucket of `bucket_s` seconds; `into_bucket_s` is how far now is into the
    current, incomplete bucket. Gaps are zeros."""

    minutes: tuple[float, ...] = ()
    buckets: tuple[float, ...] = ()
    bucket_s: float = 3600.0
    into_bucket_s: float = 0.0


@dataclass(frozen=True)
class Forecast:
    """A workload's observed rate, the rate to plan for, and which model said so."""

    observed_rps: float
    planned_rps: float
    method: str  # "none", "empirical", "level" or "seasonal/<period in buckets>"

    @property
    def ratio(self) -> float:
        """planned / observed, at least 1 (1 with nothing observed: there is no demand to scale)."""
        return max(1.0, self.planned_rps / self.observed_rps) if self.observed_rps > 0 else 1.0


def bucket_seconds(periods_s: Sequence[float]) -> float:
    """The seasonal fit's resolution: a 24th of the shortest period, in whole minutes (at least one)."""
    if not periods_s:
        return 3600.0
    return 60.0 * max(1, round(min(periods_s) / BUCKETS_PER_SHORTEST_PERIOD / 60.0))


def forecast(history: DemandHistory, config: ForecastConfig = ForecastConfig()) -> Forecast:
    """The rate to plan `history`'s workload for over `config.horizon_s` (module docstring)."""
    minutes = tuple(_clean(v) / 60.0 for v in history.minutes[-SHORT_MINUTES:])
    if not minutes:
        return Forecast(0.0, 0.0, "none")
    recent = minutes[-config.recent_minutes:]
    observed = sum(recent) / len(recent)
    steps = max(1, math.ceil(config.horizon_s / 60.0))
    short = _level_upper(minutes, steps, config.quantile)
    method = "level" if short is not None else "empirical"
    if short is None:
        short = _empirical_upper(minutes, config.quantile)
    planned = max(observed, short)
    seasonal = _seasonal(history, config)
    if seasonal is not None and seasonal[0] > planned:
        planned, method = seasonal
    return Forecast(observed, planned, method)


def _seasonal(history: DemandHistory, config: ForecastConfig) -> tuple[float, str] | None:
    """The seasonal model's upper quantile (requests/s) over the buckets the horizon touches, and
    its name; None when no period is covered twice or the fit fails."""
    size = history.bucket_s
    eligible = [p for p in (max(2, round(s / size)) for s in config.periods_s)
                if len(history.buckets) >= FULL_PERIODS * p]
    if not eligible:
        return None
    period = max(eligible)
    buckets = tuple(_clean(v) / size for v in history.buckets[-HISTORY_PERIODS * period:])
    steps = 1 + math.floor((history.into_bucket_s + config.horizon_s) / size)
    upper = _fit_upper(buckets, period, steps, config.quantile)
    return (upper, f"seasonal/{period}") if upper is not None else None


def _level_upper(values: tuple[float, ...], steps: int, quantile: float) -> float | None:
    if len(values) < MIN_FIT_POINTS:
        return None
    return _fit_upper(values, 0, steps, quantile)


@lru_cache(maxsize=1024)
def _fit_upper(values: tuple[float, ...], period: int, steps: int, quantile: float) -> float | None:
    """The largest upper `quantile` bound of the next `steps` values of an ETS model of `values`
    (seasonal with `period` when it is > 0, level only otherwise); None when the fit fails."""
    if max(values) == min(values):  # a constant series: nothing to fit, and ETS divides by its spread
        return values[0]
    series = pd.Series(values, dtype=float)
    try:
        with warnings.catch_warnings():
            # Short, noisy, count-like series often end the optimiser short of its tolerance; the
            # fitted model is still the best estimate there is, and the interval says how unsure it is.
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            if period:
                model = ETSModel(series, error="add", seasonal="add", seasonal_periods=period,
                                 initialization_method="heuristic")
            else:
                model = ETSModel(series, error="add", initialization_method="heuristic")
            fitted = model.fit(disp=False)
            frame = fitted.get_prediction(start=len(values), end=len(values) + steps - 1).summary_frame(
                alpha=2 * (1 - quantile))
    except (ValueError, np.linalg.LinAlgError, ArithmeticError):
        return None
    upper = float(np.max(frame["pi_upper"].to_numpy()))
    return max(0.0, upper) if math.isfinite(upper) else None


def _empirical_upper(values: Sequence[float], quantile: float) -> float:
    """The `quantile` of the values seen, the largest of them with fewer than MIN_FIT_POINTS."""
    if len(values) < MIN_FIT_POINTS:
        return max(values)
    return float(np.quantile(values, quantile))


def _clean(value: float) -> float:
    """A count as a finite number >= 0 (a corrupt row must not poison the forecast)."""
    return float(value) if math.isfinite(value) and value > 0 else 0.0
