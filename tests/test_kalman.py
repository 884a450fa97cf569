"""Kalman filter/smoother/forecast against statsmodels and closed forms (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.tsa.statespace.mlemodel import MLEModel

from tsgen.inference.kalman import (
    FilterResult,
    KalmanParams,
    KalmanState,
    kalman_filter,
    kalman_forecast,
    kalman_log_likelihood,
    kalman_sample,
    kalman_smoother,
    kalman_step,
)

RTOL = 1e-8


# ----------------------------------------------------------------------------- fixtures


def random_system(rng, state_dim, obs_dim, offsets=True, num_times=None):
    """A random stable system; with ``num_times`` every matrix varies over time."""

    def stable():
        F = rng.normal(size=(state_dim, state_dim))
        return F * (0.9 / max(np.abs(np.linalg.eigvals(F)).max(), 1e-3))

    def spd(n, scale=1.0):
        B = rng.normal(size=(n, n))
        return scale * (B @ B.T / n + 0.3 * np.eye(n))

    def many(make):
        return make() if num_times is None else np.stack([make() for _ in range(num_times)])

    return {
        "F": many(stable),
        "H": many(lambda: rng.normal(size=(obs_dim, state_dim))),
        "Q": many(lambda: spd(state_dim, 0.5)),
        "R": many(lambda: spd(obs_dim)),
        "m1": rng.normal(size=state_dim),
        "P1": spd(state_dim, 2.0),
        "c": many(lambda: rng.normal(size=state_dim)) if offsets else None,
        "d": many(lambda: rng.normal(size=obs_dim)) if offsets else None,
    }


def to_params(system, time_axis=None):
    """``time_axis``: whether the matrices carry a time axis (default: guessed from ndim)."""
    time_varying = frozenset(
        name
        for key, name, event in [
            ("F", "transition_matrices", 2),
            ("H", "observation_matrices", 2),
            ("Q", "transition_covariance", 2),
            ("R", "observation_covariance", 2),
            ("c", "transition_offsets", 1),
            ("d", "observation_offsets", 1),
        ]
        if system[key] is not None
        and (system[key].ndim > event if time_axis is None else time_axis)
    )
    as_tensor = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
    return KalmanParams(
        as_tensor(system["F"]),
        as_tensor(system["H"]),
        as_tensor(system["Q"]),
        as_tensor(system["R"]),
        as_tensor(system["m1"]),
        as_tensor(system["P1"]),
        as_tensor(system["c"]),
        as_tensor(system["d"]),
        time_varying,
    )


def statsmodels_smooth(system, y):
    """statsmodels' filter+smoother results; its time axis is last, ours first."""
    state_dim = system["m1"].shape[0]
    model = MLEModel(y, k_states=state_dim, k_posdef=state_dim)
    last_to_time = lambda a, event: a if a.ndim == event else np.moveaxis(a, 0, -1)  # noqa: E731
    model["design"] = last_to_time(system["H"], 2)
    model["obs_cov"] = last_to_time(system["R"], 2)
    model["transition"] = last_to_time(system["F"], 2)
    model["selection"] = np.eye(state_dim)
    model["state_cov"] = last_to_time(system["Q"], 2)
    if system["d"] is not None:
        model["obs_intercept"] = system["d"].T if system["d"].ndim == 2 else system["d"][:, None]
    if system["c"] is not None:
        model["state_intercept"] = system["c"].T if system["c"].ndim == 2 else system["c"][:, None]
    model.initialize_known(system["m1"], system["P1"])
    model.loglikelihood_burn = 0
    return model.smooth([])


def simulate(rng, system, num_times):
    params = to_params(system)
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    return kalman_sample(params, num_times, 1, gen).observations[0].numpy()


def punch_holes(rng, y, kind):
    y = y.copy()
    if kind in ("steps", "both"):
        y[rng.choice(len(y), size=max(1, len(y) // 5), replace=False)] = np.nan
    if kind in ("components", "both"):
        rows = rng.choice(len(y), size=max(1, len(y) // 4), replace=False)
        cols = rng.integers(0, y.shape[1], size=len(rows))
        y[rows, cols] = np.nan
    return y


def assert_close(actual, expected, rtol=RTOL):
    actual = actual.detach().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    scale = np.abs(expected).max() + 1e-300
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


CASES = [
    (1, 1, "none"),
    (2, 1, "steps"),
    (3, 2, "components"),
    (4, 1, "none"),
    (5, 3, "both"),
    (8, 4, "both"),
    (6, 2, "none"),
]


# ----------------------------------------------------------------------------- oracle tests


@pytest.mark.parametrize("state_dim, obs_dim, holes", CASES)
def test_log_likelihood_and_filter_match_statsmodels(state_dim, obs_dim, holes):
    rng = np.random.default_rng(100 * state_dim + obs_dim)
    system = random_system(rng, state_dim, obs_dim)
    y = punch_holes(rng, simulate(rng, system, 60), holes)
    res = statsmodels_smooth(system, y)
    params = to_params(system)
    y_t = torch.tensor(y)

    filtered = kalman_filter(y_t, None, params)
    assert_close(filtered.log_likelihoods, res.llf_obs)
    assert_close(filtered.predicted_means, res.predicted_state[:, :-1].T)
    assert_close(filtered.predicted_covariances, np.moveaxis(res.predicted_state_cov[:, :, :-1], -1, 0))
    assert_close(filtered.filtered_means, res.filtered_state.T)
    assert_close(filtered.filtered_covariances, np.moveaxis(res.filtered_state_cov, -1, 0))
    assert (filtered.log_likelihoods[torch.tensor(np.isnan(y).all(1))] == 0).all()

    methods = ["sequential", "scan", "auto"] + (["steady_state"] if holes == "none" else [])
    for method in methods:
        assert_close(kalman_log_likelihood(y_t, None, params, method=method), res.llf)
    scanned = kalman_filter(y_t, None, params, method="scan")
    for ours, reference in zip(scanned, filtered):
        assert_close(ours, reference.numpy())


@pytest.mark.parametrize("holes", ["none", "both"])
def test_time_varying_params_match_statsmodels(holes):
    rng = np.random.default_rng(7)
    num_times = 30
    system = random_system(rng, 3, 2, num_times=num_times)
    y = punch_holes(rng, simulate(rng, system, num_times), holes)
    res = statsmodels_smooth(system, y)
    params = to_params(system)
    y_t = torch.tensor(y)
    for method in ["sequential", "scan", "auto"]:
        assert_close(kalman_log_likelihood(y_t, None, params, method=method), res.llf)
    filtered = kalman_filter(y_t, None, params)
    assert_close(filtered.log_likelihoods, res.llf_obs)
    smoothed = kalman_smoother(y_t, None, params)
    assert_close(smoothed.smoothed_means, res.smoothed_state.T)
    assert_close(smoothed.smoothed_covariances, np.moveaxis(res.smoothed_state_cov, -1, 0))


def test_steady_state_path_matches_sequential_on_long_series():
    # Long enough for the Riccati recursion to converge and the steady gain to be reused.
    rng = np.random.default_rng(3)
    system = random_system(rng, 4, 1)
    y = torch.tensor(simulate(rng, system, 3000))
    params = to_params(system)
    res = statsmodels_smooth(system, y.numpy())
    assert_close(kalman_log_likelihood(y, None, params, method="steady_state"), res.llf)
    assert_close(kalman_log_likelihood(y, None, params, method="sequential"), res.llf)


@pytest.mark.parametrize("obs_dim", [1, 2])
def test_batched_params_equal_separate_calls(obs_dim):
    rng = np.random.default_rng(11)
    systems = [random_system(rng, 3, obs_dim) for _ in range(20)]  # > 8 sets: the batch-last schedule
    ys = np.stack([simulate(rng, s, 250) for s in systems])
    stacked = {k: np.stack([s[k] for s in systems]) for k in systems[0]}
    batched = to_params(stacked, time_axis=False)
    expected = np.array([statsmodels_smooth(s, y).llf for s, y in zip(systems, ys)])
    for method in ["steady_state", "scan", "sequential"]:
        assert_close(kalman_log_likelihood(torch.tensor(ys), None, batched, method=method), expected)
    # Shared params broadcast over many series (b1): one Riccati recursion for all.
    shared = to_params(systems[0])
    expected_shared = np.array([statsmodels_smooth(systems[0], y).llf for y in ys])
    assert_close(kalman_log_likelihood(torch.tensor(ys), None, shared), expected_shared)


@pytest.mark.parametrize("holes", ["none", "both"])
def test_smoother_matches_statsmodels(holes):
    rng = np.random.default_rng(5)
    system = random_system(rng, 4, 2)
    y = punch_holes(rng, simulate(rng, system, 50), holes)
    res = statsmodels_smooth(system, y)
    smoothed = kalman_smoother(torch.tensor(y), None, to_params(system))
    assert_close(smoothed.smoothed_means, res.smoothed_state.T)
    assert_close(smoothed.smoothed_covariances, np.moveaxis(res.smoothed_state_cov, -1, 0))
    # statsmodels' smoothed_state_autocov[:, :, t] is Cov(x_{t+1}, x_t | y_{1:T}).
    autocov = np.moveaxis(res.smoothed_state_autocov, -1, 0)[:-1]
    assert_close(smoothed.smoothed_cross_covariances, autocov)


def test_smoother_cross_covariances_match_joint_gaussian():
    """Brute force: build the joint Gaussian of (x_1..x_T, y_1..y_T) and condition."""
    rng = np.random.default_rng(9)
    S, D, T = 2, 1, 4
    system = random_system(rng, S, D)
    F, H, Q, R, c, d = (system[k] for k in "FHQRcd")
    # x = M w + offsets with w = (x_1 - m1, w_1..w_{T-1}) stacked; y = (I (x) H) x + d + v
    means, blocks = [system["m1"]], [np.eye(S)]
    for _ in range(T - 1):
        means.append(F @ means[-1] + c)
    transport = np.zeros((T * S, T * S))
    for t in range(T):
        for s in range(t + 1):
            transport[t * S : (t + 1) * S, s * S : (s + 1) * S] = np.linalg.matrix_power(F, t - s)
    noise_cov = np.zeros((T * S, T * S))
    noise_cov[:S, :S] = system["P1"]
    for t in range(1, T):
        noise_cov[t * S : (t + 1) * S, t * S : (t + 1) * S] = Q
    x_cov = transport @ noise_cov @ transport.T
    x_mean = np.concatenate(means)
    big_H = np.kron(np.eye(T), H)
    y = simulate(rng, system, T)
    y_cov = big_H @ x_cov @ big_H.T + np.kron(np.eye(T), R)
    y_mean = big_H @ x_mean + np.tile(d, T)
    gain = x_cov @ big_H.T @ np.linalg.inv(y_cov)
    post_mean = x_mean + gain @ (y.reshape(-1) - y_mean)
    post_cov = x_cov - gain @ big_H @ x_cov

    smoothed = kalman_smoother(torch.tensor(y), None, to_params(system))
    assert_close(smoothed.smoothed_means, post_mean.reshape(T, S))
    for t in range(T):
        assert_close(smoothed.smoothed_covariances[t], post_cov[t * S : (t + 1) * S, t * S : (t + 1) * S])
    for t in range(T - 1):
        cross = post_cov[(t + 1) * S : (t + 2) * S, t * S : (t + 1) * S]  # Cov(x_{t+1}, x_t)
        assert_close(smoothed.smoothed_cross_covariances[t], cross)


def test_forecast_matches_statsmodels():
    rng = np.random.default_rng(21)
    system = random_system(rng, 3, 2)
    num_times, horizon = 40, 6
    y = simulate(rng, system, num_times)
    # statsmodels forecasts = its predictions over appended missing observations.
    res = statsmodels_smooth(system, np.vstack([y, np.full((horizon, 2), np.nan)]))
    params = to_params(system)
    forecast = kalman_forecast(kalman_filter(torch.tensor(y), None, params), params, horizon)
    future = slice(num_times, num_times + horizon)
    assert_close(forecast.state_means, res.predicted_state[:, future].T)
    assert_close(forecast.state_covariances, np.moveaxis(res.predicted_state_cov[:, :, future], -1, 0))
    assert_close(forecast.observation_means, res.forecasts[:, future].T)
    assert_close(forecast.observation_covariances, np.moveaxis(res.forecasts_error_cov[:, :, future], -1, 0))


def test_forecast_with_future_params_for_time_varying_model():
    rng = np.random.default_rng(22)
    num_times, horizon = 20, 4
    system = random_system(rng, 2, 1, num_times=num_times + horizon)
    y = simulate(rng, system, num_times + horizon)[:num_times]
    res = statsmodels_smooth(system, np.vstack([y, np.full((horizon, 1), np.nan)]))
    params = to_params(system)
    past = to_params({k: (v[:num_times] if k not in ("m1", "P1") and v.ndim > (1 if k in "cd" else 2) else v) for k, v in system.items()})
    # future index k-1: the F, Q, c into x_{T+k} (system index T+k-2... shifted by one) and H, R, d of y_{T+k}.
    future = dict(system)
    for key in "FQc":
        future[key] = system[key][num_times - 1 : num_times - 1 + horizon]
    for key in "HRd":
        future[key] = system[key][num_times : num_times + horizon]
    filtered = kalman_filter(torch.tensor(y), None, past)
    forecast = kalman_forecast(filtered, params, horizon, future_params=to_params(future))
    window = slice(num_times, num_times + horizon)
    assert_close(forecast.observation_means, res.forecasts[:, window].T)
    assert_close(forecast.observation_covariances, np.moveaxis(res.forecasts_error_cov[:, :, window], -1, 0))
    with pytest.raises(ValueError, match="future_params"):
        kalman_forecast(filtered, params, horizon)


def test_streaming_steps_reproduce_the_filter():
    rng = np.random.default_rng(4)
    system = random_system(rng, 3, 2)
    y = torch.tensor(punch_holes(rng, simulate(rng, system, 15), "both"))
    params = to_params(system)
    filtered = kalman_filter(y, None, params)
    state = None
    for t in range(len(y)):
        step = kalman_step(state, y[t], None, params, t=t)
        assert_close(step.filtered.mean, filtered.filtered_means[t].numpy())
        assert_close(step.filtered.covariance, filtered.filtered_covariances[t].numpy())
        assert_close(step.log_likelihood, filtered.log_likelihoods[t].numpy())
        state = step.predicted
        assert isinstance(state, KalmanState)


def test_sample_moments_match_prior_forecast():
    rng = np.random.default_rng(8)
    system = random_system(rng, 2, 1)
    params = to_params(system)
    n = 4000
    draws = kalman_sample(params, 3, n, torch.Generator().manual_seed(0))
    assert draws.states.shape == (n, 3, 2) and draws.observations.shape == (n, 3, 1)
    # The prior predictive of y_3 is the 2-step forecast from "filtered" moments of x_1 = prior.
    prior = FilterResult(*(t.unsqueeze(0) for t in (
        torch.tensor(system["m1"]), torch.tensor(system["P1"]),
        torch.tensor(system["m1"]), torch.tensor(system["P1"]), torch.zeros(()),
    )))
    forecast = kalman_forecast(prior, params, 2)
    mean, var = forecast.observation_means[-1, 0].item(), forecast.observation_covariances[-1, 0, 0].item()
    sample = draws.observations[:, 2, 0].numpy()
    assert abs(sample.mean() - mean) < 4 * np.sqrt(var / n)
    assert abs(sample.var() - var) < 4 * var * np.sqrt(2 / n)


@pytest.mark.parametrize("num_steps", [1, 2, 7, 50, 1100])
@pytest.mark.parametrize("project_each_step", [False, True])
def test_chunked_affine_recurrences_match_a_plain_loop(num_steps, project_each_step, monkeypatch):
    from tsgen.inference import _kalman_affine as affine

    monkeypatch.setattr(affine, "PROJECT_EACH_STEP_ABOVE", -1 if project_each_step else 1 << 30)
    gen = torch.Generator().manual_seed(num_steps)
    B, S, D = 3, 3, 2
    randn = lambda *shape: torch.randn(*shape, dtype=torch.float64, generator=gen)  # noqa: E731
    L_var, u, x0 = 0.4 * randn(num_steps, S, S), randn(B, num_steps, S), randn(B, S)
    L_batch = 0.4 * randn(B, num_steps, S, S)

    def plain(L_at, inputs):
        x, out = x0, []
        for k in range(num_steps):
            x = (L_at(k) @ x.unsqueeze(-1)).squeeze(-1) + inputs[:, k]
            out.append(x)
        return torch.stack(out, 1)

    torch.testing.assert_close(affine.affine_recurrence_varying_shared(L_var, u, x0), plain(lambda k: L_var[k], u))
    torch.testing.assert_close(affine.affine_recurrence_sequential(L_batch, u, x0), plain(lambda k: L_batch[:, k], u))
    z, H_out = randn(B, num_steps, D), randn(D, S)
    for L, G, c in [(0.4 * randn(S, S), randn(S, D), randn(S)), (0.4 * randn(B, S, S), randn(B, S, D), None)]:
        inputs = torch.einsum("bsd,bnd->bns", G.expand(B, S, D), z) + (0 if c is None else c)
        expected = plain(lambda k: L, inputs) @ H_out.T
        H = H_out if L.dim() == 2 else H_out.expand(B, D, S)
        got = affine.projected_affine_recurrence_constant(L, G, c, z, x0, H)
        torch.testing.assert_close(got, expected)


# ----------------------------------------------------------------------------- numerics


def test_long_run_with_near_singular_noise_stays_symmetric_psd():
    rng = np.random.default_rng(13)
    S = 3
    system = random_system(rng, S, 1, offsets=False)
    v = rng.normal(size=(S, 1))
    system["Q"] = v @ v.T + 1e-12 * np.eye(S)  # rank one up to 1e-12
    system["R"] = np.array([[1e-10]])
    y = torch.tensor(simulate(rng, system, 10_000))
    params = to_params(system)
    filtered = kalman_filter(y, None, params)
    for covs in (filtered.filtered_covariances, filtered.predicted_covariances):
        assert torch.isfinite(covs).all()
        assert torch.equal(covs, covs.transpose(-1, -2))
        eig = torch.linalg.eigvalsh(covs)
        assert (eig >= -1e-9 * eig.abs().amax(-1, keepdim=True).clamp_min(1.0)).all()
    total = filtered.log_likelihoods.sum()
    assert torch.isfinite(total)
    for method in ["steady_state", "scan"]:
        assert torch.isfinite(kalman_log_likelihood(y, None, params, method=method))
        torch.testing.assert_close(kalman_log_likelihood(y, None, params, method=method), total, rtol=1e-6, atol=0)


def test_non_positive_definite_innovation_raises_with_step():
    rng = np.random.default_rng(2)
    system = random_system(rng, 2, 1, num_times=10)
    system["R"][6] = -50.0 * np.eye(1)
    y = torch.tensor(simulate(rng, random_system(rng, 2, 1), 10))
    for method in ["sequential", "scan"]:
        with pytest.raises(ValueError, match=r"not positive definite at time index t=6"):
            kalman_filter(y, None, to_params(system), method=method)
    static = random_system(rng, 2, 1)
    static["R"] = -50.0 * np.eye(1)
    for method in ["steady_state", "sequential", "scan"]:
        with pytest.raises(ValueError, match=r"not positive definite at time index t=0"):
            kalman_log_likelihood(y, None, to_params(static), method=method)
    # Many parameter sets (the batch-last schedule), one of them broken.
    for obs_dim in (1, 2):
        systems = [random_system(rng, 2, obs_dim) for _ in range(10)]
        systems[3]["R"] = -50.0 * np.eye(obs_dim)
        stacked = to_params({k: np.stack([s[k] for s in systems]) for k in systems[0]}, time_axis=False)
        with pytest.raises(ValueError, match=r"not positive definite at time index t=0"):
            kalman_log_likelihood(torch.zeros(10, 30, obs_dim, dtype=torch.float64), None, stacked)


def test_singular_observation_noise_model_uses_an_exact_route():
    # R = 0 and H Q H^T = 0: the scan/doubling elements are singular, the filter is not.
    system = {
        "F": np.array([[0.0, 1.0], [0.0, 0.5]]),
        "H": np.array([[1.0, 0.0]]),
        "Q": np.diag([0.0, 1.0]),
        "R": np.zeros((1, 1)),
        "m1": np.zeros(2),
        "P1": np.eye(2),
        "c": None,
        "d": None,
    }
    rng = np.random.default_rng(6)
    y = simulate(rng, system, 40)
    for data in (y, punch_holes(rng, y, "steps")):
        expected = statsmodels_smooth(system, data).llf
        assert_close(kalman_log_likelihood(torch.tensor(data), None, to_params(system)), expected)


# ----------------------------------------------------------------------------- gradients


def test_gradcheck_log_likelihood():
    rng = np.random.default_rng(17)
    system = random_system(rng, 2, 1)
    y = torch.tensor(simulate(rng, system, 5))
    base = to_params(system)

    for method in ["sequential", "scan", "steady_state"]:

        def log_lik(F, q_factor, y_in, method=method):
            params = base._replace(transition_matrices=F, transition_covariance=q_factor @ q_factor.T + 0.1 * torch.eye(2))
            return kalman_log_likelihood(y_in, None, params, method=method)

        inputs = (
            base.transition_matrices.clone().requires_grad_(),
            torch.tensor(np.linalg.cholesky(system["Q"])).requires_grad_(),
            y.clone().requires_grad_(),
        )
        assert torch.autograd.gradcheck(log_lik, inputs)


def test_gradient_is_finite_with_nan_in_masked_entries():
    rng = np.random.default_rng(19)
    system = random_system(rng, 3, 2)
    y = torch.tensor(punch_holes(rng, simulate(rng, system, 30), "both")).requires_grad_()
    params = to_params(system)
    F = params.transition_matrices.clone().requires_grad_()
    for method in ["sequential", "scan"]:
        loss = kalman_log_likelihood(y, None, params._replace(transition_matrices=F), method=method)
        grad_y, grad_F = torch.autograd.grad(loss, (y, F))
        assert torch.isfinite(grad_y).all() and torch.isfinite(grad_F).all()
        assert (grad_y[torch.isnan(y)] == 0).all()


@pytest.mark.parametrize("num_systems", [1, 12])  # the few- and the many-parameter-set schedules
def test_gradients_agree_across_methods(num_systems):
    rng = np.random.default_rng(23)
    systems = [random_system(rng, 3, 1) for _ in range(num_systems)]
    y = torch.tensor(np.stack([simulate(rng, s, 80) for s in systems]))
    params = to_params({k: np.stack([s[k] for s in systems]) for k in systems[0]}, time_axis=False)
    grads = {}
    for method in ["sequential", "steady_state", "scan"]:
        F = params.transition_matrices.clone().requires_grad_()
        Q = params.transition_covariance.clone().requires_grad_()
        total = kalman_log_likelihood(y, None, params._replace(transition_matrices=F, transition_covariance=Q), method=method)
        grad_F, grad_Q = torch.autograd.grad(total.sum(), (F, Q))
        # Q is symmetric: only the symmetric part of its gradient is defined.
        grads[method] = (grad_F, 0.5 * (grad_Q + grad_Q.transpose(-1, -2)))
    for method in ["steady_state", "scan"]:
        for ours, reference in zip(grads[method], grads["sequential"]):
            assert_close(ours, reference.numpy())


# ----------------------------------------------------------------------------- properties


@settings(max_examples=15, deadline=None)
@given(
    y_batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    share_params=st.booleans(),
    state_dim=st.integers(1, 3),
    obs_dim=st.integers(1, 3),
    num_times=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_shapes_broadcast_over_batches(y_batch, share_params, state_dim, obs_dim, num_times, seed):
    rng = np.random.default_rng(seed)
    system = random_system(rng, state_dim, obs_dim)
    if not share_params and y_batch:
        system = {k: np.broadcast_to(v, (y_batch[-1], *v.shape)).copy() for k, v in system.items()}
    params = to_params(system, time_axis=False)
    y = torch.tensor(rng.normal(size=(*y_batch, num_times, obs_dim)))
    b, T, S, D = tuple(y_batch), num_times, state_dim, obs_dim
    filtered = kalman_filter(y, None, params)
    assert filtered.predicted_means.shape == filtered.filtered_means.shape == (*b, T, S)
    assert filtered.predicted_covariances.shape == filtered.filtered_covariances.shape == (*b, T, S, S)
    assert filtered.log_likelihoods.shape == (*b, T)
    smoothed = kalman_smoother(y, None, params, filtered=filtered)
    assert smoothed.smoothed_means.shape == (*b, T, S)
    assert smoothed.smoothed_covariances.shape == (*b, T, S, S)
    assert smoothed.smoothed_cross_covariances.shape == (*b, T - 1, S, S)
    forecast = kalman_forecast(filtered, params, 2)
    assert forecast.state_means.shape == (*b, 2, S) and forecast.observation_covariances.shape == (*b, 2, D, D)
    for method in ["auto", "sequential", "scan", "steady_state"]:
        total = kalman_log_likelihood(y, None, params, method=method)
        assert total.shape == b
        torch.testing.assert_close(total, filtered.log_likelihoods.sum(-1), rtol=1e-9, atol=1e-9)


@settings(max_examples=10, deadline=None)
@given(state_dim=st.integers(1, 3), obs_dim=st.integers(1, 3), num_times=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_all_missing_gives_zero_log_likelihood_and_no_update(state_dim, obs_dim, num_times, seed):
    rng = np.random.default_rng(seed)
    params = to_params(random_system(rng, state_dim, obs_dim))
    y = torch.full((num_times, obs_dim), float("nan"))
    for method in ["sequential", "scan"]:
        filtered = kalman_filter(y, None, params, method=method)
        assert torch.equal(filtered.log_likelihoods, torch.zeros(num_times, dtype=torch.float64))
        torch.testing.assert_close(filtered.filtered_means, filtered.predicted_means, rtol=0, atol=1e-12)
        torch.testing.assert_close(filtered.filtered_covariances, filtered.predicted_covariances, rtol=0, atol=1e-12)
    # An explicit mask overrides whatever finite values y holds.
    finite = torch.tensor(rng.normal(size=(num_times, obs_dim)))
    mask = torch.zeros(num_times, obs_dim, dtype=torch.bool)
    assert kalman_log_likelihood(finite, mask, params).item() == 0.0


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_rejected_with_named_argument():
    rng = np.random.default_rng(1)
    params = to_params(random_system(rng, 2, 1))
    y = torch.zeros(5, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="`y`"):
        kalman_filter(torch.zeros(5, 3), None, params)
    with pytest.raises(TypeError, match="`params`"):
        kalman_filter(y, None, {"transition_matrices": 1})
    with pytest.raises(ValueError, match="`method`"):
        kalman_log_likelihood(y, None, params, method="magic")
    with pytest.raises(ValueError, match="transition_matrices"):
        kalman_filter(y, None, params._replace(transition_matrices=torch.eye(3, dtype=torch.float64)))
    with pytest.raises(TypeError, match="`mask`"):
        kalman_filter(y, torch.ones(5, 1), params)
    with pytest.raises(ValueError, match="steady_state"):
        kalman_log_likelihood(torch.full((5, 1), float("nan")), None, params, method="steady_state")
    with pytest.raises(ValueError, match="`horizon`"):
        kalman_forecast(kalman_filter(y, None, params), params, 0)
    original = params.transition_matrices.clone()
    kalman_smoother(y, None, params)
    assert torch.equal(params.transition_matrices, original)


@pytest.mark.parametrize("num_times", [1, 2, 40, 64, 65, 700])
@pytest.mark.parametrize("offsets", [False, True])
def test_no_grad_numpy_path_matches_statsmodels(num_times, offsets):
    # Without inputs that require grad, scalar observations and one parameter set
    # run the float64 numpy schedule (blocked steady part); check it on short
    # series (no convergence), block-boundary lengths and many series at once.
    rng = np.random.default_rng(num_times + 7 * offsets)
    system = random_system(rng, 4, 1, offsets=offsets)
    ys = np.stack([simulate(rng, system, num_times) for _ in range(3)])
    expected = np.array([statsmodels_smooth(system, y).llf for y in ys])
    params = to_params(system)
    with torch.no_grad():
        actual = kalman_log_likelihood(torch.tensor(ys), None, params)
        y_one = torch.tensor(ys[:1])
        one = kalman_log_likelihood(y_one, None, params)  # one series: views, no copies
    assert_close(actual, expected)
    assert_close(one, expected[:1])
    np.testing.assert_array_equal(y_one.numpy(), ys[:1])  # the caller's tensor is untouched
    with_grad = params._replace(transition_matrices=params.transition_matrices.clone().requires_grad_())
    assert_close(kalman_log_likelihood(torch.tensor(ys), None, with_grad), expected)


@pytest.mark.parametrize("steps", [0, 15, 63, 64, 200])
@pytest.mark.parametrize("many_series", [False, True])
def test_blocked_steady_innovations_match_a_plain_loop(steps, many_series, monkeypatch):
    from tsgen.inference import _kalman_numpy
    from tsgen.inference._kalman_numpy import _steady_squared_innovations

    if many_series:  # the short blocks used for many series
        monkeypatch.setattr(_kalman_numpy, "MANY_SERIES", 1)

    rng = np.random.default_rng(5)
    state_dim, batch = 3, 2
    L = rng.normal(size=(state_dim, state_dim))
    L *= 0.9995 / np.abs(np.linalg.eigvals(L)).max()  # slow decay: long memory
    FK, c, h = rng.normal(size=state_dim), rng.normal(size=state_dim), rng.normal(size=state_dim)
    z, start = rng.normal(size=(batch, steps + 1)), rng.normal(size=(batch, state_dim))
    expected = np.zeros(batch)
    state = start.copy()
    for m in range(steps + 1):
        expected += (z[:, m] - state @ h) ** 2
        state = state @ L.T + z[:, m, None] * FK + c
    np.testing.assert_allclose(_steady_squared_innovations(L, FK, c, h, z, start), expected, rtol=1e-10)


@pytest.mark.parametrize("num_times", [1, 2, 17, 300])
def test_no_grad_numpy_path_with_own_params_matches_statsmodels(num_times):
    # One parameter set per series (b2): sets leave the Riccati loop at their
    # own convergence step (or never, on short series) and the steady parts
    # start at different steps; packed covariance and left-aligned blocks.
    rng = np.random.default_rng(100 + num_times)
    systems = [random_system(rng, 4, 1, offsets=k % 2 == 0) for k in range(12)]
    for s in systems[1::2]:  # mix: offsets on half of the sets (zeros elsewhere)
        s["c"], s["d"] = np.zeros(4), np.zeros(1)
    ys = np.stack([simulate(rng, s, num_times) for s in systems])
    stacked = {k: np.stack([s[k] for s in systems]) for k in systems[0]}
    expected = np.array([statsmodels_smooth(s, y).llf for s, y in zip(systems, ys)])
    with torch.no_grad():
        actual = kalman_log_likelihood(torch.tensor(ys), None, to_params(stacked, time_axis=False))
    assert_close(actual, expected)


@pytest.mark.parametrize("max_count", [1, 16, 37])
def test_blocked_steady_innovations_of_many_sets_match_a_plain_loop(max_count):
    from tsgen.inference._kalman_numpy import _steady_squared_innovations_sets

    rng = np.random.default_rng(max_count)
    sets, state_dim = 5, 3
    L = rng.normal(size=(sets, state_dim, state_dim))
    L *= 0.99 / np.abs(np.linalg.eigvals(L)).max(1)[:, None, None]
    FK, c, h = (rng.normal(size=(sets, state_dim)) for _ in range(3))
    z, start = rng.normal(size=(sets, max_count)), rng.normal(size=(sets, state_dim))
    counts = np.minimum(np.arange(1, sets + 1) * 8, max_count)
    expected = np.zeros(sets)
    for g in range(sets):
        state = start[g].copy()
        for m in range(counts[g]):
            expected[g] += (z[g, m] - state @ h[g]) ** 2
            state = L[g] @ state + z[g, m] * FK[g] + c[g]
    actual = _steady_squared_innovations_sets(L, FK, c, h, z, start, counts)
    np.testing.assert_allclose(actual, expected, rtol=1e-10)


@pytest.mark.parametrize("share_params", [False, True])
def test_no_grad_numpy_path_on_more_series_than_one_group(share_params):
    # Beyond 128 series the numpy steady parts run in groups (sorted by
    # remaining length for own params): every series must land in its slot.
    rng = np.random.default_rng(21 + share_params)
    num_series = 150
    systems = [random_system(rng, 4, 1) for _ in range(1 if share_params else num_series)]
    ys = np.stack([simulate(rng, systems[k % len(systems)], 70) for k in range(num_series)])
    expected = np.array([statsmodels_smooth(systems[k % len(systems)], y).llf for k, y in enumerate(ys)])
    if share_params:
        params = to_params(systems[0])
    else:
        params = to_params({k: np.stack([s[k] for s in systems]) for k in systems[0]}, time_axis=False)
    with torch.no_grad():
        actual = kalman_log_likelihood(torch.tensor(ys), None, params)
    assert_close(actual, expected)


# ------------------------------------------------------- per-step routes, end state, marginal forecasts


@pytest.mark.parametrize("shared, obs_dim", [(True, 1), (False, 1), (True, 2), (False, 2)])
def test_per_step_log_likelihood_routes_equal_the_filter(shared, obs_dim):
    from tsgen.inference.kalman import kalman_log_likelihood

    rng = np.random.default_rng(11)
    systems = [random_system(rng, 3, obs_dim) for _ in range(1 if shared else 12)]
    params = to_params(systems[0]) if shared else KalmanParams(
        *(torch.stack(fields) for fields in zip(*(to_params(s)[:8] for s in systems)))
    )
    y = torch.tensor(np.stack([simulate(rng, systems[i % len(systems)], 200) for i in range(12)]))
    expected = kalman_filter(y, None, params).log_likelihoods
    for method in ("auto", "steady_state", "scan", "sequential"):
        per_step = kalman_log_likelihood(y, None, params, method=method, per_step=True)
        assert per_step.shape == expected.shape
        torch.testing.assert_close(per_step, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shared, obs_dim", [(True, 1), (False, 1), (True, 2)])
def test_filter_last_and_marginal_forecast_equal_the_full_routes(shared, obs_dim):
    from tsgen.inference.kalman import KalmanState, kalman_filter_last, kalman_forecast_marginals

    rng = np.random.default_rng(12)
    count = 7
    systems = [random_system(rng, 3, obs_dim) for _ in range(1 if shared else count)]
    params = to_params(systems[0]) if shared else KalmanParams(
        *(torch.stack(fields) for fields in zip(*(to_params(s)[:8] for s in systems)))
    )
    y = torch.tensor(np.stack([simulate(rng, systems[i % len(systems)], 150) for i in range(count)]))
    lengths = torch.tensor([150, 3, 77, 150, 1, 120, 64])
    padded = y.clone()
    for i, n in enumerate(lengths):
        padded[i, n:] = float("nan")
    state = kalman_filter_last(padded, None, params, lengths)
    full = kalman_filter(y, None, params)
    rows = torch.arange(count)
    torch.testing.assert_close(state.mean, full.filtered_means[rows, lengths - 1], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(state.covariance, full.filtered_covariances[rows, lengths - 1], rtol=1e-9, atol=1e-10)

    end = KalmanState(full.filtered_means[..., -1, :], full.filtered_covariances[..., -1, :, :])
    for horizon in (1, 9, 600):  # 600 > one block of the blocked schedule
        expected = kalman_forecast(full, params, horizon)
        got = kalman_forecast_marginals(end, params, horizon)
        torch.testing.assert_close(got.observation_means, expected.observation_means, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(
            got.observation_variances,
            torch.diagonal(expected.observation_covariances, dim1=-2, dim2=-1), rtol=1e-9, atol=1e-10,
        )
