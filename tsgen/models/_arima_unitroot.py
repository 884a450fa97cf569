"""How many differences an automatic ARIMA takes: unit-root and seasonality tests.

``d`` (R's ``forecast::ndiffs``, statsforecast's ``ndiffs``): difference
while the KPSS test rejects level stationarity at 5% (statistic above
0.463, the 5% point of its asymptotic null distribution), at most ``max_d``
times, stopping early when the differences are constant.

``D`` (R's ``nsdiffs(test="seas")``): take a seasonal difference while the
seasonal strength of an STL decomposition exceeds 0.64, at most ``max_D``
times. Strength is ``max(0, 1 - Var(R) / Var(S + R))`` with the
decomposition R's ``mstl`` uses for one period: a non-robust STL whose
seasonal smoother spans 11 cycles and fits local constants (degree 0), so
that the seasonal component of a short series (an M3 quarterly series has
16-64 points) is averaged over several years instead of following the
noise of each one (statsmodels' default span of 7 with local lines does).
Series of at most two periods are never seasonally differenced (the
decomposition needs more than two cycles to tell season from trend).
"""
from __future__ import annotations

import math

import numpy as np

#: 5% critical value of the KPSS level-stationarity statistic (Kwiatkowski et al. 1992, table 1)
KPSS_CRITICAL_5PCT = 0.463
#: seasonal strength above which a seasonal difference is taken (Wang, Smith & Hyndman 2006)
SEASONAL_STRENGTH_THRESHOLD = 0.64
#: cycles spanned by the seasonal smoother of the strength test's STL (R's mstl: 7 + 4)
SEASONAL_WINDOW = 11


def _is_constant(x: np.ndarray) -> bool:
    return len(x) == 0 or bool(np.ptp(x) == 0)


def kpss_statistic(x: np.ndarray, n_lags: int | None = None) -> float:
    """KPSS level-stationarity statistic ``sum_t S_t^2 / (n^2 lambda^2)``.

    ``S_t`` are partial sums of ``x - mean(x)`` and ``lambda^2`` the
    Newey-West long-run variance with Bartlett weights ``1 - j/(L+1)`` and
    ``L = floor(3 sqrt(n) / 13)`` lags by default (the short-lag rule of R's
    ``ndiffs``).
    """
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n_lags is None:
        n_lags = int(math.floor(3.0 * math.sqrt(n) / 13.0))
    e = x - x.mean()
    s = np.cumsum(e)
    lrv = e @ e / n
    for j in range(1, min(n_lags, n - 1) + 1):
        lrv += 2.0 * (1.0 - j / (n_lags + 1.0)) * (e[j:] @ e[:-j]) / n
    if lrv <= 0:
        return 0.0
    return float(s @ s / (n * n * lrv))


def choose_d(x: np.ndarray, max_d: int) -> int:
    """Number of first differences (at most ``max_d``) after which KPSS no longer rejects."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    d = 0
    while d < max_d and len(x) > 3 and not _is_constant(x) and kpss_statistic(x) > KPSS_CRITICAL_5PCT:
        x = np.diff(x)
        d += 1
    return d


def seasonal_strength(x: np.ndarray, period: int) -> float:
    """``max(0, 1 - Var(remainder) / Var(seasonal + remainder))`` of the STL described above."""
    from statsmodels.tsa.seasonal import STL

    result = STL(np.asarray(x, dtype=float), period=period, seasonal=SEASONAL_WINDOW,
                 seasonal_deg=0, robust=False).fit()
    resid = result.resid
    denom = np.var(result.seasonal + resid, ddof=1)
    if not denom > 0:
        return 0.0
    return float(min(1.0, max(0.0, 1.0 - np.var(resid, ddof=1) / denom)))


def choose_D(x: np.ndarray, period: int, max_D: int) -> int:
    """Number of seasonal differences (at most ``max_D``) after which the series is not strongly seasonal."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    D = 0
    if period < 2:
        return 0
    while D < max_D and len(x) > 2 * period and not _is_constant(x):
        if seasonal_strength(x, period) <= SEASONAL_STRENGTH_THRESHOLD:
            break
        x = x[period:] - x[:-period]
        D += 1
    return D
