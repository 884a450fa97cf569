r"""ARIMA on the model protocol, for sequential Monte Carlo checks against its exact Kalman likelihood.

The Kalman route's state space (:mod:`._arima_statespace`) observes
``eta_t`` without noise and drives its state by one shock through a rank-one
covariance: a particle filter's weights ``g(eta_t | x_t)`` would be point
masses there. The same model in its innovations (single source of error)
form has a proper observation density. With ``x_t = (eta_{t-1}, ...,
eta_{t-n}, a_t)``, ``a_t = T alpha_{t-1}`` the ARMA state before the shock
``eps_t`` (``alpha_t = a_t + R eps_t``; ``Z R = 1``), and ``F, H`` the Kalman
route's matrices::

    eta_t   = H x_t + eps_t,                 eps_t ~ N(0, sigma2)
    x_{t+1} = F x_t + G eps_t,               G = (1, 0, ..., 0, T R)   (the 1 only when n > 0)

Given an observed ``eta_t`` the shock is known, ``eps_t = eta_t - H x_t``,
so the step to ``x_{t+1}`` is deterministic: ``(F - G H) x_t + G eta_t``;
after a missing ``eta_t`` it is ``F x_t`` plus the shock's noise
``sigma2 G G'``. These are time-varying transitions of a linear-Gaussian
model, and :class:`tsgen.models._lds_protocol.LinearGaussianModule` runs
them (a bootstrap filter: its transitions are sampled, never evaluated).
The lags start at the first ``n = d + sD`` values, as in the Kalman route,
and ``a`` at its stationary law ``T P T'``, so the filter estimates the
same likelihood (statsmodels' ``llf``): unbiasedly for ``p(y)``, with its
one-step densities ``log p_hat(y_t | y_<t)``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tsgen.inference._kalman_params import KalmanParams
from tsgen.models._arima_fit import check_initial_observed, regressors
from tsgen.models._arima_spec import ArimaSpec
from tsgen.models._arima_statespace import ArmaMatrices, kalman_params

__all__ = ["innovations_params", "smc_log_likelihoods"]

_VARYING = frozenset({"transition_matrices", "transition_offsets", "transition_covariance"})


def innovations_params(spec: ArimaSpec, params: Tensor, eta: Tensor) -> KalmanParams:
    """The innovations form (module docstring) for constrained ``params`` ``(B, k)`` and ``eta = y - X beta``
    ``(B, T)`` (NaN = missing): transitions per step ``(B, T - n, ...)`` for the filtered part ``eta[:, n:]``."""
    n = spec.n_integration
    kp = kalman_params(spec, params, eta[:, :n].flip(-1))
    arma = ArmaMatrices(spec, params)
    T, R = arma.transition()
    sigma2 = arma.sigma2[:, None, None]
    F, H = kp.transition_matrices, kp.observation_matrices  # (B, S, S), (B, 1, S)
    G = torch.zeros_like(kp.initial_state_mean)  # (B, S)
    if n:
        G[:, 0] = 1.0
    G[:, n:] = (T @ R.unsqueeze(-1)).squeeze(-1)
    P1 = kp.initial_state_covariance.clone()
    a_cov = T @ P1[:, n:, n:] @ T.transpose(-1, -2)
    P1[:, n:, n:] = 0.5 * (a_cov + a_cov.transpose(-1, -2))

    filtered = eta[:, n:]
    observed = torch.isfinite(filtered)[..., None, None]  # (B, L, 1, 1)
    F_known = F - G.unsqueeze(-1) * H  # the shock read off an observed eta_t
    transition = torch.where(observed, F_known.unsqueeze(1), F.unsqueeze(1))
    offsets = G.unsqueeze(1) * torch.nan_to_num(filtered, nan=0.0).unsqueeze(-1)  # (B, L, S); 0 where missing
    shock = sigma2 * G.unsqueeze(-1) * G.unsqueeze(-2)
    covariance = torch.where(observed, torch.zeros_like(shock).unsqueeze(1), shock.unsqueeze(1))
    return KalmanParams(
        transition_matrices=transition,
        observation_matrices=H,
        transition_covariance=covariance,
        observation_covariance=sigma2.clone(),
        initial_state_mean=kp.initial_state_mean,
        initial_state_covariance=P1,
        transition_offsets=offsets,
        time_varying=_VARYING,
    )


def smc_log_likelihoods(spec: ArimaSpec, params: Tensor, y: Tensor, covariates: Tensor | None,
                        n_particles: int, resampling: str = "systematic") -> Tensor:
    """One-step log densities ``(B, T)`` of ``y`` ``(B, T)`` by a bootstrap particle filter on the innovations
    form (0 at the first ``d + sD`` steps and at missing ones). Randomness from torch's global RNG."""
    from tsgen.inference.smc.filter import particle_filter
    from tsgen.models._lds_protocol import LinearGaussianModule

    check_initial_observed(spec, y)
    n = spec.n_integration
    if spec.n_regressors:
        X = regressors(spec, y.shape[1], covariates, y.shape[0])
        y = y - (X @ params[:, spec.blocks["beta"]].unsqueeze(-1)).squeeze(-1)
    module = LinearGaussianModule(innovations_params(spec, params, y))
    values = y[:, n:].unsqueeze(-1)
    out = y.new_zeros(y.shape)
    out[:, n:] = particle_filter(module, values, torch.isfinite(values), n_particles=n_particles,
                                 resampling=resampling).step_log_likelihood
    return out
