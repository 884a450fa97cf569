"""Peaks-over-threshold thresholds from extreme value theory (SPOT, Siffer et al. 2017).

By the Pickands-Balkema-de Haan theorem, the excesses ``Y = X - t`` of a
score over a high initial threshold ``t`` follow a generalised Pareto
distribution ``GPD(gamma, sigma)``. For a target false-alarm probability
``q`` the threshold ``z_q`` with ``P(X > z_q) = q`` is

    z_q = t + sigma / gamma * ((q n / N_t) ** (-gamma) - 1)      (gamma != 0)
    z_q = t - sigma * log(q n / N_t)                              (gamma == 0)

with ``n`` observations of which ``N_t`` exceed ``t``. In streaming use
(:meth:`SPOT.step`), a score above ``z_q`` is an alarm and is not learned
from; a score between ``t`` and ``z_q`` is a new peak, the GPD is refitted
and ``z_q`` moves.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

#: fewer excesses than this give a GPD fit too noisy to extrapolate from
MIN_PEAKS = 10


def _check_probability(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 < value < 1:
        raise ValueError(f"`{name}` must be a probability in (0, 1); got {value!r}.")
    return float(value)


def fit_gpd(excesses: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood ``(gamma, sigma)`` of a GPD with location 0 (scipy's ``genpareto``)."""
    gamma, _, sigma = stats.genpareto.fit(excesses, floc=0.0)
    return float(gamma), float(sigma)


def pot_threshold(t: float, gamma: float, sigma: float, q: float, n: int, n_peaks: int) -> float:
    """``z_q`` of the module docstring."""
    ratio = q * n / n_peaks
    if abs(gamma) < 1e-8:
        return t - sigma * np.log(ratio)
    return t + sigma / gamma * (ratio ** (-gamma) - 1.0)


class SPOT:
    """Streaming peaks-over-threshold (SPOT) for a target false-alarm rate.

    Parameters
    ----------
    false_alarm_rate : float
        Target probability ``q`` that a normal score exceeds the threshold.
    level : float
        Quantile of the calibration scores used as initial threshold ``t``
        (must leave enough peaks: ``(1 - level) * n >= 10``).
    """

    def __init__(self, false_alarm_rate: float = 1e-3, level: float = 0.98):
        self.false_alarm_rate = false_alarm_rate
        self.level = level

    def fit(self, scores) -> "SPOT":
        """Calibrate on scores of normal data (NaN skipped): initial threshold, GPD, ``threshold_``."""
        q = _check_probability(self.false_alarm_rate, "false_alarm_rate")
        level = _check_probability(self.level, "level")
        if q >= 1 - level:
            raise ValueError(
                f"`false_alarm_rate` ({q:g}) must be below 1 - `level` ({1 - level:g}): SPOT extrapolates "
                "beyond the initial threshold. Use a lower rate or a lower level."
            )
        x = np.asarray(scores, dtype=np.float64).ravel()
        x = x[~np.isnan(x)]
        self.initial_threshold_ = float(np.quantile(x, self.level))
        peaks = x[x > self.initial_threshold_] - self.initial_threshold_
        if len(peaks) < MIN_PEAKS:
            raise ValueError(
                f"`scores` leave {len(peaks)} peaks over the {self.level:g} quantile; SPOT needs at least "
                f"{MIN_PEAKS}: give more calibration data (about {int(np.ceil(MIN_PEAKS / (1 - self.level)))}) "
                "or lower `level` (`spot_level` of AnomalyDetector)."
            )
        self.peaks_ = list(peaks)
        self.n_ = len(x)
        self._refresh()
        return self

    def _refresh(self) -> None:
        self.gamma_, self.sigma_ = fit_gpd(np.asarray(self.peaks_))
        self.threshold_ = float(pot_threshold(
            self.initial_threshold_, self.gamma_, self.sigma_, self.false_alarm_rate, self.n_, len(self.peaks_)
        ))

    def step(self, score: float) -> bool:
        """Process one streaming score: True for an alarm; peaks below the alarm threshold update it."""
        if np.isnan(score):
            return False
        if score > self.threshold_:
            return True
        self.n_ += 1
        if score > self.initial_threshold_:
            self.peaks_.append(score - self.initial_threshold_)
            self._refresh()
        return False
