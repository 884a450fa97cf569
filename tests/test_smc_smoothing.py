"""Particle smoothers (FFBSi, its rejection variant, fixed-lag, genealogy) against the Kalman/RTS
smoother on linear-Gaussian models, through the protocol path users get (float64).

Monte Carlo tolerances: each test runs every simulated series in R independent copies (as separate
series of one batch); at every step the copies' mean error against the exact moment must lie within
4 standard errors estimated from the copies' spread."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch.distributions import TransformedDistribution

from tsgen.inference.kalman import KalmanParams, kalman_filter, kalman_smoother
from tsgen.inference.smc import particle_filter
from tsgen.inference.smc.smoothing import FixedLagSmoother, ffbsi, fixed_lag, genealogy
from tsgen.models._lds_protocol import LinearGaussianModule
from tsgen.protocol import SequentialModel
from tsgen.training import seeded_from

N_SE = 4.0
COPIES = 25  # independent runs per simulated series


def lds_params(state_dim: int) -> KalmanParams:
    f64 = dict(dtype=torch.float64)
    if state_dim == 1:
        return KalmanParams(
            torch.tensor([[0.8]], **f64), torch.tensor([[1.0]], **f64), torch.tensor([[0.5]], **f64),
            torch.tensor([[0.4]], **f64), torch.tensor([0.3], **f64), torch.tensor([[1.0]], **f64),
        )
    return KalmanParams(
        torch.tensor([[0.7, 0.2], [-0.1, 0.8]], **f64), torch.tensor([[1.0, 0.5]], **f64),
        torch.tensor([[0.3, 0.05], [0.05, 0.2]], **f64), torch.tensor([[0.3]], **f64),
        torch.tensor([0.0, 0.5], **f64), torch.tensor([[1.0, 0.2], [0.2, 0.5]], **f64),
        transition_offsets=torch.tensor([0.1, 0.0], **f64),
    )


def simulate(params: KalmanParams, n_series: int, steps: int, seed: int, copies: int = 1):
    """``n_series`` draws of the model, each repeated ``copies`` times (adjacent): values and mask ``(B, T, D)``."""
    gen = torch.Generator().manual_seed(seed)
    F, H, Q, R, m1, P1 = params[:6]
    c = params.transition_offsets if params.transition_offsets is not None else torch.zeros_like(m1)

    def noise(cov):
        return torch.randn(n_series, cov.shape[0], generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(cov).T

    z, ys = m1 + noise(P1), []
    for _ in range(steps):
        ys.append(z @ H.T + noise(R))
        z = z @ F.T + c + noise(Q)
    values = torch.stack(ys, 1).repeat_interleave(copies, 0)
    return values, torch.ones_like(values, dtype=torch.bool)


def filtered(model, values, mask, n_particles, seed, **options):
    with seeded_from(torch.Generator().manual_seed(seed)):
        return particle_filter(model, values, mask, n_particles=n_particles, keep="particles", **options)


def assert_within_mc_error(estimate: torch.Tensor, exact: torch.Tensor, copies: int, what: str) -> None:
    """``estimate`` ``(B, T, ...)`` from independent runs, ``copies`` adjacent runs per series: their
    mean error within N_SE standard errors at every series, step and component."""
    error = (estimate - exact).reshape(-1, copies, *estimate.shape[1:])
    mean = error.mean(1)
    se = error.std(1) / math.sqrt(copies)
    worst = (mean.abs() / se).max()
    assert bool((mean.abs() <= N_SE * se).all()), f"{what}: largest |mean error| = {float(worst):.2f} s.e."


def path_moments(paths: torch.Tensor, exact_means: torch.Tensor):
    """Means ``(B, T, Z)`` and variances about the exact means ``(B, T, Z)`` of equally weighted
    trajectories ``(M, B, T, Z)``; the second is unbiased for the smoothing variance."""
    return paths.mean(0), ((paths - exact_means) ** 2).mean(0)


@pytest.mark.parametrize("rejection", [False, True])
@pytest.mark.parametrize("state_dim", [1, 2])
def test_ffbsi_matches_rts_smoother(state_dim, rejection):
    params = lds_params(state_dim)
    values, mask = simulate(params, n_series=2, steps=15, seed=state_dim, copies=COPIES)
    mask[:, 5] = False  # a missing step: the backward kernel bridges it
    values = torch.where(mask, values, torch.nan)
    model = LinearGaussianModule(params)
    out = filtered(model, values, mask, n_particles=400, seed=10 + state_dim)
    with seeded_from(torch.Generator().manual_seed(20 + state_dim)):
        paths = ffbsi(model, out, values, mask, n_trajectories=100, rejection=rejection)
    assert paths.shape == (100, 2 * COPIES, 15, state_dim)
    rts = kalman_smoother(values, mask, params)
    variances = torch.diagonal(rts.smoothed_covariances, dim1=-2, dim2=-1)
    means, spreads = path_moments(paths, rts.smoothed_means)
    assert_within_mc_error(means, rts.smoothed_means, COPIES, "FFBSi smoothed means")
    assert_within_mc_error(spreads, variances, COPIES, "FFBSi smoothed variances")


def test_ffbsi_rejection_with_no_trials_is_the_exact_step():
    """``max_trials=0`` sends every trajectory to the exact backward step: same draws as the exact
    smoother from the same random numbers."""
    params = lds_params(1)
    values, mask = simulate(params, n_series=3, steps=8, seed=3)
    model = LinearGaussianModule(params)
    out = filtered(model, values, mask, n_particles=30, seed=4)
    draws = []
    for rejection in (False, True):
        with seeded_from(torch.Generator().manual_seed(5)):
            draws.append(ffbsi(model, out, values, mask, n_trajectories=7, rejection=rejection, max_trials=0))
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)


def test_ffbsi_rejection_accepts_most_proposals_without_the_exact_step(monkeypatch):
    """On a diffuse transition the bound is tight enough that no trajectory needs the exact step."""
    from tsgen.inference.smc import smoothing

    params = lds_params(1)._replace(transition_covariance=torch.tensor([[2.0]], dtype=torch.float64))
    values, mask = simulate(params, n_series=4, steps=10, seed=6)
    model = LinearGaussianModule(params)
    out = filtered(model, values, mask, n_particles=50, seed=7)
    exact_calls = []
    original = smoothing._backward_exact
    monkeypatch.setattr(smoothing, "_backward_exact", lambda *a: exact_calls.append(a[2].shape[0]) or original(*a))
    with seeded_from(torch.Generator().manual_seed(8)):
        paths = ffbsi(model, out, values, mask, n_trajectories=50, rejection=True, max_trials=200)
    assert paths.shape == (50, 4, 10, 1) and bool(torch.isfinite(paths).all())
    assert exact_calls == []


class _NoModeLDS(LinearGaussianModule):
    """The LDS with a transition law that has no ``mode`` (as an implicit or custom law would)."""

    def transition(self, state, x_prev, context_t):
        state, law = super().transition(state, x_prev, context_t)
        return state, TransformedDistribution(law, [])


def test_ffbsi_rejection_without_a_bound_takes_the_exact_step():
    params = lds_params(1)
    values, mask = simulate(params, n_series=3, steps=6, seed=9)
    model = _NoModeLDS(params)
    with pytest.raises(NotImplementedError):
        model.transition(torch.zeros(2, 3, 1, dtype=torch.float64), values[:, 0], model.prepare(values, mask).at(1))[1].mode
    out = filtered(model, values, mask, n_particles=30, seed=10)
    draws = []
    for rejection in (False, True):
        with seeded_from(torch.Generator().manual_seed(11)):
            draws.append(ffbsi(model, out, values, mask, n_trajectories=7, rejection=rejection))
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)


def test_genealogy_follows_the_ancestors():
    """Hand-made ancestry: z[t, n] = 10 t + n, so a path spells out the indices it went through."""
    steps, n = 3, 4
    z = (10 * torch.arange(steps)[:, None] + torch.arange(n)[None]).double().reshape(steps, n, 1, 1)
    ancestors = torch.tensor([[0, 1, 2, 3], [1, 1, 3, 0], [2, 0, 0, 3]]).reshape(steps, n, 1)
    output = SimpleNamespace(z=z, ancestors=ancestors, log_weights_history=torch.zeros(steps, n, 1) - math.log(n),
                             log_weights=torch.zeros(n, 1) - math.log(n))
    paths = genealogy(output)[:, 0, :, 0]
    # particle 0 at t=2 <- 2 at t=1 <- 3 at t=0; particle 1 <- 0 <- 1; particle 2 <- 0 <- 1; particle 3 <- 3 <- 0
    expected = torch.tensor([[3, 12, 20], [1, 10, 21], [1, 10, 22], [0, 13, 23]], dtype=torch.float64)
    torch.testing.assert_close(paths, expected)
    lag1 = fixed_lag(output, 1).z[:, 0, :, 0]
    # step 0 from the particles at step 1 (their ancestors), steps 1 and 2 from the final genealogy
    torch.testing.assert_close(lag1, torch.stack([torch.tensor([1.0, 1, 3, 0]), expected[:, 1], expected[:, 2]], 1))


def test_fixed_lag_matches_kalman_given_the_lagged_prefix():
    """Lag L estimates E[z_s | x_{1:min(s+L, T)}]: the RTS smoother of the prefix; lag 0 is the filter."""
    params = lds_params(1)
    steps, lag = 12, 3
    values, mask = simulate(params, n_series=2, steps=steps, seed=11, copies=COPIES)
    model = LinearGaussianModule(params)
    out = filtered(model, values, mask, n_particles=300, seed=12)
    exact = torch.stack([
        kalman_smoother(values[:, : min(s + lag, steps - 1) + 1], mask[:, : min(s + lag, steps - 1) + 1],
                        params).smoothed_means[:, s]
        for s in range(steps)
    ], dim=1)
    smoothed = fixed_lag(out, lag)
    assert smoothed.z.shape == (300, 2 * COPIES, steps, 1) and smoothed.log_weights.shape == (300, 2 * COPIES, steps)
    means = (smoothed.log_weights.exp().unsqueeze(-1) * smoothed.z).sum(0)
    assert_within_mc_error(means, exact, COPIES, "fixed-lag means")

    lag0 = fixed_lag(out, 0)
    torch.testing.assert_close(lag0.z, out.z.permute(1, 2, 0, 3))
    torch.testing.assert_close(lag0.log_weights, out.log_weights_history.permute(1, 2, 0))
    filter_means = (lag0.log_weights.exp().unsqueeze(-1) * lag0.z).sum(0)
    assert_within_mc_error(filter_means, kalman_filter(values, mask, params).filtered_means, COPIES, "filter means")


def test_fixed_lag_stream_matches_the_offline_smoother_and_the_genealogy():
    params = lds_params(2)
    values, mask = simulate(params, n_series=2, steps=9, seed=13)
    model = LinearGaussianModule(params)
    out = filtered(model, values, mask, n_particles=20, seed=14)
    offline = fixed_lag(out, 2)
    stream = FixedLagSmoother(2)
    emitted = [stream.update(out.z[t], out.ancestors[t] if t else None, out.log_weights_history[t]) for t in range(9)]
    assert emitted[0] is None and emitted[1] is None
    for t in range(2, 9):
        torch.testing.assert_close(emitted[t][0], offline.z[:, :, t - 2])
        torch.testing.assert_close(emitted[t][1], offline.log_weights[:, :, t - 2])
    window, weights = stream.flush()
    torch.testing.assert_close(window, offline.z[:, :, 7:].permute(2, 0, 1, 3))
    # a lag past the series' length is the genealogy of the final particles
    torch.testing.assert_close(fixed_lag(out, 50).z, genealogy(out))


def test_genealogy_matches_rts_smoother():
    params = lds_params(1)
    values, mask = simulate(params, n_series=2, steps=10, seed=15, copies=COPIES)
    model = LinearGaussianModule(params)
    out = filtered(model, values, mask, n_particles=400, seed=16)
    paths = genealogy(out)
    assert paths.shape == (400, 2 * COPIES, 10, 1)
    torch.testing.assert_close(paths[:, :, -1], out.z[-1])
    means = (out.log_weights.exp().unsqueeze(-1).unsqueeze(-1) * paths).sum(0)
    assert_within_mc_error(means, kalman_smoother(values, mask, params).smoothed_means, COPIES, "genealogy means")


class _PathDependent(SequentialModel):
    """A latent model whose transition reads a running sum of the path: not Markov in z_t."""

    latent_dim = 1
    markov_latent = False


def test_ffbsi_refuses_a_non_markov_model_and_a_filter_without_history():
    params = lds_params(1)
    values, mask = simulate(params, n_series=2, steps=5, seed=17)
    model = LinearGaussianModule(params)
    out = filtered(model, values, mask, n_particles=10, seed=18)
    with pytest.raises(ValueError, match="Markov latent.*_PathDependent"):
        ffbsi(_PathDependent(), out, values, mask, n_trajectories=5)
    with seeded_from(torch.Generator().manual_seed(0)):
        bare = particle_filter(model, values, mask, n_particles=10)
    with pytest.raises(ValueError, match="keep='particles'"):
        ffbsi(model, bare, values, mask, n_trajectories=5)
    with pytest.raises(ValueError, match="keep='particles'"):
        genealogy(bare)
    with pytest.raises(ValueError, match="`n_trajectories`"):
        ffbsi(model, out, values, mask, n_trajectories=0)
    with pytest.raises(ValueError, match="`lag`"):
        fixed_lag(out, -1)
    with seeded_from(torch.Generator().manual_seed(19)):
        no_mask = ffbsi(model, out, values, None, n_trajectories=5)
    with seeded_from(torch.Generator().manual_seed(19)):
        torch.testing.assert_close(no_mask, ffbsi(model, out, values, mask, n_trajectories=5))
    with pytest.raises(ValueError, match="`mask`"):
        ffbsi(model, out, values, mask.double(), n_trajectories=5)
    with pytest.raises(ValueError, match="`values` must cover"):
        ffbsi(model, out, values[:, :4], mask[:, :4], n_trajectories=5)
