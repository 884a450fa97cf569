"""Fuzz of the ARIMA estimator over orders x periods x lengths x data shapes.

Its main job is to drive the compiled kernels (:mod:`tsgen.models._arima_kernels`)
through every path: CI runs this file under ``NUMBA_BOUNDSCHECK=1`` (with a
cache directory of its own: numba's cache key does not include the bounds-check
flag), where a read or write past an array raises an ``IndexError`` instead of
corrupting memory. Lengths go down to the shortest a model accepts, with
missing stretches, constant series, fixed and automatic orders, single series
and batches. Every fit must either fit (finite forecasts and likelihoods) or
raise a ValueError naming the argument at fault, and a series' result must
not depend on the other series of its batch.
"""
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tsgen.models._arima_spec import ArimaSpec
from tsgen.models.arima import ARIMA

FUZZ = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])

KINDS = ("random_walk", "ar", "seasonal", "constant", "trend", "spiky")


def make_series(kind: str, n: int, period: int, seed: int, gap: tuple[float, float] | None) -> pd.Series:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n)
    if kind == "random_walk":
        y = 10.0 + e.cumsum()
    elif kind == "ar":
        y = np.zeros(n)
        for t in range(n):
            y[t] = 0.7 * (y[t - 1] if t else 0.0) + e[t]
        y += 100.0
    elif kind == "seasonal":
        y = 5.0 + 3.0 * np.sin(2 * np.pi * np.arange(n) / max(period, 2)) + 0.3 * e
    elif kind == "constant":
        y = np.full(n, 7.0)
    elif kind == "trend":
        y = 0.5 * np.arange(n) + e
    else:
        y = e * np.where(rng.uniform(size=n) < 0.1, 50.0, 1.0)
    if gap is not None:  # a missing stretch in the second half (the first values condition the model)
        start = n // 2 + int(gap[0] * (n - n // 2))
        y[start:start + 1 + int(gap[1] * n)] = np.nan
    return pd.Series(y)


def check_fitted(model, y):
    """Forecasts are finite and the history's likelihood can be evaluated."""
    n_series = len(y) if isinstance(y, list) else 1
    forecast = model.predict(4)
    frames = forecast if isinstance(forecast, list) else [forecast]
    assert len(frames) == n_series
    for frame in frames:
        assert np.isfinite(frame.to_numpy()).all()
    per_step = model.log_likelihood(y, per_step=True)
    for steps in per_step if isinstance(per_step, list) else [per_step]:
        assert not np.isposinf(steps.to_numpy()).any()


def fit_or_named_error(model, y):
    """The fitted model, or None after a ValueError that names what is wrong."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fitted = model.fit(y)
        except ValueError as err:
            event(f"named error: {str(err).split('`')[1]}")
            assert any(name in str(err) for name in ("`order`", "`seasonal_order`", "`trend`", "`y`")), err
            return None
    event("fitted")
    return fitted


orders = st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 3))
seasonal_orders = st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(0, 2))
periods = st.sampled_from([2, 3, 4, 7, 12])
gaps = st.none() | st.tuples(st.floats(0, 1), st.floats(0, 0.3))


@FUZZ
@given(order=orders, seasonal=seasonal_orders, period=periods, extra=st.integers(0, 12),
       kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16), gap=gaps, trend=st.sampled_from([None, "n"]))
def test_fixed_orders_fit_or_raise_a_named_error(order, seasonal, period, extra, kind, seed, gap, trend):
    spec = ArimaSpec(*order, *seasonal, period if any(seasonal) else 0)
    n = spec.n_integration + spec.min_observations() + extra - 6  # around the shortest accepted length
    n = max(n, spec.n_integration + 2)
    y = make_series(kind, n, period, seed, gap)
    model = fit_or_named_error(ARIMA(order=order, seasonal_order=(*seasonal, period), trend=trend, max_iter=30), y)
    if model is not None:
        assert model.order_ == order
        check_fitted(model, y)


@settings(FUZZ, max_examples=100)
@given(fixed_order=st.none() | orders, fixed_seasonal=st.none() | seasonal_orders, period=periods,
       n=st.integers(6, 80), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**16), gap=gaps,
       trend=st.sampled_from([None, "auto", "n", "c", "t"]))
def test_automatic_orders_fit_or_raise_a_named_error(fixed_order, fixed_seasonal, period, n, kind, seed, gap, trend):
    y = make_series(kind, n, period, seed, gap)
    model = ARIMA(order="auto" if fixed_order is None else fixed_order,
                  seasonal_order="auto" if fixed_seasonal is None else (*fixed_seasonal, period),
                  period=period, trend=trend, max_iter=30, max_p=3, max_q=3)
    model = fit_or_named_error(model, y)
    if model is None:
        return
    if fixed_order is not None:
        assert model.order_ == fixed_order
    P, D, Q, s = model.seasonal_order_
    assert s == (period if (P or D or Q) else 0)
    if fixed_seasonal is not None:
        assert (P, D, Q) == fixed_seasonal
    check_fitted(model, y)


@settings(FUZZ, max_examples=20)
@given(n=st.lists(st.integers(8, 70), min_size=2, max_size=3), period=periods,
       kinds=st.lists(st.sampled_from(KINDS), min_size=3, max_size=3), seed=st.integers(0, 2**16),
       gap=gaps, fixed_order=st.sampled_from([None, (1, 0, 0), (0, 1, 1)]))
def test_a_series_fits_the_same_alone_and_in_a_batch(n, period, kinds, seed, gap, fixed_order):
    ys = [make_series(kinds[i], m, period, seed + i, gap if i == 0 else None) for i, m in enumerate(n)]

    def model():
        return ARIMA(order="auto" if fixed_order is None else fixed_order, seasonal_order="auto",
                     period=period, max_iter=30, max_p=2, max_q=2)

    batch = fit_or_named_error(model(), ys)
    if batch is None:
        return
    check_fitted(batch, ys)
    for i, y in enumerate(ys):
        alone = fit_or_named_error(model(), y)
        assert alone is not None
        assert alone.order_ == batch.order_[i]
        assert alone.seasonal_order_ == batch.seasonal_order_[i]
        assert alone.aicc_ == pytest.approx(batch.aicc_[i], rel=1e-6, abs=1e-6)
