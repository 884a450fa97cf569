"""Steady-state log-likelihood in float64 numpy, for calls that need no gradient.

At state dim ~4 a torch op costs 5-10 us of dispatch for a few flops, and the
filter is dominated by that overhead; a numpy op costs ~1 us. When nothing
requires a gradient (evaluation, the benchmark, model selection), the
time-invariant, fully observed, scalar-observation case runs here; the
torch path in ``_kalman_steady`` stays the differentiable one.

Schedule, for one parameter set shared by ``B`` series:

1. Transient (``t < n``): the Riccati recursion (data independent) runs
   step by step until the predicted covariance converges (relative change
   <= 1e-11, as statsmodels does); with ``D = 1`` the innovation variance
   ``s_t = h^T P_t h + r`` is a scalar, so the gain is a division. The means
   ``a_{t+1} = L_t a_t + F K_t z_t + c`` (``L_t = F (I - K_t h^T)``,
   ``z_t = y_t - d``) run alongside, batched over the series.
2. Steady part (``t >= n-1``, constant ``L, K``): the predicted observation
   is an LTI filter of ``z``::

       h^T a_{n-1+m} = r_m a_{n-1} + sum_{i<m} g_{m-1-i} z_{n-1+i} + sum_{i<m} r_i c,
       r_m = h^T L^m,   g_k = r_k F K.

   Time is cut in blocks of C steps: inside a block the sum is a product
   with a C x C Toeplitz matrix of the ``g_k`` (one matrix product for all
   blocks of all series), and only the block start states are chained step
   by step (``s_{k+1} = L^C s_k + ...``), T / C small steps. The same
   recursion, reassociated, so exact to rounding for any ``L``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from tsgen.inference._kalman_params import PreparedParams
from tsgen.inference._kalman_step import LOG_2PI, RICCATI_TOLERANCE

# Steps per block of the steady part: the in-block work is a (C x C) matrix
# product per block, the chain of block starts K = T / C small steps.
BLOCK = 64


def applies(y: Tensor, p: PreparedParams) -> bool:
    """True when the numpy path may run: no gradient needed, float64 CPU
    tensors, scalar observations, one parameter set."""
    fields = [x for x in (y, p.F, p.H, p.Q, p.R, p.m1, p.P1, p.c, p.d) if x is not None]
    if torch.is_grad_enabled() and any(x.requires_grad for x in fields):
        return False
    return (
        p.obs_dim == 1
        and p.batch_shape.numel() == 1
        and all(x.dtype == torch.float64 and x.device.type == "cpu" for x in fields)
    )


def _as_numpy(x: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    return x.detach().reshape(shape).numpy()


def _transient(F, h, Q, r, P1, num_times):
    """Riccati recursion until convergence. Returns the innovation variances
    ``s_0..s_{n-1}`` and gains ``K_0..K_{n-1}`` (rows); step ``n-1`` is steady
    (or ``n = T``). None when an innovation variance is not positive."""
    Ft = F.T
    P = P1
    variances, gains = [], []
    for t in range(num_times):
        ph = P @ h
        s = float(ph @ h) + r
        if not s > 0.0 or not math.isfinite(s):
            return None
        gain = ph / s
        variances.append(s)
        gains.append(gain)
        if t + 1 == num_times:
            break
        P_next = F @ (P - np.multiply.outer(gain, ph)) @ Ft + Q
        P_next = 0.5 * (P_next + P_next.T)
        change = np.abs(P_next - P).max()
        P = P_next
        if change <= RICCATI_TOLERANCE * np.abs(P_next).max():
            # P_{t+1} is the steady covariance: one more step gives its gain.
            ph = P @ h
            s = float(ph @ h) + r
            if not s > 0.0 or not math.isfinite(s):
                return None
            variances.append(s)
            gains.append(ph / s)
            break
    return np.array(variances), np.stack(gains)


def _powers(L: np.ndarray, count: int) -> np.ndarray:
    """``L^0..L^{count-1}`` ``(count, S, S)`` by doubling."""
    powers = np.eye(L.shape[0])[None]
    power = L
    while powers.shape[0] < count:
        powers = np.concatenate([powers, powers @ power])
        power = power @ power
    return powers[:count]


def _steady_predictions(L, FK, c, h, x, start):
    """``h^T a_m`` for ``m = 0..M`` (``(B, M+1)``) of ``a_{m+1} = L a_m + FK x_m + c``,
    ``a_0 = start`` ``(B, S)``, ``x`` ``(B, M)``, in blocks of ``C`` steps::

        h^T a_{kC+j} = r_j s_k + sum_{i<j} g_{j-1-i} x_{kC+i} + sum_{i<j} r_i c,
        s_{k+1} = L^C s_k + sum_{i<C} L^{C-1-i} (FK x_{kC+i} + c),

    with ``r_j = h^T L^j``, ``g_j = r_j FK`` and ``s_k = a_{kC}``: the in-block
    sums are one matrix product with a C x C Toeplitz matrix, and only the
    K = (M+1)/C block starts are chained step by step.
    """
    batch, steps = x.shape
    count = steps + 1
    chunk = min(BLOCK, count)
    num_blocks = -(-count // chunk)
    powers = _powers(L, chunk + 1)  # L^0..L^C
    rows = np.einsum("s,jst->jt", h, powers)  # r_j = h^T L^j, (C+1, S)
    g = rows[:chunk] @ FK  # (C,)
    lag = np.arange(chunk)[None, :] - 1 - np.arange(chunk)[:, None]  # j-1-i
    toeplitz = np.where(lag >= 0, g[np.clip(lag, 0, None)], 0.0)  # (C, C)
    carry_x = powers[chunk - 1 :: -1] @ FK  # row i: L^{C-1-i} FK, (C, S)
    padded = np.zeros((batch, num_blocks * chunk))
    padded[:, :steps] = x
    blocks = padded.reshape(batch * num_blocks, chunk)
    ends = (blocks @ carry_x).reshape(batch, num_blocks, -1)
    if c is not None:
        ends += powers[:chunk].sum(0) @ c
    step = powers[chunk].T
    starts = np.empty_like(ends)
    state = start
    for k in range(num_blocks):
        starts[:, k] = state
        state = state @ step + ends[:, k]
    predicted = blocks @ toeplitz
    predicted += starts.reshape(batch * num_blocks, -1) @ rows[:chunk].T
    if c is not None:
        predicted += np.concatenate([[0.0], np.cumsum(rows[: chunk - 1] @ c)])
    return predicted.reshape(batch, num_blocks * chunk)[:, :count]


def steady_state_log_likelihood_numpy(
    y: Tensor, p: PreparedParams, batch_shape: torch.Size
) -> Tensor | None:
    """Total log-likelihood ``(*b,)``, or None when this path declines (a
    non-positive innovation variance, whose error message the torch path gives)."""
    num_times, S = y.shape[-2], p.state_dim
    batch = batch_shape.numel()
    F, Q, P1 = (_as_numpy(x, (S, S)) for x in (p.F, p.Q, p.P1))
    h = _as_numpy(p.H, (S,))
    r = float(p.R.reshape(()))
    m1 = _as_numpy(p.m1, (S,))
    c = None if p.c is None else _as_numpy(p.c, (S,))
    z = y if p.d is None else y - p.d.reshape(1, 1)
    z = z.detach().expand(*batch_shape, num_times, 1).reshape(batch, num_times).numpy()

    found = _transient(F, h, Q, r, P1, num_times)
    if found is None:
        return None
    variances, gains = found
    n = variances.shape[0]
    FK = gains @ F.T  # (n, S): rows F K_t
    L_t = F[None] - FK[:, :, None] * h[None, None, :]  # (n, S, S)
    # Transient means a_0..a_{n-1} (rows, batched over series).
    a = np.broadcast_to(m1, (batch, S))
    predicted = np.empty((batch, num_times))
    Lt_t = L_t.transpose(0, 2, 1)
    for t in range(n - 1):
        predicted[:, t] = a @ h
        a = a @ Lt_t[t] + z[:, t, None] * FK[t]
        if c is not None:
            a = a + c
    # Steady part: predictions at t = n-1..T-1.
    predicted[:, n - 1 :] = _steady_predictions(L_t[-1], FK[-1], c, h, z[:, n - 1 : num_times - 1], a)

    innovations = z - predicted
    head = (np.log(variances[:-1]).sum() + (innovations[:, : n - 1] ** 2 / variances[:-1]).sum(1))
    steady_var = variances[-1]
    tail = (num_times - n + 1) * math.log(steady_var) + (innovations[:, n - 1 :] ** 2).sum(1) / steady_var
    total = -0.5 * (num_times * LOG_2PI + head + tail)
    return torch.from_numpy(total).reshape(batch_shape)
