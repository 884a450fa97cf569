"""Fast exact log-likelihood for time-invariant models without missing data.

The covariance (Riccati) recursion of the Kalman filter does not depend on
``y``. It therefore runs once per distinct parameter set (never per series
that share parameters) until it has converged, after which the steady-state
gain is reused, exactly as statsmodels does. The predicted means then obey
the affine recurrence::

    a_{t+1} = F (I - K_t H) a_t + F K_t (y_t - d) + c  =:  L_t a_t + u_t

whose inputs ``u_t`` are computed for all t in one batched op, and the
log-likelihood is one batched reduction over the innovations
``v_t = y_t - H a_t - d``.

Two schedules, chosen by the number of distinct parameter sets:
few sets (latency-bound): time-parallel schedules with few Python-level
steps (Riccati by doubling, means by a chunked scan); many sets
(throughput-bound): the work-efficient sequential recursions, batched over
the parameter sets. Calls that need no gradient with scalar observations go
to the float64 numpy schedules of ``_kalman_numpy`` first (fewer, cheaper ops).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tsgen.exceptions import NumericalError
from tsgen.inference._kalman_affine import (
    projected_affine_recurrence_constant,
    affine_recurrence_sequential,
    affine_recurrence_varying_shared,
)
from tsgen.inference import _kalman_numpy
from tsgen.inference._kalman_batch_last import steady_state_log_likelihood_many
from tsgen.inference._kalman_params import PreparedParams
from tsgen.inference._kalman_scan import combine
from tsgen.inference._kalman_step import LOG_2PI, RICCATI_TOLERANCE, raise_if_not_pd, symmetrize

# Up to this many distinct parameter sets the time-parallel schedules are used.
MAX_PARAM_SETS_FOR_PARALLEL = 8
# How often (in steps) the sequential Riccati recursion checks convergence (a sync).
_CHECK_EVERY = 8


def _t(matrix: Tensor) -> Tensor:
    return matrix.transpose(-1, -2)


def _relative_change(new: Tensor, old: Tensor) -> Tensor:
    return (new - old).abs().amax((-1, -2)) / new.abs().amax((-1, -2)).clamp_min(1e-300)


def _riccati_doubling(p: PreparedParams, max_steps: int) -> Tensor:
    """Filtered covariances ``C_0..C_{n-1}`` by doubling.

    With ``E`` the time-invariant Riccati element ``(A, C, J)`` of
    Sarkka & Garcia-Fernandez and ``Pi_t`` the prefix ending at step t,
    ``Pi_{m-1+k} = Pi_{m-1} (x) E^k`` and ``E^{m+k} = E^m (x) E^k`` for all
    ``k = 1..m`` at once: one batched ``combine`` per doubling.
    """
    S = p.state_dim
    eye = torch.eye(S, dtype=p.F.dtype)
    F, H, Q, R = p.F, p.H, p.Q, p.R
    P1H = p.P1 @ _t(H)
    chol0, info0 = torch.linalg.cholesky_ex(symmetrize(H @ P1H + R))
    raise_if_not_pd(info0.unsqueeze(-1), "innovation")
    gain0 = _t(torch.cholesky_solve(_t(P1H), chol0))
    IKH0 = eye - gain0 @ H
    C0 = symmetrize(IKH0 @ p.P1 @ _t(IKH0) + gain0 @ R @ _t(gain0))

    HQ = H @ Q
    chol, info = torch.linalg.cholesky_ex(symmetrize(HQ @ _t(H) + R))
    raise_if_not_pd(info.unsqueeze(-1), "innovation", time_offset=1)
    HF = H @ F
    gain = _t(torch.cholesky_solve(HQ, chol))
    IKH = eye - gain @ H
    A = IKH @ F
    C = symmetrize(IKH @ Q @ _t(IKH) + gain @ R @ _t(gain))
    J = symmetrize(_t(HF) @ torch.cholesky_solve(HF, chol))

    shape = torch.broadcast_shapes(A.shape, C.shape, J.shape, C0.shape)
    zero = torch.zeros((), dtype=F.dtype).expand(shape)
    # Row 0: the prefixes Pi_0..Pi_{m-1} (their A and J are zero); row 1: the
    # powers E^1..E^m. One combine per doubling extends both rows.
    A_s, C_s, J_s = (
        torch.stack([row0.expand(shape), row1.expand(shape)]).unsqueeze(-3)
        for row0, row1 in ((zero, A), (C0, C), (zero, J))
    )
    while C_s.shape[-3] < max_steps:
        last = tuple(x[..., -1:, :, :] for x in (A_s, C_s, J_s))
        new = combine(last, (A_s[1], C_s[1], J_s[1]), with_means=False)
        A_s, C_s, J_s = (torch.cat([old, fresh], -3) for old, fresh in zip((A_s, C_s, J_s), new))
        if C_s.shape[-3] >= 8:  # early convergence is rare; skip the sync before
            with torch.no_grad():
                if bool((_relative_change(C_s[0, ..., -1, :, :], C_s[0, ..., -2, :, :]) <= RICCATI_TOLERANCE).all()):
                    break
    prefix = C_s[0]
    filtered = prefix[..., :max_steps, :, :]
    predicted = symmetrize(F.unsqueeze(-3) @ filtered[..., :-1, :, :] @ _t(F).unsqueeze(-3) + Q.unsqueeze(-3))
    P1 = p.P1.expand(*predicted.shape[:-3], S, S).unsqueeze(-3)
    return torch.cat([P1, predicted], -3)


def _riccati_sequential(p: PreparedParams, max_steps: int) -> Tensor:
    """Predicted covariances ``P_0..P_{n-1}``, one batched step at a time::

        S_t = H P_t H^T + R,  K_t = P_t H^T S_t^{-1},
        P_{t+1} = F (P_t - K_t H P_t) F^T + Q
    """
    F, H, Q, R = p.F, p.H, p.Q, p.R
    shape = torch.broadcast_shapes(F.shape, Q.shape, p.P1.shape, (_t(H) @ H).shape)
    P = p.P1.expand(shape)
    covs, infos = [], []
    for t in range(max_steps):
        covs.append(P)
        if t + 1 == max_steps:
            break
        PHt = P @ _t(H)
        chol, info = torch.linalg.cholesky_ex(symmetrize(H @ PHt + R))
        infos.append(info)
        gain = _t(torch.cholesky_solve(_t(PHt), chol))
        P_next = symmetrize(F @ (P - gain @ _t(PHt)) @ _t(F) + Q)
        if t % _CHECK_EVERY == _CHECK_EVERY - 1:
            raise_if_not_pd(torch.stack(infos, -1), "innovation")
            with torch.no_grad():
                if bool((_relative_change(P_next, P) <= RICCATI_TOLERANCE).all()):
                    covs.append(P_next)
                    break
        P = P_next
    if infos:
        raise_if_not_pd(torch.stack(infos, -1), "innovation")
    return torch.stack(covs, -3)


def riccati_predicted_covariances(p: PreparedParams, max_steps: int) -> Tensor:
    """Predicted covariances ``P_0..P_{n-1}`` ``(*p, n, S, S)``, ``n <= max_steps``;
    ``P_t = P_{n-1}`` for ``t >= n`` (converged)."""
    if p.batch_shape.numel() <= MAX_PARAM_SETS_FOR_PARALLEL and max_steps > 1:
        try:
            return _riccati_doubling(p, max_steps)
        except NumericalError:
            pass  # the doubling element needs H Q H^T + R > 0; the plain recursion does not
    return _riccati_sequential(p, max_steps)


def steady_state_log_likelihood(
    y: Tensor, p: PreparedParams, batch_shape: torch.Size, per_step: bool = False
) -> Tensor | None:
    """Total log-likelihood ``(*b,)`` for time-invariant params and fully observed
    ``y``; with ``per_step``, ``log p(y_t | y_<t)`` ``(*b, T)``, or None where no
    steady-state schedule gives per-step terms (many parameter sets in torch)."""
    if batch_shape.numel() > 0 and _kalman_numpy.applies(y, p):
        total = _kalman_numpy.steady_state_log_likelihood_numpy(y, p, batch_shape, per_step)
        if total is not None:
            return total
    if _kalman_numpy.applies_many(y, p, batch_shape):
        from tsgen.inference._kalman_compiled import log_likelihood_sets  # numba, imported when needed

        total = log_likelihood_sets(y, p, batch_shape, per_step)
        if total is not None:
            return total
    if p.batch_shape.numel() > MAX_PARAM_SETS_FOR_PARALLEL:
        return None if per_step else steady_state_log_likelihood_many(y, p, batch_shape)
    num_times, S, D = y.shape[-2], p.state_dim, p.obs_dim
    pred_covs = riccati_predicted_covariances(p, num_times)  # (*p, n, S, S)
    n = pred_covs.shape[-3]
    F, H, R = p.F, p.H, p.R
    PHt = pred_covs @ _t(H).unsqueeze(-3)
    chol, info = torch.linalg.cholesky_ex(symmetrize(H.unsqueeze(-3) @ PHt + R.unsqueeze(-3)))
    raise_if_not_pd(info, "innovation")
    gain = _t(torch.cholesky_solve(_t(PHt), chol))  # K_t (*p, n, S, D)
    FK = F.unsqueeze(-3) @ gain
    L = F.unsqueeze(-3) - FK @ H.unsqueeze(-3)  # F (I - K_t H)
    whiten = torch.linalg.solve_triangular(chol, torch.eye(D, dtype=y.dtype), upper=False)
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (*p, n)

    # Flatten the series to one batch dim B; parameter tensors stay unexpanded when shared.
    batch = batch_shape.numel()
    shared = p.batch_shape.numel() == 1

    def flat(x: Tensor, event_dims: int) -> Tensor:
        event = x.shape[x.dim() - event_dims:]
        if shared:
            return x.reshape(event)
        return x.expand(*batch_shape, *event).reshape(batch, *event)

    centred = y if p.d is None else y - p.d.unsqueeze(-2)
    centred = centred.expand(*batch_shape, num_times, D).reshape(batch, num_times, D)
    c = None if p.c is None else flat(p.c, 1)
    L, FK, whiten, log_det = flat(L, 3), flat(FK, 3), flat(whiten, 3), flat(log_det, 1)
    H = flat(H, 2)
    x0 = p.m1.expand(*batch_shape, S).reshape(batch, S)

    steps = num_times - 1  # transitions
    transient = min(n, steps)
    head_states, last = x0.unsqueeze(1), x0  # a_0..a_transient
    if transient > 0:
        u = (FK[..., :transient, :, :] * centred[:, :transient, None, :]).sum(-1)
        if c is not None:
            u = u + c.unsqueeze(-2)
        if shared:
            states = affine_recurrence_varying_shared(L[:transient], u, x0)
        else:
            states = affine_recurrence_sequential(L[:, :transient], u, x0)
        head_states = torch.cat([head_states, states], 1)
        last = states[:, -1]
    innovations = centred[:, : transient + 1] - head_states @ _t(H)
    if steps > n:  # a_{n+1}..a_{T-1} with the steady gain, only through H a_t
        predicted_obs = projected_affine_recurrence_constant(
            L[..., -1, :, :], FK[..., -1, :, :], c, centred[:, n:steps], last, H
        )
        innovations = torch.cat([innovations, centred[:, n + 1 :] - predicted_obs], 1)

    head = min(n, num_times)
    if per_step:
        quad = (whiten[..., :head, :, :] * innovations[:, :head, None, :]).sum(-1).pow(2).sum(-1)
        log_dets = log_det[..., :head].expand(batch, head)
        if num_times > n:
            quad = torch.cat([quad, (innovations[:, n:] @ _t(whiten[..., -1, :, :])).pow(2).sum(-1)], 1)
            log_dets = torch.cat([log_dets, log_det[..., -1:].expand(batch, num_times - n)], 1)
        return (-0.5 * (D * LOG_2PI + log_dets + quad)).reshape(*batch_shape, num_times)
    quad = (whiten[..., :head, :, :] * innovations[:, :head, None, :]).sum(-1).pow(2).sum((-1, -2))
    total_log_det = log_det[..., :head].sum(-1)
    if num_times > n:
        quad = quad + (innovations[:, n:] @ _t(whiten[..., -1, :, :])).pow(2).sum((-1, -2))
        total_log_det = total_log_det + (num_times - n) * log_det[..., -1]
    total = -0.5 * (num_times * D * LOG_2PI + total_log_det + quad)
    return total.reshape(batch_shape)
