"""The two phases of the univariate ARIMA filter (exact Riccati, then constant gain), in float64 numpy
with a hand-written reverse pass, as one autograd node.

Per step, for every series at once (``P`` symmetric, ``m_t`` = observed)::

    u = P h,  f = h'u,  v = y_t - h'a,
    a' = a + m_t u v / f,   P' = P - m_t u u' / f,
    a_next = F a',  P_next = F P' F' + Q,
    ll += m_t * (-1/2) (log 2 pi + log f + v^2 / f)

until ``P`` stops changing (relative change <= ``tol``, tested every
``check_every`` steps as :func:`._arima_likelihood.fast_log_likelihood`
does) or ``max_transient`` steps. Autograd through this loop costs a few
dozen tiny tensor operations per step forward and twice that backward, all
overhead; here each step is a handful of batched numpy operations and the
adjoint recursion (reverse mode of the lines above, written out in
:meth:`TransientFilter.backward`) runs once, backwards over the stored
steps. Returns the log-likelihood of the transient steps and the predicted
mean and covariance where it stopped, from which the steady-state phase
continues in torch.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def _forward(F, h, Q, a, P, y0, observed, tol, check_every, max_transient):
    B, T = y0.shape
    Ft = np.swapaxes(F, -1, -2)
    mask = observed.astype(np.float64)
    hcol = h[..., None]
    tape = []
    total = np.zeros(B)
    prev = None
    switch = T
    for t in range(T):
        m = mask[:, t]
        u = (P @ hcol)[..., 0]
        f = (h * u).sum(-1)
        v = y0[:, t] - (h * a).sum(-1)
        total += m * -0.5 * (LOG_2PI + np.log(f) + v * v / f)
        k = (m / f)[:, None] * u
        a_post = a + k * v[:, None]
        P_post = P - k[:, :, None] * u[:, None, :]
        FP = F @ P_post
        tape.append((a, P, u, f, v, m, a_post, FP))
        a = (F @ a_post[..., None])[..., 0]
        P = FP @ Ft + Q
        if t % check_every == check_every - 1 and t + 1 < T and prev is not None:
            change = np.abs(P - prev).max((-1, -2))
            scale = np.maximum(np.abs(P).max((-1, -2)), 1e-300)
            done = bool((change <= tol * scale).all()) or (max_transient is not None and t + 1 >= max_transient)
            if done and bool(observed[:, : t + 1].all()):
                switch = t + 1
                break
        if t % check_every == check_every - 2 or check_every == 1:
            prev = P
    return total, a, P, switch, tape


def _backward(F, h, tape, g_total, g_a, g_P):
    """Adjoints of ``(F, h, Q, a0, P0, y0[:, :switch])`` given those of the outputs.

    Only the adjoints of ``a`` and ``P`` recur; the sums over steps for ``F``,
    ``Q`` and ``h`` are formed once from the stacked per-step terms."""
    Ft = np.swapaxes(F, -1, -2)
    hcol = h[..., None]
    ga, gP = g_a, g_P
    n = len(tape)
    gPs, syms, gas, gvs, gfs, gus = [None] * n, [None] * n, [None] * n, [None] * n, [None] * n, [None] * n
    for t in range(n - 1, -1, -1):
        a, P, u, f, v, m, a_post, FP = tape[t]
        # P_next = F P' F' + Q, a_next = F a'
        gPs[t] = gP
        syms[t] = gP + np.swapaxes(gP, -1, -2)
        gas[t] = ga
        gP_post = Ft @ gP @ F
        ga_post = (ga[:, None, :] @ F)[:, 0]
        # P' = P - m u u' / f,  a' = a + m u v / f
        wu = (m / f)[:, None] * u
        au = (ga_post * u).sum(-1)
        Gu = (gP_post @ u[..., None])[..., 0]
        GTu = (u[:, None, :] @ gP_post)[:, 0]
        gf = (wu * (Gu - ga_post * v[:, None])).sum(-1) / f + g_total * m * (-0.5 / f + 0.5 * v * v / (f * f))
        gv = m * (au - g_total * v) / f
        gu = (m * v / f)[:, None] * ga_post - (Gu + GTu) * (m / f)[:, None] + gf[:, None] * h
        # v = y - h'a;  f = h'u, u = P h
        ga = ga_post - gv[:, None] * h
        gP = gP_post + gu[:, :, None] * hcol.swapaxes(-1, -2)
        gvs[t], gfs[t], gus[t] = gv, gf, gu
    gQ = np.sum(gPs, 0)
    a_posts = np.stack([x[6] for x in tape])
    FPs = np.stack([x[7] for x in tape])
    gF = (np.stack(syms) @ FPs).sum(0) + np.einsum("tbi,tbj->bij", np.stack(gas), a_posts)
    gv, gf, gu = np.stack(gvs), np.stack(gfs), np.stack(gus)
    a_pre, u_pre, P_pre = np.stack([x[0] for x in tape]), np.stack([x[2] for x in tape]), np.stack([x[1] for x in tape])
    gh = (-(gv[..., None] * a_pre) + gf[..., None] * u_pre).sum(0) + np.einsum("tbji,tbj->bi", P_pre, gu)
    return gF, gh, gQ, ga, gP, gv.T.copy()


class TransientFilter(torch.autograd.Function):
    """``(total (B,), a (B, S), P (B, S, S))`` after the transient; ``info["switch"]`` = its length."""

    @staticmethod
    def forward(ctx, F, h, Q, a0, P0, y0, observed, tol, check_every, max_transient, info):
        arrays = [x.detach().numpy() for x in (F, h, Q, a0, P0, y0)]
        Fn, hn = arrays[0], arrays[1]
        with np.errstate(all="ignore"):
            total, a, P, switch, tape = _forward(*arrays, observed.numpy(), tol, check_every, max_transient)
        ctx.tape, ctx.F, ctx.h, ctx.T = tape, Fn, hn, y0.shape[1]
        info["switch"] = switch
        return torch.from_numpy(total), torch.from_numpy(a), torch.from_numpy(P)

    @staticmethod
    def backward(ctx, g_total, g_a, g_P):
        B = g_total.shape[0]
        with np.errstate(all="ignore"):
            gF, gh, gQ, ga, gP, gy = _backward(ctx.F, ctx.h, ctx.tape, g_total.numpy(), g_a.numpy(), g_P.numpy())
        gy_full = np.zeros((B, ctx.T))
        gy_full[:, : gy.shape[1]] = gy
        out = [torch.from_numpy(x) for x in (gF, gh, gQ, ga, gP, gy_full)]
        return (*out, None, None, None, None, None)


def transient_filter(
    F: Tensor, h: Tensor, Q: Tensor, a0: Tensor, P0: Tensor, y0: Tensor, observed: Tensor,
    tol: float, check_every: int, max_transient: int | None,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Run :class:`TransientFilter`; inputs broadcast to the batch of ``y0`` ``(B, T)``."""
    B, S = y0.shape[0], F.shape[-1]
    F = F.expand(B, S, S).contiguous()
    Q = Q.expand(B, S, S).contiguous()
    P0 = P0.expand(B, S, S).contiguous()
    h = h.expand(B, S).contiguous()
    a0 = a0.expand(B, S).contiguous()
    info: dict = {}
    total, a, P = TransientFilter.apply(F, h, Q, a0, P0, y0.contiguous(), observed, tol, check_every,
                                        max_transient, info)
    return total, a, P, info["switch"]


class SteadyInnovations(torch.autograd.Function):
    """Innovations ``v_j = s_j - h'a_j`` of the constant-gain filter ``a_{j+1} = L a_j + g s_j``.

    Inputs ``L (B, S, S)``, ``g, h, a_0 (B, S)``, ``s (B, n)``. The reverse pass
    is the adjoint recursion ``lam_j = L' lam_{j+1} - h vbar_j`` (``lam_n = 0``), then
    ``Lbar = sum_j lam_{j+1} a_j'``, ``gbar = sum_j lam_{j+1} s_j``,
    ``hbar = -sum_j vbar_j a_j``, ``sbar_j = vbar_j + g'lam_{j+1}``, ``abar_0 = lam_0``.
    """

    @staticmethod
    def forward(ctx, L, g, h, a0, s):
        Ln, gn, hn, sn = (x.detach().numpy() for x in (L, g, h, s))
        B, n = sn.shape
        states = np.empty((B, n, Ln.shape[-1]))
        a = a0.detach().numpy()[..., None]
        gcol = gn[..., None]
        for j in range(n):
            states[:, j] = a[..., 0]
            a = Ln @ a + gcol * sn[:, j, None, None]
        ctx.save_for_backward(L, g, h, s)
        ctx.states = states
        return torch.from_numpy(sn - (states @ hn[..., None])[..., 0])

    @staticmethod
    def backward(ctx, grad_v):
        L, g, h, s = (x.numpy() for x in ctx.saved_tensors)
        states, vbar = ctx.states, grad_v.numpy()
        B, n, S = states.shape
        lams = np.zeros((B, n + 1, S))
        Lt = np.swapaxes(L, -1, -2)
        lam = np.zeros((B, S, 1))
        hcol = h[..., None]
        for j in range(n - 1, -1, -1):
            lam = Lt @ lam - hcol * vbar[:, j, None, None]
            lams[:, j] = lam[..., 0]
        nxt = lams[:, 1:]
        gL = np.swapaxes(nxt, -1, -2) @ states
        gg = (np.swapaxes(nxt, -1, -2) @ s[..., None])[..., 0]
        gh = -(np.swapaxes(states, -1, -2) @ vbar[..., None])[..., 0]
        gs = vbar + (nxt @ g[..., None])[..., 0]
        return tuple(torch.from_numpy(x) for x in (gL, gg, gh, lams[:, 0], gs))
