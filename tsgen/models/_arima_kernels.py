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

Maximum likelihood (:func:`minimize`, :func:`objective`): for one series and
a free parameter vector ``x`` (layout of :class:`ArimaSpec.blocks`) the
objective is the negative exact log-likelihood per observation of the scaled
series, built as

    beta = x_beta / xscale,   (ar, sar) = -Levinson(r(x)),   (ma, sma) = Levinson(r(x)),
    sigma2 = exp(x_sigma2),   r(x) = x / sqrt(1 + x^2)            (Monahan-Jones)
    phi(L) = ar(L) sar(L^s),  theta(L) = ma(L) sma(L^s)
    F, h, Q from phi and theta (levels form of :mod:`._arima_statespace`)
    P_1 = [0, 0; 0, P],  P = T P T' + sigma2 R R'                 (stationary ARMA block)
    -1/n log p(y_{n+1:T} | y_{1:n}) by :func:`filter_series`

and its gradient is the reverse pass of those lines, written out here: the
filter returns the adjoints of ``F, Q, P_1, a_1`` and ``y``; the Lyapunov
equation's adjoint is ``L = T' L T + sym(G)`` with ``gT = 2 L T P`` and
``g(sigma2 R R') = L``; the polynomial products and the Levinson recursion
are stepped back by hand. The chain is tested against torch autograd
through :mod:`._arima_statespace` and :func:`tsgen.inference.kalman.kalman_log_likelihood`.
Each series then runs its own BFGS inside one compiled call, so a batch of
series costs the arithmetic only: no interpreter work per iteration or series.

All of tsgen's compiled ARIMA code lives in this one module on purpose:
numba's on-disk cache (``cache=True``) is invalidated only when the file of
the cached function changes, not when a function it calls from another
module does, so kernels split over several files could run stale code.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

LOG_2PI = math.log(2.0 * math.pi)
#: largest change of the predicted covariance, relative to its largest entry, at which the gain is frozen
STEADY_TOL = 1e-11
#: state dimensions up to which F is used densely (measured: S = 3 plain loops ~25% faster)
DENSE_UP_TO = 6
#: bound of the Monahan-Jones argument of every AR/MA partial autocorrelation:
#: the optimiser's variable z enters as x = MAX_FREE_PACF tanh(z / MAX_FREE_PACF),
#: so |r| = |x| / sqrt(1 + x^2) < 1 - 5e-7. On a unit root the likelihood keeps
#: rising towards |r| = 1 and an unbounded x reached r = 1.0 exactly in floating
#: point (a singular stationary covariance: every later predict failed); below
#: |x| ~ 100 the map is the identity to 1e-7.
MAX_FREE_PACF = 1000.0


@njit(cache=True, nogil=True, error_model="numpy")
def _copy_vector(src, dst):
    """``dst[:] = src``. The kernels copy by loops: numba's array-to-slice assignment
    compiles a shape-mismatch message (string formatting) into each kernel, seconds of
    first-use compile time."""
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@njit(cache=True, nogil=True, error_model="numpy")
def _copy_matrix(src, dst):
    """``dst[:, :] = src`` (see :func:`_copy_vector`)."""
    for i in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[i, j] = src[i, j]


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
def _nonzeros(F, nz_i, nz_k, nz_v):
    """The non-zero entries of ``F`` as a flat list ``(i, k, F[i, k])``; returns their count,
    or ``S^2`` (use ``F`` densely) for matrices of at most ``DENSE_UP_TO`` rows.

    ARIMA's transition matrix is a companion form with about 2S of its S^2
    entries non-zero, so products with it cost O(S^2) instead of O(S^3); for a
    few states the plain loops are faster than the indirect ones."""
    count = 0
    if F.shape[0] <= DENSE_UP_TO:
        return F.shape[0] * F.shape[1]  # plain loops win for small matrices
    for i in range(F.shape[0]):
        for k in range(F.shape[1]):
            if F[i, k] != 0.0:
                nz_i[count] = i
                nz_k[count] = k
                nz_v[count] = F[i, k]
                count += 1
    return count


@njit(cache=True, nogil=True, error_model="numpy")
def _predict_covariance(F, nnz, nz_i, nz_k, nz_v, Q, P, u, scale, Pp, FP, P_next):
    """``FP = F (P - scale u u')`` and ``P_next = FP F' + Q``; returns the change
    ``max |P_next - P|`` relative to ``max |P_next|`` (the steady-state test).

    ``F`` is used through its non-zeros when ``nnz`` is below ``S^2`` (see
    :func:`_nonzeros`), densely otherwise."""
    S = P.shape[0]
    for i in range(S):
        for j in range(S):
            Pp[i, j] = P[i, j] - scale * u[i] * u[j]
    if nnz < S * S:
        for i in range(S):
            for j in range(S):
                FP[i, j] = 0.0
                P_next[i, j] = Q[i, j]
        for m in range(nnz):
            i, k, v = nz_i[m], nz_k[m], nz_v[m]
            for j in range(S):
                FP[i, j] += v * Pp[k, j]
        for m in range(nnz):
            j, k, v = nz_i[m], nz_k[m], nz_v[m]
            for i in range(S):
                P_next[i, j] += FP[i, k] * v
    else:
        for i in range(S):
            for j in range(S):
                acc = 0.0
                for k in range(S):
                    acc += F[i, k] * Pp[k, j]
                FP[i, j] = acc
        for i in range(S):
            for j in range(S):
                acc = Q[i, j]
                for k in range(S):
                    acc += FP[i, k] * F[j, k]
                P_next[i, j] = acc
    change = 0.0
    largest = 0.0
    for i in range(S):
        for j in range(S):
            change = max(change, abs(P_next[i, j] - P[i, j]))
            largest = max(largest, abs(P_next[i, j]))
    return change / max(largest, 1e-300)


@njit(cache=True, nogil=True, error_model="numpy")
def _transition(F, nnz, nz_i, nz_k, nz_v, x, out):
    """``out = F x``, through the non-zeros of ``F`` when ``nnz < S^2``. For the
    forecasts; the filters' per-step loops write it inline (the call costs more there)."""
    S = x.shape[0]
    if nnz < S * S:
        out[:] = 0.0
        for m in range(nnz):
            out[nz_i[m]] += nz_v[m] * x[nz_k[m]]
    else:
        for i in range(S):
            acc = 0.0
            for j in range(S):
                acc += F[i, j] * x[j]
            out[i] = acc


@njit(cache=True)
def filter_workspace(T, S):
    """Scratch arrays of :func:`filter_series` for series of up to ``T`` steps and ``S`` states.

    The covariances of the tape are written compactly, one slot per step that
    moves them (the transient and missing steps): the buffers are allocated for
    every step but never written past the slots used, and unwritten pages of
    ``np.empty`` take no memory, so a long series that converges early costs
    little."""
    return (np.empty((T, S)), np.empty((T, S)), np.empty(T), np.zeros(T, np.bool_), np.empty((T, S)),
            np.empty(T), np.empty((T, S, S)), np.empty((T, S, S)), np.empty((6, S)),
            np.empty((6, S, S)), np.empty((4, S * S), np.int64), np.empty(S * S), np.empty(T, np.int64))


@njit(cache=True, nogil=True, error_model="numpy")
def filter_series(F, F_free, h, Q, a0, P0, y, observed, n, tol, max_transient, need_grad, work,
                  gF, gh, gQ, ga0, gP0, gy):
    """Log-likelihood of one series ``y`` ``(T,)`` over its first ``n`` steps and, if
    ``need_grad``, its gradient, written into ``gF, gh, gQ, ga0, gP0, gy``.

    ``F, Q, P0`` ``(S, S)``, ``h, a0`` ``(S,)``; ``observed`` ``(T,)`` bool (``y``
    is ignored where False); ``max_transient < 0``: no cap; ``work`` from
    :func:`filter_workspace`. The gradient arrays are overwritten; ``gF`` only
    where ``F_free`` (bool ``(S, S)``) is True: the other entries of ``F`` are
    taken as constants, so their adjoints are never formed.

    The tape of a step holds ``a, a', v, u, f`` and, for steps that move the
    covariance, ``P`` and ``F P'``. A steady stretch uses the ``u, f, P``
    frozen at its first step (stored in that step's slot); its adjoints of
    ``u`` and ``f`` are summed and pushed to ``P`` and ``h`` once, at its first step.
    """
    S = F.shape[0]
    tape_a, tape_post, tape_v, tape_moving, tape_u, tape_f, tape_P, tape_FP, vecs, mats, index, nz_v, tape_slot = work
    a, u, post, gu, ga_post, gu_sum = vecs[0], vecs[1], vecs[2], vecs[3], vecs[4], vecs[5]
    P, P_next, FP, gP_post, Pp, gPF = mats[0], mats[1], mats[2], mats[3], mats[4], mats[5]
    nz_i, nz_k, free_i, free_k = index[0], index[1], index[2], index[3]
    nnz = _nonzeros(F, nz_i, nz_k, nz_v)
    n_free = 0
    for i in range(S):
        for k in range(S):
            if F_free[i, k]:
                free_i[n_free] = i
                free_k[n_free] = k
                n_free += 1
    for i in range(S):
        a[i] = a0[i]
        for j in range(S):
            P[i, j] = P0[i, j]
    steady = False
    starts_steady = False
    f = 1.0
    log_f = 0.0
    inv_f = 1.0
    total = 0.0
    slots = 0
    for t in range(n):
        m = observed[t]
        moving = (not steady) or (not m)
        if moving:
            f, ha = _innovation(P, h, a, u)
            log_f = math.log(f)
            inv_f = 1.0 / f
        else:  # u and f of the frozen covariance
            ha = 0.0
            for i in range(S):
                ha += h[i] * a[i]
        v = y[t] - ha if m else 0.0
        k = v * inv_f if m else 0.0
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
                tape_slot[t] = slots
                for i in range(S):
                    for j in range(S):
                        tape_P[slots, i, j] = P[i, j]
                slots += 1
        starts_steady = False
        if nnz < S * S:  # a = F a' (inline: a call per step costs more than the product)
            for i in range(S):
                a[i] = 0.0
            for c in range(nnz):
                a[nz_i[c]] += nz_v[c] * post[nz_k[c]]
        else:
            for i in range(S):
                acc = 0.0
                for j in range(S):
                    acc += F[i, j] * post[j]
                a[i] = acc
        if moving:
            change = _predict_covariance(F, nnz, nz_i, nz_k, nz_v, Q, P, u, inv_f if m else 0.0, Pp, FP, P_next)
            for i in range(S):
                for j in range(S):
                    P[i, j] = P_next[i, j]
                    if need_grad:
                        tape_FP[slots - 1, i, j] = FP[i, j]
            steady = m and (change <= tol or (max_transient >= 0 and t + 1 >= max_transient))
            if steady:
                starts_steady = True
                f, _ = _innovation(P, h, a, u)
                log_f = math.log(f)
                inv_f = 1.0 / f
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
        slot = tape_slot[t]
        for c in range(n_free):
            i, j = free_i[c], free_k[c]
            acc = ga[i] * tape_post[t, j]
            if moving:
                for k in range(S):
                    acc += (gP[i, k] + gP[k, i]) * tape_FP[slot, k, j]
            gF[i, j] += acc
        if moving:
            for i in range(S):
                for j in range(S):
                    gQ[i, j] += gP[i, j]
                    gPF[i, j] = 0.0
                    gP_post[i, j] = 0.0
            if nnz < S * S:
                for c in range(nnz):  # gP F
                    k, j, w = nz_i[c], nz_k[c], nz_v[c]
                    for i in range(S):
                        gPF[i, j] += gP[i, k] * w
                for c in range(nnz):  # F' (gP F)
                    k, i, w = nz_i[c], nz_k[c], nz_v[c]
                    for j in range(S):
                        gP_post[i, j] += w * gPF[k, j]
            else:
                for i in range(S):
                    for j in range(S):
                        acc = 0.0
                        for k in range(S):
                            acc += gP[i, k] * F[k, j]
                        gPF[i, j] = acc
                for i in range(S):
                    for j in range(S):
                        acc = 0.0
                        for k in range(S):
                            acc += F[k, i] * gPF[k, j]
                        gP_post[i, j] = acc
        if nnz < S * S:  # ga' = F' ga (inline: a call per step costs more than the product)
            for i in range(S):
                ga_post[i] = 0.0
            for c in range(nnz):
                ga_post[nz_k[c]] += nz_v[c] * ga[nz_i[c]]
        else:
            for i in range(S):
                acc = 0.0
                for k in range(S):
                    acc += F[k, i] * ga[k]
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
                    acc += tape_P[slot, j, i] * gu_sum[j]
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
    Pp = np.empty((S, S))
    u = np.empty(S)
    post = np.empty(S)
    nz_i = np.empty(S * S, np.int64)
    nz_k = np.empty(S * S, np.int64)
    nz_v = np.empty(S * S)
    for g in range(group_start.shape[0] - 1):
        first, last = group_start[g], group_start[g + 1]
        Fg, hg, Qg = F[g], h[g], Q[g]
        nnz = _nonzeros(Fg, nz_i, nz_k, nz_v)
        _copy_matrix(P0[g], P)
        longest = 0
        for r in range(first, last):
            b = order[r]
            _copy_vector(a0[b], a[b])
            longest = max(longest, lengths[b])
            if lengths[b] == 0:
                _copy_vector(a0[b], next_a[b])
                _copy_matrix(P0[g], next_P[b])
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
                if nnz < S * S:  # ab = F post, inline as in filter_series
                    for i in range(S):
                        ab[i] = 0.0
                    for c in range(nnz):
                        ab[nz_i[c]] += nz_v[c] * post[nz_k[c]]
                else:
                    for i in range(S):
                        acc = 0.0
                        for j in range(S):
                            acc += Fg[i, j] * post[j]
                        ab[i] = acc
            if not steady or not m_cov:
                scale = 1.0 / f if m_cov else 0.0
                change = _predict_covariance(Fg, nnz, nz_i, nz_k, nz_v, Qg, P, u, scale, Pp, FP, P_next)
                _copy_matrix(P_next, P)
                steady = m_cov and change <= tol
                f, _ = _innovation(P, hg, post, u)
            for r in range(first, last):
                b = order[r]
                if lengths[b] == t + 1:
                    _copy_vector(a[b], next_a[b])
                    _copy_matrix(P, next_P[b])
    return ll, next_a, next_P


# ----------------------------------------------------------- transforms
@njit(cache=True, nogil=True, error_model="numpy")
def _levinson(x, rows):
    """Durbin-Levinson rows from partial autocorrelations ``r = x / sqrt(1 + x^2)``:
    ``rows[k, :k+1]``; the coefficients are ``rows[n-1, :n]``."""
    for k in range(x.shape[0]):
        r = x[k] / math.sqrt(1.0 + x[k] * x[k])
        for i in range(k):
            rows[k, i] = rows[k - 1, i] + r * rows[k - 1, k - 1 - i]
        rows[k, k] = r


@njit(cache=True, nogil=True, error_model="numpy")
def _levinson_vjp(x, rows, g, gx):
    """``gx += J' g`` for the last Levinson row; ``g`` (length n) is consumed."""
    for k in range(x.shape[0] - 1, -1, -1):
        r = rows[k, k]
        gr = g[k]
        for i in range(k):
            gr += g[i] * rows[k - 1, k - 1 - i]
        for j in range((k + 1) // 2):  # y_{k-1}[j] feeds y_k[j] and y_k[k-1-j]
            jj = k - 1 - j
            gj, gjj = g[j], g[jj]
            if j == jj:
                g[j] = gj + r * gj
            else:
                g[j] = gj + r * gjj
                g[jj] = gjj + r * gj
        gx[k] += gr * (1.0 + x[k] * x[k]) ** -1.5


@njit(cache=True, nogil=True, error_model="numpy")
def _lag_product(a, b, s, sign, out):
    """``1 + sign sum out_k L^k = (1 + sign sum a_i L^i)(1 + sign sum b_j L^{sj})``."""
    out[:] = 0.0
    for i in range(a.shape[0]):
        out[i] += a[i]
    for j in range(b.shape[0]):
        out[s * (j + 1) - 1] += b[j]
        for i in range(a.shape[0]):
            out[i + s * (j + 1)] += sign * a[i] * b[j]


@njit(cache=True, nogil=True, error_model="numpy")
def _lag_product_vjp(a, b, s, sign, g, ga, gb):
    for i in range(a.shape[0]):
        ga[i] = g[i]
    for j in range(b.shape[0]):
        gb[j] = g[s * (j + 1) - 1]
        for i in range(a.shape[0]):
            ga[i] += sign * g[i + s * (j + 1)] * b[j]
            gb[j] += sign * g[i + s * (j + 1)] * a[i]


# ----------------------------------------------------------- Lyapunov
@njit(cache=True, nogil=True, error_model="numpy")
def _matmul(A, B, out, transpose_b):
    r = A.shape[0]
    for i in range(r):
        for j in range(r):
            acc = 0.0
            for k in range(r):
                acc += A[i, k] * (B[j, k] if transpose_b else B[k, j])
            out[i, j] = acc


@njit(cache=True, nogil=True, error_model="numpy")
def _lyapunov(A, C, X, power, M, N):
    """``X = A X A' + C`` by doubling: ``X = sum_k A^k C A'^k``, summed in pairs of
    powers ``A^(2^j)``, so about log2(1 / (1 - rho(A))) steps."""
    r = A.shape[0]
    _copy_matrix(C, X)
    _copy_matrix(A, power)
    for _ in range(64):
        _matmul(power, X, M, False)
        _matmul(M, power, N, True)
        added = 0.0
        largest = 0.0
        for i in range(r):
            for j in range(r):
                X[i, j] += N[i, j]
                added = max(added, abs(N[i, j]))
                largest = max(largest, abs(X[i, j]))
        if added <= 1e-17 * largest:
            break
        _matmul(power, power, M, False)
        _copy_matrix(M, power)
    for i in range(r):
        for j in range(i):
            mean = 0.5 * (X[i, j] + X[j, i])
            X[i, j] = mean
            X[j, i] = mean


# ----------------------------------------------------------- objective
@njit(cache=True)
def workspace(T, n, r, k, p, q, P, Q):
    """Scratch arrays of :func:`_evaluate` (one set serves every series of a batch)."""
    S = n + r
    return (
        filter_workspace(T, S),
        np.empty((max(p, 1), max(p, 1))), np.empty((max(q, 1), max(q, 1))),
        np.empty((max(P, 1), max(P, 1))), np.empty((max(Q, 1), max(Q, 1))),
        np.empty((6, r)),  # phi, theta (padded to r), R, gR, gphi, gtheta
        np.empty((6, S, S)),  # F, Q, P1, gF, gQ, gP1
        np.zeros((S, S), np.bool_),  # the free entries of F: the AR column of the ARMA block
        np.empty((9, r, r)),  # T, C, P_arma, Lambda, power, M, N, T', sym(gP)
        np.empty((4, S)),  # h, a1, gh, ga1
        np.empty((3, T)),  # eta, geta, gy
        np.empty(T, np.bool_),
        np.empty((4, max(p, q, P, Q, 1))),  # gradient scratch of the four polynomial blocks
        np.empty(k),
    )


@njit(cache=True, nogil=True, error_model="numpy")
def _evaluate(x, grad, b, data, ws, need_grad):
    """Objective of series ``b`` at ``x`` (its gradient into ``grad`` if ``need_grad``)."""
    mask, nb, p, q, P, Q, s, delta, xscale, y, X, n_obs, tol, cap = data
    fw, rows_ar, rows_ma, rows_sar, rows_sma, vecs, mats, F_free, small, svec, series, observed, polys, tmp = ws
    n = delta.shape[0]
    T = y.shape[1]
    p_full, q_full = p + s * P, q + s * Q
    r = max(p_full, q_full + 1)
    S = n + r
    ia, im, isa, ism, isig = nb, nb + p, nb + p + q, nb + p + q + P, nb + p + q + P + Q
    for i in range(x.shape[0]):
        tmp[i] = x[i] if mask[b, i] else 0.0
    for i in range(ia, isig):
        tmp[i] = MAX_FREE_PACF * math.tanh(tmp[i] / MAX_FREE_PACF)
    # parameters -> polynomials
    _levinson(tmp[ia:ia + p], rows_ar)
    _levinson(tmp[im:im + q], rows_ma)
    _levinson(tmp[isa:isa + P], rows_sar)
    _levinson(tmp[ism:ism + Q], rows_sma)
    ar = -rows_ar[p - 1, :p] if p else np.zeros(0)
    ma = rows_ma[q - 1, :q].copy() if q else np.zeros(0)
    sar = -rows_sar[P - 1, :P] if P else np.zeros(0)
    sma = rows_sma[Q - 1, :Q].copy() if Q else np.zeros(0)
    sigma2 = math.exp(tmp[isig])
    phi, theta, R, gR, gphi, gtheta = vecs[0], vecs[1], vecs[2], vecs[3], vecs[4], vecs[5]
    _lag_product(ar, sar, s, -1.0, phi[:p_full])
    _lag_product(ma, sma, s, 1.0, theta[:q_full])
    # state space
    # workspace() sized these S x S: whole (C-contiguous) arrays, so the filter and its helpers compile
    # once for the fit and the forecast kernels (a [:S, :S] slice is a second, 'A'-layout type)
    F, Qm, P1, gF, gQ, gP1 = mats[0], mats[1], mats[2], mats[3], mats[4], mats[5]
    Tm, C, P_arma, Lam, power, M, N = small[0], small[1], small[2], small[3], small[4], small[5], small[6]
    Tt, G = small[7], small[8]
    h, a1, gh, ga1 = svec[0][:S], svec[1][:S], svec[2][:S], svec[3][:S]
    F[:, :] = 0.0
    Qm[:, :] = 0.0
    P1[:, :] = 0.0
    h[:] = 0.0
    a1[:] = 0.0
    Tm[:, :] = 0.0
    for i in range(n):
        F[0, i] = delta[i]
        h[i] = delta[i]
        if i:
            F[i, i - 1] = 1.0
    h[n] = 1.0
    if n:
        F[0, n] = 1.0
    F_free[:, :] = False
    for i in range(p_full):
        Tm[i, 0] = phi[i]
        F_free[n + i, n] = True
    for i in range(r - 1):
        Tm[i, i + 1] = 1.0
    R[:r] = 0.0
    R[0] = 1.0
    for j in range(q_full):
        R[j + 1] = theta[j]
    for i in range(r):
        for j in range(r):
            F[n + i, n + j] = Tm[i, j]
            C[i, j] = sigma2 * R[i] * R[j]
            Qm[n + i, n + j] = C[i, j]
    _lyapunov(Tm, C, P_arma, power, M, N)
    for i in range(r):
        for j in range(r):
            P1[n + i, n + j] = P_arma[i, j]
    # data
    eta, geta, gy = series[0], series[1], series[2]
    for t in range(T):
        acc = y[b, t]
        for j in range(nb):
            acc -= X[b, t, j] * tmp[j] / xscale[b, j]
        eta[t] = acc
    for i in range(n):
        a1[i] = eta[n - 1 - i]
    steps = np.int64(0)  # not the literal 0: numba would also compile filter_series for Literal[int](0)
    for t in range(T - n):
        observed[t] = math.isfinite(eta[n + t])
        if observed[t]:
            steps = t + 1
    obs = eta[n:]
    ll = filter_series(F, F_free, h, Qm, a1, P1, obs, observed[: T - n], steps, tol, cap, need_grad, fw,
                       gF, gh, gQ, ga1, gP1, gy[: T - n])
    value = -ll / n_obs[b]
    if not need_grad:
        return value
    if not math.isfinite(value):
        grad[:] = 0.0
        return math.inf
    scale = -1.0 / n_obs[b]
    grad[:] = 0.0
    # eta = y - X beta, with a_1 = (eta_{n-1}, ..., eta_0)
    geta[:] = 0.0
    for t in range(T - n):
        geta[n + t] = gy[t] if observed[t] else 0.0
    for i in range(n):
        geta[n - 1 - i] += ga1[i]
    for j in range(nb):
        acc = 0.0
        for t in range(T):
            if geta[t] != 0.0:
                acc -= geta[t] * X[b, t, j]
        grad[j] = acc / xscale[b, j]
    # Q = sigma2 R R' and P = T P T' + sigma2 R R' (adjoint: Lam = T' Lam T + sym(gP))
    for i in range(r):
        for j in range(r):
            G[i, j] = 0.5 * (gP1[n + i, n + j] + gP1[n + j, n + i])
            Tt[i, j] = Tm[j, i]
    _lyapunov(Tt, G, Lam, power, M, N)
    gsigma2 = 0.0
    gR[:r] = 0.0
    for i in range(r):
        for j in range(r):
            G = gQ[n + i, n + j] + gQ[n + j, n + i] + 2.0 * Lam[i, j]
            gsigma2 += (gQ[n + i, n + j] + Lam[i, j]) * R[i] * R[j]
            gR[i] += sigma2 * G * R[j]
    # gT = gF_arma + 2 Lam T P
    _matmul(Lam, Tm, M, False)
    _matmul(M, P_arma, N, False)
    for i in range(p_full):
        gphi[i] = gF[n + i, n] + 2.0 * N[i, 0]
    for j in range(q_full):
        gtheta[j] = gR[j + 1]
    # polynomial products, then Levinson
    g_ar, g_sar, g_ma, g_sma = polys[0], polys[1], polys[2], polys[3]
    _lag_product_vjp(ar, sar, s, -1.0, gphi[:p_full], g_ar[:p], g_sar[:P])
    _lag_product_vjp(ma, sma, s, 1.0, gtheta[:q_full], g_ma[:q], g_sma[:Q])
    for i in range(p):
        g_ar[i] = -g_ar[i]
    for i in range(P):
        g_sar[i] = -g_sar[i]
    _levinson_vjp(tmp[ia:ia + p], rows_ar, g_ar[:p], grad[ia:ia + p])
    _levinson_vjp(tmp[im:im + q], rows_ma, g_ma[:q], grad[im:im + q])
    _levinson_vjp(tmp[isa:isa + P], rows_sar, g_sar[:P], grad[isa:isa + P])
    _levinson_vjp(tmp[ism:ism + Q], rows_sma, g_sma[:Q], grad[ism:ism + Q])
    grad[isig] = gsigma2 * sigma2
    for i in range(ia, isig):  # through x = M tanh(z / M): dx/dz = 1 - (x / M)^2
        grad[i] *= 1.0 - (tmp[i] / MAX_FREE_PACF) ** 2
    for i in range(x.shape[0]):
        grad[i] = scale * grad[i] if mask[b, i] else 0.0
    return value


@njit(cache=True)
def _check_inputs(x, data):
    """Shapes and orders the kernels index by: a mismatch would read or write past an
    array (numba does not check bounds), so it raises here instead."""
    mask, nb, p, q, P, Q, s, delta, xscale, y, X, n_obs, tol, cap = data
    B, k = x.shape
    if min(nb, p, q, P, Q, s) < 0 or ((P > 0 or Q > 0) and s < 1):
        raise ValueError("ARIMA kernel: orders must be >= 0 and seasonal orders need a period s >= 1")
    if k != nb + p + q + P + Q + 1 or mask.shape[0] != B or mask.shape[1] != k:
        raise ValueError("ARIMA kernel: the parameter vector does not match the orders")
    if y.shape[0] != B or X.shape[0] != B or xscale.shape[0] != B or n_obs.shape[0] != B:
        raise ValueError("ARIMA kernel: parameters, series and regressors have different batch sizes")
    if X.shape[1] < y.shape[1] or X.shape[2] != nb or xscale.shape[1] != nb:
        raise ValueError("ARIMA kernel: the regressors do not cover the series")
    if y.shape[1] < delta.shape[0]:
        raise ValueError("ARIMA kernel: the series is shorter than the d + s*D values differencing consumes")


@njit(cache=True, error_model="numpy")
def objective(x, data, need_grad):
    """Objective ``(B,)`` and gradient ``(B, k)`` of every row of ``x``."""
    _check_inputs(x, data)
    mask, nb, p, q, P, Q, s, delta, xscale, y, X, n_obs, tol, cap = data
    B, k = x.shape
    r = max(p + s * P, q + s * Q + 1)
    ws = workspace(y.shape[1], delta.shape[0], r, k, p, q, P, Q)
    values = np.empty(B)
    grads = np.zeros((B, k))
    for b in range(B):
        values[b] = _evaluate(x[b], grads[b], b, data, ws, need_grad)
    return values, grads


@njit(cache=True, nogil=True, error_model="numpy")
def _max_abs(v):
    """``max |v_i|`` as a loop (``np.max(np.abs(v))`` allocates and compiles numpy's reductions)."""
    out = 0.0
    for i in range(v.shape[0]):
        a = abs(v[i])
        if a > out or math.isnan(a):  # a NaN sticks, as in np.max
            out = a
    return out


@njit(cache=True, error_model="numpy")
def minimize(x0, data, max_iter, gtol, ftol, max_halvings):
    """BFGS for every row of ``x0`` ``(B, k)``, each on its own series.

    Backtracking Armijo line search from a unit step (the first step and steps
    after a reset are scaled to move no coordinate by more than 1), inverse
    Hessian scaled on the first update (Nocedal & Wright eq. 6.20). Stops when
    ``max |g| <= gtol``, or a step decreases ``f`` by at most ``ftol (1 + |f|)``
    (both converged), or no step decreases ``f`` (not converged).
    Returns ``(x, f, converged)``.
    """
    _check_inputs(x0, data)
    mask, nb, p, q, P, Q, s, delta, xscale, y, X, n_obs, tol, cap = data
    B, k = x0.shape
    r = max(p + s * P, q + s * Q + 1)
    ws = workspace(y.shape[1], delta.shape[0], r, k, p, q, P, Q)
    xs = x0.copy()
    fs = np.empty(B)
    converged = np.zeros(B, np.bool_)
    g = np.empty(k)
    g_new = np.empty(k)
    x_try = np.empty(k)
    d = np.empty(k)
    step_vec = np.empty(k)
    yv = np.empty(k)
    H = np.empty((k, k))
    Hy = np.empty(k)
    for b in range(B):
        x = xs[b]
        f = _evaluate(x, g, b, data, ws, True)
        fs[b] = f
        if not math.isfinite(f):
            continue
        if _max_abs(g) <= gtol:
            converged[b] = True
            continue
        H[:, :] = 0.0
        for i in range(k):
            H[i, i] = 1.0
        first = True
        for _ in range(max_iter):
            slope = 0.0
            for i in range(k):
                acc = 0.0
                for j in range(k):
                    acc -= H[i, j] * g[j]
                d[i] = acc
                slope += acc * g[i]
            reset = not (slope < 0.0)
            if reset:
                slope = 0.0
                H[:, :] = 0.0
                for i in range(k):
                    H[i, i] = 1.0
                    d[i] = -g[i]
                    slope -= g[i] * g[i]
            gmax = _max_abs(g)
            step = 1.0 / max(gmax, 1.0) if (first or reset) else 1.0
            moved = False
            f_new = f
            for _ in range(max_halvings):
                for i in range(k):
                    x_try[i] = x[i] + step * d[i]
                f_try = _evaluate(x_try, g_new, b, data, ws, True)
                if math.isfinite(f_try) and f_try <= f + 1e-4 * step * slope:
                    moved = True
                    f_new = f_try
                    break
                step *= 0.5
            if not moved:
                break
            sy = 0.0
            ss = 0.0
            yy = 0.0
            for i in range(k):
                step_vec[i] = step * d[i]
                yv[i] = g_new[i] - g[i]
                sy += step_vec[i] * yv[i]
                ss += step_vec[i] * step_vec[i]
                yy += yv[i] * yv[i]
            if (first or reset) and sy > 0.0:
                H[:, :] = 0.0
                for i in range(k):
                    H[i, i] = sy / max(yy, 1e-300)
            if sy > 1e-12 * math.sqrt(ss) * math.sqrt(yy):
                # H <- (I - rho s y') H (I - rho y s') + rho s s'
                rho = 1.0 / sy
                yHy, _ = _innovation(H, yv, yv, Hy)  # Hy = H y, yHy = y'H y
                for i in range(k):
                    for j in range(k):
                        H[i, j] += (-rho * (step_vec[i] * Hy[j] + Hy[i] * step_vec[j])
                                    + (rho * rho * yHy + rho) * step_vec[i] * step_vec[j])
            decrease = f - f_new
            for i in range(k):
                x[i] = x_try[i]
                g[i] = g_new[i]
            f_old = f
            f = f_new
            first = False
            if _max_abs(g) <= gtol or decrease <= ftol * (1.0 + abs(f_old)):
                converged[b] = True
                break
        fs[b] = f
    return xs, fs, converged


# ----------------------------------------------------------- forecasting
@njit(cache=True, error_model="numpy")
def forecast_moments(F, h, Q, a, P, horizon):
    """Means and variances ``(B, horizon)`` of ``h'x_k`` for ``x_1 ~ N(a, P)``,
    ``x_{k+1} = F x_k + w_k``, ``w_k ~ N(0, Q)``; every input has a leading batch axis."""
    B, S = a.shape
    means = np.empty((B, horizon))
    variances = np.empty((B, horizon))
    nz_i = np.empty(S * S, np.int64)
    nz_k = np.empty(S * S, np.int64)
    nz_v = np.empty(S * S)
    x = np.empty(S)
    x_next = np.empty(S)
    V = np.empty((S, S))
    V_next = np.empty((S, S))
    FV = np.empty((S, S))
    scratch = np.empty((S, S))
    u = np.empty(S)
    for b in range(B):
        nnz = _nonzeros(F[b], nz_i, nz_k, nz_v)
        _copy_vector(a[b], x)
        _copy_matrix(P[b], V)
        for k in range(horizon):
            f, hx = _innovation(V, h[b], x, u)
            means[b, k] = hx
            variances[b, k] = f
            _transition(F[b], nnz, nz_i, nz_k, nz_v, x, x_next)
            _copy_vector(x_next, x)
            _predict_covariance(F[b], nnz, nz_i, nz_k, nz_v, Q[b], V, u, 0.0, scratch, FV, V_next)
            _copy_matrix(V_next, V)
    return means, variances


@njit(cache=True, error_model="numpy")
def simulate_paths(F, h, q, x1, shocks):
    """Paths ``y_k = h'x_k`` ``(B, n, horizon)`` of ``x_{k+1} = F x_k + q eps_k`` from
    ``x1`` ``(B, n, S)`` with standard normal ``shocks`` ``(B, n, horizon)``."""
    B, n, S = x1.shape
    horizon = shocks.shape[2]
    draws = np.empty((B, n, horizon))
    nz_i = np.empty(S * S, np.int64)
    nz_k = np.empty(S * S, np.int64)
    nz_v = np.empty(S * S)
    x = np.empty(S)
    x_next = np.empty(S)
    for b in range(B):
        nnz = _nonzeros(F[b], nz_i, nz_k, nz_v)
        hb, qb = h[b], q[b]
        for j in range(n):
            _copy_vector(x1[b, j], x)
            for k in range(horizon):
                acc = 0.0
                for i in range(S):
                    acc += hb[i] * x[i]
                draws[b, j, k] = acc
                _transition(F[b], nnz, nz_i, nz_k, nz_v, x, x_next)
                eps = shocks[b, j, k]
                for i in range(S):
                    x[i] = x_next[i] + qb[i] * eps
    return draws
