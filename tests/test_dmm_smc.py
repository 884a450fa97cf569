"""Deep Markov Model on the protocol, by sequential Monte Carlo: likelihoods and forecasts checked against the
Kalman filter on a linear-Gaussian DMM, causal per-step scores for every guide, anomaly scores, bad arguments."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_deep_robustness import TINY_DMM, _assert_earlier_steps_unchanged, _unscored_steps, series
from test_dmm import C_, D_, F_, H_, Q_, R_, kalman_params, linear_gaussian_dmm

import tsgen
from tsgen.components.inference_networks import INFERENCE_NETWORKS
from tsgen.inference.kalman import kalman_filter
from tsgen.inference.smc.filter import particle_filter
from tsgen.training import SequenceBatch, TrainingConfig, train

DTYPE = torch.float64
RUNS = 30  # independent filters per Monte Carlo check


def simulate(n_series=3, steps=15, seed=0):
    """Draws from the linear-Gaussian DMM of test_dmm, with a missing value, a missing step and a short series."""
    g = torch.Generator().manual_seed(seed)
    z = torch.zeros(n_series, 2, dtype=DTYPE)
    ys = []
    for _ in range(steps):
        z = z @ F_.T + C_ + Q_ * torch.randn(n_series, 2, generator=g, dtype=DTYPE)
        ys.append(z @ H_.T + D_ + R_ * torch.randn(n_series, 2, generator=g, dtype=DTYPE))
    y = torch.stack(ys, 1)
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[0, 5, 1] = False
    if n_series > 1:
        mask[1, 7] = False
    if n_series > 2:
        mask[2, steps - 4 :] = False  # trailing missing steps (a shorter series)
    return torch.where(mask, y, torch.nan), mask


@pytest.fixture(scope="module")
def filtering_guide_dmm():
    """The linear-Gaussian DMM with the forward ("st-l") guide fitted by the ELBO on simulated data."""
    module = linear_gaussian_dmm("st-l")
    values, mask = simulate(32, seed=1)
    config = TrainingConfig(max_epochs=60, batch_size=32, learning_rate=3e-2, patience=None, progress=False)
    train(module, lambda b, w: module.loss(b, w), SequenceBatch(values=values, mask=mask), config=config,
          generator=torch.Generator().manual_seed(0))
    return module


@pytest.mark.parametrize("proposal, inference", [("bootstrap", "dks"), ("guided", "st-l")])
def test_smc_evidence_and_one_step_densities_match_the_kalman_filter(proposal, inference, filtering_guide_dmm):
    # the two per-step routes of DeepMarkovModel.log_likelihood: bootstrap for guides that read ahead,
    # the forward guide's combiner for "st-l"
    module = filtering_guide_dmm if inference == "st-l" else linear_gaussian_dmm(inference)
    assert module.causal_proposal == proposal
    values, mask = simulate()
    exact = kalman_filter(torch.nan_to_num(values), mask, kalman_params()).log_likelihoods
    torch.manual_seed(0)
    runs = [particle_filter(module, values, mask, n_particles=1000, proposal=proposal) for _ in range(RUNS)]
    steps = torch.stack([r.step_log_likelihood for r in runs])
    # every prefix sum_{s<=t} log p_hat(x_s | x_<s) is the log of an unbiased estimate of p(x_{1:t}): by the
    # particle filter's CLT it is about normal with mean log p(x_{1:t}) - var/2. Checked in log space, where
    # 30 runs suffice (their ratios to p are skewed); the tolerance counts the error of the estimated var/2.
    prefix, exact_prefix = steps.cumsum(-1), exact.cumsum(-1)
    var = prefix.var(0)
    tolerance = 4 * (var.sqrt() / math.sqrt(RUNS) + var / 2 * math.sqrt(2 / (RUNS - 1))) + 1e-9
    assert torch.all((prefix.mean(0) + var / 2 - exact_prefix).abs() <= tolerance), (prefix.mean(0), exact_prefix)
    assert torch.all(var < 1.0)  # 1000 particles: a usable filter on this model, not a lucky pass
    # steps where nothing is observed score exactly 0, as in the Kalman filter
    assert torch.all(steps[:, 1, 7] == 0) and torch.all(steps[:, 2, -4:] == 0)
    assert torch.all(exact[1, 7] == 0)


def test_conditioning_draws_the_kalman_filtering_posterior_at_each_series_end(filtering_guide_dmm):
    values, mask = simulate()
    lengths = torch.tensor([15, 10, 15])  # series 1 ends early: its posterior is the one after 10 steps
    ends = lengths - 1
    means, variances = [], []
    torch.manual_seed(1)
    with torch.no_grad():
        for _ in range(RUNS):
            state, last = filtering_guide_dmm.condition(values, mask, lengths, n_samples=400, n_particles=400)
            means.append(state.z.mean(0))
            variances.append(state.z.var(0))
    assert state.z.shape == (400, 3, 2) and last.shape == (400, 3, 2)
    torch.testing.assert_close(last[0], torch.stack([values[b, e] for b, e in enumerate(ends.tolist())]),
                               equal_nan=True)
    # the Kalman filter of each series up to its own end (series 2's last steps are missing: prediction)
    kalman = kalman_filter(torch.nan_to_num(values), mask, kalman_params())
    exact_mean = kalman.filtered_means[torch.arange(3), ends]
    exact_var = torch.diagonal(kalman.filtered_covariances[torch.arange(3), ends], dim1=-2, dim2=-1)
    for draws, exact in ((torch.stack(means), exact_mean), (torch.stack(variances), exact_var)):
        se = draws.std(0) / math.sqrt(RUNS)
        # 1e-3: the O(1/N) bias of a particle estimate at N = 400, far below the standard errors here
        assert torch.all((draws.mean(0) - exact).abs() <= 4 * se + 1e-3), (draws.mean(0), exact, se)


def _linear_estimator(frame):
    """A DeepMarkovModel estimator whose module is the (float32) linear-Gaussian DMM."""
    model = tsgen.DeepMarkovModel(latent_dim=2, hidden_dim=4, emission_dim=4, transition_dim=4, max_epochs=1,
                                  progress=False, random_state=0).fit(frame)
    model.module_ = linear_gaussian_dmm("st-l").float().eval()
    return model


def test_forecasts_continue_the_kalman_filter_through_the_public_api():
    values, mask = simulate(1, steps=30, seed=3)
    frame = pd.DataFrame(values[0].numpy(), columns=["a", "b"])
    model = _linear_estimator(frame)
    kalman = kalman_filter(torch.nan_to_num(values), mask, kalman_params())
    state_mean = kalman.filtered_means[0, -1] @ F_.T + C_
    state_cov = F_ @ kalman.filtered_covariances[0, -1] @ F_.T + torch.diag(Q_**2)
    mean = (state_mean @ H_.T + D_).numpy()
    sd = torch.diagonal(H_ @ state_cov @ H_.T + torch.diag(R_**2)).sqrt().numpy()
    # each call is its own seed: the spread of the forecast means over seeds is their standard error
    forecasts = np.stack([model.set_params(random_state=seed).sample(1, n_samples=2000)[:, 0].mean(0)
                          for seed in range(10)])
    se = forecasts.std(0) / math.sqrt(10)
    assert np.all(np.abs(forecasts.mean(0) - mean) <= 4 * se + 0.02), (forecasts.mean(0), mean, se)
    draws = model.sample(1, n_samples=4000)[:, 0]
    np.testing.assert_allclose(draws.std(0), sd, rtol=0.1)


# ------------------------------------------------------------------ the estimator: defaults, causality, arguments
@pytest.mark.parametrize("inference", sorted(INFERENCE_NETWORKS))
def test_smc_per_step_scores_ignore_later_values_for_every_guide(inference):
    y = series(30)
    y.iloc[7] = np.nan
    model = tsgen.DeepMarkovModel(**TINY_DMM, inference=inference).fit(y)
    _assert_earlier_steps_unchanged(model, y, method="smc", n_particles=200)
    per_step = model.log_likelihood(y, per_step=True, n_particles=200)  # SMC is the default
    assert np.isnan(per_step.iloc[7]) and per_step.isna().equals(_unscored_steps(model, y))
    np.testing.assert_array_equal(per_step, model.log_likelihood(y, per_step=True, method="smc", n_particles=200))


def test_a_guide_that_reads_ahead_would_make_earlier_scores_depend_on_later_values():
    # why the per-step route does not propose from the "dks" guide: its backward RNN reads the spike
    y = series(30)
    model = tsgen.DeepMarkovModel(**TINY_DMM, inference="dks").fit(y)
    spiked = y.copy()
    spiked.iloc[-1] += 1000.0
    options = dict(per_step=True, n_particles=200, proposal="guided")
    before, after = model.log_likelihood(y, **options), model.log_likelihood(spiked, **options)
    assert not np.allclose(before.iloc[:-1], after.iloc[:-1])


def test_iwae_stays_available_and_is_chosen_by_its_argument():
    y = series(30)
    model = tsgen.DeepMarkovModel(**TINY_DMM).fit(y)
    np.testing.assert_array_equal(model.log_likelihood(y, per_step=True, n_samples=8),
                                  model.log_likelihood(y, per_step=True, method="iwae", n_samples=8))
    smc = model.log_likelihood(y, n_particles=500)
    assert model.log_likelihood(y, method="elbo", n_samples=50) < smc


@pytest.mark.parametrize("options, name", [
    ({"method": "smc", "n_samples": 10}, "n_samples"),
    ({"n_particles": 1}, "n_particles"),
    ({"method": "iwae", "n_particles": 10}, "n_particles"),
    ({"method": "elbo", "proposal": "guided"}, "proposal"),
    ({"proposal": "best"}, "proposal"),
    ({"resampling": "sorted"}, "resampling"),
    ({"method": "kalman"}, "method"),
])
def test_bad_likelihood_options_are_named(options, name):
    y = series(20)
    model = tsgen.DeepMarkovModel(**TINY_DMM).fit(y)
    with pytest.raises(ValueError, match=name):
        model.log_likelihood(y, **options)


def test_anomaly_detector_scores_a_dmm_by_the_particle_filter():
    y = series(60)
    detector = tsgen.AnomalyDetector(tsgen.DeepMarkovModel(**TINY_DMM), method="quantile", n_particles=300).fit(y)
    expected = -detector.model_.log_likelihood(y, per_step=True, method="smc", n_particles=300)
    np.testing.assert_allclose(detector.train_scores_.to_numpy(), expected.to_numpy())
    spiked = y.copy()
    spiked.iloc[40] += 30.0
    assert detector.score(spiked).idxmax() == y.index[40]
    with pytest.raises(ValueError, match="n_particles"):
        tsgen.AnomalyDetector(tsgen.DeepMarkovModel(**TINY_DMM), n_particles=1).fit(y)
