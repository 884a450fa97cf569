"""RNNForecaster: exact likelihood, masks, gradients, the protocol, the estimator edge, and JSB Chorales."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError

from tsgen import load
from tsgen.components import masked_log_prob
from tsgen.models.rnn import RNNAutoregressive, RNNForecaster
from tsgen.training import SequenceBatch, seeded_from

JSB = Path(__file__).resolve().parents[1] / "datasets" / "jsb_chorales.npz"


def ragged_batch(dtype=torch.float64, n_features=2, seed=0):
    """Two sequences (lengths 9 and 6, D=2) with a missing value inside, padded with NaN."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([9, 6])
    values = (5 + torch.randn(2, 9, 2, generator=g, dtype=dtype)).abs()
    values[1, 6:] = float("nan")
    values[0, 3, 1] = float("nan")
    values[1, 0, 0] = float("nan")
    covariates = torch.randn(2, 9, n_features, generator=g, dtype=dtype) if n_features else None
    return SequenceBatch(values, ~torch.isnan(values), covariates, lengths)


def make_module(cell="lstm", lags=(1, 3), emission="normal", scaling=True, n_features=2, dtype=torch.float64,
                num_layers=2, scale_window=64):
    with seeded_from(torch.Generator().manual_seed(0)):
        module = RNNAutoregressive(2, n_features, lags, cell, 7, num_layers, 0.0, emission, scaling,
                                   scale_window=scale_window)
    return module.to(dtype).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_teacher_forcing_equals_stepping_the_protocol(cell):
    module = make_module(cell, scale_window=3)  # a window shorter than the series: it slides
    batch = ragged_batch()
    module.scaler.fit_prior(batch.values * 1.7, batch.mask)  # a prior that is not the data's own
    expected = module.step_log_probs(batch.values, batch.mask, batch.covariates)
    context = module.prepare(batch.values, batch.mask, batch.covariates)
    state = module.init_state(context)
    x_prev = None
    steps = []
    for t in range(batch.values.shape[1]):
        state, latent = module.transition(state, x_prev, context.at(t))
        assert latent is None  # no latent variable
        steps.append(masked_log_prob(module.emission(state, context.at(t)), batch.values[:, t], batch.mask[:, t]))
        x_prev = batch.values[:, t]
    torch.testing.assert_close(torch.stack(steps, 1), expected, rtol=1e-10, atol=1e-10)
    assert (expected[1, 6:] == 0).all()

    # conditioning on the first 5 steps then one transition gives step 6's predictive
    lengths = torch.tensor([5, 5])
    state, last = module.condition(batch.values[:, :5], batch.mask[:, :5], lengths, batch.covariates[:, :5])
    torch.testing.assert_close(last, batch.values[:, 4], equal_nan=True)
    state, _ = module.transition(state, last, {"covariates": batch.covariates[:, 5]})
    following = module.emission(state, {})
    torch.testing.assert_close(
        masked_log_prob(following, batch.values[:, 5], batch.mask[:, 5]), expected[:, 5], rtol=1e-10, atol=1e-10
    )


def test_padded_and_masked_steps_contribute_exactly_zero():
    module = make_module(dtype=torch.float32)
    batch = ragged_batch(torch.float32)
    results = []
    for garbage in (float("nan"), 1e4):
        module.zero_grad()
        values = torch.where(batch.mask, batch.values, torch.tensor(garbage))
        loss = module.loss(SequenceBatch(values, batch.mask, batch.covariates, batch.lengths))
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters()}))
    assert torch.equal(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        assert torch.isfinite(grad).all() and torch.equal(grad, results[1][1][name]), name


@pytest.mark.parametrize("cell, emission", [("lstm", "normal"), ("gru", "studentt"), ("lstm", "negbin")])
def test_gradients_reach_every_parameter(cell, emission):
    module = make_module(cell, emission=emission, dtype=torch.float32).train()
    batch = ragged_batch(torch.float32)
    if emission == "negbin":
        batch = SequenceBatch(batch.values.round(), batch.mask, batch.covariates, batch.lengths)
    module.loss(batch).backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def make_series(n=60, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 20 + 5 * np.sin(2 * np.pi * t / 12) + rng.normal(scale=1.0, size=n)
    return pd.Series(values, index=pd.date_range("2020-01-01", periods=n, freq="D"), name="y")


def tiny(**kwargs):
    params = dict(hidden_dim=8, num_layers=1, max_epochs=3, batch_size=16, learning_rate=1e-2, random_state=0,
                  progress=False, window_length=24)
    params.update(kwargs)
    return RNNForecaster(**params)


def test_log_likelihood_is_the_sum_of_per_step_values_and_the_teacher_forced_loss():
    y = [make_series(60, 0).to_numpy().copy(), make_series(45, 1).to_numpy().copy()]
    y[0][10] = np.nan
    model = tiny(lags=(1, 2), cell="gru").fit(y)
    total = model.log_likelihood(y)
    per_step = model.log_likelihood(y, per_step=True)
    assert [len(s) for s in per_step] == [60, 45] and np.isnan(per_step[0].iloc[10])
    assert total == pytest.approx(sum(s.sum() for s in per_step), rel=1e-12)
    values = torch.full((2, 60, 1), float("nan"))
    values[0, :, 0] = torch.from_numpy(y[0])
    values[1, :45, 0] = torch.from_numpy(y[1])
    batch = SequenceBatch(values, ~torch.isnan(values), None, torch.tensor([60, 45]))
    with torch.no_grad():
        loss = model.module_.loss(batch)
    assert -float(loss) * batch.n_observed == pytest.approx(total, rel=1e-5)
    assert model.score(y) == pytest.approx(total / batch.n_observed, rel=1e-12)


def test_fit_predict_sample_on_a_pandas_series():
    y = make_series()
    model = tiny().fit(y)
    assert model.window_length_ == 24 and len(model.training_history_) == 3
    forecast = model.predict(7, quantiles=(0.1, 0.9))
    assert list(forecast.columns) == ["mean", "q0.1", "q0.9"]
    assert forecast.index[0] == y.index[-1] + pd.Timedelta(days=1) and len(forecast) == 7
    assert (forecast["q0.1"] < forecast["q0.9"]).all()
    draws = model.sample(5, n_samples=11)
    assert draws.shape == (11, 5, 1) and np.isfinite(draws).all()
    np.testing.assert_array_equal(draws, model.sample(5, n_samples=11))  # random_state fixes sampling
    # conditioning on another history changes the forecast; the caller's series is untouched
    other = y * 3
    copy = other.copy()
    assert not np.allclose(model.predict(3, y=other)["mean"], forecast["mean"][:3])
    pd.testing.assert_series_equal(other, copy)


def test_covariates_are_inputs_and_required_for_the_future():
    y = make_series()
    X = pd.DataFrame({"a": np.sin(np.arange(60)), "b": np.arange(60) / 60.0}, index=y.index)
    model = tiny().fit(y, X=X)
    assert model.n_features_ == 2
    future = pd.DataFrame({"a": np.ones(4), "b": np.zeros(4)})
    assert model.predict(4, X=future).shape == (4, 4)
    with pytest.raises(ValueError, match="`X` is required"):
        model.predict(4)
    shifted = model.predict(4, X=future + 5.0)["mean"]
    assert not np.allclose(shifted, model.predict(4, X=future)["mean"])
    ll = model.log_likelihood(y, X=X)
    assert ll != pytest.approx(model.log_likelihood(y, X=X + 1.0))


def test_training_is_repeatable_and_save_load_round_trips(tmp_path):
    y = [make_series(40, 0), make_series(50, 1)]
    first = tiny(dropout=0.3, num_layers=2, validation_fraction=0.2).fit(y)
    second = tiny(dropout=0.3, num_layers=2, validation_fraction=0.2).fit(y)
    state = first.module_.state_dict()
    assert all(torch.equal(v, second.module_.state_dict()[k]) for k, v in state.items())
    assert first.training_history_[-1]["train_loss"] == second.training_history_[-1]["train_loss"]
    first.save(tmp_path / "rnn.pt")
    loaded = load(tmp_path / "rnn.pt")
    assert isinstance(loaded, RNNForecaster) and loaded.get_params() == first.get_params()
    assert loaded.log_likelihood(y) == first.log_likelihood(y)
    np.testing.assert_array_equal(loaded.sample(3, n_samples=4)[1], first.sample(3, n_samples=4)[1])
    assert loaded.training_history_ == first.training_history_


def test_bad_arguments_and_unfitted_use():
    y = make_series()
    with pytest.raises(NotFittedError):
        tiny().predict(3)
    with pytest.raises(ValueError, match="`cell` must be one of"):
        tiny(cell="transformer").fit(y)
    with pytest.raises(ValueError, match="`emission` must be one of"):
        tiny(emission="gaussian").fit(y)
    with pytest.raises(ValueError, match="`lags` must be"):
        tiny(lags=(0,)).fit(y)
    with pytest.raises(ValueError, match="`window_length` must be"):
        tiny(window_length=1).fit(y)
    with pytest.raises(TypeError, match="takes no options"):
        tiny(max_epochs=1).fit(y).log_likelihood(y, method="iwae")


def split_rolls(npz, split):
    return np.split(npz[f"{split}_rolls"].astype(np.float64), np.cumsum(npz[f"{split}_lengths"])[:-1])


def test_jsb_training_beats_the_independent_bernoulli_baseline():
    npz = np.load(JSB)
    train, valid = split_rolls(npz, "train")[:120], split_rolls(npz, "valid")[:40]
    steps = sum(len(s) for s in valid)
    # baseline: every key independent with its training-set frequency
    p = np.concatenate(train).mean(0).clip(1e-3, 1 - 1e-3)
    stacked = np.concatenate(valid)
    baseline = -(stacked * np.log(p) + (1 - stacked) * np.log1p(-p)).sum() / steps

    model = RNNForecaster(cell="gru", hidden_dim=32, num_layers=1, emission="bernoulli", max_epochs=3,
                          batch_size=8, learning_rate=1e-2, dropout=0.0, random_state=0, progress=False)
    model.fit(train)
    assert model.window_length_ is None  # a collection of sequences trains whole
    nll = -model.log_likelihood(valid) / steps
    print(f"JSB valid NLL per step {nll:.3f} vs independent-Bernoulli baseline {baseline:.3f}")
    assert nll < baseline - 0.25, (nll, baseline)
    rolls = model.sample(4, n_samples=2, y=valid[:3])
    assert len(rolls) == 3 and rolls[0].shape == (2, 4, 88) and set(np.unique(rolls[0])) <= {0.0, 1.0}


@pytest.mark.parametrize("emission", ["poisson", "negbin"])
def test_count_heads_give_count_forecasts(emission):
    rng = np.random.default_rng(0)
    y = pd.Series(rng.poisson(4.0 + 3.0 * np.sin(np.arange(80) / 4.0)).astype(float),
                  index=pd.RangeIndex(80))
    model = tiny(emission=emission).fit(y)
    draws = model.sample(6, n_samples=50)
    assert (draws >= 0).all() and np.array_equal(draws, np.round(draws))
    assert np.isfinite(model.log_likelihood(y))


def test_progress_false_is_silent(capsys):
    tiny(max_epochs=2).fit(make_series())
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_max_seconds_bounds_training_time():
    y = pd.Series(np.sin(np.arange(200) / 5.0))
    model = RNNForecaster(hidden_dim=8, num_layers=1, max_epochs=10_000, max_seconds=0.5, progress=False,
                          random_state=0).fit(y)
    assert 1 <= len(model.training_history_) < 10_000
