"""Automatic ARIMA as R's auto.arima selects: seasonal search bounds, admissible
exact refits (the next candidate where the best one refits to a non-invertible
MA), and accuracy against the seasonal naive method on simulated quarterly data.

The M3 comparison with statsforecast and the published entries is in
``benchmarks/arima.py --sections m3`` (it needs the M3 development subset).
"""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from tsgen.models._arima_auto import (
    PROJECTED_MA_RADIUS,
    AutoOptions,
    _collect,
    _roots_ok,
    series_options,
)
from tsgen.models._arima_fit import fit_spec
from tsgen.models._arima_spec import ArimaSpec
from tsgen.models.arima import ARIMA


def _quiet(fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit()


def test_seasonal_search_keeps_short_lags_below_the_period():
    opts = AutoOptions(order=None, seasonal_order=None, period=4, trend=None)
    bounded = series_options(opts, 200, 4)
    assert (bounded.max_p, bounded.max_q) == (3, 3)  # lag 4 is the seasonal AR/MA's
    assert (series_options(opts, 200, 0).max_p, series_options(opts, 200, 0).max_q) == (5, 5)
    # a user-fixed order is never clipped
    fixed = AutoOptions(order=(4, 0, 0), seasonal_order=None, period=4, trend=None)
    assert series_options(fixed, 200, 4).max_p == 4


def test_seasonal_polynomials_are_checked_in_powers_of_the_period():
    spec = ArimaSpec(1, 0, 0, 0, 1, 1, 24)
    # ar.L1, ma.S.L24, sigma2: a seasonal MA of -0.9 is invertible by a wide margin in L^24
    # (root 1.11), though the expanded polynomial's roots have modulus 0.9^(-1/24) < 1.01
    ok = _roots_ok(spec, torch.tensor([[0.5, -0.9, 1.0], [0.5, -0.995, 1.0], [0.995, -0.5, 1.0]],
                                      dtype=torch.float64))
    assert ok.tolist() == [True, False, False]


def _overdifferenced(n=80, seed=1):
    """White noise around 5: the exact MA(1) fit of its first difference has its root on
    the unit circle (for this seed; the pile-up at theta = -1 happens for about half of them)."""
    return torch.as_tensor(5.0 + np.random.default_rng(seed).normal(size=(1, n)))


def test_inadmissible_exact_refit_moves_to_the_next_candidate():
    y = _overdifferenced()
    ma = ArimaSpec(0, 1, 1)
    ar = ArimaSpec(1, 1, 0)
    # the exact fit of (0,1,1) runs to theta = -1: not admissible (R rejects it too)
    exact = fit_spec(ma, y, None)
    assert not bool(_roots_ok(ma, exact.params)[0])
    start_ma = torch.tensor([[-0.5, 1.0]], dtype=torch.float64)
    start_ar = torch.tensor([[-0.4, 1.0]], dtype=torch.float64)
    opts = [AutoOptions(order=None, seasonal_order=None, period=0, trend=None)]
    results = _collect([[(ma, start_ma[0]), (ar, start_ar[0])]], y, None, 1, 0, 0, opts, None, 0)
    assert [r.spec for r, _ in results] == [ar]
    assert bool(results[0][0].converged[0])


def test_last_candidate_is_projected_inside_the_admissible_region():
    y = _overdifferenced()
    ma = ArimaSpec(0, 1, 1)
    opts = [AutoOptions(order=None, seasonal_order=None, period=0, trend=None)]
    (result, rows), = _collect([[(ma, torch.tensor([-0.5, 1.0], dtype=torch.float64))]], y, None, 1, 0, 0,
                               opts, None, 0)
    assert result.spec == ma and list(rows) == [0]
    theta = float(result.params[0, ma.blocks["ma"]][0])
    assert abs(1.0 / theta) >= PROJECTED_MA_RADIUS - 1e-9
    assert bool(_roots_ok(ma, result.params)[0])
    exact = fit_spec(ma, y, None, start=result.params, max_iter=0)
    assert float(result.llf[0]) == pytest.approx(float(exact.llf[0]), abs=1e-9)  # scored exactly there


def _ma_roots(params: dict) -> np.ndarray:
    theta = [v for k, v in params.items() if k.startswith("ma.L")]
    if not theta:
        return np.array([np.inf])
    return np.abs(np.roots(np.r_[1.0, theta][::-1]))


def test_chosen_models_are_admissible_and_converged():
    """Noisy local levels and over-differenced noise: before, the search kept MA
    fits at roots pushed out to 1.02 (not optima, ``converged_`` False)."""
    rng = np.random.default_rng(3)
    series = []
    for k in range(12):
        n = 40 + 4 * k
        level = np.cumsum(rng.normal(scale=0.2, size=n))
        series.append(pd.Series(10.0 + level + rng.normal(size=n)))
    model = _quiet(lambda: ARIMA(order="auto", trend="auto").fit(series))
    assert all(model.converged_)
    for params in model.params_:
        assert _ma_roots(params).min() >= 1.01


def _seasonal_quarterly(rng, n):
    """(0,1,1)(0,1,1)_4 with a fixed seasonal profile, as a quarterly series."""
    e = rng.normal(size=n + 8)
    w = e.copy()
    w[1:] += -0.4 * e[:-1]
    w[4:] += -0.5 * e[:-4]
    w[5:] += 0.2 * e[:-5]
    y = np.zeros(n + 8)
    for t in range(n + 8):
        y[t] = w[t] + (y[t - 1] if t >= 1 else 0) + (y[t - 4] if t >= 4 else 0) - (y[t - 5] if t >= 5 else 0)
    profile = np.tile([3.0, -1.0, -4.0, 2.0], (n + 8) // 4 + 1)[: n + 8]
    return (100.0 + profile + y)[8:]


def test_more_accurate_than_seasonal_naive_on_seasonal_arima_data():
    rng = np.random.default_rng(11)
    h, n = 8, 48
    full = [_seasonal_quarterly(rng, n + h) for _ in range(12)]
    index = pd.period_range("2000Q1", periods=n, freq="Q")
    train = [pd.Series(x[:n], index=index) for x in full]
    model = _quiet(lambda: ARIMA(order="auto", seasonal_order="auto", trend="auto").fit(train))
    # the period comes from the quarterly index; the seasonal unit root is found
    assert np.mean([(s[1], s[3]) == (1, 4) for s in model.seasonal_order_]) >= 0.75
    forecasts = np.stack([f["mean"].to_numpy() for f in model.predict(h)])
    actual = np.stack([x[n:] for x in full])
    naive = np.stack([x[n - 4: n] for x in full])
    naive = np.concatenate([naive, naive], 1)
    assert np.abs(forecasts - actual).mean() < np.abs(naive - actual).mean()
