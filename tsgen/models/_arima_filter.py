"""One pass of the ARIMA Kalman filter for conditioning a fitted model (no gradients).

``predict``, ``sample`` and ``log_likelihood`` of a fitted ARIMA all need the
same filter over the history: the one-step log densities

    log p(y_t | y_<t) = -1/2 (log 2 pi + log f_t + v_t^2 / f_t),   v_t = y_t - h'a_t,  f_t = h'P_t h

and the predicted state ``(a, P)`` of the step after each series' last one.
This module runs that filter once in float64 numpy (univariate update, as
:mod:`._arima_transient`) and returns both.

The covariance recursion ``P_{t+1} = F (P_t - P_t h h'P_t / f_t) F' + Q``
does not depend on the data. Series that share their parameters and have no
missing value before their end (the usual case: one fitted model
conditioned on many histories, as in a no-refit backtest) therefore share
one covariance sequence, computed once; only the means
``a_{t+1} = F (a_t + K_t v_t)`` run per series. Otherwise the covariances
run per series, with missing steps skipped (``a, P`` only predicted).

The state-space matrices depend only on the parameters (the Lyapunov solve
for the stationary initial covariance dominates for seasonal models), so
they are built once per distinct parameter row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tsgen.models._arima_spec import ArimaSpec
from tsgen.models._arima_statespace import ArmaMatrices, kalman_params

LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class FilterSummary:
    """Per-step log densities ``(B, T)`` (0 at the d + sD conditioning steps and at
    missing steps) and the predicted state of the step after each series' end."""

    log_likelihoods: Tensor
    next_mean: Tensor  # (B, S)
    next_covariance: Tensor  # (B, S, S)
    transition: Tensor  # (B, S, S)
    observation: Tensor  # (B, S)
    transition_covariance: Tensor  # (B, S, S)
    noise_loading: Tensor  # (B, S): Q = q q' (one shock per step)


def _matrices(spec: ArimaSpec, params: Tensor):
    """``F, h, Q, P1`` for each distinct parameter row, and each row's index into them."""
    unique, inverse = torch.unique(params, dim=0, return_inverse=True)
    lags = torch.zeros(unique.shape[0], spec.n_integration, dtype=params.dtype)
    kp = kalman_params(spec, unique, lags)
    arma = ArmaMatrices(spec, unique)
    loading = torch.zeros_like(kp.initial_state_mean)
    loading[:, spec.n_integration:] = arma.transition()[1] * arma.sigma2.sqrt().unsqueeze(-1)
    arrays = (kp.transition_matrices, kp.observation_matrices[:, 0, :], kp.transition_covariance,
              kp.initial_state_covariance, loading)
    return tuple(np.ascontiguousarray(x.detach().numpy()) for x in arrays), inverse.numpy()


def filter_history(spec: ArimaSpec, params: Tensor, y: Tensor, X: Tensor, lengths: Tensor) -> FilterSummary:
    """Filter every row of ``y`` ``(B, T)`` (NaN = missing or padding) under its ``params``."""
    B, T = y.shape
    n = spec.n_integration
    beta = params[:, spec.blocks["beta"]]
    eta = (y - (X[:, :T] @ beta.unsqueeze(-1)).squeeze(-1) if spec.n_regressors else y).detach().numpy()
    (F_u, h_u, Q_u, P1_u, q_u), which = _matrices(spec, params.detach())
    S = F_u.shape[-1]
    a = np.zeros((B, S))
    if n:
        a[:, :n] = eta[:, :n][:, ::-1]
    obs = eta[:, n:]
    observed = np.isfinite(obs)
    obs = np.where(observed, obs, 0.0)
    steps = obs.shape[1]
    # predicted state wanted for step k = (own length - n) of the filtered part
    wanted = np.clip(lengths.numpy() - n, 0, steps)
    ended = np.arange(steps)[None, :] >= wanted[:, None]
    shared = F_u.shape[0] == 1 and not bool((~observed & ~ended).any())
    F, h, Q = F_u[which], h_u[which], Q_u[which]
    if shared:
        Fc, hc, Qc, P = F_u, h_u, Q_u, P1_u.copy()
    else:
        Fc, hc, Qc, P = F, h, Q, P1_u[which].copy()
    Fct = np.swapaxes(Fc, -1, -2)
    ll = np.zeros((B, T))
    next_a = a.copy()
    next_P = np.broadcast_to(P, (B, S, S)).copy()
    with np.errstate(all="ignore"):
        for t in range(steps):
            m = observed[:, t]
            u = (P @ hc[..., None])[..., 0]  # (Bc, S)
            f = (hc * u).sum(-1)
            v = obs[:, t] - (h * a).sum(-1)
            ll[:, n + t] = np.where(m, -0.5 * (LOG_2PI + np.log(f) + v * v / f), 0.0)
            gain = u / f[:, None]
            a = a + np.where(m, v, 0.0)[:, None] * gain
            mc = np.ones(1, dtype=bool) if shared else m
            P = P - np.where(mc[:, None, None], gain[:, :, None] * u[:, None, :], 0.0)
            a = a @ Fct[0] if shared else (F @ a[..., None])[..., 0]
            P = Fc @ P @ Fct + Qc
            hit = wanted == t + 1
            if hit.any():
                next_a[hit] = a[hit]
                next_P[hit] = P[0] if shared else P[hit]
    out = (ll, next_a, next_P, F, h, Q, q_u[which])
    return FilterSummary(*(torch.from_numpy(np.ascontiguousarray(x)) for x in out))
