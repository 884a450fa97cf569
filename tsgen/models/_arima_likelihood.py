"""Fast exact log-likelihood of univariate ARIMA state-space models, for the optimiser.

Same model and result as ``kalman_log_likelihood`` on the levels form (R = 0,
one observed dimension), specialised two ways:

1. Univariate update: the innovation variance ``f_t = h' P_t h`` is a scalar,
   so no batched Cholesky is needed: ``K_t = P_t h / f_t``.
2. Steady state: the Riccati recursion does not depend on the data; once the
   predicted covariance stops changing (relative change below ``tol``, for
   every series) the gain is constant and the predicted means obey the
   time-invariant recursion ``a_{t+1} = L a_t + g y_t`` with
   ``L = F (I - K h')``, ``g = F K``, and the innovations are
   ``v_t = y_t - h' a_t`` with the constant variance ``f``.

Both phases run in float64 numpy, each as one autograd node with a
hand-written reverse pass (:mod:`._arima_transient`): autograd through a
Python loop over time costs mostly per-operation overhead.

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
from tsgen.models._arima_transient import SteadyInnovations, transient_filter

LOG_2PI = math.log(2.0 * math.pi)


def has_inner_gaps(y: Tensor) -> bool:
    """Whether any row of ``y`` ``(B, T)`` has a NaN followed later by a value."""
    observed = torch.isfinite(y)
    later = observed.flip(1).cummax(1).values.flip(1)  # an observation at or after t
    return bool((~observed & later).any())


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
    PH = (P @ h.unsqueeze(-1)).squeeze(-1)
    f = (h * PH).sum(-1)
    K = PH / f.unsqueeze(-1)
    eye = torch.eye(F.shape[-1], dtype=y.dtype)
    L = F @ (eye - K.unsqueeze(-1) * h.unsqueeze(-2))
    g = (F @ K.unsqueeze(-1)).squeeze(-1)
    v = SteadyInnovations.apply(L, g, h, a, y0[:, switch:])
    m = observed[:, switch:]
    step = -0.5 * (LOG_2PI + torch.log(f).unsqueeze(-1) + v * v / f.unsqueeze(-1))
    return total + torch.where(m, step, zero).sum(-1)
