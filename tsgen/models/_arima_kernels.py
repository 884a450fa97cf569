"""Compiled kernels of the univariate ARIMA Kalman filter (numba).

The ARIMA state-space form has one observed dimension and no observation
noise, so per step and series the filter is (``m_t`` = observed)::

    u = P h,  f = h'u,  v = y_t - h'a,
    a' = a + m_t u v / f,   P' = P - m_t u u' / f,
    a_next = F a',  P_next = F P' F' + Q,
    ll += m_t * (-1/2) (log 2 pi + log f + v^2 / f)

A Python loop over time costs microseconds of interpreter overhead per
operation; here each series runs as one compiled loop over its own steps,
so the cost is the arithmetic, O(S^3) per step while the covariance moves
and O(S^2) once it has converged.

Steady state, per series: the covariance recursion does not depend on the
data, and once ``P_next`` equals ``P`` (largest change <= ``tol`` times the
largest entry) it stays there, so later observed steps reuse ``u`` and ``f``
and skip the covariance update. A missing step moves ``P`` again (``P_next
= F P F' + Q``), so it runs exactly and the test starts over.
``max_transient`` freezes the gain after that many steps even if it has not
converged (models with an MA root on the unit circle converge like 1/t);
that approximation only ranks candidate orders in the automatic search.

:func:`filter_series` also runs the reverse (adjoint) recursion of these
lines over the steps it stored, giving the gradient of the series' total
with respect to ``F, h, Q, a_1, P_1`` and ``y`` in the same call.
:func:`filter_groups` is the forward pass for conditioning a fitted model:
per-step log densities and the predicted state after each series' end, with
one covariance sequence shared by all series of a parameter group.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True, nogil=True, error_model="numpy")
def _innovation(P, h, a, u):
    """``u = P h`` (into ``u``); returns ``f = h'u`` and ``h'a``."""
    S = h.shape[0]
    f = 0.0
    ha = 0.0
    for i in range(S):
        acc = 0.0
        for j in range(S):
            acc += P[i, j] * h[j]
        u[i] = acc
    for i in range(S):
        f += h[i] * u[i]
        ha += h[i] * a[i]
    return f, ha


@njit(cache=True, nogil=True, error_model="numpy")
def _predict_covariance(F, Q, P, u, scale, FP, P_next):
    """``FP = F (P - scale u u')`` and ``P_next = FP F' + Q``; returns ``max |P_next - P|``."""
    S = F.shape[0]
    for i in range(S):
        for j in range(S):
            acc = 0.0
            for k in range(S):
                acc += F[i, k] * (P[k, j] - scale * u[k] * u[j])
            FP[i, j] = acc
    change = 0.0
    for i in range(S):
        for j in range(S):
            acc = Q[i, j]
            for k in range(S):
                acc += FP[i, k] * F[j, k]
            P_next[i, j] = acc
            change = max(change, abs(acc - P[i, j]))
    return change


@njit(cache=True, nogil=True, error_model="numpy")
def _largest(P):
    out = 0.0
    for i in range(P.shape[0]):
        for j in range(P.shape[1]):
            out = max(out, abs(P[i, j]))
    return out


@njit(cache=True)
def filter_workspace(T, S):
    """Scratch arrays of :func:`filter_series` for series of up to ``T`` steps and ``S`` states."""
    return (np.empty((T, S)), np.empty((T, S)), np.empty(T), np.zeros(T, np.bool_), np.empty((T, S)),
            np.empty(T), np.empty((T, S, S)), np.empty((T, S, S)), np.empty((6, S)), np.empty((5, S, S)))


@njit(cache=True, nogil=True, error_model="numpy")
def filter_series(F, h, Q, a0, P0, y, observed, n, tol, max_transient, need_grad, work,
                  gF, gh, gQ, ga0, gP0, gy):
    """Log-likelihood of one series ``y`` ``(T,)`` over its first ``n`` steps and, if
    ``need_grad``, its gradient, written into ``gF, gh, gQ, ga0, gP0, gy``.

    ``F, Q, P0`` ``(S, S)``, ``h, a0`` ``(S,)``; ``observed`` ``(T,)`` bool (``y``
    is ignored where False); ``max_transient < 0``: no cap; ``work`` from
    :func:`filter_workspace`. The gradient arrays are overwritten.

    The tape of a step holds ``a, a', v`` and, for steps that move the
    covariance, ``u, f, P`` and ``F P'``. A steady stretch uses the ``u, f, P``
    frozen at its first step (stored in that step's slot); its adjoints of
    ``u`` and ``f`` are summed and pushed to ``P`` and ``h`` once, at its first step.
    """
    S = F.shape[0]
    tape_a, tape_post, tape_v, tape_moving, tape_u, tape_f, tape_P, tape_FP, vecs, mats = work
    a, u, post, gu, ga_post, gu_sum = vecs[0], vecs[1], vecs[2], vecs[3], vecs[4], vecs[5]
    P, P_next, FP, gP_post = mats[0], mats[1], mats[2], mats[3]
    for i in range(S):
        a[i] = a0[i]
        for j in range(S):
            P[i, j] = P0[i, j]
    steady = False
    starts_steady = False
    f = 1.0
    log_f = 0.0
    total = 0.0
    for t in range(n):
        m = observed[t]
        moving = (not steady) or (not m)
        if moving:
            f, ha = _innovation(P, h, a, u)
            log_f = math.log(f)
        else:  # u and f of the frozen covariance
            ha = 0.0
            for i in range(S):
                ha += h[i] * a[i]
        v = y[t] - ha if m else 0.0
        k = v / f if m else 0.0
        if m:
            total += -0.5 * (LOG_2PI + log_f + v * k)
        for i in range(S):
            post[i] = a[i] + k * u[i]
        if need_grad:
            tape_v[t] = v
            tape_moving[t] = moving
            tape_f[t] = f
            for i in range(S):
                tape_a[t, i] = a[i]
                tape_post[t, i] = post[i]
                tape_u[t, i] = u[i]
            if moving or starts_steady:
                for i in range(S):
                    for j in range(S):
                        tape_P[t, i, j] = P[i, j]
        starts_steady = False
        for i in range(S):
            acc = 0.0
            for j in range(S):
                acc += F[i, j] * post[j]
            a[i] = acc
        if moving:
            change = _predict_covariance(F, Q, P, u, 1.0 / f if m else 0.0, FP, P_next)
            largest = 0.0
            for i in range(S):
                for j in range(S):
                    P[i, j] = P_next[i, j]
                    largest = max(largest, abs(P_next[i, j]))
                    if need_grad:
                        tape_FP[t, i, j] = FP[i, j]
            steady = m and (change <= tol * largest or (max_transient >= 0 and t + 1 >= max_transient))
            if steady:
                starts_steady = True
                f, _ = _innovation(P, h, a, u)
                log_f = math.log(f)
    if not need_grad:
        return total
    # ---------------------------------------------------- reverse sweep
    ga = ga0
    gP = gP0
    ga[:] = 0.0
    gP[:, :] = 0.0
    gF[:, :] = 0.0
    gh[:] = 0.0
    gQ[:, :] = 0.0
    gy[:] = 0.0
    gu_sum[:] = 0.0
    for t in range(n - 1, -1, -1):
        m = observed[t]
        moving = tape_moving[t]
        f = tape_f[t]
        v = tape_v[t]
        # a_next = F a', and P_next = F P' F' + Q on a moving step
        if moving:
            for i in range(S):
                for j in range(S):
                    gQ[i, j] += gP[i, j]
                    acc = 0.0
                    for k in range(S):
                        acc += (gP[i, k] + gP[k, i]) * tape_FP[t, k, j]
                    gF[i, j] += acc
            for i in range(S):  # gP_post = F' gP F (FP as scratch for gP F)
                for j in range(S):
                    acc = 0.0
                    for k in range(S):
                        acc += gP[i, k] * F[k, j]
                    FP[i, j] = acc
            for i in range(S):
                for j in range(S):
                    acc = 0.0
                    for k in range(S):
                        acc += F[k, i] * FP[k, j]
                    gP_post[i, j] = acc
        for i in range(S):
            acc = 0.0
            for k in range(S):
                acc += F[k, i] * ga[k]
                gF[i, k] += ga[i] * tape_post[t, k]
            ga_post[i] = acc
        if m:
            au = 0.0
            for i in range(S):
                au += ga_post[i] * tape_u[t, i]
            gv = (au - v) / f
            gf = -(v / (f * f)) * au - 0.5 / f + 0.5 * v * v / (f * f)
            gy[t] = gv
            for i in range(S):
                ga[i] = ga_post[i] - gv * h[i]
                gh[i] -= gv * tape_a[t, i]
                gu[i] = (v / f) * ga_post[i]
            if moving:  # P' = P - u u' / f
                uGu = 0.0
                for i in range(S):
                    acc_r = 0.0
                    acc_c = 0.0
                    for j in range(S):
                        acc_r += gP_post[i, j] * tape_u[t, j]
                        acc_c += gP_post[j, i] * tape_u[t, j]
                    uGu += tape_u[t, i] * acc_r
                    gu[i] -= (acc_r + acc_c) / f
                gf += uGu / (f * f)
            for i in range(S):  # f = h'u
                gh[i] += gf * tape_u[t, i]
                gu_sum[i] += gu[i] + gf * h[i]
        else:
            for i in range(S):
                ga[i] = ga_post[i]
        if moving:
            for i in range(S):
                for j in range(S):
                    gP[i, j] = gP_post[i, j]
        if moving or tape_moving[t - 1]:
            # u = P h with this step's P: the start of a steady stretch, or a moving step
            for i in range(S):
                acc = 0.0
                for j in range(S):
                    gP[i, j] += gu_sum[i] * h[j]
                    acc += tape_P[t, j, i] * gu_sum[j]
                gh[i] += acc
            gu_sum[:] = 0.0
    return total


@njit(cache=True, nogil=True, error_model="numpy")
def filter_groups(F, h, Q, P0, a0, y, observed, lengths, order, group_start, moving_mask, tol):
    """Per-step log densities ``(B, T)`` and the predicted state after each series' end.

    Group ``g`` holds the series ``order[group_start[g]:group_start[g + 1]]``
    (longest first) under the matrices ``F[g], h[g], Q[g], P0[g]``: they share
    one covariance sequence, driven by the observed mask of the first
    (longest) member when ``moving_mask[g]`` (a group of one series with
    missing values) and by "all observed" otherwise. ``a0`` ``(B, S)``.
    The filter of series ``b`` runs ``lengths[b]`` steps; its predicted
    state after them is returned (``a0``, ``P0`` when ``lengths[b] == 0``).
    """
    B, T = y.shape
    S = F.shape[-1]
    ll = np.zeros((B, T))
    next_a = np.empty((B, S))
    next_P = np.empty((B, S, S))
    a = np.empty((B, S))
    P = np.empty((S, S))
    P_next = np.empty((S, S))
    FP = np.empty((S, S))
    u = np.empty(S)
    post = np.empty(S)
    for g in range(group_start.shape[0] - 1):
        first, last = group_start[g], group_start[g + 1]
        Fg, hg, Qg = F[g], h[g], Q[g]
        P[:, :] = P0[g]
        longest = 0
        for r in range(first, last):
            b = order[r]
            a[b] = a0[b]
            longest = max(longest, lengths[b])
            if lengths[b] == 0:
                next_a[b] = a0[b]
                next_P[b] = P0[g]
        steady = False
        f, _ = _innovation(P, hg, post, u)
        for t in range(longest):
            m_cov = observed[order[first], t] if moving_mask[g] else True
            for r in range(first, last):
                b = order[r]
                if t >= lengths[b]:
                    break  # members are sorted longest first
                ab = a[b]
                if observed[b, t]:
                    ha = 0.0
                    for i in range(S):
                        ha += hg[i] * ab[i]
                    v = y[b, t] - ha
                    ll[b, t] = -0.5 * (LOG_2PI + math.log(f) + v * v / f)
                    k = v / f
                else:
                    k = 0.0
                for i in range(S):
                    post[i] = ab[i] + k * u[i]
                for i in range(S):
                    acc = 0.0
                    for j in range(S):
                        acc += Fg[i, j] * post[j]
                    ab[i] = acc
            if not steady or not m_cov:
                scale = 1.0 / f if m_cov else 0.0
                change = _predict_covariance(Fg, Qg, P, u, scale, FP, P_next)
                largest = _largest(P_next)
                P[:, :] = P_next
                steady = m_cov and change <= tol * largest
                f, _ = _innovation(P, hg, post, u)
            for r in range(first, last):
                b = order[r]
                if lengths[b] == t + 1:
                    next_a[b] = a[b]
                    next_P[b] = P
    return ll, next_a, next_P
