"""Compiled (numba) Kalman log-likelihood for many small systems, one per series.

With a parameter set per series the covariance recursion cannot be shared,
and batched array ops over 1000 tiny (4 x 4) systems pay their dispatch per
step; a plain loop per series, compiled, does the same flops without it.
Each series runs the exact filter (scalar observation) until its predicted
covariance converges (relative change <= ``RICCATI_TOLERANCE``, as the other
routes and statsmodels), then only the mean recursion with the frozen gain.

Compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def filter_sets(F, h, Q, r, P1, m1, c, z, tolerance, terms):  # pragma: no cover - compiled
    """Per-step terms ``log s_t + v_t^2 / s_t`` into ``terms`` ``(B, T)`` for
    series ``b`` with its own ``F[b], h[b], Q[b], r[b], P1[b], m1[b], c[b]``
    and centred observations ``z[b]``. Returns, per series, -1 or the first
    step whose innovation variance is not positive (its terms are then unset)."""
    B, T = z.shape
    S = F.shape[1]
    failed = np.full(B, -1, dtype=np.int64)
    P = np.empty((S, S))
    P_next = np.empty((S, S))
    M = np.empty((S, S))
    FM = np.empty((S, S))
    ph = np.empty(S)
    gain = np.empty(S)
    a = np.empty(S)
    filt = np.empty(S)
    for b in range(B):
        P[:, :] = P1[b]
        a[:] = m1[b]
        frozen = False
        converged = False
        log_s = 0.0
        inv_s = 1.0
        for t in range(T):
            if not frozen:
                s = r[b]
                for i in range(S):
                    acc = 0.0
                    for j in range(S):
                        acc += P[i, j] * h[b, j]
                    ph[i] = acc
                    s += acc * h[b, i]
                if not (s > 0.0) or not math.isfinite(s):
                    failed[b] = t
                    break
                log_s = math.log(s)
                inv_s = 1.0 / s
                for i in range(S):
                    gain[i] = ph[i] * inv_s
                frozen = converged  # the gain of the converged covariance is kept from here on
            v = z[b, t]
            for i in range(S):
                v -= h[b, i] * a[i]
            terms[b, t] = log_s + v * v * inv_s
            for i in range(S):
                filt[i] = a[i] + gain[i] * v
            for i in range(S):
                acc = c[b, i]
                for j in range(S):
                    acc += F[b, i, j] * filt[j]
                a[i] = acc
            if frozen:
                continue
            # P_{t+1} = F (P - K ph^T) F^T + Q, symmetrised
            for i in range(S):
                for j in range(S):
                    M[i, j] = P[i, j] - gain[i] * ph[j]
            for i in range(S):
                for j in range(S):
                    acc = 0.0
                    for k in range(S):
                        acc += F[b, i, k] * M[k, j]
                    FM[i, j] = acc
            change = 0.0
            largest = 0.0
            for i in range(S):
                for j in range(i + 1):
                    acc = 0.0
                    acc_t = 0.0
                    for k in range(S):
                        acc += FM[i, k] * F[b, j, k]
                        acc_t += FM[j, k] * F[b, i, k]
                    value = 0.5 * (acc + acc_t) + 0.5 * (Q[b, i, j] + Q[b, j, i])
                    P_next[i, j] = value
                    P_next[j, i] = value
                    change = max(change, abs(value - P[i, j]))
                    largest = max(largest, abs(value))
            P[:, :] = P_next
            converged = change <= tolerance * largest
    return failed


def log_likelihood_sets(y, p, batch_shape, per_step: bool = False):
    """Total ``(*b,)`` or per-step ``(*b, T)`` log-likelihood with one parameter
    set per series (scalar observations, float64, no gradient: see
    ``_kalman_numpy.applies_many``); None when an innovation variance is not
    positive (the torch path names the step)."""
    import torch

    from tsgen.inference._kalman_step import LOG_2PI, RICCATI_TOLERANCE

    num_times, S = y.shape[-2], p.state_dim
    batch = batch_shape.numel()

    def flat(x, event):
        return np.ascontiguousarray(x.detach().expand(*batch_shape, *event).reshape(batch, *event).numpy())

    F, Q, P1 = (flat(x, (S, S)) for x in (p.F, p.Q, p.P1))
    h = flat(p.H, (1, S))[:, 0]
    r = flat(p.R, (1, 1))[:, 0, 0].copy()
    m1 = flat(p.m1, (S,))
    c = np.zeros((batch, S)) if p.c is None else flat(p.c, (S,))
    z = y if p.d is None else y - p.d.unsqueeze(-2)
    z = np.ascontiguousarray(z.detach().expand(*batch_shape, num_times, 1).reshape(batch, num_times).numpy())
    terms = np.empty((batch, num_times))
    failed = filter_sets(F, h, Q, r, P1, m1, c, z, RICCATI_TOLERANCE, terms)
    if (failed >= 0).any():
        return None
    if per_step:
        return torch.from_numpy(-0.5 * (LOG_2PI + terms)).reshape(*batch_shape, num_times)
    return torch.from_numpy(-0.5 * (num_times * LOG_2PI + terms.sum(1))).reshape(batch_shape)
