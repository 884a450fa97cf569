"""ETS against statsmodels' ETSModel: log-likelihoods, fitted values and forecasts for fixed parameters,
fitted likelihoods, automatic selection, many series, missing values and bad input."""
import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

import tsgen
from tsgen.models import _ets_kernels as kernels

CODES = {"N": None, "A": "add", "M": "mul"}


def quarterly(n=40, seed=0, positive=True):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    level = 100 + np.cumsum(rng.normal(0.5, 2.0, n))
    values = level * (1 + 0.15 * np.sin(2 * np.pi * t / 4)) + rng.normal(0, 2.0, n)
    if not positive:
        values = values - values.mean()
    return pd.Series(values, index=pd.period_range("2000Q1", periods=n, freq="Q"), name="y")


def statsmodels_model(name, y, period=4):
    damped = "d" in name
    letters = name.replace("d", "")
    return ETSModel(y, error=CODES[letters[0]], trend=CODES[letters[1]], seasonal=CODES[letters[2]],
                    damped_trend=damped, seasonal_periods=period if letters[2] != "N" else None)


FORMS = ["ANN", "AAN", "AAdN", "ANA", "AAA", "AAdA", "MNN", "MAN", "MAdN", "MNA", "MAA", "MNM", "MAM", "MAdM",
         "AAM", "MMN", "AMdA"]


@pytest.mark.parametrize("name", FORMS)
def test_fixed_parameters_give_statsmodels_loglike_fitted_values_and_forecasts(name):
    """Our fitted parameters plugged into statsmodels: same log-likelihood, one-step predictions and
    point forecasts (the recursion is statsmodels' component form) to 1e-6."""
    y = quarterly()
    model = tsgen.ETS(model=name, allow_multiplicative_trend=True).fit(y)
    assert model.model_ == name
    reference = statsmodels_model(name, y)
    params = np.array([model.params_[k] for k in reference.param_names])
    assert model.llf_ == pytest.approx(reference.loglike(params), abs=1e-6)
    result = reference.smooth(params)
    form = model._forms[0]
    smoothing = model._smoothing.numpy()
    states = model._states[:, : 2 + form.period].numpy()
    yhat, final, _ = kernels.filter_many(smoothing, states, y.to_numpy()[None], np.ones((1, len(y)), bool),
                                         np.array([len(y)]), form.error, form.trend, form.season, form.period)
    np.testing.assert_allclose(yhat[0], result.fittedvalues, rtol=0, atol=1e-6)
    points = kernels.point_forecasts(smoothing, final, form.trend, form.season, form.period, 9)
    np.testing.assert_allclose(points[0], result.forecast(9), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["ANN", "AAdN", "AAA", "ANA"])
def test_linear_forms_predict_statsmodels_means_and_intervals(name):
    y = quarterly(seed=1)
    model = tsgen.ETS(model=name).fit(y)
    reference = statsmodels_model(name, y)
    params = np.array([model.params_[k] for k in reference.param_names])
    frame = reference.smooth(params).get_prediction(start=len(y), end=len(y) + 7).summary_frame(alpha=0.1)
    forecast = model.predict(8, quantiles=(0.05, 0.95))
    np.testing.assert_allclose(forecast["mean"], frame["mean"], atol=1e-6)
    np.testing.assert_allclose(forecast["q0.05"], frame["pi_lower"], atol=1e-6)
    np.testing.assert_allclose(forecast["q0.95"], frame["pi_upper"], atol=1e-6)


@pytest.mark.parametrize("name", ["ANN", "AAN", "AAA", "MNN", "MAA"])
def test_maximum_likelihood_is_at_least_statsmodels_fit(name):
    y = quarterly(seed=2)
    model = tsgen.ETS(model=name).fit(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = statsmodels_model(name, y).fit(disp=False)
    # additive errors: the initial states are profiled out exactly, and Nelder-Mead stops at a relative
    # spread of 1e-6 in -llf; multiplicative errors: the profile is a few Newton steps
    assert model.llf_ >= reference.llf - (5e-6 * abs(reference.llf) if name[0] == "A" else 0.05)


def test_automatic_selection_takes_the_smallest_aicc_and_respects_positivity():
    y = quarterly(60, seed=3)
    auto = tsgen.ETS(model="ZZZ").fit(y)
    assert auto.model_[-1] != "N"  # strongly seasonal
    for name in ("ANN", "AAN", "ANA", "AAA"):
        assert auto.aicc_ <= tsgen.ETS(model=name).fit(y).aicc_ + 1e-6
    signed = quarterly(60, seed=3, positive=False)
    chosen = tsgen.ETS(error="auto", trend="auto", seasonal="auto", damped="auto").fit(signed).model_
    assert "M" not in chosen
    with pytest.raises(ValueError, match="strictly positive"):
        tsgen.ETS(model="MNN").fit(signed)


def test_information_criteria_count_parameters_as_r():
    y = quarterly(seed=4)
    model = tsgen.ETS(model="AAdA").fit(y)
    k = 4 + 1 + 1 + 3 + 1  # alpha beta gamma phi, level, trend, m - 1 seasonal states, sigma^2
    n = len(y)
    assert model.aic_ == pytest.approx(-2 * model.llf_ + 2 * k)
    assert model.aicc_ == pytest.approx(model.aic_ + 2 * k * (k + 1) / (n - k - 1))


def test_many_series_are_fitted_each_on_its_own():
    ys = [quarterly(40, seed=s) for s in range(3)] + [quarterly(32, seed=7)]
    batched = tsgen.ETS(model="AAA").fit(ys)
    assert len(batched.llf_) == 4
    for y, llf, forecast in zip(ys, batched.llf_, batched.predict(4)):
        single = tsgen.ETS(model="AAA").fit(y)
        assert llf == pytest.approx(single.llf_, abs=1e-9)
        pd.testing.assert_frame_equal(forecast, single.predict(4))


def test_model_string_and_components_are_validated():
    assert tsgen.ETS(model="aadn").fit(quarterly()).model_ == "AAdN"
    for kwargs, message in [({"model": "XYZ"}, "model"), ({"error": "cubic"}, "error"),
                            ({"trend": None, "damped": True}, "damped"), ({"model": 3}, "model"),
                            ({"seasonal": "add", "period": 1}, "period"), ({"max_evals": 0}, "max_evals")]:
        with pytest.raises((ValueError, TypeError), match=message):
            tsgen.ETS(**kwargs).fit(quarterly())
    with pytest.raises(ValueError, match="too few"):
        tsgen.ETS(model="AAA").fit(quarterly(8))


def test_missing_values_are_zero_innovations():
    y = quarterly(seed=5)
    gappy = y.copy()
    gappy.iloc[[10, 11, 25]] = np.nan
    model = tsgen.ETS(model="AAN").fit(gappy)
    per_step = model.log_likelihood(gappy, per_step=True)
    assert per_step.iloc[[10, 11, 25]].isna().all() and np.isfinite(per_step.drop(per_step.index[[10, 11, 25]])).all()
    assert per_step.sum() == pytest.approx(model.llf_)
    assert np.isfinite(model.predict(4).to_numpy()).all()


def test_nonlinear_forms_are_forecast_by_simulation_around_the_point_forecast():
    y = quarterly(seed=6)
    model = tsgen.ETS(model="MAM", random_state=0).fit(y)
    draws = model.sample(4, n_samples=4000)[..., 0]
    form = model._forms[0]
    _, final, _ = kernels.filter_many(model._smoothing.numpy(), model._states[:, : 2 + form.period].numpy(),
                                      y.to_numpy()[None], np.ones((1, len(y)), bool), np.array([len(y)]),
                                      form.error, form.trend, form.season, form.period)
    point = kernels.point_forecasts(model._smoothing.numpy(), final, form.trend, form.season, form.period, 4)[0]
    # one step ahead the mean is exactly the point forecast (1 + eps has mean 1)
    se = draws[:, 0].std() / np.sqrt(len(draws))
    assert abs(draws[:, 0].mean() - point[0]) < 4 * se
    assert abs(draws[:, 0].std() / point[0] - np.sqrt(model.sigma2_)) < 0.05 * np.sqrt(model.sigma2_)


def test_automatic_forms_per_series_survive_save_and_load(tmp_path):
    ys = [quarterly(40, seed=s) for s in range(3)] + [quarterly(40, seed=3, positive=False)]
    model = tsgen.ETS(model="ZZZ", random_state=0).fit(ys)
    assert len(set(model.model_)) >= 2 and "M" not in model.model_[3]
    forecasts = model.predict(4)
    model.save(tmp_path / "ets")
    again = tsgen.load(tmp_path / "ets")
    assert again.model_ == model.model_ and again.aicc_ == model.aicc_
    for a, b in zip(again.predict(4), forecasts):
        pd.testing.assert_frame_equal(a, b)
    assert again.log_likelihood(ys) == pytest.approx(sum(model.llf_))
