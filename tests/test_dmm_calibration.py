"""DeepMarkovModel's data scale on a single Box-Cox transformed, differenced series: the fixed units ``s_0``,
not the causal mean.

The causal mean ``|x|`` of a differenced series follows its drift; as the emission's scale it made the
one-step predictive sd grow with the trend (the DMM docstring, ``scaling``).
"""
import copy

import numpy as np
import pandas as pd
import torch

import tsgen
from tsgen.data import to_series_batch

# lambda = 1 (a Box-Cox shift with the level's spread left alone): Guerrero's lambda would flatten the drift
SMALL = dict(latent_dim=4, hidden_dim=16, emission_dim=16, transition_dim=16, target_transform=1.0,
             progress=False)


def _drifting_series(n: int = 240, seed: int = 0) -> pd.Series:
    """Monthly: a season plus a trend whose growth rises steadily (so the differences drift upwards),
    plus noise of constant size."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 100 + 0.02 * t ** 2 + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, n)
    return pd.Series(values, index=pd.date_range("2000-01-01", periods=n, freq="MS"))


def _module_inputs(model, y):
    data = model._model_data(to_series_batch(y, "y", 1), training=True)
    return model._as_tensor(data.values), data.mask


def test_a_single_transformed_differenced_series_gets_the_fixed_scale_and_others_the_causal_one():
    y = _drifting_series()
    single = tsgen.DeepMarkovModel(**SMALL, max_epochs=1, random_state=0).fit(y)
    assert single.differencing_ is not None and single.module_.scaler.mode == "fixed"
    values, mask = _module_inputs(single, y)
    scale = single.module_.scale_of(values, mask)
    assert torch.equal(scale, single.module_.scaler.prior.to(scale.dtype).expand(scale.shape))
    # the causal scale of the same differences rises with the drift: what the emission no longer reads
    causal = copy.deepcopy(single.module_.scaler)
    causal.mode = "prefix"
    steps = causal.sequence(values, mask)[0, :, 0]
    assert float(steps[-1]) > 2 * float(steps[24])

    # untransformed: the causal scale may be what tracks a spread growing with the level
    untransformed = tsgen.DeepMarkovModel(**{**SMALL, "target_transform": None}, max_epochs=1, random_state=0).fit(y)
    assert untransformed.differencing_ is not None and untransformed.module_.scaler.mode == "prefix"
    panel = [y, 10 * _drifting_series(seed=1)]
    assert tsgen.DeepMarkovModel(**SMALL, max_epochs=1, random_state=0).fit(panel).module_.scaler.mode == "prefix"
    array = tsgen.DeepMarkovModel(**SMALL, max_epochs=1, random_state=0).fit(y.to_numpy())
    assert array.differencing_ is None and array.module_.scaler.mode == "prefix"
    unscaled = tsgen.DeepMarkovModel(**SMALL, max_epochs=1, random_state=0, scaling=False).fit(y)
    assert unscaled.module_.scaler.mode == "fixed"  # a Normal emission without scaling: the data's units


def test_the_scale_mode_survives_save_load_and_warm_start(tmp_path):
    y = _drifting_series()
    model = tsgen.DeepMarkovModel(**SMALL, max_epochs=1, random_state=0).fit(y)
    path = tmp_path / "dmm.pt"
    model.save(path)
    loaded = tsgen.load(path)
    assert loaded.module_.scaler.mode == "fixed"
    np.testing.assert_array_equal(loaded.sample(3, n_samples=5), model.sample(3, n_samples=5))
    # a file from before the mode was recorded keeps the causal scale it was fitted with
    meta, tensors = model._fitted_state()
    del meta["scale_mode"]
    old = copy.deepcopy(model)
    old._load_fitted_state(meta, tensors)
    assert old.module_.scaler.mode == "prefix"
    model.set_params(warm_start=True).fit(y)
    assert model.module_.scaler.mode == "fixed"


def test_one_step_predictive_spread_does_not_follow_the_drift():
    # the noise is N(0, 1) throughout while the mean |difference| the causal scale reads grows about fivefold
    # from the first 60 steps to the last: one-step predictive sds from an early and a late origin must stay
    # comparable. Measured: early 3.2, late 3.2 with the fixed scale; 1.2 and 5.5 (ratio 4.7) with the causal
    # one. The small network at 30 epochs has not learned the whole season (a true one-step sd is about 1.4),
    # hence the loose bound on the late sd, which the causal scale's 5.5 still fails.
    y = _drifting_series()
    model = tsgen.DeepMarkovModel(**SMALL, max_epochs=30, random_state=0).fit(y)
    draws = model.sample(1, n_samples=2000, y=[y.iloc[:60], y])
    early, late = (float(np.std(d[:, 0, 0])) for d in draws)
    assert 0.5 < late / early < 2.0
    assert late < 4.0
