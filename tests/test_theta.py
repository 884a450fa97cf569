"""Theta against statsmodels' ThetaModel: decomposition, drift, SES parameter and forecasts."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from statsmodels.tsa.forecasting.theta import ThetaModel

import tsgen
from tsgen.models.theta import _ses_sse


def series(n=48, seed=0, seasonal=0.2, freq="Q"):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    level = 200 + np.cumsum(rng.normal(1.0, 4.0, n))
    values = level * (1 + seasonal * np.sin(2 * np.pi * t / 4)) + rng.normal(0, 3.0, n)
    return pd.Series(values, index=pd.period_range("1990Q1", periods=n, freq=freq), name="y")


def reference(y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ThetaModel(y, **kwargs).fit()


@pytest.mark.parametrize("seed, seasonal, kwargs", [
    (0, 0.2, {}), (1, 0.0, {}), (2, 0.2, {"deseasonalize": False}), (3, 0.2, {"use_test": False}),
    (4, 0.2, {"method": "additive"}), (5, 0.15, {"theta": 3.0}),
])
def test_forecasts_equal_statsmodels_given_its_alpha(seed, seasonal, kwargs):
    y = series(seed=seed, seasonal=seasonal)
    theta = kwargs.pop("theta", 2.0)
    model = tsgen.Theta(theta=theta, **kwargs).fit(y)
    result = reference(y, **kwargs)
    assert model.b0_ == pytest.approx(result.params["b0"], rel=1e-9, abs=1e-9)
    adjusted = result.model.deseasonalize and result.model._has_seasonality
    assert (model.seasonal_ is not None) == bool(adjusted)
    # our alpha minimises the SES squared errors at least as well as statsmodels' optimiser
    x = y.to_numpy() if model.seasonal_ is None else y.to_numpy() / np.resize(model.seasonal_, len(y))
    if model.method_ == "additive" and model.seasonal_ is not None:
        x = y.to_numpy() - np.resize(model.seasonal_, len(y))
    sse = _ses_sse(torch.from_numpy(x)[None], torch.tensor([[model.alpha_, result.params["alpha"]]]))[0]
    assert sse[0] <= sse[1] * (1 + 1e-12)
    assert model.alpha_ == pytest.approx(result.params["alpha"], abs=5e-3)
    # the forecast formula, decomposition and reseasonalising, with statsmodels' alpha plugged in
    model._params[0, 1] = float(result.params["alpha"])
    forecast = model.predict(9, y=y.copy())
    np.testing.assert_allclose(forecast["mean"], result.forecast(9, theta=theta), rtol=1e-9)


def test_innovation_variance_is_the_arima_011_drift_fit_and_intervals_follow_ses_with_drift():
    y = series(seed=6)
    model = tsgen.Theta().fit(y)
    result = reference(y)
    assert model.sigma2_ == pytest.approx(result.sigma2, rel=1e-3)
    forecast = model.predict(6, quantiles=(0.1,))
    sd = np.sqrt(model.sigma2_ * (1 + np.arange(6) * model.alpha_**2))
    np.testing.assert_allclose(forecast["q0.1"], forecast["mean"] + stats.norm.ppf(0.1) * sd, rtol=1e-12)
    draws = tsgen.Theta(random_state=0).fit(y).sample(6, n_samples=20000)[..., 0]
    n = len(draws)
    assert np.all(np.abs(draws.std(0) - sd) < 4 * sd / np.sqrt(2 * n))
    assert np.all(np.abs(draws.mean(0) - forecast["mean"].to_numpy()) < 4 * sd / np.sqrt(n))


def test_many_series_and_per_step_scores():
    ys = [series(seed=s) for s in range(3)] + [series(40, seed=9)]
    batched = tsgen.Theta().fit(ys)
    for y, forecast in zip(ys, batched.predict(5)):
        pd.testing.assert_frame_equal(forecast, tsgen.Theta().fit(y).predict(5))
    per_step = batched.log_likelihood(ys, per_step=True)
    assert all(np.isnan(s.iloc[0]) and np.isfinite(s.iloc[1:]).all() for s in per_step)


def test_missing_values_and_bad_arguments_are_refused():
    y = series()
    gappy = y.copy()
    gappy.iloc[5] = np.nan
    with pytest.raises(ValueError, match="missing"):
        tsgen.Theta().fit(gappy)
    with pytest.raises(ValueError, match="theta"):
        tsgen.Theta(theta=0.5).fit(y)
    with pytest.raises(ValueError, match="method"):
        tsgen.Theta(method="cubic").fit(y)
