"""ARIMA as a linear-Gaussian state-space model on the levels of the series.

With ``eta_t = y_t - x_t' beta``, the integration polynomial
``(1 - L)^d (1 - L^s)^D = 1 - sum_i delta_i L^i`` (n = d + sD terms) and the
ARMA part in Harvey's form (r = max(p + sP, q + sQ + 1) states)::

    w_t = Z alpha_t,   alpha_{t+1} = T alpha_t + R eps_{t+1},
    T = [phi | I_{r-1} ; 0],   R = (1, theta_1, ..., theta_{r-1})',   Z = (1, 0, ..., 0)

the state is ``x_t = (eta_{t-1}, ..., eta_{t-n}, alpha_t)`` and

    eta_t   = delta' x_t[:n] + Z alpha_t                 (H = [delta', Z], no noise)
    x_{t+1} = [[delta', Z], [I_{n-1}, 0, 0], [0, T]] x_t + (0, R eps)

The first n observations fix the lags exactly (zero variance) and ``alpha``
starts from its stationary law ``P = T P T' + sigma2 R R'``, so the filtered
likelihood of ``y_{n+1:T}`` equals the exact likelihood of the differenced
series: statsmodels' ``llf`` convention for d > 0. Missing values after the
first n steps are marginalised by the filter exactly.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tsgen.inference.kalman import KalmanParams
from tsgen.models._arima_spec import ArimaSpec


def lag_polynomial(coefficients: Tensor, seasonal: Tensor, s: int, sign: float) -> Tensor:
    """Coefficients ``c_1..c_m`` of ``(1 + sign sum a_i L^i)(1 + sign sum b_j L^{sj})``
    written as ``1 + sign sum c_k L^k``; inputs ``(*b, p)`` and ``(*b, P)``, output ``(*b, p + sP)``."""
    p, P = coefficients.shape[-1], seasonal.shape[-1]
    # numpy's: torch.broadcast_shapes imports torch._refs (and sympy) on first use, ~0.6 s of the first predict
    batch = np.broadcast_shapes(coefficients.shape[:-1], seasonal.shape[:-1])
    one = torch.ones(*batch, 1, dtype=coefficients.dtype)
    left = torch.cat([one, sign * coefficients.expand(*batch, p)], -1)
    out = torch.zeros(*batch, p + s * P + 1, dtype=coefficients.dtype)
    out = out.index_add(-1, torch.arange(p + 1), left)
    for j in range(1, P + 1):
        shifted = torch.zeros_like(out)
        shifted[..., s * j : s * j + p + 1] = left * (sign * seasonal[..., j - 1 : j])
        out = out + shifted
    return sign * out[..., 1:]


def stationary_covariance(T: Tensor, RRt: Tensor) -> Tensor:
    """Solve the discrete Lyapunov equation ``P = T P T' + RRt`` (batched, by vec/Kronecker).

    ``vec(P) = (I - T kron T)^{-1} vec(RRt)``; r is small, so the r^2 system is cheap.
    """
    r = T.shape[-1]
    kron = torch.einsum("...ij,...kl->...ikjl", T, T).reshape(*T.shape[:-2], r * r, r * r)
    eye = torch.eye(r * r, dtype=T.dtype)
    vec = torch.linalg.solve(eye - kron, RRt.reshape(*RRt.shape[:-2], r * r, 1))
    P = vec.reshape(*RRt.shape)
    return 0.5 * (P + P.transpose(-1, -2))


class ArmaMatrices:
    """Constrained parameters ``(*b, k)`` split into the pieces of the model."""

    def __init__(self, spec: ArimaSpec, params: Tensor):
        blocks = spec.blocks
        self.spec = spec
        self.beta = params[..., blocks["beta"]]
        self.sigma2 = params[..., blocks["sigma2"]].squeeze(-1)
        self.phi = lag_polynomial(params[..., blocks["ar"]], params[..., blocks["sar"]], spec.s, -1.0)
        self.theta = lag_polynomial(params[..., blocks["ma"]], params[..., blocks["sma"]], spec.s, 1.0)

    def transition(self) -> tuple[Tensor, Tensor]:
        """Harvey's ``T`` ``(*b, r, r)`` and ``R`` ``(*b, r)``."""
        spec = self.spec
        r = spec.arma_state_dim
        batch = self.phi.shape[:-1]
        dtype = self.phi.dtype
        T = torch.zeros(*batch, r, r, dtype=dtype)
        if r > 1:
            T[..., :-1, 1:] = torch.eye(r - 1, dtype=dtype)
        if spec.ar_order:
            T[..., : spec.ar_order, 0] = self.phi
        R = torch.zeros(*batch, r, dtype=dtype)
        R[..., 0] = 1.0
        if spec.ma_order:
            R[..., 1 : spec.ma_order + 1] = self.theta
        return T, R


def kalman_params(spec: ArimaSpec, params: Tensor, initial_lags: Tensor) -> KalmanParams:
    """The state-space matrices for constrained ``params`` ``(*b, k)``.

    ``initial_lags`` ``(*b, n)`` holds ``eta_{t0-1}, ..., eta_{t0-n}`` (most recent
    first) at the first filtered step ``t0 = n``; the model then explains
    ``eta_{t0}, eta_{t0+1}, ...``.
    """
    arma = ArmaMatrices(spec, params)
    T, R = arma.transition()
    n, r = spec.n_integration, spec.arma_state_dim
    S = n + r
    batch = T.shape[:-2]
    dtype = T.dtype
    sigma2 = arma.sigma2[..., None, None]
    RRt = R.unsqueeze(-1) * R.unsqueeze(-2)
    P_arma = sigma2 * stationary_covariance(T, RRt)

    delta = torch.as_tensor(spec.integration_coefficients(), dtype=dtype)
    H = torch.zeros(*batch, 1, S, dtype=dtype)
    H[..., 0, :n] = delta
    H[..., 0, n] = 1.0
    F = torch.zeros(*batch, S, S, dtype=dtype)
    if n:
        F[..., 0, :] = H[..., 0, :]
        F[..., 1:n, : n - 1] = torch.eye(n - 1, dtype=dtype)
    F[..., n:, n:] = T
    Q = torch.zeros(*batch, S, S, dtype=dtype)
    Q[..., n:, n:] = sigma2 * RRt
    P1 = torch.zeros(*batch, S, S, dtype=dtype)
    P1[..., n:, n:] = P_arma
    m1 = torch.zeros(*batch, S, dtype=dtype)
    if n:
        m1[..., :n] = initial_lags
    return KalmanParams(
        transition_matrices=F,
        observation_matrices=H,
        transition_covariance=Q,
        observation_covariance=torch.zeros(*batch, 1, 1, dtype=dtype),
        initial_state_mean=m1,
        initial_state_covariance=P1,
    )
