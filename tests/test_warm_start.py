"""``warm_start`` of the deep estimators (issue 13 item 1): a fit on a fitted estimator continues training its
network (scikit-learn's meaning), and the anomaly detector's periodic refits use it."""
import inspect

import numpy as np
import pandas as pd
import pytest
import torch

import tsgen
from tsgen.anomaly import AnomalyDetector

DEEP = [tsgen.RNNForecaster, tsgen.DeepMarkovModel, tsgen.VRNN, tsgen.STORN, tsgen.SRNN, tsgen.LSTMSSM,
        tsgen.DeepState]


def _series(n=240, dims=1, seed=0):
    # arrays: no target transform or differencing, so every fit's losses are on one scale
    rng = np.random.default_rng(seed)
    return np.sin(np.arange(n) / 4)[:, None] + 0.2 * rng.standard_normal((n, dims))


def _params(cls, **extra):
    params = dict(cls.get_test_params()[0])
    params.update(max_epochs=4, validation_fraction=0.0, progress=False, random_state=0, window_length=12,
                  learning_rate=1e-2)
    if "kl_annealing_epochs" in inspect.signature(cls).parameters:
        params["kl_annealing_epochs"] = 0  # every epoch's loss is the full objective, comparable across fits
    params.update(extra)
    return params


def _parameters(model):
    return {k: v.detach().clone() for k, v in model.module_.named_parameters()}


@pytest.mark.parametrize("cls", DEEP, ids=lambda c: c.__name__)
def test_warm_start_is_a_documented_parameter_off_by_default(cls):
    assert cls().get_params()["warm_start"] is False
    assert "warm_start : bool, default False" in cls.__doc__


@pytest.mark.parametrize("cls", DEEP, ids=lambda c: c.__name__)
def test_a_warm_refit_starts_where_the_last_fit_ended(cls):
    y = _series()
    model = cls(**_params(cls)).fit(y)
    cold_first = model.training_history_[0]["train_loss"]
    last = model.training_history_[-1]["train_loss"]
    assert cold_first > last  # the first fit learned something to keep
    model.set_params(warm_start=True).fit(y)
    warm_first = model.training_history_[0]["train_loss"]
    assert len(model.training_history_) == 4  # max_epochs more, a history of the new epochs
    assert warm_first < cold_first
    assert warm_first - last < 0.5 * (cold_first - last)


@pytest.mark.parametrize("cls", DEEP, ids=lambda c: c.__name__)
def test_a_warm_refit_continues_from_the_fitted_parameters(cls):
    # a learning rate too small to move anything: the refit's weights are the fitted ones, not a new draw
    model = cls(**_params(cls, max_epochs=1, learning_rate=1e-12, random_state=1)).fit(_series())
    before = _parameters(model)
    model.set_params(warm_start=True, random_state=2).fit(_series(seed=1))
    after = _parameters(model)
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    cold = cls(**_params(cls, max_epochs=1, learning_rate=1e-12, random_state=2)).fit(_series(seed=1))
    assert not all(torch.allclose(before[k], v, atol=1e-6) for k, v in _parameters(cold).items())


@pytest.mark.parametrize("cls", [tsgen.RNNForecaster, tsgen.DeepMarkovModel], ids=lambda c: c.__name__)
def test_warm_refits_are_reproducible_with_random_state(cls):
    runs = []
    for _ in range(2):
        model = cls(**_params(cls, max_epochs=2)).fit(_series())
        model.set_params(warm_start=True).fit(_series(seed=1))
        runs.append(model)
    first, second = (_parameters(m) for m in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert ([r["train_loss"] for r in runs[0].training_history_]
            == [r["train_loss"] for r in runs[1].training_history_])


def test_an_unfitted_estimator_with_warm_start_fits_as_usual():
    cls = tsgen.RNNForecaster
    warm = cls(**_params(cls, max_epochs=2, warm_start=True)).fit(_series())
    cold = cls(**_params(cls, max_epochs=2)).fit(_series())
    a, b = _parameters(warm), _parameters(cold)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_incompatible_data_are_refused_by_name_and_leave_the_fit_whole():
    cls = tsgen.RNNForecaster
    model = cls(**_params(cls, max_epochs=1)).fit(_series())
    before = _parameters(model)
    module = model.module_
    model.set_params(warm_start=True)
    with pytest.raises(ValueError, match=r"warm_start.*variables 2 where it was fitted with 1"):
        model.fit(_series(dims=2))
    with pytest.raises(ValueError, match=r"warm_start.*covariates 1 where it was fitted with 0"):
        model.fit(_series(), X=np.arange(240.0)[:, None])
    model.set_params(hidden_dim=model.hidden_dim + 1)
    with pytest.raises(ValueError, match=r"warm_start.*another network"):
        model.fit(_series())
    assert model.module_ is module and model.n_dims_ == 1
    assert all(torch.equal(before[k], v) for k, v in _parameters(model).items())


def test_the_fitted_transform_is_kept_and_refuses_values_it_cannot_take():
    y = pd.Series(np.exp(_series()[:, 0]) + 1.0, index=pd.date_range("2020-01-01", periods=240, freq="D"))
    cls = tsgen.RNNForecaster
    model = cls(**_params(cls, max_epochs=1, target_transform="log")).fit(y)
    transform, window = model.target_transform_, model.window_length_
    model.set_params(warm_start=True, target_transform=None, window_length=24).fit(y * 2)
    assert model.target_transform_ is transform and model.window_length_ == window
    with pytest.raises(ValueError, match=r"warm_start.*target_transform.*values <= 0"):
        model.fit(y - 10)


def test_deepstate_refuses_another_season_length():
    cls = tsgen.DeepState
    model = cls(**_params(cls, max_epochs=1, season_length=4)).fit(_series())
    model.set_params(warm_start=True, season_length=6)
    with pytest.raises(ValueError, match=r"warm_start.*season length is 4.*6"):
        model.fit(_series())
    assert model.season_length_ == 4


def test_a_bad_warm_start_value_is_refused():
    with pytest.raises(ValueError, match=r"`warm_start` must be True or False; got 'yes'"):
        tsgen.RNNForecaster(**_params(tsgen.RNNForecaster, warm_start="yes")).fit(_series())


def test_save_and_load_keep_warm_start_and_the_loaded_model_continues(tmp_path):
    cls = tsgen.RNNForecaster
    model = cls(**_params(cls, warm_start=True)).fit(_series())
    path = tmp_path / "rnn.tsgen"
    model.save(path)
    loaded = tsgen.load(path)
    assert loaded.get_params()["warm_start"] is True
    cold_first, last = model.training_history_[0]["train_loss"], model.training_history_[-1]["train_loss"]
    loaded.fit(_series())
    assert loaded.training_history_[0]["train_loss"] - last < 0.5 * (cold_first - last)


# ----------------------------------------------------------------- the detector's periodic refits
def _wti():
    return pd.read_csv("datasets/wti_daily.csv", parse_dates=["date"]).set_index("date")["price"].iloc[:300]


@pytest.mark.parametrize("cls", [tsgen.RNNForecaster, tsgen.DeepMarkovModel, tsgen.LSTMSSM, tsgen.DeepState],
                         ids=lambda c: c.__name__)
def test_deep_models_can_be_warm_started(cls):
    assert "warm_start" in cls().get_params()


def test_the_detectors_refit_starts_from_the_current_weights():
    y = _wti()
    model = tsgen.RNNForecaster(hidden_dim=4, max_epochs=1, window_length=20, random_state=None, progress=False,
                                learning_rate=1e-12)  # (almost) no learning: a warm start keeps the weights
    detector = AnomalyDetector(model, online="refit", refit_every=50, long_window=120).fit(y.iloc[:200])
    fitted = detector.model_.module_
    before = _parameters(detector.model_)
    detector.update(y.iloc[200:260])
    assert detector.model_.module_ is not fitted  # a refit happened
    # the weights, not the buffers: the causal scale's prior is refitted to the sliding window by design
    after = _parameters(detector.model_)
    assert all((before[k] - after[k]).abs().max() < 1e-6 for k in before)
    assert model.get_params()["warm_start"] is False  # the user's estimator is not touched
