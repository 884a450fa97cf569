"""Particle MCMC against exact answers on linear-Gaussian models (float64): PMMH's posterior of an AR
coefficient and a noise scale against a grid posterior from the Kalman likelihood; PGAS's state draws
against the RTS smoother's moments. Tolerances are 4 Monte Carlo standard errors (batch means for the
one PMMH chain; spread over independent chains for PGAS)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import HalfNormal, Normal, Uniform

from tsgen.inference.kalman import KalmanParams, kalman_log_likelihood, kalman_smoother
from tsgen.inference.smc.pmcmc import pgas, pmmh
from tsgen.models._lds_protocol import LinearGaussianModule
from tsgen.protocol import SequentialModel
from tsgen.training import seeded_from

N_SE = 4.0
OBS_VAR = 0.5


def ar1_params(phi, sigma) -> KalmanParams:
    """``z_{t+1} = phi z_t + sigma e_t``, ``x_t = z_t + v_t``, batched over the shapes of phi and sigma."""
    phi, sigma = torch.broadcast_tensors(torch.as_tensor(phi, dtype=torch.float64),
                                         torch.as_tensor(sigma, dtype=torch.float64))
    one = torch.ones_like(phi)[..., None, None]
    return KalmanParams(
        phi[..., None, None], one, (sigma**2)[..., None, None], OBS_VAR * one,
        torch.zeros_like(phi)[..., None], one,
    )


def simulate(params: KalmanParams, steps: int, seed: int, n_series: int = 1, copies: int = 1):
    gen = torch.Generator().manual_seed(seed)
    F, H, Q, R, m1, P1 = (p.squeeze() for p in params[:6])
    z = m1 + P1.sqrt() * torch.randn(n_series, generator=gen, dtype=torch.float64)
    ys = []
    for _ in range(steps):
        ys.append(H * z + R.sqrt() * torch.randn(n_series, generator=gen, dtype=torch.float64))
        z = F * z + Q.sqrt() * torch.randn(n_series, generator=gen, dtype=torch.float64)
    values = torch.stack(ys, 1).unsqueeze(-1).repeat_interleave(copies, 0)
    return values, torch.ones_like(values, dtype=torch.bool)


def build_model(theta: torch.Tensor) -> LinearGaussianModule:
    return LinearGaussianModule(ar1_params(theta[0], theta[1]))


PRIORS = {"phi": Uniform(-1.0, 1.0), "sigma": HalfNormal(1.0)}


def grid_posterior(values: torch.Tensor):
    """Posterior means and standard deviations of (phi, sigma) by quadrature on a fine grid."""
    phi = torch.linspace(-0.999, 0.999, 400, dtype=torch.float64)
    sigma = torch.linspace(0.01, 3.0, 400, dtype=torch.float64)
    grid_phi, grid_sigma = torch.meshgrid(phi, sigma, indexing="ij")
    loglik = kalman_log_likelihood(values[0], None, ar1_params(grid_phi, grid_sigma))
    log_post = loglik + PRIORS["sigma"].log_prob(grid_sigma.float()).double()
    weights = torch.softmax(log_post.flatten(), 0).reshape(log_post.shape)
    moments = []
    for grid in (grid_phi, grid_sigma):
        mean = (weights * grid).sum()
        moments.append((mean, ((weights * (grid - mean) ** 2).sum()).sqrt()))
    return moments


def batch_means_se(draws: torch.Tensor, n_batches: int = 25) -> torch.Tensor:
    """Standard error of the mean of a correlated chain ``(S, ...)`` by non-overlapping batch means."""
    size = draws.shape[0] // n_batches
    means = draws[: size * n_batches].reshape(n_batches, size, *draws.shape[1:]).mean(1)
    return means.std(0) / math.sqrt(n_batches)


def test_pmmh_matches_the_grid_posterior():
    values, mask = simulate(ar1_params(0.7, 0.8), steps=40, seed=0)
    exact = grid_posterior(values)
    with seeded_from(torch.Generator().manual_seed(1)):
        result = pmmh(build_model, PRIORS, values, mask, n_samples=2000, n_warmup=300, n_particles=150,
                      proposal_scale=0.3, adapt=True)
    assert result.samples.shape == (2000, 2) and result.names == ["phi", "sigma"]
    assert result.log_likelihood.shape == (2000,) and bool(torch.isfinite(result.log_likelihood).all())
    assert 0.05 < result.acceptance_rate < 0.8
    for k, (mean, sd) in enumerate(exact):
        draws = result.samples[:, k]
        se_mean = batch_means_se(draws)
        assert abs(float(draws.mean() - mean)) <= N_SE * float(se_mean), (result.names[k], float(draws.mean()), float(mean), float(se_mean))
        # the sd from squared deviations about the exact mean (unbiased for the variance), by the delta method
        squares = (draws - mean) ** 2
        se_sd = batch_means_se(squares) / (2 * sd)
        assert abs(float(squares.mean().sqrt() - sd)) <= N_SE * float(se_sd), (result.names[k], float(squares.mean().sqrt()), float(sd), float(se_sd))


def test_pmmh_with_a_log_density_over_raw_coordinates_is_the_same_chain():
    """A callable prior over unconstrained coordinates (Jacobian included by the caller) runs the chain
    that the distributions' own transforms run: same draws from the same random numbers."""
    from torch.distributions import biject_to

    values, mask = simulate(ar1_params(0.7, 0.8), steps=10, seed=5)
    transforms = [biject_to(prior.support) for prior in PRIORS.values()]

    def constrain(u):
        return torch.stack([transform(u[i]) for i, transform in enumerate(transforms)])

    def log_prior(u):
        theta = constrain(u)
        return sum(prior.log_prob(theta[i]) + transforms[i].log_abs_det_jacobian(u[i], theta[i])
                   for i, prior in enumerate(PRIORS.values()))

    start = torch.tensor([0.3, 1.2], dtype=torch.float64)
    runs = []
    for priors, build, initial in (
        (PRIORS, build_model, start),
        (log_prior, lambda u: build_model(constrain(u)), torch.stack([t.inv(start[i]) for i, t in enumerate(transforms)])),
    ):
        with seeded_from(torch.Generator().manual_seed(6)):
            runs.append(pmmh(build, priors, values, mask, n_samples=15, n_particles=10, proposal_scale=0.5,
                             initial=initial))
    torch.testing.assert_close(constrain(runs[1].samples.T), runs[0].samples.T)
    torch.testing.assert_close(runs[1].log_likelihood, runs[0].log_likelihood)
    assert runs[0].acceptance_rate == runs[1].acceptance_rate > 0


@pytest.mark.parametrize("proposal", ["bootstrap", "guided"])
def test_pgas_draws_match_the_rts_smoother(proposal, copies=25):
    params = ar1_params(0.8, 0.7)
    values, mask = simulate(params, steps=20, seed=2, n_series=2, copies=copies)
    mask[:, 7] = False
    values = torch.where(mask, values, torch.nan)
    model = LinearGaussianModule(params)
    with seeded_from(torch.Generator().manual_seed(3)):
        result = pgas(model, values, mask, n_samples=150, n_warmup=20, n_particles=20, proposal=proposal)
    assert result.trajectories.shape == (150, 2 * copies, 20, 1)
    assert result.update_rate.shape == (2 * copies, 20) and bool((result.update_rate > 0.3).all())
    rts = kalman_smoother(values, mask, params)
    exact_mean, exact_var = rts.smoothed_means[..., 0], rts.smoothed_covariances[..., 0, 0]
    draws = result.trajectories[..., 0]
    for estimate, exact, what in (
        (draws.mean(0), exact_mean, "means"),
        (((draws - exact_mean) ** 2).mean(0), exact_var, "variances"),
    ):
        error = (estimate - exact).reshape(2, copies, -1)  # independent chains per simulated series
        mean, se = error.mean(1), error.std(1) / math.sqrt(copies)
        assert bool((mean.abs() <= N_SE * se).all()), f"PGAS {what}: {float((mean.abs() / se).max()):.2f} s.e."


class _PathDependent(SequentialModel):
    latent_dim = 1
    markov_latent = False


def test_bad_input():
    values, mask = simulate(ar1_params(0.5, 1.0), steps=5, seed=4)
    with pytest.raises(ValueError, match="Markov latent.*_PathDependent"):
        pgas(_PathDependent(), values, mask)
    model = LinearGaussianModule(ar1_params(0.5, 1.0))
    with pytest.raises(ValueError, match="`n_particles`"):
        pgas(model, values, mask, n_particles=1)
    with pytest.raises(ValueError, match="`proposal`"):
        pgas(model, values, mask, proposal="auxiliary")
    with pytest.raises(ValueError, match="`mask`"):
        pgas(model, values, mask.float())
    with pytest.raises(ValueError, match="`initial`"):
        pgas(model, values, mask, initial=torch.zeros(1, 4, 1))
    with pytest.raises(ValueError, match="univariate"):
        pmmh(build_model, [Normal(torch.zeros(2), 1.0)], values, mask)
    with pytest.raises(TypeError, match="`priors`"):
        pmmh(build_model, [0.5], values, mask)
    with pytest.raises(ValueError, match="`initial`.*phi"):
        pmmh(build_model, PRIORS, values, mask, initial=torch.tensor([1.5, 1.0]))
    with pytest.raises(ValueError, match="`proposal_scale`"):
        pmmh(build_model, PRIORS, values, mask, proposal_scale=torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match="`n_warmup`"):
        pmmh(build_model, PRIORS, values, mask, adapt=True, n_warmup=3)
    with pytest.raises(ValueError, match="`filter_options`"):
        pmmh(build_model, PRIORS, values, mask, filter_options={"keep": "particles"})
