"""DeepMarkovModel.filter / .smooth: frames of latent means and quantiles by the particle filter and FFBSi,
checked against the Kalman filter and the RTS smoother on a linear-Gaussian DMM through the public API."""
import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm
from test_deep_robustness import TINY_DMM, series
from test_dmm import kalman_params, linear_gaussian_dmm
from test_dmm_smc import simulate

import tsgen
from tsgen.inference.kalman import kalman_filter, kalman_smoother
from tsgen.training import SequenceBatch, TrainingConfig, train

RUNS = 50  # independent filters per Monte Carlo check
LEVELS = (0.05, 0.5, 0.95)


@pytest.fixture(scope="module")
def linear_dmm():
    """A DeepMarkovModel estimator holding the linear-Gaussian DMM of test_dmm with its forward ("st-l")
    guide fitted by the ELBO (the default, guided, filter proposes from it), and the data it is checked on:
    three series with a missing value, a missing step and trailing missing steps."""
    module = linear_gaussian_dmm("st-l")
    values, mask = simulate(32, seed=1)
    config = TrainingConfig(max_epochs=60, batch_size=32, learning_rate=3e-2, patience=None, progress=False)
    train(module, lambda b, w: module.loss(b, w), SequenceBatch(values=values, mask=mask), config=config,
          generator=torch.Generator().manual_seed(0))
    values, mask = simulate(3, steps=15, seed=0)
    frames = [pd.DataFrame(values[b].numpy(), columns=["a", "b"]) for b in range(3)]
    model = tsgen.DeepMarkovModel(latent_dim=2, hidden_dim=4, emission_dim=4, transition_dim=4, max_epochs=1,
                                  progress=False, random_state=0).fit(frames)
    model.module_ = copy.deepcopy(module).float().eval()
    return model, frames, values, mask


def _stack(frames, statistic):
    """``(B, T, Z)`` array of one statistic from the per-series frames."""
    return np.stack([f.xs(statistic, axis=1, level="statistic").to_numpy() for f in frames])


def test_filter_and_smooth_match_the_kalman_filter_and_rts_smoother(linear_dmm):
    # The default, guided filter. Its guide was trained without reading the mask, so a partly observed vector
    # is outside what it proposes well: at 1000 particles its heavy-tailed weights there bias the filter's 5%
    # quantile by about 8 Monte Carlo s.e. That value is filled with a plausible one (the component's previous
    # value; the oracle is exact for any data); a missing step and trailing missing steps stay.
    model, frames, values, mask = linear_dmm
    values, mask = values.clone(), mask.clone()
    values[0, 5, 1], mask[0, 5, 1] = values[0, 4, 1], True
    frames = [pd.DataFrame(values[b].numpy(), columns=["a", "b"]) for b in range(3)]
    params = kalman_params()
    kf = kalman_filter(torch.nan_to_num(values), mask, params)
    rts = kalman_smoother(torch.nan_to_num(values), mask, params)
    exact = {
        "filter": (kf.filtered_means.numpy(), torch.diagonal(kf.filtered_covariances, dim1=-2, dim2=-1).sqrt().numpy()),
        "smooth": (rts.smoothed_means.numpy(), torch.diagonal(rts.smoothed_covariances, dim1=-2, dim2=-1).sqrt().numpy()),
    }
    M = 100  # FFBSi trajectories
    # independent runs as copies of the series in one call: every series gets particles of its own
    copies = frames * RUNS
    runs = {"filter": model.filter(copies, quantiles=LEVELS, n_particles=1000),
            "smooth": model.smooth(copies, quantiles=LEVELS, n_particles=1000, n_trajectories=M)}
    # The smoothing quantile at level q of M equally weighted trajectories is their k-th smallest value,
    # k = ceil(q M): its expectation is Blom's normal score, not the q-quantile (at M = 100 the 5% one lies
    # 0.04 sd further out). The filter's 1000 weighted particles make that gap negligible.
    scores = {"filter": {q: norm.ppf(q) for q in LEVELS},
              "smooth": {q: norm.ppf((math.ceil(q * M - 1e-9) - 0.375) / (M + 0.25)) for q in LEVELS}}
    for kind, (mean, sd) in exact.items():
        # each statistic's spread over the runs is its Monte Carlo error; 2e-3 allows for the O(1/N) bias of
        # self-normalised weights (float32 module)
        targets = {"mean": mean, **{f"q{q:g}": mean + scores[kind][q] * sd for q in LEVELS}}
        for statistic, target in targets.items():
            estimates = _stack(runs[kind], statistic).reshape(RUNS, len(frames), *target.shape[1:])
            se = estimates.std(0, ddof=1) / math.sqrt(RUNS)
            error = np.abs(estimates.mean(0) - target)
            assert np.all(error <= 4 * se + 2e-3), (kind, statistic, (error / se).max())


def test_proposal_is_the_filters(linear_dmm):
    # the default is the guided filter (the one that conditions forecasts); others are passed through
    model, frames, values, mask = linear_dmm
    model.set_params(random_state=0)
    default = model.filter(frames[1], n_particles=200)
    pd.testing.assert_frame_equal(default, model.filter(frames[1], n_particles=200, proposal="guided"))
    for proposal in ("bootstrap", "auxiliary"):
        other = model.filter(frames[1], n_particles=200, proposal=proposal)
        assert not np.allclose(other.to_numpy(), default.to_numpy())
        # estimates of the same filtering distributions (a loose check; the Kalman oracle above is the bound)
        np.testing.assert_allclose(other.xs("mean", axis=1, level="statistic").to_numpy(),
                                   default.xs("mean", axis=1, level="statistic").to_numpy(), atol=0.5)


def test_frames_layout_and_reproducibility(linear_dmm):
    model, frames, _, _ = linear_dmm
    model.set_params(random_state=3)
    for method in (model.filter, model.smooth):
        out = method(frames, n_particles=50)
        assert isinstance(out, list) and len(out) == 3
        for frame, source in zip(out, frames):
            pd.testing.assert_index_equal(frame.index, source.index)
            assert frame.columns.names == ["latent", "statistic"]
            assert list(frame.columns) == [(z, s) for z in ("z0", "z1") for s in ("mean", "q0.05", "q0.5", "q0.95")]
            assert np.isfinite(frame.to_numpy()).all()  # missing steps are predicted, not left empty
        # the same random_state gives the same frames, another one others
        again = method(frames, n_particles=50)
        for a, b in zip(out, again):
            pd.testing.assert_frame_equal(a, b)
        model.set_params(random_state=4)
        assert not np.allclose(method(frames, n_particles=50)[0].to_numpy(), out[0].to_numpy())
        model.set_params(random_state=3)
    # one series in, one frame out; the quantile columns follow `quantiles`
    single = model.filter(frames[0], quantiles=(0.25, 0.75), n_particles=50)
    assert isinstance(single, pd.DataFrame)
    assert list(single.columns.get_level_values("statistic").unique()) == ["mean", "q0.25", "q0.75"]


def test_one_latent_gets_flat_columns_and_a_scaled_dmm_with_a_look_ahead_guide_runs():
    y = series(30)
    y.iloc[7] = np.nan
    model = tsgen.DeepMarkovModel(**{**TINY_DMM, "latent_dim": 1}).fit(y)
    filtered = model.filter(y, n_particles=64)
    smoothed = model.smooth(y, n_particles=64, n_trajectories=16, proposal="bootstrap")
    for frame in (filtered, smoothed):
        assert list(frame.columns) == ["mean", "q0.05", "q0.5", "q0.95"]
        pd.testing.assert_index_equal(frame.index, y.index)
        assert np.isfinite(frame.to_numpy()).all()
        assert np.all(frame["q0.05"] <= frame["q0.5"]) and np.all(frame["q0.5"] <= frame["q0.95"])


@pytest.mark.parametrize(
    "options, name",
    [
        ({"n_particles": 1}, "n_particles"),
        ({"n_particles": 2.5}, "n_particles"),
        ({"proposal": "optimal"}, "proposal"),
        ({"quantiles": (0.0, 0.5)}, "quantiles"),
        ({"n_trajectories": 0}, "n_trajectories"),
    ],
)
def test_bad_arguments_are_named(linear_dmm, options, name):
    model, frames, _, _ = linear_dmm
    method = model.smooth if "n_trajectories" in options else model.filter
    with pytest.raises(ValueError, match=name):
        method(frames, **options)


def test_bad_input_is_refused(linear_dmm):
    model, frames, _, _ = linear_dmm
    with pytest.raises(ValueError, match="variables"):
        model.filter(frames[0][["a"]])
    with pytest.raises(ValueError, match="`X`"):
        model.smooth(frames[0], X=pd.DataFrame({"x": np.ones(15)}))
    with pytest.raises(Exception, match="not fitted"):
        tsgen.DeepMarkovModel().filter(frames[0])
