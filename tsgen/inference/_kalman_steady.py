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
the parameter sets.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tsgen.inference._kalman_params import PreparedParams
from tsgen.inference._kalman_scan import combine
from tsgen.inference._kalman_step import LOG_2PI, raise_if_not_pd, symmetrize

# Relative change of the predicted covariance between consecutive steps below
# which the Riccati recursion counts as converged (statsmodels stops at a
# squared absolute change of 1e-19); the log-likelihood error this causes is
# orders of magnitude below 1e-8 relative.
RICCATI_TOLERANCE = 1e-11
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
    ``Pi_{m+k} = Pi_{m-1} (x) E^{k+1}`` and ``E^{m+k} = E^m (x) E^k`` for all
    ``k`` at once: about 12 batched ops per doubling.
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
    powers = tuple(x.expand(shape).unsqueeze(-3) for x in (A, C, J))  # E^1..E^m
    prefix = C0.expand(shape).unsqueeze(-3)  # C of Pi_0..Pi_{m-1}
    zero = torch.zeros((), dtype=F.dtype).expand(*shape[:-2], 1, S, S)
    while prefix.shape[-3] < max_steps:
        # One combine for both: row 0 extends the prefixes, row 1 the powers.
        first = (
            torch.stack([zero, powers[0][..., -1:, :, :]]),
            torch.stack([prefix[..., -1:, :, :], powers[1][..., -1:, :, :]]),
            torch.stack([zero, powers[2][..., -1:, :, :]]),
        )
        new_A, new_C, new_J = combine(first, powers, with_means=False)
        prefix = torch.cat([prefix, new_C[0]], -3)
        with torch.no_grad():
            if bool((_relative_change(prefix[..., -1, :, :], prefix[..., -2, :, :]) <= RICCATI_TOLERANCE).all()):
                break
        powers = tuple(torch.cat([old, new[1]], -3) for old, new in zip(powers, (new_A, new_C, new_J)))
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
        return _riccati_doubling(p, max_steps)
    return _riccati_sequential(p, max_steps)


def _matrix_powers(L: Tensor, count: int) -> Tensor:
    """``L^1..L^count`` ``(*p, count, S, S)`` by doubling."""
    powers = L.unsqueeze(-3)
    while powers.shape[-3] < count:
        powers = torch.cat([powers, powers[..., -1:, :, :] @ powers], -3)
    return powers[..., :count, :, :]


def affine_recurrence_constant(L: Tensor, u: Tensor, x0: Tensor) -> Tensor:
    """Solve ``x_{k+1} = L x_k + u_k`` (``k = 0..N-1``); returns ``x_1..x_N`` ``(*b, N, S)``.

    ``L`` ``(*p, S, S)``, ``u`` ``(*b, N, S)``, ``x0`` ``(*b, S)``. Chunked scan:
    the N steps are cut into K chunks of length C ~ sqrt(N); (1) each chunk
    runs from zero, all chunks at once (C steps); (2) the chunk start states
    are chained (K steps); (3) ``x = L^{j+1} start + local`` in one op.
    """
    num_steps, S = u.shape[-2], u.shape[-1]
    chunk = max(1, math.ceil(math.sqrt(num_steps)))
    num_chunks = math.ceil(num_steps / chunk)
    pad = num_chunks * chunk - num_steps
    if pad:
        u = torch.cat([u, u.new_zeros(*u.shape[:-2], pad, S)], -2)
    u = u.reshape(*u.shape[:-2], num_chunks, chunk, S)
    powers = _matrix_powers(L, chunk)  # L^1..L^C
    Lt = _t(L)
    local = u[..., 0, :]
    locals_ = [local]
    for j in range(1, chunk):
        local = local @ Lt + u[..., j, :]
        locals_.append(local)
    local_all = torch.stack(locals_, -2)  # (*b, K, C, S)
    chunk_map = _t(powers[..., -1, :, :])  # (L^C)^T
    start = x0.unsqueeze(-2)
    starts = [start]
    for k in range(num_chunks - 1):
        start = start @ chunk_map + local_all[..., k, -1:, :]
        starts.append(start)
    starts_all = torch.cat(starts, -2)  # (*b, K, S)
    states = torch.einsum("...jab,...kb->...kja", powers, starts_all) + local_all
    return states.reshape(*states.shape[:-3], num_chunks * chunk, S)[..., :num_steps, :]


def affine_recurrence_varying(L: Tensor, u: Tensor, x0: Tensor) -> Tensor:
    """Solve ``x_{k+1} = L_k x_k + u_k``; ``L`` ``(*p, N, S, S)``; returns ``x_1..x_N``.

    Few parameter sets: the chunked scan with per-chunk transition products;
    many: the sequential recursion batched over series (less work).
    """
    num_steps, S = u.shape[-2], u.shape[-1]
    if L.shape[:-3].numel() > MAX_PARAM_SETS_FOR_PARALLEL or num_steps < 4:
        x, states = x0, []
        for k in range(num_steps):
            # Broadcast multiply-sum beats a batched matmul of tiny matrices here.
            x = (L[..., k, :, :] * x.unsqueeze(-2)).sum(-1) + u[..., k, :]
            states.append(x)
        return torch.stack(states, -2)
    chunk = max(1, math.ceil(math.sqrt(num_steps)))
    num_chunks = math.ceil(num_steps / chunk)
    pad = num_chunks * chunk - num_steps
    if pad:
        u = torch.cat([u, u.new_zeros(*u.shape[:-2], pad, S)], -2)
        eye = torch.eye(S, dtype=L.dtype).expand(*L.shape[:-3], pad, S, S)
        L = torch.cat([L, eye], -3)
    u = u.reshape(*u.shape[:-2], num_chunks, chunk, S)
    L = L.reshape(*L.shape[:-3], num_chunks, chunk, S, S)
    local = u[..., 0, :]
    transport = L[..., 0, :, :]
    locals_, transports = [local], [transport]
    for j in range(1, chunk):
        L_j = L[..., j, :, :]
        local = (L_j @ local.unsqueeze(-1)).squeeze(-1) + u[..., j, :]
        transport = L_j @ transport
        locals_.append(local)
        transports.append(transport)
    local_all = torch.stack(locals_, -2)  # (*b, K, C, S)
    transport_all = torch.stack(transports, -3)  # (*p, K, C, S, S)
    start = x0
    starts = [start]
    for k in range(num_chunks - 1):
        start = (transport_all[..., k, -1, :, :] @ start.unsqueeze(-1)).squeeze(-1) + local_all[..., k, -1, :]
        starts.append(start)
    starts_all = torch.stack(starts, -2)  # (*b, K, S)
    states = (transport_all @ starts_all.unsqueeze(-2).unsqueeze(-1)).squeeze(-1) + local_all
    return states.reshape(*states.shape[:-3], num_chunks * chunk, S)[..., :num_steps, :]


def steady_state_log_likelihood(y: Tensor, p: PreparedParams, batch_shape: torch.Size) -> Tensor:
    """Total log-likelihood ``(*b,)`` for time-invariant params and fully observed ``y``."""
    num_times = y.shape[-2]
    S = p.state_dim
    pred_covs = riccati_predicted_covariances(p, num_times)  # (*p, n, S, S)
    n = pred_covs.shape[-3]
    F, H, R = p.F, p.H, p.R
    PHt = pred_covs @ _t(H).unsqueeze(-3)
    chol, info = torch.linalg.cholesky_ex(symmetrize(H.unsqueeze(-3) @ PHt + R.unsqueeze(-3)))
    raise_if_not_pd(info, "innovation")
    gain = _t(torch.cholesky_solve(_t(PHt), chol))  # K_t (*p, n, S, D)
    FK = F.unsqueeze(-3) @ gain
    L = F.unsqueeze(-3) - FK @ H.unsqueeze(-3)  # F (I - K_t H)
    centred = y if p.d is None else y - p.d.unsqueeze(-2)
    c = None if p.c is None else p.c.unsqueeze(-2)

    steps = num_times - 1  # transitions
    x0 = p.m1.expand(*batch_shape, S)
    parts = [x0.unsqueeze(-2)]
    transient = min(n, steps)
    last = x0
    if transient > 0:
        u = (FK[..., :transient, :, :] * centred[..., :transient, None, :]).sum(-1)
        if c is not None:
            u = u + c
        states = affine_recurrence_varying(L[..., :transient, :, :], u, x0)
        parts.append(states.expand(*batch_shape, transient, S))
        last = states[..., -1, :]
    if steps > n:
        u = centred[..., n:steps, :] @ _t(FK[..., -1, :, :])
        if c is not None:
            u = u + c
        states = affine_recurrence_constant(L[..., -1, :, :], u, last)
        parts.append(states.expand(*batch_shape, steps - n, S))
    pred_means = torch.cat(parts, -2)  # (*b, T, S)

    innovations = centred - pred_means @ _t(H)
    whiten = torch.linalg.solve_triangular(chol, torch.eye(p.obs_dim, dtype=y.dtype), upper=False)
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (*p, n)
    head = min(n, num_times)
    quad = (
        (whiten[..., :head, :, :] * innovations[..., :head, None, :]).sum(-1).pow(2).sum((-1, -2))
    )
    total_log_det = log_det[..., :head].sum(-1)
    if num_times > n:
        quad = quad + (innovations[..., n:, :] @ _t(whiten[..., -1, :, :])).pow(2).sum((-1, -2))
        total_log_det = total_log_det + (num_times - n) * log_det[..., -1]
    return (-0.5 * (num_times * p.obs_dim * LOG_2PI + total_log_det + quad)).expand(batch_shape)
