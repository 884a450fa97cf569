"""tsgen.DeepState's defaults (issue 11, "forecasting that works by default"): the season length comes from
the index frequency, and noise, trend and season are in units of the series' changes, not its level.

The goal itself (80% coverage 0.65-0.95, MAE within 2x ARIMA on CO2 and airline) takes minutes per fit;
``benchmarks/deep_forecast.py --models DeepState`` measures it."""
import numpy as np
import pandas as pd
import pytest
import torch

import tsgen
from tsgen.models.deepstate import DeepState

FAST = {"hidden_dim": 4, "window_length": 36, "max_epochs": 2, "progress": False, "random_state": 0}


def monthly(n=120, level=1000.0, seed=0):
    """A series at level ``level`` whose monthly changes are about 1 (a seasonal swing of 3, small noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = level + 0.1 * t + 3 * np.sin(2 * np.pi * t / 12) + 0.2 * rng.normal(size=n)
    return pd.Series(values, index=pd.date_range("2000-01-01", periods=n, freq="MS"))


def test_the_season_length_comes_from_the_index_frequency():
    y = monthly()
    model = DeepState(**FAST).fit(y)
    assert model.season_length_ == 12
    assert list(model.filter(y).means.columns) == ["level", "trend"] + [f"season_{k}" for k in range(12)]
    quarterly = pd.Series(y.to_numpy(), index=pd.period_range("2000Q1", periods=len(y), freq="Q"))
    assert DeepState(**FAST).fit(quarterly).season_length_ == 4
    # no frequency, or asked for none: level and trend only
    assert DeepState(**FAST).fit(y.to_numpy()).season_length_ is None
    assert DeepState(**{**FAST, "season_length": None}).fit(y).season_length_ is None
    assert DeepState(**{**FAST, "season_length": 6}).fit(y).season_length_ == 6


def test_season_length_is_checked():
    y = monthly()
    daily = pd.Series(y.to_numpy(), index=pd.date_range("2000-01-01", periods=len(y), freq="D"))
    with pytest.raises(ValueError, match="season_length"):
        DeepState(**FAST).fit([y, daily])
    for bad in ("weekly", 1, 2.5):
        with pytest.raises(ValueError, match="season_length"):
            DeepState(**{**FAST, "season_length": bad}).fit(y)


def test_noise_is_in_units_of_the_changes_not_the_level():
    y = monthly()
    # untransformed, so the changes are those of y itself (target_transform="auto" would model a Box-Cox of
    # this positive series, whose changes are in other units)
    model = DeepState(**{**FAST, "window_length": 120, "validation_fraction": 0.0, "target_transform": None}).fit(y)
    change = np.abs(np.diff(y.to_numpy())).mean()
    np.testing.assert_allclose(model.module_.change_scale.item(), change, rtol=1e-4)
    values = torch.tensor(y.to_numpy(), dtype=torch.float32)[None, :, None]
    with torch.no_grad():
        params = model.module_.kalman_params(values)
    # after two epochs the emitted standard deviations are still near their start (c_0 / 2 and below):
    # a level-sized start (s_0 = 1000) would be hundreds of times larger
    assert float(params.observation_covariance.sqrt().max()) < 5 * change
    assert float(torch.diagonal(params.transition_covariance, dim1=-2, dim2=-1).sqrt().max()) < 5 * change
    frame = model.predict(1, quantiles=(0.1, 0.9))
    assert float(frame["q0.9"].iloc[0] - frame["q0.1"].iloc[0]) < 50 * change


def test_the_resolved_season_survives_save_load(tmp_path):
    y = monthly()
    model = DeepState(**FAST).fit(y)
    model.save(tmp_path / "deepstate")
    loaded = tsgen.load(tmp_path / "deepstate")
    assert loaded.season_length_ == 12 and loaded.module_.change_scale.item() == model.module_.change_scale.item()
    assert loaded.log_likelihood(y) == model.log_likelihood(y)
    np.testing.assert_array_equal(loaded.sample(3, n_samples=4), model.sample(3, n_samples=4))
