"""The causal data scale of differenced series reads increments, not magnitudes (issue 11, coverage).

Seasonal differences carry a series' growth in their mean; a scale of
``|x_u|`` follows that drift, and every emission's spread (a multiple of
the scale) with it. These check the increments' scale step by step, on a
drifting series, and through the estimators (set from the differencing,
kept by save/load).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import tsgen
from tsgen.components.scaling import CausalScale


def _gappy_walk(seed=0, shape=(2, 40, 2)):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator, dtype=torch.float64).cumsum(1)
    mask = torch.rand(shape, generator=generator) > 0.2
    return torch.where(mask, values, torch.full((), float("nan"), dtype=torch.float64)), mask


@pytest.mark.parametrize("increments", [False, True])
def test_step_by_step_scale_equals_the_sequence_scale(increments):
    values, mask = _gappy_walk()
    scaler = CausalScale(2, 5, "prefix")
    scaler.increments = increments
    scaler.fit_prior(values, mask)
    whole = scaler.sequence(values, mask)
    window, scale = scaler.start((2,), values)
    steps = [scale]
    for t in range(values.shape[1] - 1):
        window, scale = scaler.advance(window, scale, values[:, t])
        steps.append(scale)
    torch.testing.assert_close(torch.stack(steps, 1), whole)
    for step in (0, 1, 17, 39):  # a forecast's state starts at any step and moves on from there
        window, scale = scaler.at(values, mask, torch.tensor([step, step]))
        torch.testing.assert_close(scale, whole[:, step])
        if step < values.shape[1] - 1:
            _, following = scaler.advance(window, scale, values[:, step])
            torch.testing.assert_close(following, whole[:, step + 1])


def test_increments_scale_follows_the_noise_not_the_drift():
    # differences whose mean (the growth) doubles while their noise stays put, as CO2's seasonal differences
    generator = torch.Generator().manual_seed(1)
    steps = 400
    drift = torch.linspace(1.0, 2.0, steps, dtype=torch.float64)
    values = (drift + 0.2 * torch.randn(steps, generator=generator, dtype=torch.float64))[None, :, None]
    mask = torch.ones_like(values, dtype=torch.bool)
    magnitudes, increments = CausalScale(1, 64, "prefix"), CausalScale(1, 64, "prefix")
    increments.increments = True
    for scaler in (magnitudes, increments):
        scaler.fit_prior(values, mask)
    ratio_magnitudes = float(magnitudes.sequence(values, mask)[0, -1, 0] / magnitudes.sequence(values, mask)[0, 64, 0])
    ratio_increments = float(increments.sequence(values, mask)[0, -1, 0] / increments.sequence(values, mask)[0, 64, 0])
    assert ratio_magnitudes > 1.6  # the drift
    # E|e_u - e_{u-1}| of the noise is constant; 64 increments each end: 4 s.e. of a ratio of such means
    assert abs(ratio_increments - 1.0) < 0.3
    assert float(increments.prior[0]) == pytest.approx(0.2 * 2 / np.sqrt(np.pi), rel=0.15)


def _monthly(n=150, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 50 + 0.1 * t + 5 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.5, n)
    return pd.Series(values, index=pd.date_range("2000-01-01", periods=n, freq="MS"))


def test_estimators_read_increments_exactly_when_they_difference(tmp_path):
    y = _monthly()
    model = tsgen.RNNForecaster(max_epochs=1, progress=False, random_state=0).fit(y)
    assert model.differencing_ is not None and model.module_.scaler.increments
    model.save(tmp_path / "rnn.tsgen")
    loaded = tsgen.load(tmp_path / "rnn.tsgen")
    assert loaded.module_.scaler.increments
    np.testing.assert_allclose(loaded.predict(3)["mean"], model.predict(3)["mean"])
    undifferenced = tsgen.RNNForecaster(max_epochs=1, progress=False, random_state=0, window_length=12).fit(
        y.to_numpy())  # an array has no frequency: modelled as given
    assert undifferenced.differencing_ is None and not undifferenced.module_.scaler.increments
