"""ARIMA maximum likelihood, compiled (numba): objective, gradient and BFGS per series.

For one series and a free parameter vector ``x`` (layout of
:class:`ArimaSpec.blocks`) the objective is the negative exact
log-likelihood per observation of the scaled series, built as

    beta = x_beta / xscale,   (ar, sar) = -Levinson(r(x)),   (ma, sma) = Levinson(r(x)),
    sigma2 = exp(x_sigma2),   r(x) = x / sqrt(1 + x^2)            (Monahan-Jones)
    phi(L) = ar(L) sar(L^s),  theta(L) = ma(L) sma(L^s)
    F, h, Q from phi and theta (levels form of :mod:`._arima_statespace`)
    P_1 = [0, 0; 0, P],  P = T P T' + sigma2 R R'                 (stationary ARMA block)
    -1/n log p(y_{n+1:T} | y_{1:n}) by :func:`._arima_kernels.filter_series`

and its gradient is the reverse pass of those lines, written out here: the
filter returns the adjoints of ``F, Q, P_1, a_1`` and ``y``; the Lyapunov
equation's adjoint is ``L = T' L T + sym(G)`` with ``gT = 2 L T P`` and
``g(sigma2 R R') = L``; the polynomial products and the Levinson recursion
are stepped back by hand. The whole chain is tested against torch autograd
through :mod:`._arima_statespace` and :func:`tsgen.inference.kalman.kalman_log_likelihood`.

Each series then runs its own BFGS (inverse-Hessian update, backtracking
Armijo line search) inside one compiled call, so a batch of series costs the
arithmetic only: no interpreter work per iteration or per series.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from tsgen.models._arima_kernels import filter_series, filter_workspace


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
    X[:, :] = C
    power[:, :] = A
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
        power[:, :] = M
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
        np.empty((8, S, S)),  # F, Q, P1, gF, gQ, gP1, and two spare
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
    fw, rows_ar, rows_ma, rows_sar, rows_sma, vecs, mats, small, svec, series, observed, polys, tmp = ws
    n = delta.shape[0]
    T = y.shape[1]
    p_full, q_full = p + s * P, q + s * Q
    r = max(p_full, q_full + 1)
    S = n + r
    ia, im, isa, ism, isig = nb, nb + p, nb + p + q, nb + p + q + P, nb + p + q + P + Q
    for i in range(x.shape[0]):
        tmp[i] = x[i] if mask[b, i] else 0.0
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
    F, Qm, P1, gF, gQ, gP1 = mats[0][:S, :S], mats[1][:S, :S], mats[2][:S, :S], mats[3][:S, :S], mats[4][:S, :S], mats[5][:S, :S]
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
    for i in range(p_full):
        Tm[i, 0] = phi[i]
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
    steps = 0
    for t in range(T - n):
        observed[t] = math.isfinite(eta[n + t])
        if observed[t]:
            steps = t + 1
    obs = eta[n:]
    ll = filter_series(F, h, Qm, a1, P1, obs, observed[: T - n], steps, tol, cap, need_grad, fw,
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
    for i in range(x.shape[0]):
        grad[i] = scale * grad[i] if mask[b, i] else 0.0
    return value


@njit(cache=True, error_model="numpy")
def objective(x, data, need_grad):
    """Objective ``(B,)`` and gradient ``(B, k)`` of every row of ``x``."""
    mask, nb, p, q, P, Q, s, delta, xscale, y, X, n_obs, tol, cap = data
    B, k = x.shape
    r = max(p + s * P, q + s * Q + 1)
    ws = workspace(y.shape[1], delta.shape[0], r, k, p, q, P, Q)
    values = np.empty(B)
    grads = np.zeros((B, k))
    for b in range(B):
        values[b] = _evaluate(x[b], grads[b], b, data, ws, need_grad)
    return values, grads


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
        if np.max(np.abs(g)) <= gtol:
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
            gmax = np.max(np.abs(g))
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
                yHy = 0.0
                for i in range(k):
                    acc = 0.0
                    for j in range(k):
                        acc += H[i, j] * yv[j]
                    Hy[i] = acc
                    yHy += yv[i] * acc
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
            if np.max(np.abs(g)) <= gtol or decrease <= ftol * (1.0 + abs(f_old)):
                converged[b] = True
                break
        fs[b] = f
    return xs, fs, converged
