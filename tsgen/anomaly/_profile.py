"""A slow companion to the one-step model: the predictive density of each value under its time of day's profile.

The online autoregression (:mod:`tsgen.anomaly._online`) predicts ``y_t``
from ``y_{t-1}, ...``: a pattern change that lasts hours (a daily cycle gone
flat, a peak that does not come, a weekday behaving like a Sunday) is
predicted well after its first few steps, because the lags carry the new
pattern. A monitoring stream's *expected* value at a time of day is what
such changes break. The profile model scores

    y_t ~ mu_s + sigma_s * T_df,    s = t mod m  (the slot: the position in the natural cycle of ``m`` steps),

with each slot's location and scale learned online from that slot's own
past visits, exponentially weighted with rate ``rate`` per visit (a memory
of about ``1 / rate`` cycles; ``1 / (k + 1)`` on the ``k``-th visit, so
that the first visits are plain averages). Before its first visit a slot
predicts the stream's median: that visit is not scored, sets the location
and gives the first squared error, from which the scale starts (the
stream's spread as a prior scale scored lower on the NAB dev subset's
tuning files: 68.1 against 70.8). A squared error beyond 10 of its scales
enters as 10 scales, so one anomaly does not mask the next. Missing values
advance the slot and teach nothing.

Level shifts that the detector absorbs into the autoregression are *not*
applied to the profile: on a seasonal stream the autoregression's "shifts"
include the cycle's own steps, which the profile already knows (moving it
with them scored 53.2 against 68.1 there). A lasting shift is learned by
the profile at its own rate.

The profile ignores the lags, so it is a poor predictor in itself (wide on
wandering streams, which the calibration absorbs); its value is as a
second likelihood seen beside the one-step one (see
:class:`tsgen.anomaly.AnomalyDetector`'s ``profile``). Cost: ``O(1)`` per
point, ``O(m)`` memory.
"""
from __future__ import annotations

import math

import numpy as np

from tsgen.anomaly._online import VARIANCE_FLOOR, robust_location_scale, standardised_log_density

#: a slot's first squared error (in squared spreads of the stream) is at least this: a first value at the median
#: does not make the slot's density a spike
MIN_FIRST_VARIANCE = 1e-4


class SeasonalProfile:
    """Per-slot exponentially weighted location and scale of a cycle of ``period`` steps (module docstring).

    Parameters
    ----------
    period : int
        Steps per cycle (>= 2).
    rate : float
        Weight of a slot's newest visit, in (0, 1]: memory of about ``1 / rate`` cycles.
    df : float or None
        Degrees of freedom of the Student-t predictive density (None: Gaussian).
    """

    def __init__(self, period: int, rate: float = 0.1, df: float | None = 5.0):
        if isinstance(period, bool) or not isinstance(period, (int, np.integer)) or period < 2:
            raise ValueError(f"`period` must be an int >= 2; got {period!r}.")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ValueError(f"`rate` must be in (0, 1]; got {rate!r}.")
        if df is not None and (isinstance(df, bool) or not isinstance(df, (int, float)) or df <= 0):
            raise ValueError(f"`df` must be None or a positive number; got {df!r}.")
        self.period, self.rate, self.df = int(period), float(rate), df

    def start(self, values) -> np.ndarray:
        """Learn from ``values`` (the first slot is slot 0); returns their one-step log-densities (NaN: not scored)."""
        y = np.asarray(values, dtype=np.float64).ravel()
        observed = y[~np.isnan(y)]
        if len(observed) < 2:
            raise ValueError(f"the stream needs at least 2 observed values to start a profile; got {len(observed)}.")
        self.centre, self.spread = robust_location_scale(observed)
        self.mean = np.zeros(self.period)
        self.variance = np.ones(self.period)
        self.visits = np.zeros(self.period)
        self.position = 0
        # the slots' recursions are independent: run them side by side, one cycle of the stream at a time
        n_cycles = -(-len(y) // self.period)
        cycles = np.full(n_cycles * self.period, np.nan)
        cycles[: len(y)] = y
        out = np.array([self._visit(row) for row in cycles.reshape(n_cycles, self.period)]).ravel()
        self.position = len(y)
        return out[: len(y)]

    def _visit(self, values: np.ndarray) -> np.ndarray:
        """:meth:`step` for one value per slot at once (NaN: not visited this cycle); the log-densities."""
        z = (values - self.centre) / self.spread
        seen = ~np.isnan(z)
        first = seen & (self.visits == 0)
        scored = seen & ~first
        scale = np.sqrt(np.maximum(self.variance, VARIANCE_FLOOR))
        error = np.where(scored, z - self.mean, 0.0)
        log_density = np.where(scored, standardised_log_density(error / scale, self.df) - np.log(scale * self.spread),
                               np.nan)
        weight = np.maximum(self.rate, 1.0 / (self.visits + 1.0))
        self.mean = np.where(first, z, np.where(scored, self.mean + weight * error, self.mean))
        learned = self.variance + weight * (np.minimum(error * error, 100.0 * self.variance) - self.variance)
        self.variance = np.where(first, np.maximum(z * z, MIN_FIRST_VARIANCE), np.where(scored, learned,
                                                                                          self.variance))
        self.visits = self.visits + seen
        return log_density

    def step(self, value: float) -> float:
        """Score ``value`` by its slot's predictive log-density (NaN if missing or the slot is new), then learn."""
        s = self.position % self.period
        self.position += 1
        if np.isnan(value):
            return float("nan")
        z = (value - self.centre) / self.spread
        visits = self.visits[s]
        if not visits:
            self.mean[s], self.variance[s], self.visits[s] = z, max(z * z, MIN_FIRST_VARIANCE), 1.0
            return float("nan")
        scale = math.sqrt(max(self.variance[s], VARIANCE_FLOOR))
        error = z - self.mean[s]
        log_density = float(standardised_log_density(error / scale, self.df)) - math.log(scale * self.spread)
        weight = max(self.rate, 1.0 / (visits + 1.0))
        self.mean[s] += weight * error
        self.variance[s] += weight * (min(error * error, 100.0 * self.variance[s]) - self.variance[s])
        self.visits[s] = visits + 1.0
        return log_density

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "variance": self.variance, "visits": self.visits,
                "scalars": np.array([self.centre, self.spread, self.position], dtype=np.float64)}

    def restore(self, state: dict) -> "SeasonalProfile":
        self.mean, self.variance, self.visits = (np.asarray(state[k], dtype=np.float64).copy()
                                                 for k in ("mean", "variance", "visits"))
        if not self.mean.shape == self.variance.shape == self.visits.shape == (self.period,):
            raise ValueError(f"the saved profile does not match `period`={self.period}.")
        centre, spread, position = (float(v) for v in np.asarray(state["scalars"]))
        self.centre, self.spread, self.position = centre, spread, int(position)
        return self
