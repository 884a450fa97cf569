"""A batched BFGS for many independent minimisations at once.

The objective returns one value per problem, ``f(x)`` ``(B,)`` for ``x``
``(B, k)``; problems are independent, so ``grad sum_b f_b`` holds every
problem's gradient and each keeps its own inverse-Hessian approximation
``H_b`` (the joint Hessian is block diagonal) and its own step length
(backtracking Armijo line search). Converged problems leave the batch, so
late iterations only pay for the stragglers.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def _value_and_grad(fun, x: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    try:
        value = fun(x, rows)
    except (ValueError, ArithmeticError, RuntimeError):
        return torch.full((x.shape[0],), torch.inf, dtype=x.dtype), torch.zeros_like(x)
    finite = torch.isfinite(value)
    (grad,) = torch.autograd.grad(torch.where(finite, value, torch.zeros((), dtype=x.dtype)).sum(), x)
    value = torch.where(finite, value.detach(), torch.full((), torch.inf, dtype=x.dtype))
    grad = torch.where(finite.unsqueeze(-1) & torch.isfinite(grad), grad, torch.zeros((), dtype=x.dtype))
    return value, grad


def minimize_bfgs(
    fun: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    max_iter: int = 200,
    gtol: float = 1e-6,
    ftol: float = 1e-12,
    max_halvings: int = 30,
) -> tuple[Tensor, Tensor, Tensor]:
    """Minimise ``fun(x[rows], rows)`` for every row of ``x0`` ``(B, k)``.

    Returns ``(x, f, converged)``.
    """
    B, k = x0.shape
    x = x0.detach().clone()
    rows = torch.arange(B)
    f, g = _value_and_grad(fun, x, rows)
    converged = torch.zeros(B, dtype=torch.bool)
    if k == 0:
        return x, f, torch.ones(B, dtype=torch.bool)
    H = torch.eye(k, dtype=x.dtype).repeat(B, 1, 1)
    first = torch.ones(B, dtype=torch.bool)
    active = torch.isfinite(f) & (g.abs().amax(-1) > gtol)
    converged |= torch.isfinite(f) & ~active
    for _ in range(max_iter):
        idx = torch.nonzero(active).squeeze(-1)
        if idx.numel() == 0:
            break
        xa, fa, ga, Ha = x[idx], f[idx], g[idx], H[idx]
        direction = -(Ha @ ga.unsqueeze(-1)).squeeze(-1)
        slope = (direction * ga).sum(-1)
        bad = ~(slope < 0)
        direction = torch.where(bad.unsqueeze(-1), -ga, direction)
        slope = torch.where(bad, -(ga * ga).sum(-1), slope)
        Ha = torch.where(bad[:, None, None], torch.eye(k, dtype=x.dtype), Ha)
        # a first step of unit length in the gradient direction can be wild
        step = torch.where(first[idx] | bad, 1.0 / ga.abs().amax(-1).clamp_min(1.0), torch.ones_like(fa))
        pending = torch.ones(idx.numel(), dtype=torch.bool)
        f_new, g_new = fa.clone(), ga.clone()
        for _ in range(max_halvings):
            sub = torch.nonzero(pending).squeeze(-1)
            x_try = xa[sub] + step[sub, None] * direction[sub]
            f_try, g_try = _value_and_grad(fun, x_try, idx[sub])
            ok = torch.isfinite(f_try) & (f_try <= fa[sub] + 1e-4 * step[sub] * slope[sub])
            f_new[sub] = torch.where(ok, f_try, f_new[sub])
            g_new[sub] = torch.where(ok.unsqueeze(-1), g_try, g_new[sub])
            pending[sub] = ~ok
            step[sub] = torch.where(ok, step[sub], 0.5 * step[sub])
            if not bool(pending.any()):
                break
        moved = ~pending
        s = step.unsqueeze(-1) * direction
        yv = g_new - ga
        sy = (s * yv).sum(-1)
        # scale the initial inverse Hessian (Nocedal & Wright eq. 6.20) on the first update
        gamma = sy / (yv * yv).sum(-1).clamp_min(1e-300)
        scale_first = (first[idx] | bad) & (sy > 0)
        eye = torch.eye(k, dtype=x.dtype)
        Ha = torch.where(scale_first[:, None, None], gamma[:, None, None] * eye, Ha)
        rho = 1.0 / sy.clamp_min(1e-300)
        update = moved & (sy > 1e-12 * (s * s).sum(-1).sqrt() * (yv * yv).sum(-1).sqrt())
        A = eye - rho[:, None, None] * s.unsqueeze(-1) * yv.unsqueeze(-2)
        H_new = A @ Ha @ A.transpose(-1, -2) + rho[:, None, None] * s.unsqueeze(-1) * s.unsqueeze(-2)
        Ha = torch.where(update[:, None, None], H_new, Ha)
        decrease = fa - f_new
        x[idx] = torch.where(moved.unsqueeze(-1), xa + s, xa)
        f[idx] = f_new
        g[idx] = g_new
        H[idx] = Ha
        first[idx] = first[idx] & ~moved
        small_grad = g_new.abs().amax(-1) <= gtol
        small_step = moved & (decrease <= ftol * (1.0 + fa.abs()))
        done = small_grad | small_step | ~moved
        converged[idx] = small_grad | small_step
        active[idx] = ~done
    return x, f, converged
