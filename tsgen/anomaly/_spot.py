"""Peaks-over-threshold thresholds from extreme value theory (SPOT, Siffer et al. 2017).

By the Pickands-Balkema-de Haan theorem, the excesses ``Y = X - t`` of a
score over a high initial threshold ``t`` follow a generalised Pareto
distribution ``GPD(gamma, sigma)``. For a target false-alarm probability
``q`` the threshold ``z_q`` with ``P(X > z_q) = q`` is

    z_q = t + sigma / gamma * ((q n / N_t) ** (-gamma) - 1)      (gamma != 0)
    z_q = t - sigma * log(q n / N_t)                              (gamma == 0)

with ``n`` observations of which ``N_t`` exceed ``t``. In streaming use
(:meth:`SPOT.step`), a score above ``z_q`` is an alarm and is not learned
from; a score between ``t`` and ``z_q`` is a new peak and ``z_q`` moves
(the GPD itself is refitted when the peaks have grown by ``refit_growth``).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

#: fewer excesses than this give a GPD fit too noisy to extrapolate from
MIN_PEAKS = 10
#: a calibration score whose tail probability under the GPD of the scores below it is under this over the number of
#: peaks is an anomaly of the calibration data, set aside like a streaming alarm (SPOT.fit). On 20 simulated
#: calibrations (600 null scores) 3 huge scores that mask each other were always found, 4 (300, 299.7, 26.8, 7.4) in
#: 16; none was set aside from exponential or normal samples, one from 5% of Pareto(2) samples of 3000, 15% of
#: Student-t(3) and 20% of Cauchy samples of 2000, and up to 3 from 20% of Pareto(2) samples of 600
OUTLIER_LEVEL = 3e-3
#: the outlier test fits the tail over this quantile of the calibration scores
OUTLIER_TAIL_LEVEL = 0.9
#: at most this many calibration scores are tested as outliers (one GPD fit each)
MAX_OUTLIERS = 20


def _check_probability(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 < value < 1:
        raise ValueError(f"`{name}` must be a probability in (0, 1); got {value!r}.")
    return float(value)


def fit_gpd(excesses: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood ``(gamma, sigma)`` of a GPD with location 0 (scipy's ``genpareto``)."""
    gamma, _, sigma = stats.genpareto.fit(excesses, floc=0.0)
    return float(gamma), float(sigma)


def _gpd(excesses: np.ndarray) -> tuple[float, float]:
    """``(gamma, sigma)`` of the excesses' tail: the GPD fit, or the exponential with their mean as scale where
    they carry no shape (fewer than 3 distinct values, a failed fit)."""
    exponential = 0.0, float(excesses.mean())
    if len(np.unique(excesses)) < 3:
        return exponential
    try:
        gamma, sigma = fit_gpd(excesses)
    except (ValueError, RuntimeError, FloatingPointError):  # a degenerate sample: keep the exponential tail
        return exponential
    return (gamma, sigma) if np.isfinite(gamma) and np.isfinite(sigma) and sigma > 0 else exponential


def _gpd_pwm(excesses: np.ndarray) -> tuple[float, float]:
    """``(gamma, sigma)`` by probability-weighted moments (Hosking & Wallis 1987): closed form, for the outlier
    test, which needs one tail per candidate (a maximum-likelihood fit each cost 40 ms)."""
    x = np.sort(excesses)
    n = len(x)
    a0 = x.mean()
    a1 = float(np.mean((1.0 - (np.arange(1, n + 1) - 0.35) / n) * x))
    if a0 - 2 * a1 <= 0:  # no decreasing tail to speak of: the exponential with the mean
        return 0.0, float(a0)
    return float(2.0 - a0 / (a0 - 2 * a1)), float(2 * a0 * a1 / (a0 - 2 * a1))


def _peaks(ordered: np.ndarray, level: float, n_peaks: int) -> tuple[float, np.ndarray]:
    """``(t, excesses)`` of sorted scores: ``t`` their ``level`` quantile and the excesses of the scores above it;
    when ties at the top leave fewer than ``MIN_PEAKS`` (flat data), the ``n_peaks`` largest, ranked, over the
    score just below them."""
    t = float(np.quantile(ordered, level))
    peaks = ordered[ordered > t] - t
    if len(peaks) < MIN_PEAKS:
        t = float(ordered[-n_peaks - 1])
        peaks = ordered[-n_peaks:] - t
    return t, peaks


def _tail_probability(excess: float, gamma: float, sigma: float) -> float:
    """``P(Y > excess)`` under ``GPD(gamma, sigma)`` (the exponential of its mean where ``gamma < 0``), the outlier
    test of :meth:`SPOT.fit`."""
    if gamma < 0:
        # a bounded fit ends near the largest value it saw, and would call any larger score impossible: the test
        # takes the exponential tail with the same mean instead, heavier, so only gross outliers go
        return math.exp(-max(excess, 0.0) * (1.0 - gamma) / sigma)
    return float(stats.genpareto.sf(excess, gamma, scale=sigma))


def pot_threshold(t: float, gamma: float, sigma: float, q: float, n: int, n_peaks: int) -> float:
    """``z_q`` of the module docstring."""
    ratio = q * n / n_peaks
    if abs(gamma) < 1e-8:
        return t - sigma * np.log(ratio)
    return t + sigma / gamma * (ratio ** (-gamma) - 1.0)


class SPOT:
    """Streaming peaks-over-threshold (SPOT) for a target false-alarm rate, and its drift-aware DSPOT.

    Parameters
    ----------
    false_alarm_rate : float
        Target probability ``q`` that a normal score exceeds the threshold.
    level : float
        Quantile of the calibration scores used as initial threshold ``t``;
        the scores above it are the initial peaks. At least 10 are needed:
        ``(1 - level) n >= 10``; when ties at the top leave fewer (flat data),
        the ``ceil((1 - level) n)`` largest scores are the peaks, ranked, and
        ``t`` the score just below them.
    depth : int, optional
        DSPOT (Siffer et al. 2017, section 4.2): each score is first reduced
        by the mean of the ``depth`` normal scores before it, so a slowly
        drifting baseline does not drift into alarms.
    refit_growth : float
        The GPD is refitted when the peaks have grown by this fraction (and
        by at least 10) since its last fit (so ``O(log n)`` refits over a
        stream, each ``O(n_peaks)``);
        in between, a new peak moves the threshold through ``n`` and ``N_t``
        only, in ``O(1)``. 0 refits at every peak (Siffer's
        algorithm as published).

    When the excesses carry no tail shape (fewer than 3 distinct values, or a
    failed maximum-likelihood fit) the tail is taken as exponential with the
    excesses' mean as scale (``gamma = 0``); a flat calibration (all excesses
    0) gives the threshold ``t`` itself: anything above the calibration level
    is an alarm.

    Calibration data are meant to be normal, but real ones hold the odd
    anomaly, and one huge peak among a dozen makes the GPD fit heavy enough
    to put ``z_q`` beyond any score (on the NAB dev subset one calibrated
    score of 300 among 604 put the detector's threshold at 285, on scores
    that cannot exceed 300). :meth:`fit` therefore treats the calibration's
    largest scores as the streaming algorithm treats alarms: not peaks, not
    counted in ``n``. The test is generalised-ESD style (Rosner 1983), so
    that a few huge scores cannot mask each other: for ``i = 1 ... 20`` the
    ``i`` largest are set aside and the ``i``-th is judged by the GPD
    (probability-weighted moments; a bounded fit, shape below 0, is replaced
    by the exponential of the same mean) of the scores above the 0.9 quantile of the rest; the
    largest ``i`` whose tail probability is under ``OUTLIER_LEVEL / (N_t + 1)``
    scores are set aside. ``outliers_`` counts them.
    """

    def __init__(self, false_alarm_rate: float = 1e-3, level: float = 0.98, depth: int | None = None,
                 refit_growth: float = 0.1):
        self.false_alarm_rate = false_alarm_rate
        self.level = level
        self.depth = depth
        self.refit_growth = refit_growth

    def _validate(self) -> tuple[float, float]:
        q = _check_probability(self.false_alarm_rate, "false_alarm_rate")
        level = _check_probability(self.level, "level")
        if q >= 1 - level:
            raise ValueError(
                f"`false_alarm_rate` ({q:g}) must be below 1 - `level` ({1 - level:g}): SPOT extrapolates "
                "beyond the initial threshold. Use a lower rate or a lower level."
            )
        if self.depth is not None and (isinstance(self.depth, bool) or not isinstance(self.depth, (int, np.integer))
                                       or self.depth < 1):
            raise ValueError(f"`depth` must be None or a positive int; got {self.depth!r}.")
        growth = self.refit_growth
        if isinstance(growth, bool) or not isinstance(growth, (int, float)) or growth < 0:
            raise ValueError(f"`refit_growth` must be a non-negative number; got {growth!r}.")
        return q, level

    def fit(self, scores) -> "SPOT":
        """Calibrate on scores of normal data (NaN skipped): initial threshold, GPD, ``threshold_``."""
        _, level = self._validate()
        x = np.asarray(scores, dtype=np.float64).ravel()
        x = x[~np.isnan(x)]
        depth = self.depth or 0
        if depth:
            if len(x) <= depth:
                raise ValueError(f"`scores` has {len(x)} values; DSPOT with `depth`={depth} needs more.")
            window = np.lib.stride_tricks.sliding_window_view(x[:-1], depth).mean(axis=1)
            self.recent_ = list(x[-depth:])
            x = x[depth:] - window
        n_peaks = int(np.ceil((1 - level) * len(x) - 1e-9))
        if n_peaks < MIN_PEAKS:
            needed = int(np.ceil(MIN_PEAKS / (1 - level))) + depth
            raise ValueError(
                f"`scores` has {len(x) + depth} values, leaving {n_peaks} peaks over the {level:g} quantile; SPOT "
                f"needs at least {MIN_PEAKS}: give at least {needed} calibration values or lower `level` "
                "(`spot_level` of AnomalyDetector)."
            )
        # the largest scores that are outliers of the others' tail, generalised-ESD style: the i largest set aside
        # and the i-th tested against the tail of the rest, so that a few huge scores cannot mask each other
        # (the test reads the tail over the 0.9 quantile: a dozen peaks leave its shape too uncertain to judge by)
        ordered = np.sort(x)
        tail_level = min(level, OUTLIER_TAIL_LEVEL)
        n_tail = int(np.ceil((1 - tail_level) * len(x) - 1e-9))
        self.outliers_ = 0
        for i in range(1, min(MAX_OUTLIERS, len(x) - n_tail - 1) + 1):
            t, tail = _peaks(ordered[:-i], tail_level, n_tail)
            # tied values (fewer than 3) tell no tail: judged by them, every larger score would be an outlier
            if len(np.unique(tail)) >= 3 and (
                    _tail_probability(ordered[-i] - t, *_gpd_pwm(tail)) * (n_peaks + 1) < OUTLIER_LEVEL):
                self.outliers_ = i
        kept = ordered[: len(ordered) - self.outliers_]
        self.initial_threshold_, peaks = _peaks(kept, level, n_peaks)
        self.peaks_ = list(peaks)
        self.n_ = len(kept)
        self._refit()
        return self

    def _refit(self) -> None:
        self.gamma_, self.sigma_ = _gpd(np.asarray(self.peaks_))
        self.fitted_peaks_ = len(self.peaks_)
        self._move()

    def _move(self) -> None:
        if self.sigma_ <= 0:  # a flat calibration: every score above it is an alarm
            self.threshold_ = float(self.initial_threshold_)
            return
        self.threshold_ = float(pot_threshold(
            self.initial_threshold_, self.gamma_, self.sigma_, self.false_alarm_rate, self.n_, len(self.peaks_)
        ))

    def step(self, score: float) -> bool:
        """Process one streaming score: True for an alarm; peaks below the alarm threshold update it."""
        if np.isnan(score):
            return False
        x = score
        if self.depth:
            x = score - float(np.mean(self.recent_))
        if x > self.threshold_:
            return True
        if self.depth:
            self.recent_.pop(0)
            self.recent_.append(float(score))
        self.n_ += 1
        if x > self.initial_threshold_:  # as published, z_q moves at peaks only
            self.peaks_.append(x - self.initial_threshold_)
            due = max((1 + self.refit_growth) * self.fitted_peaks_, self.fitted_peaks_ + MIN_PEAKS)
            if self.refit_growth == 0 or len(self.peaks_) >= due:
                self._refit()
            else:
                self._move()
        return False

    @property
    def alarm_level_(self) -> float:
        """The score that would raise an alarm now (``threshold_`` plus DSPOT's local mean)."""
        return self.threshold_ + (float(np.mean(self.recent_)) if self.depth else 0.0)
