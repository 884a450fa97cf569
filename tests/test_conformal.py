"""ConformalForecaster: calibrated coverage on exchangeable data, the finite-sample rule, samples, checks."""
import numpy as np
import pandas as pd
import pytest

import tsgen
from tsgen.models.baselines import Mean

H = 3
LEVELS = (0.05, 0.95)  # the central 90% interval


class _Overconfident(Mean):
    """Mean forecast whose intervals are 0.4x too narrow: raw 90% intervals cover about 58%."""

    def _predict_gaussian(self, horizon, history, covariates):
        mean, std = super()._predict_gaussian(horizon, history, covariates)
        return mean, 0.4 * std


def _iid_panel(n_series, length, seed):
    """i.i.d. Student-t(5) noise around a level per series: errors are exchangeable within and across series."""
    rng = np.random.default_rng(seed)
    index = pd.period_range("2000-01", periods=length, freq="M")
    levels = rng.normal(10, 3, size=n_series)
    return [pd.Series(mu + rng.standard_t(5, size=length), index=index, name="y") for mu in levels]


def _coverage(frames, truths):
    inside = [(f["q0.05"].to_numpy() <= y) & (y <= f["q0.95"].to_numpy()) for f, y in zip(frames, truths)]
    return float(np.mean(inside))


@pytest.fixture(scope="module")
def panel():
    series = _iid_panel(200, 40 + H, seed=0)
    return [s.iloc[:-H] for s in series], [s.iloc[-H:].to_numpy() for s in series]


@pytest.mark.parametrize("method", ["split", "rolling"])
def test_calibrated_intervals_reach_nominal_where_the_raw_ones_under_cover(panel, method):
    train, truths = panel
    raw = _Overconfident(random_state=0).fit(train)
    raw_cover = _coverage(raw.predict(H, quantiles=LEVELS), truths)
    model = tsgen.ConformalForecaster(_Overconfident(), horizon=H, method=method, n_windows=10, random_state=0)
    calibrated = _coverage(model.fit(train).predict(H, quantiles=LEVELS), truths)
    # 600 test points in 200 independent series: s.e. of a 0.9 coverage <= sqrt(0.09 / 200) ~ 0.021
    # even if the 3 steps of a series were perfectly dependent; 4 s.e. = 0.085
    se = np.sqrt(0.9 * 0.1 / len(truths))
    assert raw_cover < 0.9 - 4 * se
    assert abs(calibrated - 0.9) < 4 * se
    assert model.errors_.shape == (200 * 10, H, 1)


def test_finite_sample_rule_gives_at_least_nominal_marginal_coverage():
    # few calibration windows (n = 9): the guarantee is k/(n+1) = 0.9 - 0.1 = 0.8 for the 10%-90% interval,
    # marginal over the calibration draw; checked over 120 independent single-series replications
    hits = []
    for rep in range(120):
        series = _iid_panel(1, 30 + 1, seed=100 + rep)[0]
        model = tsgen.ConformalForecaster(tsgen.Mean(), horizon=1, n_windows=9, random_state=rep).fit(series.iloc[:-1])
        forecast = model.predict(1, quantiles=(0.1, 0.9))
        hits.append(forecast["q0.1"].iloc[0] <= series.iloc[-1] <= forecast["q0.9"].iloc[0])
    se = np.sqrt(0.8 * 0.2 / len(hits))
    assert np.mean(hits) > 0.8 - 4 * se


def test_quantiles_are_the_conformal_order_statistics():
    series = _iid_panel(1, 60, seed=7)[0]
    model = tsgen.ConformalForecaster(tsgen.Naive(), horizon=2, n_windows=19, random_state=0).fit(series)
    errors = np.sort(model.errors_[:, :, 0], axis=0)  # n = 19
    mean, _ = model.model_._forecast(2, model.history_, None, ())
    frame = model.predict(2, quantiles=(0.05, 0.5, 0.95))
    # k = ceil(20 * 0.95) = 19, floor(20 * 0.05) = 1, ceil(20 * 0.5) = 10
    np.testing.assert_allclose(frame["q0.95"], mean[0, :, 0] + errors[18])
    np.testing.assert_allclose(frame["q0.05"], mean[0, :, 0] + errors[0])
    np.testing.assert_allclose(frame["q0.5"], mean[0, :, 0] + errors[9])
    np.testing.assert_allclose(frame["mean"], mean[0, :, 0] + model.errors_[:, :, 0].mean(0))
    with pytest.warns(tsgen.InsufficientDataWarning, match="n_windows"):
        wide = model.predict(2, quantiles=(0.01, 0.99))
    assert np.isinf(wide["q0.99"]).all() and np.isinf(wide["q0.01"]).all()  # n = 19 cannot certify 1%


def test_samples_have_the_calibrated_marginals_and_the_models_ranks():
    series = _iid_panel(1, 80, seed=3)[0]
    model = tsgen.ConformalForecaster(tsgen.Drift(random_state=1), horizon=4, n_windows=30, random_state=0)
    model.fit(series)
    draws = model.sample(4, n_samples=400)
    assert draws.shape == (400, 4, 1)
    paths = model.model_.sample(4, n_samples=400)
    np.testing.assert_array_equal(np.argsort(draws, axis=0), np.argsort(paths, axis=0))
    mean, _ = model.model_._forecast(4, model.history_, None, ())
    levels = (np.arange(400) + 0.5) / 400
    expected = mean[0, :, 0] + np.quantile(model.errors_[:, :, 0], levels, axis=0)
    np.testing.assert_allclose(np.sort(draws[:, :, 0], axis=0), expected)
    np.testing.assert_array_equal(draws, model.sample(4, n_samples=400))


def test_many_series_and_conditioning_and_checks():
    train = _iid_panel(3, 40, seed=5)
    model = tsgen.ConformalForecaster(tsgen.Naive(), horizon=2, n_windows=5, random_state=0).fit(train)
    frames = model.predict(2, quantiles=(0.1, 0.9))  # n = 15 errors certify 10%/90%, not 5%/95%
    assert isinstance(frames, list) and len(frames) == 3
    assert model.errors_.shape == (15, 2, 1)
    other = model.predict(2, y=[s.iloc[:30] for s in train], quantiles=(0.1, 0.9))  # Naive fits each series: condition all three
    assert other[0].index[0] == train[0].index[30]
    with pytest.raises(ValueError, match="horizon"):
        model.predict(3)
    with pytest.raises(ValueError, match="horizon"):
        model.sample(3)
    with pytest.raises(ValueError, match="method"):
        tsgen.ConformalForecaster(tsgen.Naive(), method="jackknife").fit(train[0])
    with pytest.raises(TypeError, match="model"):
        tsgen.ConformalForecaster("naive").fit(train[0])
    with pytest.raises(ValueError, match="n_windows"):
        tsgen.ConformalForecaster(tsgen.Naive(), n_windows=0).fit(train[0])
    with pytest.raises(ValueError, match="y"):
        tsgen.ConformalForecaster(tsgen.Naive(), horizon=12, n_windows=30).fit(train[0])  # too short
    template = tsgen.Naive()
    tsgen.ConformalForecaster(template, horizon=2, n_windows=5).fit(train[0])
    assert not [a for a in vars(template) if a.endswith("_")]  # the template is never fitted


def test_conditioning_needs_only_the_models_minimum_length():
    series = _iid_panel(1, 50, seed=9)[0]
    model = tsgen.ConformalForecaster(tsgen.Naive(), horizon=2, n_windows=19, random_state=0).fit(series)
    short = model.predict(2, y=series.iloc[:5])
    assert short.index[0] == series.index[5] and np.isfinite(short.to_numpy()).all()
