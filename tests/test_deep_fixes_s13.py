"""Regressions found by the deep-model QA probe (stop 13): scoring near a differenced series' start, DeepState on
constant and huge data, the differencing choice's spread on huge zero-mean data."""
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tsgen
from tsgen.components.scaling import _masked_std


def _daily(values):
    return pd.Series(values, index=pd.date_range("2000-01-01", periods=len(values), freq="D"))


def _airline(last):
    data = pd.read_csv(Path(__file__).parent.parent / "datasets" / "airline_passengers.csv")
    y = pd.Series(data["passengers"].to_numpy(float), index=pd.PeriodIndex(data["month"], freq="M"))
    return y.iloc[-last:]


def _one_step_density_ratio(model, y, q, scored_steps):
    """(density of 40000 one-step forecast draws from ``y[:-1]`` near their q-quantile x, by a box of half-width
    0.1 sd) / exp(per-step log-likelihood of x as the last of ``y``'s last ``scored_steps`` steps), and the
    ratio's Monte Carlo standard error."""
    draws = model.sample(1, n_samples=40000, y=y.iloc[:-1])[:, 0, 0]
    x = float(np.quantile(draws, q))
    scored = y.copy()
    scored.iloc[-1] = x
    log_density = float(model.log_likelihood(scored.iloc[-scored_steps:], per_step=True).iloc[-1])
    h = 0.1 * draws.std()
    p = np.mean(np.abs(draws - x) < h)
    return p / (2 * h) / np.exp(log_density), np.sqrt(p * (1 - p) / len(draws)) / p


@pytest.fixture(scope="module")
def short_seasonal_rnn():
    y = _airline(60)  # 59 steps of history: seasonal differencing (lag 12), the whole series is the context
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tsgen.RNNForecaster(progress=False, random_state=0, target_transform=None).fit(y.iloc[:-1])
    assert model.differencing_ is not None and model.differencing_.lag == 12
    return model, y


def test_steps_without_their_lag_are_not_scored_as_arimas_first_steps(short_seasonal_rnn):
    model, y = short_seasonal_rnn
    per_step = model.log_likelihood(y, per_step=True)
    assert per_step.iloc[:12].isna().all()
    assert np.isfinite(per_step.iloc[12:]).all()
    assert model.log_likelihood(y) == pytest.approx(float(per_step.iloc[12:].sum()), rel=1e-9)


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_per_step_likelihood_is_the_one_step_forecast_density_on_a_short_seasonal_series(short_seasonal_rnn, q):
    model, y = short_seasonal_rnn
    ratio, se = _one_step_density_ratio(model, y, q, scored_steps=len(y))
    assert abs(ratio - 1) < 4 * se + 0.03, (q, ratio, se)  # 0.03: the window's smoothing bias


def test_deepstate_with_defaults_fits_a_constant_series():
    y = _daily(np.full(60, 3.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tsgen.DeepState(progress=False, random_state=0).fit(y)
    forecast = model.predict(3)
    assert np.allclose(forecast["mean"], 3.0, atol=0.1)
    assert np.isfinite(model.log_likelihood(y, per_step=True)).all()


def test_deepstate_fits_data_of_size_1e20_scale_invariantly():
    rng = np.random.default_rng(0)
    base = _daily(np.sin(np.arange(60) / 4) + rng.normal(0, 0.2, 60) + 2)
    kwargs = dict(hidden_dim=8, max_epochs=1, progress=False, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = tsgen.DeepState(**kwargs).fit(base)
        huge = tsgen.DeepState(**kwargs).fit(base * 1e20)
    forecast = huge.predict(2)
    assert np.isfinite(forecast.to_numpy(float)).all()
    # the units are the data's (s_0, c_0), so the fit in units of 1e20 is the same fit up to float32 rounding
    np.testing.assert_allclose(forecast["mean"] / 1e20, small.predict(2)["mean"], rtol=1e-3)
    np.testing.assert_allclose(huge.log_likelihood(base * 1e20), small.log_likelihood(base) - 60 * np.log(1e20),
                               rtol=1e-4)


def test_masked_std_does_not_overflow_on_huge_values():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(2, 30, 1))
    mask = torch.ones(2, 30, 1, dtype=torch.bool)
    mask[1, :5] = False
    expected = [np.std(values[0, :, 0], ddof=1), np.std(values[1, 5:, 0], ddof=1)]
    for size in (1.0, 1e160, 1e-160):
        spread = _masked_std(torch.tensor(values * size), mask)[:, 0].numpy() / size
        np.testing.assert_allclose(spread, expected, rtol=1e-12)
    one = torch.zeros(1, 3, 1, dtype=torch.bool)
    one[0, 0] = True
    assert torch.isnan(_masked_std(torch.ones(1, 3, 1), one)).all()  # fewer than 2 values


def test_rnn_is_scale_invariant_on_zero_mean_data_up_to_the_edges_limit():
    # the edge refuses values past 1e100 (tsgen.data), so 1e99 is the largest size a model sees
    rng = np.random.default_rng(0)
    base = _daily(np.sin(np.arange(60) / 4) + rng.normal(0, 0.2, 60))
    kwargs = dict(hidden_dim=8, max_epochs=1, progress=False, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = tsgen.RNNForecaster(**kwargs).fit(base * 1e20).predict(2)["mean"].to_numpy() / 1e20
        huge = tsgen.RNNForecaster(**kwargs).fit(base * 1e99).predict(2)["mean"].to_numpy() / 1e99
    np.testing.assert_allclose(small, huge, rtol=1e-4)


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_deepstate_one_step_forecast_density_is_the_likelihood_of_the_last_window(deepstate_airline, q):
    # the documented recipe (deepstate module docstring, "Context"): a forecast filters the last window_length_
    # steps, so score the last window_length_ + 1 steps to get its one-step density
    model, y = deepstate_airline
    ratio, se = _one_step_density_ratio(model, y, q, scored_steps=model.window_length_ + 1)
    assert abs(ratio - 1) < 4 * se + 0.03, (q, ratio, se)


@pytest.fixture(scope="module")
def deepstate_airline():
    y = _airline(144)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tsgen.DeepState(hidden_dim=8, max_epochs=10, progress=False, random_state=0,
                                target_transform=None).fit(y.iloc[:-1])
    assert model.window_length_ < len(y) - 1
    return model, y
