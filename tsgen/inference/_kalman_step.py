"""One Kalman predict/update step, batched, with missing components.

A partially observed vector is handled by *neutralising* its missing
components instead of slicing them out (slicing would give every series its
own shape): rows of H for missing components become zero, R gets an
identity block there with zero cross terms, and the innovation is set to
zero. The innovation covariance is then block diagonal,
``S = [[S_oo, 0], [0, I]]``, so the Kalman gain has exactly zero columns for
the missing components, ``log det S = log det S_oo`` and the Mahalanobis term
only sees observed components: the update and the log-likelihood equal those
of the observed sub-vector. ``torch.where`` (not multiplication) keeps NaN in
masked entries out of the results and the gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tsgen.exceptions import NumericalError

LOG_2PI = math.log(2.0 * math.pi)
# Relative change of the predicted covariance between consecutive steps below
# which the Riccati recursion counts as converged (statsmodels stops at a
# squared absolute change of 1e-19); the log-likelihood error this causes is
# orders of magnitude below 1e-8 relative.
RICCATI_TOLERANCE = 1e-11


def symmetrize(matrix: Tensor) -> Tensor:
    """``(M + M^T) / 2``: removes the round-off asymmetry that Riccati steps accumulate."""
    return 0.5 * (matrix + matrix.transpose(-1, -2))


def mat_vec(matrix: Tensor, vector: Tensor) -> Tensor:
    return (matrix @ vector.unsqueeze(-1)).squeeze(-1)


def masked_observation_model(
    mask_t: Tensor, H: Tensor, R: Tensor
) -> tuple[Tensor, Tensor]:
    """Neutralise missing components: zero rows of H, identity block in R.

    ``mask_t`` ``(*b, D)``; ``H`` ``(*p, D, S)``; ``R`` ``(*p, D, D)``.
    """
    H_m = torch.where(mask_t.unsqueeze(-1), H, torch.zeros((), dtype=H.dtype))
    both = mask_t.unsqueeze(-1) & mask_t.unsqueeze(-2)
    eye = torch.eye(R.shape[-1], dtype=R.dtype)
    R_m = torch.where(both, R, eye)
    return H_m, R_m


def masked_innovation(y_t: Tensor, mask_t: Tensor, predicted_obs: Tensor) -> Tensor:
    """``y_t - predicted_obs`` on observed components, exactly 0 elsewhere (NaN-safe)."""
    zero = torch.zeros((), dtype=predicted_obs.dtype)
    y_filled = torch.where(mask_t, y_t, zero)
    return torch.where(mask_t, y_filled - predicted_obs, zero)


def update(
    mean: Tensor,
    cov: Tensor,
    y_t: Tensor,
    mask_t: Tensor,
    H: Tensor,
    R: Tensor,
    d: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Measurement update in Joseph form.

    With ``v = y - H m - d``, ``S = H P H^T + R``, ``K = P H^T S^{-1}``::

        m_f = m + K v
        P_f = (I - K H) P (I - K H)^T + K R K^T      (stays symmetric PSD)
        log p(y | past) = -1/2 (n_obs log 2 pi + log det S + v^T S^{-1} v)

    Returns ``(m_f, P_f, log_lik, cholesky_info)``; ``cholesky_info > 0``
    flags a batch element whose ``S`` was not positive definite (the caller
    raises with the time step, so that no per-step sync is needed).
    """
    H_m, R_m = masked_observation_model(mask_t, H, R)
    predicted_obs = mat_vec(H, mean)
    if d is not None:
        predicted_obs = predicted_obs + d
    v = masked_innovation(y_t, mask_t, predicted_obs)
    PHt = cov @ H_m.transpose(-1, -2)
    S = symmetrize(H_m @ PHt + R_m)
    chol, info = torch.linalg.cholesky_ex(S)
    gain = torch.cholesky_solve(PHt.transpose(-1, -2), chol).transpose(-1, -2)
    filtered_mean = mean + mat_vec(gain, v)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype)
    IKH = eye - gain @ H_m
    filtered_cov = symmetrize(
        IKH @ cov @ IKH.transpose(-1, -2) + gain @ R_m @ gain.transpose(-1, -2)
    )
    whitened = torch.linalg.solve_triangular(chol, v.unsqueeze(-1), upper=False).squeeze(-1)
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    num_observed = mask_t.sum(-1).to(cov.dtype)
    log_lik = -0.5 * (num_observed * LOG_2PI + log_det + whitened.pow(2).sum(-1))
    return filtered_mean, filtered_cov, log_lik, info


def predict(mean: Tensor, cov: Tensor, F: Tensor, Q: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
    """Time update: ``m' = F m + c``, ``P' = F P F^T + Q``."""
    next_mean = mat_vec(F, mean)
    if c is not None:
        next_mean = next_mean + c
    next_cov = symmetrize(F @ cov @ F.transpose(-1, -2) + Q)
    return next_mean, next_cov


def raise_if_not_pd(info: Tensor, what: str, time_offset: int = 0, time_dim: int = -1) -> None:
    """Raise ``NumericalError`` (a ``ValueError``) naming the first time step whose
    ``what`` covariance failed to factorise. ``info`` has a time axis at ``time_dim``."""
    bad = info > 0
    if not bool(bad.any()):
        return
    failing_times = bad.movedim(time_dim, -1).reshape(-1, bad.shape[time_dim]).any(0)
    t = int(torch.nonzero(failing_times)[0, 0]) + time_offset
    raise NumericalError(
        f"{what} covariance not positive definite at time index t={t} (0-based; "
        f"first observation is t=0). Check that the observation/transition/initial "
        f"covariances are symmetric positive (semi-)definite and that the data scale is sane."
    )
