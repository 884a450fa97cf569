"""Oracles for the ARIMA building blocks: transforms, polynomials, state-space form,
Lyapunov initialisation, starting values, the conditioning filter and the unit-root tests."""
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from statsmodels.tsa.statespace.sarimax import SARIMAX
from statsmodels.tsa.statespace.tools import (
    constrain_stationary_univariate,
    unconstrain_stationary_univariate,
)
from statsmodels.tsa.stattools import kpss

from tsgen.models._arima_unitroot import choose_d, kpss_statistic
from tsgen.models._arima_fit import regressors, state_space_inputs
from tsgen.models._arima_spec import ArimaSpec
from tsgen.models._arima_start import hannan_rissanen
from tsgen.models._arima_statespace import ArmaMatrices, lag_polynomial, stationary_covariance
from tsgen.models._arima_transforms import (
    constrain_ar,
    constrain_ma,
    is_stationary,
    unconstrain_ar,
    unconstrain_ma,
)


def _t(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_transforms_match_statsmodels(n):
    x = np.random.default_rng(n).normal(scale=1.5, size=(4, n))
    ar = constrain_ar(_t(x)).numpy()
    ma = constrain_ma(_t(x)).numpy()
    for i in range(4):
        np.testing.assert_allclose(ar[i], constrain_stationary_univariate(x[i]), atol=1e-12)
        np.testing.assert_allclose(ma[i], -constrain_stationary_univariate(x[i]), atol=1e-12)
        np.testing.assert_allclose(
            unconstrain_ar(_t(ar[i])).numpy(), unconstrain_stationary_univariate(ar[i]), atol=1e-9
        )
    np.testing.assert_allclose(unconstrain_ma(_t(ma)).numpy(), x, atol=1e-9)
    roots = [np.abs(np.roots(np.r_[-ar[i][::-1], 1.0])).min() for i in range(4)]
    assert min(roots) > 1.0  # stationary: all roots outside the unit circle


def test_is_stationary_and_clipping():
    assert is_stationary(_t([[0.5], [0.5, 0.3]][0])).item()
    assert not is_stationary(_t([1.2])).item()
    assert not is_stationary(_t([0.5, 0.6])).item()  # 1 - .5 z - .6 z^2 has a root inside
    free = unconstrain_ar(_t([1.2]))
    assert torch.isfinite(free).all() and abs(constrain_ar(free).item()) < 1.0


def test_lag_polynomial_multiplies_seasonal_factors():
    # (1 - .5 L)(1 - .3 L^4) = 1 - .5 L - .3 L^4 + .15 L^5
    ar = lag_polynomial(_t([[0.5]]), _t([[0.3]]), 4, -1.0)
    np.testing.assert_allclose(ar.numpy()[0], [0.5, 0, 0, 0.3, -0.15])
    # (1 + .4 L)(1 + .2 L^3) = 1 + .4 L + .2 L^3 + .08 L^4
    ma = lag_polynomial(_t([[0.4]]), _t([[0.2]]), 3, 1.0)
    np.testing.assert_allclose(ma.numpy()[0], [0.4, 0, 0.2, 0.08])


@pytest.mark.parametrize(
    "order,seasonal,params",
    [((2, 0, 1), (0, 0, 0, 0), [0.5, -0.3, 0.4, 1.3]),
     ((1, 0, 2), (1, 0, 1, 4), [0.3, 0.2, -0.1, 0.5, -0.4, 0.7])],
)
def test_arma_block_matches_statsmodels_representation(order, seasonal, params):
    model = SARIMAX(np.zeros(30), order=order, seasonal_order=seasonal)
    model.update(np.array(params))
    spec = ArimaSpec.from_args(order, seasonal, None)
    T, R = ArmaMatrices(spec, _t([params])).transition()
    np.testing.assert_allclose(T[0].numpy(), model.ssm["transition"], atol=1e-14)
    np.testing.assert_allclose(R[0].numpy(), model.ssm["selection"][:, 0], atol=1e-14)


def test_lyapunov_matches_scipy():
    rng = np.random.default_rng(0)
    T = rng.normal(size=(3, 4, 4)) * 0.3
    RRt = np.stack([np.outer(r, r) for r in rng.normal(size=(3, 4))])
    P = stationary_covariance(_t(T), _t(RRt)).numpy()
    for i in range(3):
        np.testing.assert_allclose(P[i], scipy.linalg.solve_discrete_lyapunov(T[i], RRt[i]), atol=1e-12)


def test_integration_polynomial():
    spec = ArimaSpec(0, 1, 0, 0, 1, 0, 4)
    # (1 - L)(1 - L^4) = 1 - L - L^4 + L^5
    np.testing.assert_allclose(spec.integration_coefficients(), [1, 0, 0, 1, -1])
    x = np.arange(20.0) ** 2
    np.testing.assert_allclose(spec.difference(x), np.diff(x[4:] - x[:-4]))


def test_trend_below_differencing_order_is_rejected():
    with pytest.raises(ValueError, match="trend"):
        ArimaSpec.from_args((1, 1, 0), (0, 0, 0, 0), "c")
    with pytest.raises(ValueError, match="seasonal_order"):
        ArimaSpec.from_args((1, 0, 0), (1, 0, 0, 1), None)
    with pytest.raises(ValueError, match="order"):
        ArimaSpec.from_args((1, -1, 0), (0, 0, 0, 0), None)


def _simulate(rng, ar, ma, n, sigma=1.0):
    e = rng.normal(scale=sigma, size=n + 100)
    x = np.zeros(n + 100)
    for t in range(n + 100):
        x[t] = e[t] + sum(a * x[t - i - 1] for i, a in enumerate(ar) if t - i - 1 >= 0) + sum(
            m * e[t - j - 1] for j, m in enumerate(ma) if t - j - 1 >= 0)
    return x[100:]


def test_hannan_rissanen_recovers_arma_coefficients():
    rng = np.random.default_rng(1)
    w = np.stack([_simulate(rng, [0.6], [0.3], 2000) for _ in range(2)])
    spec = ArimaSpec.from_args((1, 0, 1), (0, 0, 0, 0), None)
    start = hannan_rissanen(spec, _t(w), torch.zeros(2, 2000, 0, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(start[:, :2], [[0.6, 0.3]] * 2, atol=0.08)
    np.testing.assert_allclose(start[:, 2], 1.0, atol=0.1)


@pytest.mark.parametrize("shared", [True, False])
def test_filter_history_equals_kalman_filter(shared):
    # shared: one parameter set, no gaps (one covariance sequence for all rows);
    # otherwise per-row parameters and a missing value inside a series
    from tsgen.inference.kalman import kalman_filter
    from tsgen.models._arima_filter import filter_history

    rng = np.random.default_rng(7)
    spec = ArimaSpec.from_args((1, 0, 1), (0, 1, 1, 4), "t")
    y = np.cumsum(rng.normal(size=(3, 40)), 1)
    lengths = torch.tensor([40, 31, 6])
    y[1, 31:] = np.nan
    y[2, 6:] = np.nan
    rows = [[0.2, 0.5, -0.3, -0.5, 1.3]] * 3  # drift, ar, ma, sma, sigma2
    if not shared:
        y[0, 20] = np.nan
        rows[1] = [0.1, -0.2, 0.4, -0.2, 0.7]
    params, X = _t(rows), regressors(spec, 40, None, 3)
    summary = filter_history(spec, params, _t(y), X, lengths)
    kp, obs = state_space_inputs(spec, params, _t(y), X)
    exact = kalman_filter(obs, None, kp)
    n = spec.n_integration
    np.testing.assert_allclose(summary.log_likelihoods[:, n:].numpy(), exact.log_likelihoods.numpy(), rtol=1e-10)
    assert (summary.log_likelihoods[:, :n] == 0).all()
    F, Q = kp.transition_matrices, kp.transition_covariance
    for i, length in enumerate(lengths.tolist()):
        m, C = exact.filtered_means[i, length - n - 1], exact.filtered_covariances[i, length - n - 1]
        np.testing.assert_allclose(summary.next_mean[i].numpy(), (F[i] @ m).numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(summary.next_covariance[i].numpy(), (F[i] @ C @ F[i].T + Q[i]).numpy(),
                                   rtol=1e-8, atol=1e-9)
        q = summary.noise_loading[i]
        np.testing.assert_allclose((q[:, None] * q[None, :]).numpy(), Q[i].numpy(), atol=1e-12)


def test_kpss_statistic_matches_statsmodels():
    rng = np.random.default_rng(3)
    for x in (rng.normal(size=120), np.cumsum(rng.normal(size=200))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = kpss(x, "c", nlags=int(np.floor(3 * np.sqrt(len(x)) / 13)))[0]
        assert kpss_statistic(x) == pytest.approx(expected, rel=1e-12)


def test_choose_d_on_clear_cases():
    rng = np.random.default_rng(4)
    assert choose_d(rng.normal(size=300), 2) == 0
    assert choose_d(np.cumsum(rng.normal(size=300)), 2) == 1
    assert choose_d(np.cumsum(np.cumsum(rng.normal(size=300))), 2) == 2
