"""Exact log-likelihood of univariate ARIMA state-space models, for the optimiser.

Same model and result as ``kalman_log_likelihood`` on the levels form (no
observation noise, one observed dimension), computed by the compiled filter
of :mod:`._arima_kernels`: each series runs its own exact Riccati phase and
switches to the constant gain once its covariance has converged. One
autograd node: the kernel returns the gradient of every series' total with
the value, and the backward pass only scales it.

Missing values (NaN) are marginalised; trailing NaN padding is skipped.
``max_transient`` caps the exact Riccati phase (see :mod:`._arima_kernels`);
that approximation is only used to rank candidate orders in the automatic
search, whose winners are refitted exactly.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tsgen.inference.kalman import KalmanParams
from tsgen.models._arima_kernels import value_and_grad


def _batch_arrays(tensors: list[Tensor], batch: int) -> list[np.ndarray]:
    """float64 C-contiguous numpy views, each broadcast to ``batch`` rows."""
    out = []
    for x in tensors:
        x = x.detach()
        out.append(np.ascontiguousarray(np.broadcast_to(x.numpy(), (batch, *x.shape[1:]))))
    return out


def observed_lengths(observed: np.ndarray) -> np.ndarray:
    """Steps up to and including each row's last observed value ``(B,)``."""
    T = observed.shape[1]
    last = T - np.argmax(observed[:, ::-1], axis=1)
    return np.where(observed.any(1), last, 0).astype(np.int64)


class _ExactLogLikelihood(torch.autograd.Function):
    @staticmethod
    def forward(ctx, F, h, Q, a0, P0, y, tol, max_transient):
        B, T = y.shape
        F_, h_, Q_, a0_, P0_ = _batch_arrays([F, h, Q, a0, P0], B)
        y_ = y.detach().numpy()
        observed = np.isfinite(y_)
        need_grad = any(ctx.needs_input_grad[:6])
        total, *grads = value_and_grad(
            F_, h_, Q_, a0_, P0_, np.where(observed, y_, 0.0), observed, observed_lengths(observed),
            float(tol), -1 if max_transient is None else int(max_transient), need_grad,
        )
        ctx.grads = grads
        ctx.shapes = [x.shape for x in (F, h, Q, a0, P0, y)]
        return torch.from_numpy(total)

    @staticmethod
    def backward(ctx, grad_total):
        scale = grad_total.numpy()
        out = []
        for g, shape in zip(ctx.grads, ctx.shapes):
            g = torch.from_numpy(g * scale.reshape(-1, *([1] * (g.ndim - 1))))
            out.append(g.sum(0, keepdim=True) if shape[0] == 1 and g.shape[0] != 1 else g)
        return (*out, None, None)


def fast_log_likelihood(params: KalmanParams, y: Tensor, tol: float = 1e-11, max_transient: int | None = None) -> Tensor:
    """Total log-likelihood ``(B,)`` of ``y`` ``(B, T)`` (NaN = missing)."""
    return _ExactLogLikelihood.apply(
        params.transition_matrices, params.observation_matrices[..., 0, :], params.transition_covariance,
        params.initial_state_mean, params.initial_state_covariance, y, tol, max_transient,
    )
