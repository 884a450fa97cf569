"""Fast exact log-likelihood of univariate ARIMA state-space models, for the optimiser.

Same model and result as ``kalman_log_likelihood`` on the levels form (R = 0,
one observed dimension), specialised two ways:

1. Univariate update: the innovation variance ``f_t = h' P_t h`` is a scalar,
   so no batched Cholesky is needed: ``K_t = P_t h / f_t``.
2. Steady state: the Riccati recursion does not depend on the data; once the
   predicted covariance stops changing (relative change below ``tol``, for
   every series) the gain is constant and the predicted means obey the
   time-invariant recursion ``a_{t+1} = L a_t + g y_t`` with
   ``L = F (I - K h')``, ``g = F K``. Then

       h' a_{t0+j} = c_j a_{t0} + sum_{i<j} psi_{j-1-i} y_{t0+i},   c_k = h' L^k,  psi_k = c_k g,

   a causal convolution computed by FFT, with ``c_k`` by repeated squaring.

Series may end in NaN padding; missing values inside a series need the
general filter (the caller checks, see ``has_inner_gaps``).

``max_transient`` caps the exact Riccati phase: past it the gain is frozen
even if not yet converged (models with an MA root on the unit circle
converge like 1/t). That approximation is only used to rank candidate orders
in the automatic search, whose winners are refitted exactly.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from tsgen.inference.kalman import KalmanParams
from tsgen.models._arima_transient import transient_filter

LOG_2PI = math.log(2.0 * math.pi)


def has_inner_gaps(y: Tensor) -> bool:
    """Whether any row of ``y`` ``(B, T)`` has a NaN followed later by a value."""
    observed = torch.isfinite(y)
    later = observed.flip(1).cummax(1).values.flip(1)  # an observation at or after t
    return bool((~observed & later).any())


def _powers_row(h: Tensor, L: Tensor, n: int) -> Tensor:
    """``c_k = h' L^k`` for ``k = 0..n-1`` ``(B, n, S)`` by doubling."""
    rows = h.unsqueeze(1)
    power = L
    while rows.shape[1] < n:
        rows = torch.cat([rows, rows @ power], 1)
        power = power @ power
    return rows[:, :n]


def _causal_convolution(kernel: Tensor, signal: Tensor) -> Tensor:
    """``out_j = sum_{i<j} kernel_{j-1-i} signal_i`` along the last axis (zero at j=0)."""
    n = signal.shape[-1]
    size = 1 << (2 * n - 1).bit_length()
    full = torch.fft.irfft(torch.fft.rfft(kernel, size) * torch.fft.rfft(signal, size), size)
    return torch.cat([signal.new_zeros(*signal.shape[:-1], 1), full[..., : n - 1]], -1)


def fast_log_likelihood(
    params: KalmanParams, y: Tensor, tol: float = 1e-11, check_every: int = 4, max_transient: int | None = None
) -> Tensor:
    """Total log-likelihood ``(B,)`` of ``y`` ``(B, T)`` (NaN only as trailing padding)."""
    F = params.transition_matrices
    h = params.observation_matrices[..., 0, :]
    B, T = y.shape
    observed = torch.isfinite(y)
    y0 = torch.where(observed, y, torch.zeros((), dtype=y.dtype))
    zero = torch.zeros((), dtype=y.dtype)
    total, a, P, switch = transient_filter(
        F, h, params.transition_covariance, params.initial_state_mean, params.initial_state_covariance,
        y0, observed, tol, check_every, max_transient,
    )
    if switch >= T:
        return total
    F = F.expand(B, *F.shape[-2:])
    h = h.expand(B, h.shape[-1])
    n = T - switch
    PH = (P @ h.unsqueeze(-1)).squeeze(-1)
    f = (h * PH).sum(-1)
    K = PH / f.unsqueeze(-1)
    eye = torch.eye(F.shape[-1], dtype=y.dtype)
    L = F @ (eye - K.unsqueeze(-1) * h.unsqueeze(-2))
    g = (F @ K.unsqueeze(-1)).squeeze(-1)
    rows = _powers_row(h, L, n)  # (B, n, S)
    psi = (rows * g.unsqueeze(1)).sum(-1)
    segment = y0[:, switch:]
    predicted = (rows * a.unsqueeze(1)).sum(-1) + _causal_convolution(psi, segment)
    v = segment - predicted
    m = observed[:, switch:]
    step = -0.5 * (LOG_2PI + torch.log(f).unsqueeze(-1) + v * v / f.unsqueeze(-1))
    return total + torch.where(m, step, zero).sum(-1)
