"""Oracles for the compiled ARIMA kernels: the filter's reverse pass against finite
differences, the whole objective (value and gradient) against torch autograd through
the state-space form and the general Kalman filter, and the per-series BFGS."""
import numpy as np
import pytest
import torch

from tsgen.inference.kalman import kalman_log_likelihood
from tsgen.models._arima_fit import constrain, regressors, state_space_inputs
from tsgen.models._arima_kernels import filter_series, filter_workspace, minimize, objective
from tsgen.models._arima_spec import ArimaSpec


def _t(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _filter(F, h, Q, a0, P0, y, observed, tol, cap):
    """Total log-likelihood of one series and its gradients (F, h, Q, a0, P0, y)."""
    S, T = F.shape[0], y.shape[0]
    grads = [np.zeros((S, S)), np.zeros(S), np.zeros((S, S)), np.zeros(S), np.zeros((S, S)), np.zeros(T)]
    free = np.ones((S, S), bool)
    total = filter_series(F, free, h, Q, a0, P0, y, observed, T, tol, cap, True, filter_workspace(T, S), *grads)
    return total, grads


@pytest.mark.parametrize("S", [3, 8])  # dense F (S <= DENSE_UP_TO) and F by its non-zeros
@pytest.mark.parametrize("tol,cap", [(0.0, -1), (1e-11, 6), (1e-11, -1)])
def test_filter_gradient_matches_finite_differences(tol, cap, S):
    # gaps before and after the gain is frozen (cap) or has converged; tol=0 never freezes it
    # (150 moving steps also outgrow the tape's first covariance buffers of 128)
    rng = np.random.default_rng(0)
    T = 150
    F = rng.normal(size=(S, S)) * (0.4 if S == 3 else 0.2)
    F[0, 1] = F[2, 0] = 0.0  # zeros: skipped by the sparse products, still differentiated
    if S > 3:
        F[rng.random((S, S)) < 0.6] = 0.0
    h, a0, y = rng.normal(size=S), rng.normal(size=S), rng.normal(size=T)
    Q, P0 = 0.5 * np.eye(S) + 0.1, np.eye(S)
    observed = np.ones(T, bool)
    observed[[3, 20, 21]] = False
    total, grads = _filter(F, h, Q, a0, P0, y, observed, tol, cap)
    inputs = [F, h, Q, a0, P0, y]
    eps = 1e-6
    for which, (x, g) in enumerate(zip(inputs, grads)):
        numeric = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            plus = [v.copy() for v in inputs]
            minus = [v.copy() for v in inputs]
            plus[which][idx] += eps
            minus[which][idx] -= eps
            numeric[idx] = (_filter(*plus, observed, tol, cap)[0] - _filter(*minus, observed, tol, cap)[0]) / (2 * eps)
        # with tol > 0 a perturbation can move the convergence step: round-off-sized jumps
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-5 if tol else 1e-6)


CASES = [((2, 1, 1), (0, 0, 0, 0), "t"), ((0, 1, 1), (0, 1, 1, 4), None), ((1, 0, 1), (0, 0, 0, 0), "c"),
         ((2, 0, 2), (1, 0, 1, 3), "c"), ((1, 1, 0), (2, 1, 0, 4), None), ((0, 0, 0), (0, 0, 0, 0), "c"),
         ((3, 2, 2), (0, 0, 0, 0), None)]


def _problem(order, seasonal, trend, seed=0, B=3, T=70):
    rng = np.random.default_rng(seed)
    spec = ArimaSpec.from_args(order, seasonal, trend, n_exog=1)
    y = np.cumsum(rng.normal(size=(B, T)), 1)
    y[1, 60:] = np.nan  # trailing padding
    y[2, 40] = np.nan  # a gap
    X = regressors(spec, T, _t(rng.normal(size=(B, T, 1))), B)
    xscale = _t(rng.uniform(0.5, 2.0, size=(B, spec.n_regressors)))
    n_obs = np.isfinite(y[:, spec.n_integration:]).sum(1).astype(float)
    mask = np.ones((B, spec.n_params), bool)
    data = (mask, spec.n_regressors, spec.p, spec.q, spec.P, spec.Q, spec.s, spec.integration_coefficients(),
            xscale.numpy(), y, np.ascontiguousarray(X.numpy()), n_obs, 1e-11, -1)
    return spec, y, X, xscale, n_obs, data, rng


@pytest.mark.parametrize("order,seasonal,trend", CASES)
def test_objective_and_gradient_match_autograd_through_the_kalman_filter(order, seasonal, trend):
    spec, y, X, xscale, n_obs, data, rng = _problem(order, seasonal, trend)
    free = _t(rng.normal(size=(3, spec.n_params)) * 0.7).requires_grad_(True)
    kp, obs = state_space_inputs(spec, constrain(spec, free, xscale), _t(y), X)
    expected = -kalman_log_likelihood(obs, None, kp, method="sequential") / _t(n_obs)
    (expected_grad,) = torch.autograd.grad(expected.sum(), free)
    value, grad = objective(free.detach().numpy().copy(), data, True)
    np.testing.assert_allclose(value, expected.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(grad, expected_grad.numpy(), rtol=1e-7, atol=1e-9)
    value_only, _ = objective(free.detach().numpy().copy(), data, False)
    np.testing.assert_array_equal(value_only, value)


def test_pinned_parameters_give_the_lower_order_model():
    # an ARMA(2,1) with its second AR and its MA partial autocorrelation pinned at 0 is the AR(1)
    spec, y, X, xscale, n_obs, data, rng = _problem((2, 0, 1), (0, 0, 0, 0), "c")
    low, *_, low_data, _ = _problem((1, 0, 0), (0, 0, 0, 0), "c")
    x = rng.normal(size=(3, spec.n_params))
    mask = np.ones_like(x, dtype=bool)
    mask[:, [3, 4]] = False  # ar.L2, ma.L1 (after const, x1, ar.L1)
    value, grad = objective(x, (mask, *data[1:]), True)
    value_low, grad_low = objective(x[:, [0, 1, 2, 5]].copy(), low_data, True)
    np.testing.assert_allclose(value, value_low, rtol=1e-12)
    np.testing.assert_allclose(grad[:, [0, 1, 2, 5]], grad_low, rtol=1e-10, atol=1e-14)
    assert (grad[:, [3, 4]] == 0).all()


def test_steady_state_switch_keeps_value_and_gradient():
    # freezing the gain once the covariance has converged (tol) changes nothing beyond round-off
    spec, y, X, xscale, n_obs, data, rng = _problem((1, 1, 1), (1, 0, 1, 4), None, T=200)
    x = rng.normal(size=(3, spec.n_params)) * 0.5
    steady = objective(x, data, True)
    exact = objective(x, (*data[:-2], 0.0, -1), True)
    np.testing.assert_allclose(steady[0], exact[0], rtol=1e-10)
    np.testing.assert_allclose(steady[1], exact[1], rtol=1e-7, atol=1e-10)


def test_bfgs_reaches_a_stationary_point_from_different_starts():
    # data from an ARIMA(1,1,1) so that the optimum is unique (a random walk would leave a
    # ridge of cancelling AR and MA roots)
    spec, y, X, xscale, n_obs, data, rng = _problem((1, 1, 1), (0, 0, 0, 0), None, T=300)
    e = rng.normal(size=(3, 301))
    w = np.zeros((3, 301))
    for t in range(1, 301):
        w[:, t] = 0.6 * w[:, t - 1] + e[:, t] + 0.3 * e[:, t - 1]
    y[:] = np.cumsum(w[:, 1:], 1)
    y[1, 280:] = np.nan
    optima = []
    for start in (np.zeros((3, spec.n_params)), rng.normal(size=(3, spec.n_params)) * 0.3):
        x, f, converged = minimize(start, data, 200, 1e-8, 0.0, 30)
        assert converged.all()
        _, grad = objective(x, data, True)
        assert np.abs(grad).max() <= 1e-7  # converged on the gradient or at round-off (no decrease)
        assert (f <= objective(start, data, False)[0]).all()
        optima.append(x)
    np.testing.assert_allclose(optima[0], optima[1], atol=1e-5)
