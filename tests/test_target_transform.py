"""The deep estimators' variance-stabilising transform (issue 11, "forecasting that works by default").

``target_transform`` (:class:`tsgen.components.scaling.BoxCox`, chosen by
:func:`tsgen.components.scaling.guerrero_lambda` under "auto") maps a positive
series before the differencing; densities keep its Jacobian and forecasts map
every path back. Checked on the RNN (the cheapest model) and DeepState (which
has no differencing); the full table is ``benchmarks/deep_forecast.py``.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from test_deep_defaults import _airline, _monthly

import tsgen
from tsgen.components.scaling import BoxCox, guerrero_lambda
from tsgen.exceptions import InsufficientDataWarning

SMALL = dict(hidden_dim=8, num_layers=1, max_epochs=3, random_state=0, progress=False)


def _multiplicative(n=120, seed=0) -> pd.Series:
    """A positive monthly series whose seasonal swing grows with its level (as airline passengers')."""
    t = np.arange(n)
    noise = np.random.default_rng(seed).normal(scale=0.03, size=n)
    return _monthly(100 * np.exp(0.01 * t + 0.2 * np.sin(2 * np.pi * t / 12) + noise))


def _tensor(y: pd.Series) -> tuple[torch.Tensor, torch.Tensor]:
    values = torch.tensor(y.to_numpy(), dtype=torch.float64)[None, :, None]
    return values, ~torch.isnan(values)


# ------------------------------------------------------------ Guerrero's lambda
#: coreforecast 0.0.20 ``scalers.boxcox_lambda(x, "guerrero", period, -0.9, 2.0)`` on the three series below,
#: recorded from the peer (statsforecast's dependency, not installed in CI, which runs pandas 3)
COREFORECAST_GUERRERO = (-0.3096642953447857, -0.030449318749344142, 0.9325165286401877)


def test_guerrero_lambda_matches_coreforecast():
    rng = np.random.default_rng(0)
    series = [_airline().to_numpy()[:-24], _multiplicative().to_numpy(),
              50 + np.abs(rng.normal(size=97)).cumsum() + 3 * np.sin(np.arange(97))]
    for x, period, expected in zip(series, (12, 12, 7), COREFORECAST_GUERRERO):
        values = torch.tensor(x)[None, :, None]
        ours = guerrero_lambda(values, torch.ones_like(values, dtype=torch.bool), period, lower=-0.9, upper=2.0)
        assert float(ours[0]) == pytest.approx(expected, abs=2e-3)


def test_guerrero_lambda_aligns_each_series_to_its_end_and_skips_missing_values():
    y = _airline().to_numpy()
    values = torch.full((2, 150, 1), float("nan"), dtype=torch.float64)
    values[0, :144, 0] = torch.tensor(y)
    values[1, :, 0] = torch.tensor(np.r_[y[:70], np.nan, y[71:], y[-6:]])  # padded differently, one gap
    mask = ~torch.isnan(values)
    alone = guerrero_lambda(values[:1], mask[:1], 12, -0.9, 2.0)
    # the first series' blocks end at its own last step (144), not the padded 150
    assert float(alone) == pytest.approx(guerrero_lambda(values[:1, :144], mask[:1, :144], 12, -0.9, 2.0))
    both = guerrero_lambda(values, mask, 12)
    assert 0.0 <= float(both) <= 1.0 and float(alone) < 0  # airline wants a power below the log
    assert guerrero_lambda(values[:, :20], mask[:, :20], 12) is None  # under two seasons: no choice


# -------------------------------------------------------------------- the map
def test_box_cox_round_trips_and_its_log_det_is_the_derivative():
    x = torch.tensor([[[0.5, 3.0, 7.0], [2.0, 10.0, 1.5]]], dtype=torch.float64)
    mask = torch.ones_like(x, dtype=torch.bool)
    transform = BoxCox(torch.tensor([0.0, 0.5, 1.0]))
    w = transform.forward(x, mask)
    torch.testing.assert_close(w[..., 0], x[..., 0].log())
    torch.testing.assert_close(w[..., 2], x[..., 2])  # lambda 1: left as it is
    torch.testing.assert_close(transform.invert(w), x)
    leaf = x.clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(transform.forward(leaf, mask).sum(), leaf)  # the map is elementwise
    torch.testing.assert_close(transform.log_det(x, mask), slope.abs().log().sum(-1))
    # a draw below x = 0 (lambda > 0) maps to 0
    assert float(transform.invert(torch.tensor([1.0, -3.0, 1.0]))[1]) == 0.0
    with pytest.raises(ValueError, match="lambdas"):
        BoxCox(torch.tensor([-0.3]))


# -------------------------------------------------------------- in the models
@pytest.mark.parametrize("option", ["log", 0.5])
def test_transformed_one_step_density_integrates_to_one_in_the_data_units(option):
    y = _multiplicative(72)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        model = tsgen.RNNForecaster(target_transform=option, **SMALL).fit(y)
    assert model.target_transform_.lambdas.tolist() == [0.0 if option == "log" else 0.5]
    assert model.differencing_ is not None
    base = y.iloc[-12]
    grid = np.linspace(0.4 * base, 2.5 * base, 4001)
    nxt = y.index[-1] + y.index.freq
    paths = [pd.concat([y, pd.Series([v], index=[nxt])]).asfreq("MS") for v in grid]
    last = np.array([s.iloc[-1] for s in model.log_likelihood(paths, per_step=True)])
    assert np.trapezoid(np.exp(last), grid) == pytest.approx(1.0, abs=2e-3)


def test_per_step_densities_and_forecasts_read_only_the_past():
    y = _multiplicative()
    model = tsgen.RNNForecaster(**SMALL).fit(y)
    assert model.target_transform_ is not None
    changed = y.copy()
    changed.iloc[90:] *= 3.0
    before = model.log_likelihood(y, per_step=True)
    after = model.log_likelihood(changed, per_step=True)
    pd.testing.assert_series_equal(before.iloc[:90], after.iloc[:90])
    assert not np.allclose(before.iloc[90:], after.iloc[90:])
    # a forecast from an origin does not move when the data after the origin does
    pd.testing.assert_frame_equal(model.predict(6, y=y.iloc[:90]), model.predict(6, y=changed.iloc[:90]))


def test_forecasts_map_every_path_back():
    y = _multiplicative()
    model = tsgen.RNNForecaster(target_transform="log", **SMALL).fit(y)
    frame = model.predict(12, quantiles=(0.1, 0.5, 0.9))
    paths = model.sample(12, n_samples=model._n_predict_samples)[..., 0]
    assert (paths > 0).all()
    np.testing.assert_allclose(frame["mean"], paths.mean(0), rtol=1e-10)  # the mean of the paths ...
    np.testing.assert_allclose(frame["q0.5"], np.quantile(paths, 0.5, axis=0), rtol=1e-10)
    # ... which for the log lies above the median (the back-transformed mean of the logs)
    assert (frame["mean"] > frame["q0.5"]).mean() > 0.5


def test_auto_takes_the_log_for_a_swing_that_grows_with_the_level():
    model = tsgen.RNNForecaster(**{**SMALL, "max_epochs": 1}).fit(_airline())
    assert model.target_transform_ is not None and model.target_transform_.lambdas.tolist() == [0.0]
    assert model.target_transform_.describe() == "log"


def test_non_positive_series_never_get_the_transform():
    y = _multiplicative()
    zero = y.copy()
    zero.iloc[30] = 0.0
    settings = {**SMALL, "max_epochs": 1}
    assert tsgen.RNNForecaster(**settings).fit(zero).target_transform_ is None
    assert tsgen.RNNForecaster(**settings).fit(y - 200).target_transform_ is None
    assert tsgen.RNNForecaster(**settings, target_transform=None).fit(y).target_transform_ is None
    with pytest.raises(ValueError, match=r"`y` has values <= 0.*target_transform='log'"):
        tsgen.RNNForecaster(**settings, target_transform="log").fit(zero)
    model = tsgen.RNNForecaster(**settings).fit(y)
    assert model.target_transform_ is not None
    for call in (lambda: model.predict(3, y=zero), lambda: model.log_likelihood(zero)):
        with pytest.raises(ValueError, match=r"`y` has values <= 0.*target_transform"):
            call()
    # a two-variable frame: only the positive variable is transformed
    frame = pd.DataFrame({"a": y.to_numpy(), "b": (y - 150).to_numpy()}, index=y.index)
    both = tsgen.RNNForecaster(**settings).fit(frame)
    assert both.target_transform_.lambdas[1] == 1.0 and both.target_transform_.lambdas[0] < 1.0


def test_arrays_counts_and_unscaled_models_are_left_alone_by_auto():
    y = _multiplicative()
    settings = {**SMALL, "max_epochs": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        assert tsgen.RNNForecaster(**settings).fit(y.to_numpy()).target_transform_ is None
        assert tsgen.RNNForecaster(**settings, emission="poisson").fit(y.round()).target_transform_ is None
        assert tsgen.RNNForecaster(**settings, scaling=False).fit(y).target_transform_ is None
        # asked for explicitly, an array is transformed too
        assert tsgen.RNNForecaster(**settings, target_transform="log").fit(y.to_numpy()).target_transform_ \
            is not None
    with pytest.raises(ValueError, match="target_transform.*Normal or Student-t"):
        tsgen.RNNForecaster(**settings, emission="poisson", target_transform="log").fit(y.round())


@pytest.mark.parametrize("bad", ["sqrt", 1.5, -0.2, True])
def test_bad_target_transform_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match="target_transform"):
        tsgen.RNNForecaster(**{**SMALL, "max_epochs": 1}, target_transform=bad).fit(_multiplicative())


def test_save_load_keeps_the_transform(tmp_path):
    y = _multiplicative()
    model = tsgen.RNNForecaster(**SMALL).fit(y)
    model.save(tmp_path / "rnn.tsgen")
    loaded = tsgen.load(tmp_path / "rnn.tsgen")
    assert loaded.target_transform_.lambdas.tolist() == model.target_transform_.lambdas.tolist()
    assert loaded.log_likelihood(y) == pytest.approx(model.log_likelihood(y), rel=1e-9)
    pd.testing.assert_frame_equal(loaded.predict(6), model.predict(6))


def test_deepstate_filters_the_transformed_series_and_scores_in_the_data_units():
    y = _multiplicative()
    settings = {"hidden_dim": 4, "window_length": 36, "max_epochs": 2, "progress": False, "random_state": 0}
    model = tsgen.DeepState(target_transform="log", **settings).fit(y)
    plain = tsgen.DeepState(target_transform=None, **settings).fit(np.log(y))
    # the same network on log y: the densities differ by the Jacobian -log y_t alone
    per_step = model.log_likelihood(y, per_step=True).to_numpy()
    np.testing.assert_allclose(per_step, plain.log_likelihood(np.log(y), per_step=True).to_numpy()
                               - np.log(y.to_numpy()), rtol=1e-5, atol=1e-6)
    level = model.filter(y).means["level"]
    assert level.iloc[-1] == pytest.approx(np.log(y.iloc[-1]), abs=0.5)  # states of log y
    assert (model.sample(6, n_samples=20) > 0).all()
