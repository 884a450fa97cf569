"""Exact h-step predictive moments and joint sample paths of fitted ARIMA models.

From the filtered state at each series' own last step ``n`` (gathered from
the padded filter output), ``kalman_forecast`` propagates
``s_{k+1} = F s_k``, ``V_{k+1} = F V_k F' + Q`` and gives
``y_{n+k} | y_{1:n} ~ N(H s_k + x_{n+k}' beta, H V_k H')``; sample paths start
from ``x_{n+1} ~ N(F m_n, F C_n F' + Q)`` and run ``kalman_sample``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tsgen.inference.kalman import FilterResult, kalman_filter, kalman_forecast, kalman_sample
from tsgen.models._arima_fit import regressors, state_space_inputs
from tsgen.models._arima_spec import ArimaSpec


def _last_filtered(spec: ArimaSpec, params: Tensor, y: Tensor, X: Tensor, lengths: Tensor):
    kp, obs = state_space_inputs(spec, params, y, X[:, : y.shape[1]])
    filtered = kalman_filter(obs, None, kp)
    last = (lengths - 1 - spec.n_integration).clamp_min(0)
    rows = torch.arange(y.shape[0])
    means = filtered.filtered_means[rows, last].unsqueeze(1)
    covs = filtered.filtered_covariances[rows, last].unsqueeze(1)
    if spec.n_integration:
        # a series no longer than d + sD never reached the filter: its state is the initial one
        fresh = (lengths <= spec.n_integration)[:, None, None]
        means = torch.where(fresh, kp.initial_state_mean.unsqueeze(1), means)
        covs = torch.where(fresh[..., None], kp.initial_state_covariance.unsqueeze(1), covs)
    return kp, FilterResult(means, covs, means, covs, means.new_zeros(y.shape[0], 1))


def _future_regression(spec: ArimaSpec, params: Tensor, X: Tensor, lengths: Tensor, horizon: int) -> Tensor:
    """``x_{n+k}' beta`` for k = 1..horizon ``(B, horizon)``."""
    if not spec.n_regressors:
        return params.new_zeros(params.shape[0], horizon)
    steps = lengths[:, None] + torch.arange(horizon)[None, :]
    rows = torch.arange(params.shape[0])[:, None]
    beta = params[:, spec.blocks["beta"]]
    return (X[rows, steps] * beta[:, None, :]).sum(-1)


def forecast_moments(
    spec: ArimaSpec, params: Tensor, y: Tensor, lengths: Tensor, covariates: Tensor | None, horizon: int
) -> tuple[Tensor, Tensor]:
    """Predictive means and standard deviations ``(B, horizon)``."""
    X = regressors(spec, y.shape[1] + horizon, covariates, y.shape[0])
    kp, last = _last_filtered(spec, params, y, X, lengths)
    fc = kalman_forecast(last, kp, horizon)
    mean = fc.observation_means[..., 0] + _future_regression(spec, params, X, lengths, horizon)
    std = fc.observation_covariances[..., 0, 0].clamp_min(0.0).sqrt()
    return mean, std


def sample_paths(
    spec: ArimaSpec,
    params: Tensor,
    y: Tensor,
    lengths: Tensor,
    covariates: Tensor | None,
    horizon: int,
    n_samples: int,
    generator: torch.Generator,
) -> Tensor:
    """Joint draws ``(B, n_samples, horizon)`` of ``y_{n+1:n+horizon} | y_{1:n}``."""
    X = regressors(spec, y.shape[1] + horizon, covariates, y.shape[0])
    kp, last = _last_filtered(spec, params, y, X, lengths)
    F, Q = kp.transition_matrices, kp.transition_covariance
    m = (F @ last.filtered_means[:, 0].unsqueeze(-1)).squeeze(-1)
    P = F @ last.filtered_covariances[:, 0] @ F.transpose(-1, -2) + Q
    start = kp._replace(initial_state_mean=m, initial_state_covariance=0.5 * (P + P.transpose(-1, -2)))
    draws = kalman_sample(start, horizon, n_samples, generator=generator).observations[..., 0]
    return draws.movedim(0, 1) + _future_regression(spec, params, X, lengths, horizon).unsqueeze(1)
