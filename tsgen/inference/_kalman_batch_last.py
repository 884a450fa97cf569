"""Steady-state log-likelihood for many distinct parameter sets (batch-last).

With many small systems (e.g. 1000 series, each with its own 4x4 model) a
batched matmul of tiny matrices costs ~0.1 us per matrix in overhead. Laid
out batch-last, ``(S, S, B)``, a 4x4 product is a broadcast multiply and a
sum over a leading axis: contiguous and vectorised.

The systems converge at different speeds, so they are split in two sets
that shrink and grow as the filter runs: *active* systems run the full
Kalman step (mean and Riccati recursion); a system whose predicted
covariance has converged moves to the *steady* pool, which only runs the
mean recursion ``a_{t+1} = L a_t + F K (y_t - d) + c`` with its fixed
steady-state gain. Once no system is active, the rest of every series is
solved at once by the chunked affine scan (``_kalman_affine``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tsgen.exceptions import NumericalError
from tsgen.inference._kalman_affine import projected_affine_recurrence_constant
from tsgen.inference._kalman_params import PreparedParams
from tsgen.inference._kalman_step import LOG_2PI, RICCATI_TOLERANCE

_CHECK_EVERY = 8


def _mm(A: Tensor, B: Tensor) -> Tensor:
    """Batch-last matrix product: ``(i, j, N) x (j, k, N) -> (i, k, N)``."""
    return (A.unsqueeze(2) * B.unsqueeze(0)).sum(1)


def _mv(A: Tensor, x: Tensor) -> Tensor:
    """Batch-last matrix-vector product: ``(i, j, N) x (j, N) -> (i, N)``."""
    return (A * x.unsqueeze(0)).sum(1)


def _innovation_factors(P: Tensor, H: Tensor, R: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``P H^T``, gain ``K = P H^T S^{-1}`` (batch-last), Cholesky factor of ``S``
    (batch-first) and the first failing-batch flag."""
    PHt = _mm(P, H.transpose(0, 1))  # (S, D, B)
    S_mat = _mm(H, PHt) + R  # (D, D, B)
    chol, info = torch.linalg.cholesky_ex(S_mat.permute(2, 0, 1))
    gain = torch.cholesky_solve(PHt.permute(2, 1, 0), chol).permute(2, 1, 0)  # (S, D, B)
    return PHt, gain, chol, info


def _whitened_terms(chol: Tensor) -> tuple[Tensor, Tensor]:
    """``chol^{-1}`` batch-last ``(D, D, B)`` and ``log det S`` ``(B,)``."""
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype)
    whiten = torch.linalg.solve_triangular(chol, eye, upper=False).permute(1, 2, 0)
    return whiten, 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)


def _fail(t: int) -> None:
    raise NumericalError(
        f"innovation covariance not positive definite at time index t={t} (0-based; first "
        "observation is t=0). Check that the observation/transition/initial covariances are "
        "symmetric positive (semi-)definite and that the data scale is sane."
    )


def steady_state_log_likelihood_many(y: Tensor, p: PreparedParams, batch_shape: torch.Size) -> Tensor:
    """Like ``steady_state_log_likelihood``; efficient when parameter sets are many."""
    num_times, S, D = y.shape[-2], p.state_dim, p.obs_dim
    batch = batch_shape.numel()

    def batch_last(x: Tensor, event_dims: int) -> Tensor:
        event = x.shape[x.dim() - event_dims:]
        return x.expand(*batch_shape, *event).reshape(batch, *event).movedim(0, -1)

    F, H, Q, R = (batch_last(x, 2) for x in (p.F, p.H, p.Q, p.R))
    c = None if p.c is None else batch_last(p.c, 1)
    P, a = batch_last(p.P1, 2), batch_last(p.m1, 1)
    centred = y if p.d is None else y - p.d.unsqueeze(-2)
    centred = centred.expand(*batch_shape, num_times, D).reshape(batch, num_times, D)
    y_bl = centred.permute(1, 2, 0)  # (T, D, B)

    totals = y.new_zeros(batch)  # log det S_t + v_t^T S_t^{-1} v_t summed over t
    active = torch.arange(batch)
    pool = None  # steady systems: (indices, L, FK, c, H, whiten, log_det, a)
    # The likelihood terms of a window of steps (between two convergence checks,
    # where the sets do not change) are evaluated together: fewer ops per step.
    window_start, active_terms, pool_means, pool_obs = 0, [], [], []

    def flush(totals: Tensor) -> Tensor:
        if active_terms:
            if D == 1:
                v_w, s_w = torch.stack([v for v, _ in active_terms]), torch.stack([s for _, s in active_terms])
                bad = torch.nonzero(~(s_w > 0).all(1))
                if bad.numel():
                    _fail(window_start + int(bad[0, 0]))
                contribution = (torch.log(s_w) + v_w.pow(2) / s_w).sum(0)
            else:
                contribution = torch.stack(active_terms).sum(0)
            totals = totals.index_add(0, active, contribution)
        if pool_means:
            idx, _, _, _, H_p, W_p, logdet_p, _ = pool
            v_w = torch.stack(pool_obs) - (H_p * torch.stack(pool_means).unsqueeze(1)).sum(2)  # (w, D, Bp)
            whitened = (W_p * v_w.unsqueeze(1)).sum(2)
            totals = totals.index_add(0, idx, len(pool_means) * logdet_p + whitened.pow(2).sum((0, 1)))
        active_terms.clear()
        pool_means.clear()
        pool_obs.clear()
        return totals

    t = 0
    while t < num_times and active.numel():
        y_t = y_bl[t].index_select(1, active) if active.numel() < batch else y_bl[t]
        v = y_t - _mv(H, a)  # (D, Ba)
        if D == 1:
            PHt = _mv(P, H[0]).unsqueeze(1)  # (S, 1, Ba)
            s = (H[0] * PHt[:, 0]).sum(0) + R[0, 0]
            active_terms.append((v[0], s))
            gain = PHt / s
            P_filtered = P - gain * PHt.transpose(0, 1)
        else:
            PHt, gain, chol, info = _innovation_factors(P, H, R)
            if bool(info.any()):
                _fail(t)
            whitened = torch.linalg.solve_triangular(chol, v.T.unsqueeze(-1), upper=False)
            log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
            active_terms.append(log_det + whitened.pow(2).sum((-1, -2)))
            P_filtered = P - _mm(gain, PHt.transpose(0, 1))
        a = _mv(F, a + _mv(gain, v))
        if c is not None:
            a = a + c
        P_next = _mm(_mm(F, P_filtered), F.transpose(0, 1)) + Q
        P_next = 0.5 * (P_next + P_next.transpose(0, 1))

        if pool is not None:  # steady systems: mean recursion with their fixed gain
            idx, L_p, FK_p, c_p, H_p, W_p, logdet_p, a_p = pool
            y_p = y_bl[t].index_select(1, idx)
            pool_means.append(a_p)
            pool_obs.append(y_p)
            a_p = _mv(L_p, a_p) + _mv(FK_p, y_p)
            if c_p is not None:
                a_p = a_p + c_p
            pool = (idx, L_p, FK_p, c_p, H_p, W_p, logdet_p, a_p)
        t += 1

        if t % _CHECK_EVERY == 0 and t < num_times:
            totals = flush(totals)  # also raises on a non-PD step of this window
            window_start = t
            with torch.no_grad():
                change = (P_next - P).abs().amax((0, 1)) / P_next.abs().amax((0, 1)).clamp_min(1e-300)
                done = change <= RICCATI_TOLERANCE
            if bool(done.any()):
                keep = ~done
                _, gain_d, chol_d, info_d = _innovation_factors(P_next[..., done], H[..., done], R[..., done])
                if bool(info_d.any()):
                    _fail(t)
                F_d, H_d = F[..., done], H[..., done]
                FK_d = _mm(F_d, gain_d)
                L_d = F_d - _mm(FK_d, H_d)
                W_d, logdet_d = _whitened_terms(chol_d)
                new = (active[done], L_d, FK_d, None if c is None else c[..., done], H_d, W_d, logdet_d, a[..., done])
                pool = new if pool is None else tuple(
                    None if old is None else torch.cat([old, fresh], -1) for old, fresh in zip(pool, new)
                )
                active = active[keep]
                F, H, Q, R, P_next, a = (x[..., keep] for x in (F, H, Q, R, P_next, a))
                c = None if c is None else c[..., keep]
        P = P_next
    totals = flush(totals)

    if t < num_times and pool is not None:
        totals = _finish_steady(pool, centred, t, totals)
    return (-0.5 * (num_times * D * LOG_2PI + totals)).reshape(batch_shape)


def _finish_steady(pool: tuple, centred: Tensor, t: int, totals: Tensor) -> Tensor:
    """Add the log-likelihood terms of steps ``t..T-1`` of the steady systems in
    ``pool`` (one chunked affine scan for all of them)."""
    num_times = centred.shape[1]
    idx, L_p, FK_p, c_p, H_p, W_p, logdet_p, a_p = pool
    L_b, FK_b, H_b = L_p.permute(2, 0, 1), FK_p.permute(2, 0, 1), H_p.permute(2, 0, 1)
    x_t = a_p.transpose(0, 1)  # predicted means at step t, (Bp, S)
    z = centred.index_select(0, idx)
    innovations = z[:, t : t + 1] - x_t.unsqueeze(1) @ H_b.transpose(-1, -2)
    if t + 1 < num_times:
        predicted_obs = projected_affine_recurrence_constant(
            L_b, FK_b, None if c_p is None else c_p.transpose(0, 1), z[:, t : num_times - 1], x_t, H_b
        )
        innovations = torch.cat([innovations, z[:, t + 1 :] - predicted_obs], 1)
    quad = (innovations @ W_p.permute(2, 1, 0)).pow(2).sum((-1, -2))
    return totals.index_add(0, idx, quad + (num_times - t) * logdet_p)
