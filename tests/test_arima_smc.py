"""ARIMA on the model protocol: log_likelihood(method="smc") (a particle filter on its innovations form through
LinearGaussianModule) against the exact Kalman likelihood, which matches statsmodels' llf."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

import tsgen
from tsgen.inference.kalman import kalman_log_likelihood
from tsgen.models._arima_fit import regressors
from tsgen.models._arima_smc import innovations_params

RUNS = 50  # independent filters (copies of the series in one call)


def arma11(n=120, seed=0, phi=0.6, theta=0.4):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n + 1)
    w = np.zeros(n)
    for t in range(n):
        w[t] = phi * (w[t - 1] if t else 0.0) + e[t + 1] + theta * e[t]
    return w


CASES = {
    # ARIMA(1,0,1) with a constant; ARIMA(1,1,1) with a missing value (a step the filter only propagates)
    "arma_c": ((1, 0, 1), "c", pd.Series(2.0 + arma11(seed=0))),
    "arima_111": ((1, 1, 1), None, pd.Series(np.cumsum(arma11(seed=1))).mask(lambda s: s.index == 60)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def fitted(request):
    order, trend, y = CASES[request.param]
    return tsgen.ARIMA(order=order, trend=trend, random_state=0).fit(y), y


def _eta(model, y):
    spec, params = model._specs[0], model._params[0][None]
    values = torch.tensor(y.to_numpy())[None]
    if spec.n_regressors:
        X = regressors(spec, values.shape[1], None, 1)
        values = values - (X @ params[:, spec.blocks["beta"]].unsqueeze(-1)).squeeze(-1)
    return spec, params, values


def test_exact_likelihood_is_statsmodels_llf(fitted):
    sm_arima = pytest.importorskip("statsmodels.tsa.arima.model")
    model, y = fitted
    spec = model._specs[0]
    reference = sm_arima.ARIMA(y.to_numpy(), order=spec.order, trend=model.trend_ or "n").loglike(
        np.array(list(model.params_.values())))
    # statsmodels' exact-diffuse filter rounds at about 1e-6 for d > 0 (tsgen.models.arima)
    assert model.log_likelihood(y) == pytest.approx(reference, abs=1e-4)
    assert model.log_likelihood(y) == pytest.approx(model.llf_, abs=1e-8)


def test_innovations_form_is_the_same_model(fitted):
    # deterministic check of the state space the particle filter runs: the Kalman filter on it gives the
    # exact ARIMA one-step densities, missing step included
    model, y = fitted
    spec, params, eta = _eta(model, y)
    n = spec.n_integration
    observed = torch.isfinite(eta[:, n:, None])
    kalman = kalman_log_likelihood(torch.nan_to_num(eta[:, n:, None]), observed, innovations_params(spec, params, eta),
                                   per_step=True)[0].numpy()
    exact = model.log_likelihood(y, per_step=True).to_numpy()[n:]
    np.testing.assert_allclose(np.where(observed[0, :, 0].numpy(), kalman, np.nan), exact, atol=1e-9)


def test_smc_totals_and_one_step_densities_within_monte_carlo_error(fitted):
    model, y = fitted
    exact = model.log_likelihood(y, per_step=True)
    runs = model.log_likelihood([y] * RUNS, per_step=True, method="smc", n_particles=1000)
    steps = np.stack([r.to_numpy() for r in runs])  # (RUNS, T), NaN where not scored
    scored = ~np.isnan(exact.to_numpy())
    assert np.array_equal(~np.isnan(steps), np.broadcast_to(scored, steps.shape))
    # exp of a total (and of every prefix sum) is an unbiased estimate of the likelihood, so the log values
    # average log p - var/2; the tolerance counts the error of the estimated var/2 (as in test_dmm_smc)
    totals = np.nansum(steps, 1)
    checks = {"total": (totals[:, None], np.array([np.nansum(exact)])),
              "per step": (steps[:, scored], exact.to_numpy()[scored])}
    for name, (values, target) in checks.items():
        var = values.var(0, ddof=1)
        tolerance = 4 * (np.sqrt(var / RUNS) + var / 2 * math.sqrt(2 / (RUNS - 1))) + 1e-9
        error = np.abs(values.mean(0) + var / 2 - target)
        assert np.all(error <= tolerance), (name, (error / tolerance).max())
    assert totals.std() < 0.2  # a usable filter at 1000 particles, not a lucky pass
    assert np.nanmean(totals) == pytest.approx(model.llf_, abs=0.05)
    # the same random_state gives the same estimate
    again = model.log_likelihood(y, method="smc", n_particles=1000)
    assert again == model.log_likelihood(y, method="smc", n_particles=1000)


def test_bad_arguments_are_named(fitted):
    model, y = fitted
    with pytest.raises(ValueError, match="`method`"):
        model.log_likelihood(y, method="particles")
    with pytest.raises(ValueError, match="`n_particles`"):
        model.log_likelihood(y, n_particles=100)  # the exact route takes no particles
    with pytest.raises(ValueError, match="`n_particles`"):
        model.log_likelihood(y, method="smc", n_particles=1)
    with pytest.raises(TypeError, match="proposal"):
        model.log_likelihood(y, method="smc", proposal="guided")
