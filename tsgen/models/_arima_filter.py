"""One pass of the ARIMA Kalman filter for conditioning a fitted model (no gradients).

``predict``, ``sample`` and ``log_likelihood`` of a fitted ARIMA all need the
same filter over the history: the one-step log densities

    log p(y_t | y_<t) = -1/2 (log 2 pi + log f_t + v_t^2 / f_t),   v_t = y_t - h'a_t,  f_t = h'P_t h

and the predicted state ``(a, P)`` of the step after each series' last one.
This module runs that filter once, compiled (:func:`._arima_kernels.filter_groups`).

The covariance recursion ``P_{t+1} = F (P_t - P_t h h'P_t / f_t) F' + Q``
does not depend on the data. Series that share their parameters and have no
missing value before their end (the usual case: one fitted model
conditioned on many histories, as in a no-refit backtest) therefore share
one covariance sequence, computed once; only the means
``a_{t+1} = F (a_t + K_t v_t)`` run per series. A series with a missing
step gets a covariance sequence of its own. The state-space matrices depend
only on the parameters (the Lyapunov solve for the stationary initial
covariance dominates for seasonal models), so they are built once per
distinct parameter row.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tsgen.models._arima_kernels import STEADY_TOL, filter_groups
from tsgen.models._arima_spec import ArimaSpec
from tsgen.models._arima_statespace import ArmaMatrices, kalman_params


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
    """``F, h, Q, P1`` and the noise loading for each distinct parameter row, and each row's index into them."""
    unique, inverse = torch.unique(params, dim=0, return_inverse=True)
    unique = np.ascontiguousarray(unique.detach().numpy())
    return _matrices_of(spec, unique.shape, unique.tobytes()), inverse.numpy()


@functools.lru_cache(maxsize=32)
def _matrices_of(spec: ArimaSpec, shape: tuple, raw: bytes):
    """Cached by value: a fitted model conditioned again and again (backtests, streaming
    anomaly scores) needs the same matrices each time, and the stationary covariance
    of a seasonal model is the costly part. Callers must not write into the arrays."""
    unique = torch.from_numpy(np.frombuffer(raw, dtype=np.float64).reshape(shape).copy())
    lags = torch.zeros(unique.shape[0], spec.n_integration, dtype=unique.dtype)
    kp = kalman_params(spec, unique, lags)
    arma = ArmaMatrices(spec, unique)
    loading = torch.zeros_like(kp.initial_state_mean)
    loading[:, spec.n_integration:] = arma.transition()[1] * arma.sigma2.sqrt().unsqueeze(-1)
    arrays = (kp.transition_matrices, kp.observation_matrices[:, 0, :], kp.transition_covariance,
              kp.initial_state_covariance, loading)
    out = tuple(np.ascontiguousarray(x.detach().numpy()) for x in arrays)
    for x in out:
        x.flags.writeable = False
    return out


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
    steps = obs.shape[1]
    # the filter of each series runs up to its own end (its predicted state is wanted there)
    wanted = np.clip(lengths.numpy() - n, 0, steps).astype(np.int64)
    gappy = (~observed & (np.arange(steps)[None, :] < wanted[:, None])).any(1)
    # groups: one per parameter row for the gap-free series, one per series with gaps
    key = np.where(gappy, which.max(initial=0) + 1 + np.arange(B), which)
    order = np.lexsort((-wanted, key))
    _, group_start = np.unique(key[order], return_index=True)
    group_param = which[order[group_start]]
    group_start = np.append(group_start, B).astype(np.int64)
    ll = np.zeros((B, T))
    with np.errstate(all="ignore"):
        ll[:, n:], next_a, next_P = filter_groups(
            F_u[group_param], h_u[group_param], Q_u[group_param], P1_u[group_param], a,
            np.where(observed, obs, 0.0), observed, wanted, order.astype(np.int64), group_start,
            gappy[order[group_start[:-1]]], STEADY_TOL,
        )
    out = (ll, next_a, next_P, F_u[which], h_u[which], Q_u[which], q_u[which])
    return FilterSummary(*(torch.from_numpy(np.ascontiguousarray(x)) for x in out))
