"""Naive, SeasonalNaive, Drift, Mean: predictive quantiles equal FPP3's closed forms (§5.5)."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import tsgen

LEVELS = (0.025, 0.1, 0.5, 0.9, 0.975)
Z = stats.norm.ppf(LEVELS)


def series(n=30, seed=0, freq="M"):
    rng = np.random.default_rng(seed)
    values = 50 + np.cumsum(rng.normal(0.3, 1.0, n)) + 3 * np.sin(np.arange(n) * 2 * np.pi / 12)
    return pd.Series(values, index=pd.period_range("2010-01", periods=n, freq=freq), name="y")


def closed_form(name, y, horizon, m=12):
    """FPP3 §5.5: point forecast and sigma_h from the residual sd, written out directly."""
    y = np.asarray(y, float)
    T = len(y)
    h = np.arange(1, horizon + 1)
    if name == "Naive":
        sigma = np.sqrt(np.mean(np.diff(y) ** 2))
        return np.full(horizon, y[-1]), sigma * np.sqrt(h)
    if name == "SeasonalNaive":
        res = y[m:] - y[:-m]
        sigma = np.sqrt(np.mean(res**2))
        k = (h - 1) // m + 1
        return y[T - m + (h - 1) % m], sigma * np.sqrt(k)
    if name == "Drift":
        c = (y[-1] - y[0]) / (T - 1)
        res = np.diff(y) - c
        sigma = np.sqrt(np.sum(res**2) / (T - 2))
        return y[-1] + c * h, sigma * np.sqrt(h * (1 + h / (T - 1)))
    mu = y.mean()
    sigma = y.std(ddof=1)
    return np.full(horizon, mu), np.full(horizon, sigma * np.sqrt(1 + 1 / T))


@pytest.mark.parametrize("name", ["Naive", "SeasonalNaive", "Drift", "Mean"])
def test_quantiles_equal_closed_forms(name):
    y = series()
    model = getattr(tsgen, name)().fit(y)
    forecast = model.predict(27, quantiles=LEVELS)
    mean, sd = closed_form(name, y, 27)
    np.testing.assert_allclose(forecast["mean"], mean, rtol=1e-12)
    for level, z in zip(LEVELS, Z):
        np.testing.assert_allclose(forecast[f"q{level:g}"], mean + z * sd, rtol=1e-12)
    assert forecast.index[0] == pd.Period("2012-07", "M")


@pytest.mark.parametrize("name", ["Naive", "SeasonalNaive", "Drift", "Mean"])
def test_sample_paths_have_the_predictive_moments_and_covariance(name):
    y = series()
    model = getattr(tsgen, name)(random_state=1).fit(y)
    n = 40000
    draws = model.sample(15, n_samples=n)[..., 0]
    mean, sd = closed_form(name, y, 15)
    # 4 standard errors of a mean and of a standard deviation from n draws
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * sd / np.sqrt(n))
    assert np.all(np.abs(draws.std(0) - sd) < 4 * sd / np.sqrt(2 * n))
    if name == "Naive":  # a random walk: Cov(x_1, x_h) = sigma^2
        cov = np.cov(draws[:, 0], draws[:, 9])[0, 1]
        assert abs(cov - sd[0] ** 2) < 4 * sd[0] * sd[9] / np.sqrt(n)


def test_seasonal_period_from_index_and_argument():
    y = series(40, freq="Q")
    assert tsgen.SeasonalNaive().fit(y).period_ == 4
    model = tsgen.SeasonalNaive(period=5).fit(y)
    assert model.period_ == 5
    np.testing.assert_allclose(model.predict(5)["mean"], y.iloc[-5:].to_numpy())
    plain = pd.Series(y.to_numpy())  # no frequency: the naive forecast
    assert tsgen.SeasonalNaive().fit(plain).period_ == 1
    with pytest.raises(ValueError, match="period"):
        tsgen.SeasonalNaive(period=0).fit(y)


@pytest.mark.parametrize("name", ["Naive", "Drift"])
def test_missing_values_are_marginalised_like_the_dense_gaussian(name):
    """With y_5 missing, y_6 - y_4 ~ N(2c, 2 sigma^2): the one-step density skips the gap exactly."""
    y = series(20)
    gappy = y.copy()
    gappy.iloc[5] = np.nan
    model = getattr(tsgen, name)().fit(gappy)
    v = gappy.to_numpy()
    c = (v[-1] - v[0]) / 19 if name == "Drift" else 0.0
    inc = np.r_[np.diff(v[:5]), v[6] - v[4], np.diff(v[6:])]
    gap = np.r_[np.ones(4), 2, np.ones(13)]
    dof = len(inc) - (name == "Drift")
    sigma = np.sqrt(np.sum((inc - gap * c) ** 2 / gap) / dof)
    assert model.sigma_ == pytest.approx(sigma, rel=1e-12)
    per_step = model.log_likelihood(gappy, per_step=True)
    assert np.isnan(per_step.iloc[0]) and np.isnan(per_step.iloc[5])
    assert per_step.iloc[6] == pytest.approx(stats.norm.logpdf(v[6] - v[4], 2 * c, sigma * np.sqrt(2)))
    # a history ending in NaN forecasts from the last observed value over the longer gap
    ends = gappy.copy()
    ends.iloc[-1] = np.nan
    forecast = model.predict(2, y=ends, quantiles=(0.5,))
    np.testing.assert_allclose(forecast["mean"], v[-2] + c * np.array([2, 3]))


def test_many_series_are_fitted_one_by_one_in_one_batch():
    ys = [series(30, seed=s) for s in range(3)] + [series(24, seed=9)]
    batched = tsgen.Drift().fit(ys)
    assert len(batched.sigma_) == 4 and len(batched.drift_) == 4
    forecasts = batched.predict(4)
    for y, sigma, forecast in zip(ys, batched.sigma_, forecasts):
        single = tsgen.Drift().fit(y)
        assert sigma == pytest.approx(single.sigma_, rel=1e-12)
        pd.testing.assert_frame_equal(forecast, single.predict(4))
    with pytest.raises(ValueError, match="fitted on 4"):
        batched.predict(3, y=ys[:2])


def test_multivariate_targets_are_forecast_per_variable():
    a, b = series(30, 0), series(30, 1)
    frame = pd.DataFrame({"a": a, "b": b})
    model = tsgen.Naive().fit(frame)
    forecast = model.predict(3)
    pd.testing.assert_frame_equal(forecast["a"], tsgen.Naive().fit(a).predict(3), check_names=False)
    assert model.log_likelihood(frame) == pytest.approx(
        tsgen.Naive().fit(a).log_likelihood(a) + tsgen.Naive().fit(b).log_likelihood(b))


def test_too_short_series_are_refused_with_the_requirement():
    with pytest.raises(ValueError, match="needs at least 2"):
        tsgen.Drift().fit(pd.Series([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="y"):
        tsgen.SeasonalNaive(period=4).fit(pd.Series([1.0, 2.0, 3.0]))


def test_save_load_keeps_period_and_drift(tmp_path):
    model = tsgen.SeasonalNaive(period=3).fit(series())
    model.save(tmp_path / "m")
    again = tsgen.load(tmp_path / "m")
    assert again.period_ == 3 and again.sigma_ == model.sigma_
