r"""Compiled kernels of exponential smoothing (numba): the innovations recursion, its likelihood and fitting.

The recursion is statsmodels' ``ETSModel`` component form (its
``_ets_smooth.pyx``), so that fixed parameters give its numbers::

    base_t = l + phi b          (trend N, A, Ad)   |  l b^phi       (trend M)
    yhat_t = base_t + s_{t-m}   (season N, A)      |  base_t s_{t-m} (season M)
    l_t = alpha (y_t - s_{t-m}) + (1 - alpha) base_t        (season A; y_t / s_{t-m} for M)
    b_t = beta* (l_t - l_{t-1}) + (1 - beta*) phi b_{t-1}   (trend A; l_t / l_{t-1} and b^phi for M)
    s_t = gamma* (y_t - l_t) + (1 - gamma*) s_{t-m}         (season A; y_t / l_t for M)

with ``beta* = beta / alpha`` and ``gamma* = gamma / (1 - alpha)``. No trend
is an additive trend held at 0, no season an additive season held at 0. A
missing ``y_t`` is replaced by ``yhat_t``: a zero innovation, so the
states carry on along their conditional mean (the one-step predictions
after a gap are the exact conditional means for the additive-error linear
forms; their variance is not widened for the gap).

The log-likelihood is statsmodels' (concentrated in ``sigma^2``)::

    llf = -n/2 (log(2 pi mean(r_t^2)) + 1) - [M error] sum log|yhat_t|,
    r_t = y_t - yhat_t (A error) or (y_t - yhat_t) / yhat_t (M error),

over the ``n`` observed steps.

Fitting (:func:`fit_many`), one compiled call for a batch of series and one
model form: Nelder-Mead over the smoothing parameters mapped to
statsmodels' bounds by a logistic (``alpha, beta*, gamma*`` in
``[1e-4, 1 - 1e-4]``, ``phi`` in ``[0.8, 0.98]``), with the initial states
profiled out at every evaluation:

- trend N/A/Ad and season N/A (affine forms): ``yhat`` is affine in
  ``x_0``, ``yhat = ybar + Z x_0`` with ``Z`` from one fused run per state,
  so least squares gives the exact maximiser for an additive error; for a
  multiplicative error a ``1/yhat^2``-reweighted solve and Newton steps on
  its exact likelihood (``n/2 log sum r^2 + sum log yhat``) follow;
- the other forms: Gauss-Newton from heuristic states (the Jacobian by
  forward differences, taken once; chord steps), a fixed number of steps so
  that the profile is a smooth function of the smoothing parameters.

Nelder-Mead starts from the best of a nested form's estimates (when the
caller gives them) and a few levels of ``alpha``: the likelihood is often
bimodal in ``alpha``. The oldest initial seasonal state is fixed (0, or 1
for a multiplicative season) as statsmodels does: the model is invariant
to that shift, so only ``m - 1`` seasonal states are free.

Kept in one file for numba's on-disk cache (see :mod:`._arima_kernels`).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

#: statsmodels' default bounds of the smoothing parameters (alpha, beta*, gamma*) and of phi
SMOOTH_LOW, SMOOTH_HIGH = 1e-4, 1.0 - 1e-4
PHI_LOW, PHI_HIGH = 0.8, 0.98
#: Newton steps on the multiplicative-error likelihood after the reweighted least squares (affine forms);
#: a second step moved the M3 dev AICc by 2e-3 on average (Quarterly) for about 15% more time
NEWTON_STEPS = 1
# model codes: trend/season 0 none, 1 additive, 2 multiplicative; error 1 additive, 2 multiplicative


@njit(cache=True, nogil=True)
def step(l, b, s_old, y, observed, alpha, beta_star, gamma_star, phi, trend, season):
    """One step of the component recursion: ``(yhat, l, b, s_new)``; a missing ``y`` is taken as ``yhat``.

    Written with arithmetic only, so ``step.py_func`` runs it elementwise on numpy arrays too."""
    if trend == 2:
        base = l * b**phi
    else:
        base = l + phi * b
    if season == 2:
        yhat = base * s_old
    else:
        yhat = base + s_old
    yy = y if observed else yhat
    if season == 2:
        l_new = alpha * (yy / s_old) + (1.0 - alpha) * base
    else:
        l_new = alpha * (yy - s_old) + (1.0 - alpha) * base
    if trend == 2:
        b_new = beta_star * (l_new / l) + (1.0 - beta_star) * b**phi
    elif trend == 1:
        b_new = beta_star * (l_new - l) + (1.0 - beta_star) * phi * b
    else:
        b_new = b
    if season == 2:
        s_new = gamma_star * (yy / l_new) + (1.0 - gamma_star) * s_old
    elif season == 1:
        s_new = gamma_star * (yy - l_new) + (1.0 - gamma_star) * s_old
    else:
        s_new = s_old
    return yhat, l_new, b_new, s_new


@njit(cache=True, nogil=True)
def run(smoothing, x0, y, observed, n, trend, season, m, yhat, final):
    """The recursion over ``y[:n]`` from ``x0 = (l, b, s_{-1}, ..., s_{-m})`` (statsmodels' layout).

    Writes the one-step predictions into ``yhat[:n]`` and the state after step ``n`` into ``final``
    (same layout as ``x0``); ``smoothing = (alpha, beta*, gamma*, phi)``."""
    alpha, beta_star, gamma_star, phi = smoothing[0], smoothing[1], smoothing[2], smoothing[3]
    l = x0[0]
    b = x0[1]
    buf = np.empty(m)
    for k in range(m):  # buf[t mod m] holds s_{t-m}
        buf[k] = x0[2 + m - 1 - k]
    for t in range(n):
        j = t % m
        yh, l, b, s_new = step(l, b, buf[j], y[t], observed[t], alpha, beta_star, gamma_star, phi, trend, season)
        yhat[t] = yh
        buf[j] = s_new
    final[0] = l
    final[1] = b
    for k in range(m):  # s_{n-1-k} = buf[(n - 1 - k) mod m]
        final[2 + k] = buf[(n - 1 - k) % m]


@njit(cache=True, nogil=True)
def log_likelihood(y, observed, n, yhat, error):
    """statsmodels' concentrated log-likelihood of ``yhat`` for ``y[:n]`` (-inf where undefined)."""
    ss = 0.0
    logs = 0.0
    count = 0
    for t in range(n):
        if not observed[t]:
            continue
        r = y[t] - yhat[t]
        if error == 2:
            if not yhat[t] > 0.0:  # a multiplicative error needs a positive prediction (as R's ets)
                return -np.inf
            r /= yhat[t]
            logs += math.log(yhat[t])
        ss += r * r
        count += 1
    if count == 0 or not ss > 0.0 or not math.isfinite(ss):
        return -np.inf
    return -0.5 * count * (math.log(2.0 * math.pi * ss / count) + 1.0) - logs


@njit(cache=True, nogil=True)
def _logistic(z, low, high):
    return low + (high - low) / (1.0 + math.exp(-z))


@njit(cache=True, nogil=True)
def _logit(x, low, high):
    p = (x - low) / (high - low)
    p = min(max(p, 1e-9), 1.0 - 1e-9)
    return math.log(p / (1.0 - p))


@njit(cache=True, nogil=True)
def _smoothing_from(z, has_trend, has_season, damped, out):
    """Free vector -> ``(alpha, beta*, gamma*, phi)``; absent components get statsmodels' neutral values."""
    k = 0
    out[0] = _logistic(z[k], SMOOTH_LOW, SMOOTH_HIGH)
    k += 1
    out[1] = 0.0
    if has_trend:
        out[1] = _logistic(z[k], SMOOTH_LOW, SMOOTH_HIGH)
        k += 1
    out[2] = 0.0
    if has_season:
        out[2] = _logistic(z[k], SMOOTH_LOW, SMOOTH_HIGH)
        k += 1
    out[3] = 1.0
    if damped:
        out[3] = _logistic(z[k], PHI_LOW, PHI_HIGH)
        k += 1
    return k


@njit(cache=True, nogil=True)
def _default_start(alpha, has_trend, has_season, damped, z, phi=0.97):
    """Free vector of ``alpha``, ``beta* = 0.1``, ``gamma* = 0.1`` and ``phi``."""
    z[0] = _logit(alpha, SMOOTH_LOW, SMOOTH_HIGH)
    j = 1
    if has_trend:
        z[j] = _logit(0.1, SMOOTH_LOW, SMOOTH_HIGH)
        j += 1
    if has_season:
        z[j] = _logit(0.1, SMOOTH_LOW, SMOOTH_HIGH)
        j += 1
    if damped:
        z[j] = _logit(phi, PHI_LOW, PHI_HIGH)


@njit(cache=True, nogil=True)
def _free_states(trend, season, m):
    """Indices (in ``x0``'s layout) of the initial states that are estimated."""
    count = 1 + (trend > 0) + (m - 1 if season > 0 else 0)
    idx = np.empty(count, np.int64)
    idx[0] = 0
    k = 1
    if trend > 0:
        idx[k] = 1
        k += 1
    if season > 0:
        for j in range(m - 1):  # s_{-1} .. s_{-(m-1)}; s_{-m} stays fixed
            idx[k] = 2 + j
            k += 1
    return idx


@njit(cache=True, nogil=True)
def _affine_responses(smoothing, y, observed, n, m, free, ybar, Z, L, B, S):
    """The affine forms in innovation form, ``e = y - yhat``, ``l' = l + phi b + alpha e``,
    ``b' = phi b + beta e``, ``s' = s + gamma e`` (zero ``e`` where ``y`` is missing): ``ybar`` is ``yhat``
    from zero initial states and ``Z[j]`` the response of ``yhat`` to a unit initial state ``free[j]``
    on zero data.

    All runs advance together, one time step at a time: each is a chain of dependent operations, and
    interleaving independent chains keeps the processor busy where one chain alone would wait."""
    alpha = smoothing[0]
    beta = smoothing[1] * alpha
    gamma = smoothing[2] * (1.0 - alpha)
    phi = smoothing[3]
    k = free.shape[0]
    for r in range(k + 1):  # run 0 on the data from zero states; run j + 1 on zero data from unit state free[j]
        L[r] = 0.0
        B[r] = 0.0
        for j in range(m):
            S[r, j] = 0.0
        if r > 0:
            q = free[r - 1]
            if q == 0:
                L[r] = 1.0
            elif q == 1:
                B[r] = 1.0
            else:  # s_{-1-(q-2)} sits in buffer slot m - 1 - (q - 2)
                S[r, m - 1 - (q - 2)] = 1.0
    slot = 0
    for t in range(n):
        ok = observed[t]
        # run 0 on the data
        base = L[0] + phi * B[0]
        pred = base + S[0, slot]
        ybar[t] = pred
        e = y[t] - pred if ok else 0.0
        L[0] = base + alpha * e
        B[0] = phi * B[0] + beta * e
        S[0, slot] += gamma * e
        for r in range(1, k + 1):
            base = L[r] + phi * B[r]
            pred = base + S[r, slot]
            Z[r - 1, t] = pred
            e = -pred if ok else 0.0
            L[r] = base + alpha * e
            B[r] = phi * B[r] + beta * e
            S[r, slot] += gamma * e
        slot += 1
        if slot == m:
            slot = 0


@njit(cache=True, nogil=True)
def _responses(smoothing, y, observed, n, trend, season, m, x0, free, yhat, Z, scale, L, B, S, h):
    """``yhat`` at ``x0`` and forward-difference derivatives ``Z[j] = d yhat / d x0[free[j]]``; the
    ``k + 1`` runs advance together (see :func:`_affine_responses`). Scratch: ``L``, ``B`` ``(k + 1,)``,
    ``S`` ``(k + 1, m)``, ``h`` ``(k,)``."""
    alpha, beta_star, gamma_star, phi = smoothing[0], smoothing[1], smoothing[2], smoothing[3]
    k = free.shape[0]
    for r in range(k + 1):  # run 0 from x0, run j + 1 from x0 moved by h[j] along free[j]
        L[r] = x0[0]
        B[r] = x0[1]
        for q in range(m):  # S[r, t mod m] holds s_{t-m}, as in run
            S[r, q] = x0[2 + m - 1 - q]
    for j in range(k):
        i = free[j]
        h[j] = 1e-7 * max(abs(x0[i]), scale)
        if i == 0:
            L[j + 1] += h[j]
        elif i == 1:
            B[j + 1] += h[j]
        else:
            S[j + 1, m - 1 - (i - 2)] += h[j]
    slot = 0
    for t in range(n):
        yt = y[t]
        ok = observed[t]
        for r in range(k + 1):
            yh, l, b, s_new = step(L[r], B[r], S[r, slot], yt, ok, alpha, beta_star, gamma_star, phi, trend,
                                   season)
            if r == 0:
                yhat[t] = yh
            else:
                Z[r - 1, t] = yh
            L[r] = l
            B[r] = b
            S[r, slot] = s_new
        slot += 1
        if slot == m:
            slot = 0
    for j in range(k):
        inv = 1.0 / h[j]
        for t in range(n):
            Z[j, t] = (Z[j, t] - yhat[t]) * inv


@njit(cache=True, nogil=True)
def _gram(Z, w, n, A):
    """Lower triangle of ``A = sum_t w_t Z_t Z_t'`` (dot products over time, each in registers)."""
    k = Z.shape[0]
    for i in range(k):
        zi = Z[i]
        for j in range(i + 1):
            zj = Z[j]
            acc = 0.0
            for t in range(n):
                acc += w[t] * zi[t] * zj[t]
            A[i, j] = acc


@njit(cache=True, nogil=True)
def _cholesky_solve(A, rhs, out):
    """Solve ``A out = rhs`` for symmetric ``A`` given by its lower triangle (overwritten by its Cholesky
    factor), with a relative ridge of 1e-10; False if ``A`` is not positive definite."""
    k = A.shape[0]
    big = 0.0
    for i in range(k):
        big = max(big, A[i, i])
    if not (big > 0.0 and math.isfinite(big)):
        return False
    for i in range(k):
        A[i, i] += 1e-10 * big
        for j in range(i + 1):
            acc = A[i, j]
            for q in range(j):
                acc -= A[i, q] * A[j, q]
            if i == j:
                if not acc > 0.0:
                    return False
                A[i, i] = math.sqrt(acc)
            else:
                A[i, j] = acc / A[j, j]
    for i in range(k):  # forward, then back substitution
        acc = rhs[i]
        for q in range(i):
            acc -= A[i, q] * out[q]
        out[i] = acc / A[i, i]
    for i in range(k - 1, -1, -1):
        acc = out[i]
        for q in range(i + 1, k):
            acc -= A[q, i] * out[q]
        out[i] = acc / A[i, i]
    return True


@njit(cache=True, nogil=True)
def _solve_normal(Z, y, base, yhat, observed, n, weighted, A, rhs, delta, w, e):
    """``delta`` minimising ``sum_t w_t (y_t - base_t - Z_t' delta)^2`` (``w = 1/yhat^2`` if ``weighted``);
    False if the system is degenerate. ``w`` and ``e`` are scratch of length ``n`` or more."""
    k = Z.shape[0]
    for t in range(n):
        if not observed[t]:
            w[t] = 0.0
            e[t] = 0.0
            continue
        wt = 1.0
        if weighted:
            if not yhat[t] > 0.0:
                return False
            wt = 1.0 / (yhat[t] * yhat[t])
        w[t] = wt
        e[t] = wt * (y[t] - base[t])
    for i in range(k):
        zi = Z[i]
        acc = 0.0
        for t in range(n):
            acc += zi[t] * e[t]
        rhs[i] = acc
    _gram(Z, w, n, A)
    return _cholesky_solve(A, rhs, delta)


@njit(cache=True, nogil=True)
def _multiplicative_objective(y, base, Z, delta, observed, n, yhat, unit):
    """``n/2 log sum r_t^2 + sum log yhat_t`` (the negative concentrated log-likelihood up to a constant)
    at ``yhat = base + Z delta``, ``r = y / yhat - 1``; inf where some ``yhat <= 0``.

    ``sum log yhat`` is taken as the log of running products of ``yhat / unit`` (``unit``: the data's
    scale), flushed before they can overflow or underflow: one logarithm per many steps, not per step."""
    k = Z.shape[0]
    ss = 0.0
    logs = 0.0
    product = 1.0
    inv_unit = 1.0 / unit
    count = 0
    for t in range(n):
        acc = base[t]
        for j in range(k):
            acc += Z[j, t] * delta[j]
        yhat[t] = acc
        if not observed[t]:
            continue
        if not acc > 0.0:
            return np.inf
        r = y[t] / acc - 1.0
        ss += r * r
        product *= acc * inv_unit
        if not 1e-150 < product < 1e150:
            logs += math.log(product)
            product = 1.0
        count += 1
    if not (ss > 0.0 and math.isfinite(ss) and math.isfinite(logs)):
        return np.inf
    return 0.5 * count * math.log(ss) + logs + math.log(product) + count * math.log(unit)


@njit(cache=True, nogil=True)
def _newton_multiplicative(y, base, Z, delta, observed, n, yhat, A, rhs, steps, unit, scratch):
    """Newton steps on the multiplicative-error likelihood in the initial states (``yhat`` affine in them),
    from ``delta``: the reweighted least squares ignores the ``sum log yhat`` term, this does not.
    ``scratch``: three arrays of length ``n`` or more and three of length ``k``."""
    k = Z.shape[0]
    w, u, v, trial, step, gS = scratch
    f = _multiplicative_objective(y, base, Z, delta, observed, n, yhat, unit)
    for _ in range(steps):
        if not math.isfinite(f):
            return f
        ss = 0.0
        count = 0
        for t in range(n):  # per-step factors of the gradient (u: of S, v: of sum log yhat), one division
            if not observed[t]:
                u[t] = 0.0
                v[t] = 0.0
                w[t] = 0.0
                continue
            inv = 1.0 / yhat[t]
            a = y[t] * inv
            r = a - 1.0
            ss += r * r
            count += 1
            u[t] = -2.0 * r * a * inv
            v[t] = inv
            w[t] = (a * a + 2.0 * r * a) * inv * inv  # the Hessian's weight, before the factors below
        c = 0.5 * count / ss
        for t in range(n):
            w[t] = 2.0 * c * w[t] - v[t] * v[t]
        for i in range(k):
            accS = 0.0
            accL = 0.0
            for t in range(n):
                accS += u[t] * Z[i, t]
                accL += v[t] * Z[i, t]
            gS[i] = accS
            rhs[i] = -(c * accS + accL)
        _gram(Z, w, n, A)
        for i in range(k):
            for j in range(i + 1):
                A[i, j] -= c / ss * gS[i] * gS[j]
        if not _cholesky_solve(A, rhs, step):
            # not convex here: the Gauss-Newton matrix of the squared relative errors instead
            for t in range(n):
                w[t] = 2.0 * c * (y[t] * v[t] * v[t]) ** 2 if observed[t] else 0.0
            _gram(Z, w, n, A)
            if not _cholesky_solve(A, rhs, step):
                return f
        scale = 1.0
        improved = False
        for _ in range(6):
            for j in range(k):
                trial[j] = delta[j] + scale * step[j]
            f_try = _multiplicative_objective(y, base, Z, trial, observed, n, yhat, unit)
            if f_try < f:
                improved = True
                break
            scale *= 0.5
        if not improved:
            _multiplicative_objective(y, base, Z, delta, observed, n, yhat, unit)
            return f
        decrease = f - f_try
        for j in range(k):
            delta[j] = trial[j]
        f = f_try
        if decrease < 1e-10 * (1.0 + abs(f)):
            break
    return f


@njit(cache=True, nogil=True)
def _profile(smoothing, y, observed, n, trend, season, m, error, x0, xs, free, yhat, final, Z, affine, scale,
             work):
    """Initial states that maximise the likelihood for these smoothing parameters, written into ``x0``;
    returns the log-likelihood there.

    Affine forms: ``yhat = ybar + Z x0`` exactly, so least squares gives the maximiser for an additive
    error, and two ``1/yhat^2``-reweighted solves approximate it for a multiplicative one. Other
    forms: Gauss-Newton from the heuristic states ``xs``, the Jacobian taken once (chord steps), a
    fixed number of steps so that the result is a smooth function of the smoothing parameters."""
    A, rhs, delta, ybar, L, B, S, w, e, u, trial, step, gS = work
    k = free.shape[0]
    if affine:
        _affine_responses(smoothing, y, observed, n, m, free, ybar, Z, L, B, S)
        for r in range(2 if error == 2 else 1):
            # round 0 unweighted; then weighted by the previous round's predictions
            if not _solve_normal(Z, y, ybar, yhat, observed, n, r > 0, A, rhs, delta, w, e):
                return -np.inf
            if error == 2 and r == 0:  # the next round's weights (Newton recomputes yhat after the last)
                for t in range(n):
                    acc = ybar[t]
                    for j in range(k):
                        acc += Z[j, t] * delta[j]
                    yhat[t] = acc
        for j in range(x0.shape[0]):
            x0[j] = 0.0
        if error == 2:
            f = _newton_multiplicative(y, ybar, Z, delta, observed, n, yhat, A, rhs, NEWTON_STEPS, scale,
                                       (w, e, u, trial, step, gS))
            for j in range(k):
                x0[free[j]] = delta[j]
            if not math.isfinite(f):
                return -np.inf
            # Newton's objective is the negative log-likelihood less its constant, at yhat already: no rerun
            count = 0
            for t in range(n):
                count += observed[t]
            return -f - 0.5 * count * (math.log(2.0 * math.pi / count) + 1.0)
        for j in range(k):
            x0[free[j]] = delta[j]
        for t in range(n):  # yhat is affine in x0: no further run needed
            acc = ybar[t]
            for j in range(k):
                acc += Z[j, t] * delta[j]
            yhat[t] = acc
        return log_likelihood(y, observed, n, yhat, error)
    for j in range(x0.shape[0]):
        x0[j] = xs[j]
    _responses(smoothing, y, observed, n, trend, season, m, x0, free, yhat, Z, scale, L, B, S, trial)
    for r in range(3):
        if r > 0:
            run(smoothing, x0, y, observed, n, trend, season, m, yhat, final)
        if not _solve_normal(Z, y, yhat, yhat, observed, n, error == 2, A, rhs, delta, w, e):
            return -np.inf
        for j in range(k):
            x0[free[j]] += delta[j]
    run(smoothing, x0, y, observed, n, trend, season, m, yhat, final)
    return log_likelihood(y, observed, n, yhat, error)


@njit(cache=True, nogil=True)
def _objective(z, args):
    (n_smooth, y, observed, n, error, trend, season, damped, m, affine, x0, xs, free,
     smoothing, yhat, final, Z, scale, work) = args
    _smoothing_from(z, trend > 0, season > 0, damped, smoothing)
    value = _profile(smoothing, y, observed, n, trend, season, m, error, x0, xs, free, yhat, final, Z, affine,
                     scale, work)
    if not math.isfinite(value):
        return np.inf
    return -value


@njit(cache=True, nogil=True)
def _nelder_mead(z0, step0, args, max_evals, ftol, coarse_ftol, ceiling):
    """Nelder-Mead (standard coefficients) on ``_objective``; returns ``(z, f, converged)``.

    A run whose simplex has settled to ``coarse_ftol`` above ``ceiling`` is abandoned there (not
    converged): the caller has no use for a minimum above the ceiling, so its last digits are not worth
    the evaluations."""
    k = z0.shape[0]
    simplex = np.empty((k + 1, k))
    fs = np.empty(k + 1)
    for i in range(k + 1):
        for j in range(k):
            simplex[i, j] = z0[j]
        if i > 0:
            simplex[i, i - 1] += step0[i - 1]
        fs[i] = _objective(simplex[i], args)
    evals = k + 1
    centroid = np.empty(k)
    xr = np.empty(k)
    xe = np.empty(k)
    converged = False
    while evals < max_evals:
        order = np.argsort(fs)
        simplex = simplex[order]
        fs = fs[order]
        spread = fs[k] - fs[0]
        if spread <= ftol * (1.0 + abs(fs[0])):  # R's optim "reltol" test, on the simplex's values
            converged = True
            break
        if fs[0] > ceiling and spread <= coarse_ftol * (1.0 + abs(fs[0])):
            break
        for j in range(k):
            acc = 0.0
            for i in range(k):
                acc += simplex[i, j]
            centroid[j] = acc / k
        for j in range(k):
            xr[j] = centroid[j] + (centroid[j] - simplex[k, j])
        fr = _objective(xr, args)
        evals += 1
        if fr < fs[0]:
            for j in range(k):
                xe[j] = centroid[j] + 2.0 * (centroid[j] - simplex[k, j])
            fe = _objective(xe, args)
            evals += 1
            if fe < fr:
                simplex[k] = xe
                fs[k] = fe
            else:
                simplex[k] = xr
                fs[k] = fr
        elif fr < fs[k - 1]:
            simplex[k] = xr
            fs[k] = fr
        else:
            outside = fr < fs[k]
            for j in range(k):
                if outside:
                    xe[j] = centroid[j] + 0.5 * (xr[j] - centroid[j])
                else:
                    xe[j] = centroid[j] + 0.5 * (simplex[k, j] - centroid[j])
            fc = _objective(xe, args)
            evals += 1
            if fc < min(fr, fs[k]):
                simplex[k] = xe
                fs[k] = fc
            else:  # shrink towards the best vertex
                for i in range(1, k + 1):
                    for j in range(k):
                        simplex[i, j] = simplex[0, j] + 0.5 * (simplex[i, j] - simplex[0, j])
                    fs[i] = _objective(simplex[i], args)
                evals += k
    best = np.argmin(fs)
    return simplex[best].copy(), fs[best], converged


@njit(cache=True, nogil=True)
def _heuristic_states(y, observed, n, trend, season, m, x0):
    """Starting initial states: the mean of the first seasons, the average change, seasonal deviations."""
    for j in range(x0.shape[0]):
        x0[j] = 0.0
    if season == 2:
        for j in range(m):
            x0[2 + j] = 1.0
    span = min(n, max(2 * m, 10) if season > 0 else 10)
    total = 0.0
    count = 0
    for t in range(span):
        if observed[t]:
            total += y[t]
            count += 1
    level = total / max(count, 1)
    x0[0] = level
    if trend == 2:
        x0[1] = 1.0
    if season > 0 and n >= m:
        for j in range(m):  # first season's deviations from the level, s_{-m+j} = x0[2 + m - 1 - j]
            v = y[j] if observed[j] else level
            x0[2 + m - 1 - j] = v / level if season == 2 else v - level
        ref = x0[2 + m - 1]  # the fixed oldest state: 0 (A) or 1 (M)
        for j in range(m):
            if season == 2:
                x0[2 + j] /= ref
            else:
                x0[2 + j] -= ref
        if season == 2:
            x0[0] *= ref
        else:
            x0[0] += ref


@njit(cache=True)
def fit_many(y, observed, lengths, error, trend, season, damped, m, max_evals, ftol, starts, ceilings,
             coarse_ftol):
    """Fit one model form to every row of ``y`` ``(N, T)``.

    ``starts`` ``(N, 4)``: starting ``(alpha, beta*, gamma*, phi)`` per row (e.g. a nested form's
    estimates), NaN for the defaults. ``ceilings`` ``(N,)``: the caller has no use for a
    log-likelihood below ``-ceiling`` (e.g. another form already does better by the information
    criterion): the optimiser stops at ``coarse_ftol`` there (inf: never).

    Returns ``smoothing (N, 4)``, ``x0 (N, 2 + m)``, ``llf (N,)``, ``converged (N,)``."""
    N, T = y.shape
    has_trend = trend > 0
    has_season = season > 0
    n_smooth = 1 + has_trend + has_season + damped
    free = _free_states(trend, season, m)
    affine = trend < 2 and season < 2
    out_smoothing = np.empty((N, 4))
    out_x0 = np.empty((N, 2 + m))
    out_llf = np.empty(N)
    out_conv = np.zeros(N, np.bool_)
    smoothing = np.empty(4)
    yhat = np.empty(T)
    final = np.empty(2 + m)
    Z = np.empty((free.shape[0], T))
    x0 = np.empty(2 + m)
    xs = np.empty(2 + m)
    k = free.shape[0]
    work = (np.empty((k, k)), np.empty(k), np.empty(k), np.empty(T), np.empty(k + 1), np.empty(k + 1),
            np.empty((k + 1, m)), np.empty(T), np.empty(T), np.empty(T), np.empty(k), np.empty(k), np.empty(k))
    z0 = np.empty(n_smooth)
    zc = np.empty(n_smooth)
    step0 = np.ones(n_smooth)
    for i in range(N):
        n = lengths[i]
        yi = y[i]
        oi = observed[i]
        _default_start(0.5, has_trend, has_season, damped, z0)
        if math.isfinite(starts[i, 0]):
            z0[0] = _logit(starts[i, 0], SMOOTH_LOW, SMOOTH_HIGH)
            j = 1
            if has_trend:
                if math.isfinite(starts[i, 1]):
                    z0[j] = _logit(starts[i, 1], SMOOTH_LOW, SMOOTH_HIGH)
                j += 1
            if has_season and math.isfinite(starts[i, 2]):
                z0[j] = _logit(starts[i, 2], SMOOTH_LOW, SMOOTH_HIGH)
        _heuristic_states(yi, oi, n, trend, season, m, xs)
        if affine:  # the exact profile needs no start
            for q in range(xs.shape[0]):
                xs[q] = 0.0
        scale = 0.0
        for t in range(n):
            if oi[t]:
                scale = max(scale, abs(yi[t]))
        args = (n_smooth, yi, oi, n, error, trend, season, damped, m, affine, x0, xs, free,
                smoothing, yhat, final, Z, max(scale, 1e-8), work)
        # the likelihood is often bimodal in alpha (a level that follows the data, or one that barely
        # moves): Nelder-Mead starts from the best of a few levels of alpha and the given start
        f0 = _objective(z0, args)
        warm = math.isfinite(starts[i, 0])
        for a in (0.02, 0.2, 0.5, 0.9):
            # (a second level of phi, 0.82, cost four evaluations per damped fit and won no AICc on the M3
            # dev series once the search refits trapped forms from these starts)
            if a == 0.5 and not warm:  # that is z0
                continue
            _default_start(a, has_trend, has_season, damped, zc)
            fc = _objective(zc, args)
            if fc < f0:
                f0 = fc
                z0[:] = zc
                warm = False
        # from a nested form's optimum the first simplex can be smaller
        z, f, conv = _nelder_mead(z0, step0 * (0.5 if warm else 1.0), args, max_evals, ftol, coarse_ftol,
                                  ceilings[i])
        _objective(z, args)
        out_smoothing[i] = smoothing
        out_x0[i] = x0
        out_llf[i] = -f if math.isfinite(f) else -np.inf
        out_conv[i] = conv and math.isfinite(f)
    return out_smoothing, out_x0, out_llf, out_conv


@njit(cache=True)
def filter_many(smoothing, x0, y, observed, lengths, error, trend, season, m):
    """For fixed parameters per row: one-step predictions ``(N, T)``, final states ``(N, 2 + m)`` and
    the log-likelihood ``(N,)``."""
    N, T = y.shape
    yhat = np.full((N, T), np.nan)
    final = np.empty((N, 2 + m))
    llf = np.empty(N)
    for i in range(N):
        run(smoothing[i], x0[i], y[i], observed[i], lengths[i], trend, season, m, yhat[i], final[i])
        llf[i] = log_likelihood(y[i], observed[i], lengths[i], yhat[i], error)
    return yhat, final, llf


@njit(cache=True)
def point_forecasts(smoothing, state, trend, season, m, horizon):
    """Deterministic forecasts ``(N, horizon)`` from the states after each history (``filter_many``'s final)."""
    N = state.shape[0]
    out = np.empty((N, horizon))
    nothing = np.zeros(horizon)
    missing = np.zeros(horizon, np.bool_)
    final = np.empty(2 + m)
    for i in range(N):
        run(smoothing[i], state[i], nothing, missing, horizon, trend, season, m, out[i], final)
    return out
