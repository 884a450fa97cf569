"""Ensemble: the mixture's moments, quantiles and one-step densities; CRPS weights; checks."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import tsgen


def _trend(n=60, seed=0):
    rng = np.random.default_rng(seed)
    index = pd.period_range("2010-01", periods=n, freq="M")
    return pd.Series(5 + 0.3 * np.arange(n) + rng.normal(scale=1.0, size=n), index=index, name="y")


def _gaussians(ensemble, horizon):
    """Members' exact marginal means and stds, (K, horizon)."""
    moments = [m._predict_gaussian(horizon, ensemble.history_, None) for m in ensemble.models_]
    return (np.stack([mu.numpy()[0, :, 0] for mu, _ in moments]), np.stack([sd.numpy()[0, :, 0] for _, sd in moments]))


def test_paths_have_the_mixtures_moments():
    y = _trend()
    ensemble = tsgen.Ensemble([tsgen.Naive(), tsgen.Mean()], weights=[0.3, 0.7], random_state=0).fit(y)
    horizon, n = 4, 20000
    draws = ensemble.sample(horizon, n_samples=n)[:, :, 0]
    mu, sd = _gaussians(ensemble, horizon)
    w = np.array([0.3, 0.7])[:, None]
    mean = (w * mu).sum(0)
    var = (w * (sd**2 + mu**2)).sum(0) - mean**2
    fourth = (w * ((mu - mean) ** 4 + 6 * (mu - mean) ** 2 * sd**2 + 3 * sd**4)).sum(0)
    # 4 Monte Carlo standard errors of the sample mean and variance at each step
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * np.sqrt(var / n))
    assert np.all(np.abs(draws.var(0) - var) < 4 * np.sqrt((fourth - var**2) / n))
    # the whole marginal, not only two moments: the mixture CDF halfway between the members' means
    middle = 0.5 * (mu[0] + mu[1])
    cdf = (w * stats.norm.cdf((middle - mu) / sd)).sum(0)
    assert np.all(np.abs((draws <= middle).mean(0) - cdf) < 4 * np.sqrt(cdf * (1 - cdf) / n))
    np.testing.assert_array_equal(draws, ensemble.sample(horizon, n_samples=n)[:, :, 0])


def test_mixture_quantiles_solve_the_mixture_cdf_and_quantile_averaging():
    y = _trend()
    members = [tsgen.Naive(), tsgen.Drift()]
    mixture = tsgen.Ensemble(members, weights=[1.0, 3.0]).fit(y)
    levels = (0.05, 0.5, 0.9)
    frame = mixture.predict(5, quantiles=levels)
    mu, sd = _gaussians(mixture, 5)
    w = np.array([0.25, 0.75])[:, None]
    for q in levels:
        cdf = (w * stats.norm.cdf((frame[f"q{q}"].to_numpy() - mu) / sd)).sum(0)
        np.testing.assert_allclose(cdf, q, atol=1e-9)
    np.testing.assert_allclose(frame["mean"], (w * mu).sum(0))
    averaged = tsgen.Ensemble(members, weights=[1.0, 3.0], combine="quantile").fit(y).predict(5, quantiles=levels)
    own = [m.fit(y).predict(5, quantiles=levels) for m in members]
    for column in averaged:
        np.testing.assert_allclose(averaged[column], 0.25 * own[0][column] + 0.75 * own[1][column])


def test_log_likelihood_is_the_linear_pool_of_one_step_densities():
    y = _trend()
    ensemble = tsgen.Ensemble([tsgen.Naive(), tsgen.Mean()], weights=[0.4, 0.6]).fit(y)
    per_step = ensemble.log_likelihood(y, per_step=True)
    members = np.stack([m.log_likelihood(y, per_step=True).to_numpy() for m in ensemble.models_])
    expected = np.log(0.4 * np.exp(members[0]) + 0.6 * np.exp(members[1]))
    np.testing.assert_allclose(per_step.to_numpy(), expected, rtol=1e-10)
    assert ensemble.log_likelihood(y) == pytest.approx(np.nansum(expected))


def test_crps_weights_favour_the_better_member():
    y = _trend(80)
    ensemble = tsgen.Ensemble([tsgen.Mean(), tsgen.Drift()], weights="crps", horizon=3, n_windows=8,
                              random_state=0).fit(y)
    np.testing.assert_allclose(ensemble.weights_, (1 / ensemble.crps_) / (1 / ensemble.crps_).sum())
    assert ensemble.weights_[1] > 0.6  # a trend: Drift beats the flat Mean by far
    assert ensemble.crps_.shape == (2,)


def test_many_series_conditioning_and_checks():
    series = [_trend(50, seed=s) for s in range(3)]
    ensemble = tsgen.Ensemble([tsgen.Naive(), tsgen.Drift()], random_state=0).fit(series)
    assert len(ensemble.predict(3)) == 3 and ensemble.sample(3, n_samples=5)[0].shape == (5, 3, 1)
    np.testing.assert_allclose(ensemble.weights_, [0.5, 0.5])
    with pytest.raises(ValueError, match="weights"):
        tsgen.Ensemble([tsgen.Naive(), tsgen.Drift()], weights=[1.0]).fit(series[0])
    with pytest.raises(ValueError, match="weights"):
        tsgen.Ensemble([tsgen.Naive(), tsgen.Drift()], weights=[1.0, -1.0]).fit(series[0])
    with pytest.raises(ValueError, match="weights"):
        tsgen.Ensemble([tsgen.Naive(), tsgen.Drift()], weights="mse").fit(series[0])
    with pytest.raises(ValueError, match="combine"):
        tsgen.Ensemble([tsgen.Naive()], combine="median").fit(series[0])
    with pytest.raises(TypeError, match="models"):
        tsgen.Ensemble([]).fit(series[0])
    with pytest.raises(TypeError, match=r"models\[1\]"):
        tsgen.Ensemble([tsgen.Naive(), "drift"]).fit(series[0])
    template = tsgen.Naive()
    tsgen.Ensemble([template]).fit(series[0])
    assert not [a for a in vars(template) if a.endswith("_")]


class _SampledNaive(tsgen.Naive):
    """Naive whose marginals are only known through its samples (the route of the deep models)."""

    def _predict_gaussian(self, horizon, history, covariates):
        return None


def test_mixture_quantiles_from_samples_when_a_member_has_no_closed_form():
    y = _trend()
    exact = tsgen.Ensemble([tsgen.Naive(random_state=1), tsgen.Drift(random_state=2)]).fit(y)
    sampled = tsgen.Ensemble([_SampledNaive(random_state=1), tsgen.Drift(random_state=2)], random_state=0).fit(y)
    levels = (0.1, 0.5, 0.9)
    a, b = exact.predict(3, quantiles=levels), sampled.predict(3, quantiles=levels)
    np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-2)
    # 500 mixture draws: a quantile's s.e. is about sqrt(q(1-q)/500)/density, well under 0.5 here
    _, sd = _gaussians(exact, 3)
    assert np.all(np.abs(a[["q0.1", "q0.5", "q0.9"]].to_numpy() - b[["q0.1", "q0.5", "q0.9"]].to_numpy())
                  < 0.5 * sd.max(0)[:, None])
