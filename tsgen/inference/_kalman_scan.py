"""The Kalman filter vectorised over time by a parallel prefix scan.

``filter_parallel_scan`` is the temporally parallel Kalman filter of
Sarkka & Garcia-Fernandez (2021, "Temporal parallelization of Bayesian
smoothers", IEEE TAC). Each step t becomes an element ``(A, b, C, eta, J)``
of an associative operation, so that the filtered moments are the prefix
"sums" of the elements; an inclusive Hillis-Steele scan computes them in
``ceil(log2 T)`` batched rounds. Works for time-varying params and missing
data. The elements need ``H_t Q_{t-1} H_t^T + R_t`` positive definite on the
observed components (always true when R is); otherwise use the sequential
filter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tsgen.inference._kalman_params import PreparedParams
from tsgen.inference._kalman_results import FilterResult
from tsgen.inference._kalman_step import (
    LOG_2PI,
    masked_innovation,
    masked_observation_model,
    mat_vec,
    raise_if_not_pd,
    symmetrize,
    update,
)


def _over_time(p: PreparedParams, name: str, start: int, stop: int) -> Tensor | None:
    """Field ``name`` for time indices ``start:stop`` with a time axis (size 1 if constant)."""
    value = getattr(p, name)
    if value is None:
        return None
    event_dims = 1 if name in ("m1", "c", "d") else 2
    if name in p.time_varying:
        return value.narrow(value.dim() - event_dims - 1, start, stop - start)
    return value.unsqueeze(value.dim() - event_dims)


def _transpose(matrix: Tensor) -> Tensor:
    return matrix.transpose(-1, -2)


def combine(
    first: tuple[Tensor, ...], second: tuple[Tensor, ...], with_means: bool = True
) -> tuple[Tensor, ...]:
    """The associative operation of Sarkka & Garcia-Fernandez (Lemma 8).

    ``first = (A_i, b_i, C_i, eta_i, J_i)`` acts before ``second``; with
    ``X = I + C_i J_j``::

        A   = A_j X^{-1} A_i
        b   = A_j X^{-1} (b_i + C_i eta_j) + b_j
        C   = A_j X^{-1} C_i A_j^T + C_j
        eta = A_i^T X^{-T} (eta_j - J_j b_i) + eta_i
        J   = A_i^T X^{-T} J_j A_i + J_i

    With ``with_means=False`` only ``(A, C, J)`` are carried (the Riccati part).
    """
    if with_means:
        A_i, b_i, C_i, eta_i, J_i = first
        A_j, b_j, C_j, eta_j, J_j = second
    else:
        A_i, C_i, J_i = first
        A_j, C_j, J_j = second
    state_dim = A_i.shape[-1]
    X = torch.eye(state_dim, dtype=A_i.dtype) + C_i @ J_j
    columns = [A_i, C_i]
    shape = torch.broadcast_shapes(X.shape, A_i.shape, C_i.shape)
    if with_means:
        mean_rhs = b_i + mat_vec(C_i, eta_j)
        shape = torch.broadcast_shapes(shape, mean_rhs.shape[:-1] + (state_dim, state_dim))
        columns.append(mean_rhs.unsqueeze(-1).expand(*shape[:-1], 1))
    rhs = torch.cat([col.expand(*shape[:-1], col.shape[-1]) for col in columns], -1)
    solved = torch.linalg.solve(X.expand(shape), rhs)
    XA = solved[..., :state_dim]
    XC = solved[..., state_dim : 2 * state_dim]
    A = A_j @ XA
    C = symmetrize(A_j @ XC @ _transpose(A_j) + C_j)
    J = symmetrize(_transpose(XA) @ J_j @ A_i + J_i)
    if not with_means:
        return A, C, J
    b = mat_vec(A_j, solved[..., -1]) + b_j
    eta = mat_vec(_transpose(XA), eta_j - mat_vec(J_j, b_i)) + eta_i
    return A, b, C, eta, J


def _filter_elements(y: Tensor, mask: Tensor, p: PreparedParams) -> tuple[Tensor, ...]:
    """Scan elements of all steps ``t = 0..T-1`` (time axis at -2/-3).

    Step 0 is the first update of the prior: ``A = 0, b = m_0, C = C_0,
    eta = 0, J = 0``. For ``t >= 1``, with F, Q, c of step t-1 and the
    (masked) H, R, d of step t::

        S = H Q H^T + R,  K = Q H^T S^{-1},  r = y - H c - d
        A = (I - K H) F,  b = c + K r,  C = (I - K H) Q (I - K H)^T + K R K^T
        eta = F^T H^T S^{-1} r,  J = F^T H^T S^{-1} H F
    """
    num_times = y.shape[-2]
    state_dim = p.state_dim
    m0, C0, _, info0 = update(p.m1, p.P1, y[..., 0, :], mask[..., 0, :], p.at("H", 0), p.at("R", 0), p.at("d", 0))
    raise_if_not_pd(info0.unsqueeze(-1), "innovation")
    F = _over_time(p, "F", 0, num_times - 1)
    Q = _over_time(p, "Q", 0, num_times - 1)
    c = _over_time(p, "c", 0, num_times - 1)
    H_m, R_m = masked_observation_model(
        mask[..., 1:, :], _over_time(p, "H", 1, num_times), _over_time(p, "R", 1, num_times)
    )
    d = _over_time(p, "d", 1, num_times)
    predicted_obs = 0.0
    if c is not None:
        predicted_obs = mat_vec(H_m, c)
    if d is not None:
        predicted_obs = predicted_obs + d
    if not isinstance(predicted_obs, Tensor):
        predicted_obs = torch.zeros((), dtype=y.dtype)
    residual = masked_innovation(y[..., 1:, :], mask[..., 1:, :], predicted_obs)
    QHt = Q @ _transpose(H_m)
    S = symmetrize(H_m @ QHt + R_m)
    chol, info = torch.linalg.cholesky_ex(S)
    raise_if_not_pd(info, "innovation (parallel-scan element)", time_offset=1)
    # S^{-1} [H Q | H F | r] in one triangular solve pair.
    HF = H_m @ F
    batch = torch.broadcast_shapes(S.shape[:-2], QHt.shape[:-2], HF.shape[:-2], residual.shape[:-1])
    rhs = torch.cat(
        [
            _transpose(QHt).expand(*batch, *QHt.shape[-1:], state_dim),
            HF.expand(*batch, *HF.shape[-2:]),
            residual.unsqueeze(-1).expand(*batch, residual.shape[-1], 1),
        ],
        -1,
    )
    solved = torch.cholesky_solve(rhs, chol.expand(*batch, *chol.shape[-2:]))
    gain = _transpose(solved[..., :state_dim])  # K = Q H^T S^{-1}
    Sinv_HF = solved[..., state_dim : 2 * state_dim]
    Sinv_r = solved[..., -1]
    eye = torch.eye(state_dim, dtype=y.dtype)
    IKH = eye - gain @ H_m
    A = IKH @ F
    b = mat_vec(gain, residual)
    if c is not None:
        b = b + c
    C = symmetrize(IKH @ Q @ _transpose(IKH) + gain @ R_m @ _transpose(gain))
    eta = mat_vec(_transpose(HF), Sinv_r)
    J = symmetrize(_transpose(HF) @ Sinv_HF)

    full = torch.broadcast_shapes(A.shape[:-3], C.shape[:-3], b.shape[:-2], m0.shape[:-1], C0.shape[:-2])
    zeros_mat = torch.zeros((), dtype=y.dtype).expand(*full, 1, state_dim, state_dim)
    zeros_vec = torch.zeros((), dtype=y.dtype).expand(*full, 1, state_dim)

    def with_first(first: Tensor, rest: Tensor, event_dims: int) -> Tensor:
        rest = rest.expand(*full, *rest.shape[rest.dim() - event_dims - 1 :])
        first = first.expand(*full, *first.shape[first.dim() - event_dims - 1 :])
        return torch.cat([first, rest], -event_dims - 1)

    return (
        with_first(zeros_mat, A, 2),
        with_first(m0.unsqueeze(-2), b, 1),
        with_first(C0.unsqueeze(-3), C, 2),
        with_first(zeros_vec, eta, 1),
        with_first(zeros_mat, J, 2),
    )


def _inclusive_scan(elements: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Hillis-Steele inclusive prefix scan of ``combine`` along the time axis."""
    event_dims = (2, 1, 2, 1, 2)
    num_times = elements[0].shape[-3]
    shift = 1
    while shift < num_times:
        earlier = tuple(e.narrow(e.dim() - k - 1, 0, num_times - shift) for e, k in zip(elements, event_dims))
        later = tuple(e.narrow(e.dim() - k - 1, shift, num_times - shift) for e, k in zip(elements, event_dims))
        combined = combine(earlier, later)
        elements = tuple(
            torch.cat([e.narrow(e.dim() - k - 1, 0, shift), new], -k - 1)
            for e, new, k in zip(elements, combined, event_dims)
        )
        shift *= 2
    return elements


def _log_likelihoods(
    y: Tensor, mask: Tensor, pred_means: Tensor, pred_covs: Tensor, p: PreparedParams
) -> Tensor:
    """Per-step ``log p(y_t | y_{<t})`` from predicted moments, all steps at once."""
    num_times = y.shape[-2]
    H = _over_time(p, "H", 0, num_times)
    R = _over_time(p, "R", 0, num_times)
    d = _over_time(p, "d", 0, num_times)
    H_m, R_m = masked_observation_model(mask, H, R)
    predicted_obs = mat_vec(H, pred_means)
    if d is not None:
        predicted_obs = predicted_obs + d
    v = masked_innovation(y, mask, predicted_obs)
    S = symmetrize(H_m @ pred_covs @ _transpose(H_m) + R_m)
    chol, info = torch.linalg.cholesky_ex(S)
    raise_if_not_pd(info, "innovation")
    whitened = torch.linalg.solve_triangular(chol, v.unsqueeze(-1), upper=False).squeeze(-1)
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    num_observed = mask.sum(-1).to(y.dtype)
    return -0.5 * (num_observed * LOG_2PI + log_det + whitened.pow(2).sum(-1))


def filter_parallel_scan(y: Tensor, mask: Tensor, p: PreparedParams, batch_shape: torch.Size) -> FilterResult:
    """Filter by the parallel scan; returns a ``FilterResult`` like the sequential one."""
    num_times = y.shape[-2]
    _, filt_means, filt_covs, _, _ = _inclusive_scan(_filter_elements(y, mask, p))
    F = _over_time(p, "F", 0, num_times - 1)
    Q = _over_time(p, "Q", 0, num_times - 1)
    c = _over_time(p, "c", 0, num_times - 1)
    rest_means = mat_vec(F, filt_means[..., :-1, :])
    if c is not None:
        rest_means = rest_means + c
    rest_covs = symmetrize(F @ filt_covs[..., :-1, :, :] @ _transpose(F) + Q)
    S = p.state_dim
    pred_means = torch.cat([p.m1.unsqueeze(-2).expand(*batch_shape, 1, S), rest_means.expand(*batch_shape, num_times - 1, S)], -2)
    pred_covs = torch.cat(
        [p.P1.unsqueeze(-3).expand(*batch_shape, 1, S, S), rest_covs.expand(*batch_shape, num_times - 1, S, S)], -3
    )
    log_liks = _log_likelihoods(y, mask, pred_means, pred_covs, p).expand(*batch_shape, num_times)
    return FilterResult(
        pred_means,
        pred_covs,
        filt_means.expand(*batch_shape, num_times, S),
        filt_covs.expand(*batch_shape, num_times, S, S),
        log_liks,
    )
