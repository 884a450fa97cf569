"""Exact h-step predictive moments and joint sample paths of fitted ARIMA models.

From the predicted state ``x_{n+1} | y_{1:n} ~ N(a, P)`` after each series'
own last step (:func:`._arima_filter.filter_history`): ``s_1 = a``,
``V_1 = P``, ``s_{k+1} = F s_k``, ``V_{k+1} = F V_k F' + Q`` and
``y_{n+k} | y_{1:n} ~ N(h's_k + x_{n+k}' beta, h'V_k h)``; sample paths start
from ``x_{n+1} ~ N(a, P)`` and run the state recursion with one shock per step.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tsgen.models import _arima_kernels as kernels
from tsgen.models._arima_filter import FilterSummary
from tsgen.models._arima_spec import ArimaSpec


def future_regression(spec: ArimaSpec, params: Tensor, X: Tensor, lengths: Tensor, horizon: int) -> Tensor:
    """``x_{n+k}' beta`` for k = 1..horizon ``(B, horizon)``."""
    if not spec.n_regressors:
        return params.new_zeros(params.shape[0], horizon)
    steps = lengths[:, None] + torch.arange(horizon)[None, :]
    rows = torch.arange(params.shape[0])[:, None]
    beta = params[:, spec.blocks["beta"]]
    return (X[rows, steps] * beta[:, None, :]).sum(-1)


def forecast_moments(summary: FilterSummary, regression: Tensor, horizon: int) -> tuple[Tensor, Tensor]:
    """Predictive means and standard deviations ``(B, horizon)``."""
    arrays = [np.ascontiguousarray(x.numpy()) for x in (summary.transition, summary.observation,
                                                         summary.transition_covariance, summary.next_mean,
                                                         summary.next_covariance)]
    means, variances = kernels.forecast_moments(*arrays, horizon)
    mean = torch.from_numpy(means) + regression
    std = torch.from_numpy(variances).clamp_min(0.0).sqrt()
    return mean, std


def sample_paths(
    summary: FilterSummary, regression: Tensor, horizon: int, n_samples: int, generator: torch.Generator
) -> Tensor:
    """Joint draws ``(B, n_samples, horizon)`` of ``y_{n+1:n+horizon} | y_{1:n}``.

    ``x_1 = a + V sqrt(lambda) z`` with ``P = V diag(lambda) V'`` (P is singular:
    the lags of the levels are known), then ``x_{k+1} = F x_k + q eps_k`` with
    ``Q = q q'``, and ``y_k = h'x_k`` (compiled, :func:`._arima_kernels.simulate_paths`).
    """
    P = summary.next_covariance
    B, S = summary.next_mean.shape
    eigenvalues, vectors = torch.linalg.eigh(0.5 * (P + P.transpose(-1, -2)))
    root = vectors * eigenvalues.clamp_min(0.0).sqrt().unsqueeze(-2)  # (B, S, S)
    z = torch.randn(B, n_samples, S, generator=generator, dtype=P.dtype)
    shocks = torch.randn(B, n_samples, horizon, generator=generator, dtype=P.dtype)
    x1 = summary.next_mean.unsqueeze(1) + z @ root.transpose(-1, -2)
    arrays = [np.ascontiguousarray(x.numpy()) for x in (summary.transition, summary.observation,
                                                         summary.noise_loading, x1, shocks)]
    return torch.from_numpy(kernels.simulate_paths(*arrays)) + regression.unsqueeze(1)
