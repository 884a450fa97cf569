"""Exact inference in linear-Gaussian state-space models (Kalman filter,
RTS smoother, forecasts, sampling), as pure batched torch functions.

Model (statsmodels / pykalman convention)::

    x_1     ~ N(m_1, P_1)                        initial_state_mean/covariance
    y_t     = H_t x_t + d_t + v_t,   v_t ~ N(0, R_t)
    x_{t+1} = F_t x_t + c_t + w_t,   w_t ~ N(0, Q_t)

Filter (``a_t, P_t`` predicted, ``m_t, C_t`` filtered)::

    v_t = y_t - H_t a_t - d_t,     S_t = H_t P_t H_t^T + R_t,   K_t = P_t H_t^T S_t^{-1}
    m_t = a_t + K_t v_t,           C_t = (I - K_t H_t) P_t (I - K_t H_t)^T + K_t R_t K_t^T
    a_{t+1} = F_t m_t + c_t,       P_{t+1} = F_t C_t F_t^T + Q_t
    log p(y_t | y_{<t}) = -1/2 (n_t log 2 pi + log det S_t + v_t^T S_t^{-1} v_t)

RTS smoother, with ``G_t = C_t F_t^T P_{t+1}^{-1}``::

    E[x_t | y_{1:T}]   = m_t + G_t (E[x_{t+1} | y_{1:T}] - a_{t+1})
    Cov[x_t | y_{1:T}] = C_t + G_t (Cov[x_{t+1} | y_{1:T}] - P_{t+1}) G_t^T
    Cov[x_{t+1}, x_t | y_{1:T}] = Cov[x_{t+1} | y_{1:T}] G_t^T

Missing values: ``mask`` is True where observed (default ``~isnan(y)``); a
step updates on its observed components only and a fully missing step has
log-likelihood exactly 0. All functions broadcast the parameters' batch
dimensions against those of ``y`` and are differentiable.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tsgen._validation import is_int
from tsgen.exceptions import NumericalError
from tsgen.inference._kalman_params import (
    KalmanParams,
    event_shapes,
    PreparedParams,
    prepare_observations,
    prepare_params,
)
from tsgen.inference._kalman_results import (
    FilterResult,
    ForecastResult,
    KalmanState,
    MarginalForecast,
    SampleResult,
    SmootherResult,
    StepResult,
)
from tsgen.inference import _kalman_numpy
from tsgen.inference._kalman_scan import filter_parallel_scan
from tsgen.inference._kalman_steady import steady_state_log_likelihood
from tsgen.inference._kalman_step import (
    mat_vec,
    predict,
    raise_if_not_pd,
    symmetrize,
    update,
)

__all__ = [
    "KalmanParams",
    "event_shapes",
    "KalmanState",
    "FilterResult",
    "SmootherResult",
    "ForecastResult",
    "StepResult",
    "SampleResult",
    "kalman_filter",
    "kalman_smoother",
    "kalman_log_likelihood",
    "kalman_forecast",
    "kalman_filter_last",
    "kalman_forecast_marginals",
    "MarginalForecast",
    "kalman_step",
    "kalman_sample",
]

LOG_LIKELIHOOD_METHODS = ("auto", "sequential", "scan", "steady_state")


def _expand_batch(tensor: Tensor, batch_shape: torch.Size, event_dims: int) -> Tensor:
    return tensor.expand(*batch_shape, *tensor.shape[tensor.dim() - event_dims:])


def _filter_sequential(y: Tensor, mask: Tensor, p: PreparedParams, batch_shape: torch.Size) -> FilterResult:
    """The textbook recursion, one Python iteration per time step."""
    num_times = y.shape[-2]
    mean, cov = p.m1, p.P1
    pred_means, pred_covs, filt_means, filt_covs, log_liks, infos = [], [], [], [], [], []
    for t in range(num_times):
        pred_means.append(_expand_batch(mean, batch_shape, 1))
        pred_covs.append(_expand_batch(cov, batch_shape, 2))
        mean, cov, log_lik, info = update(
            mean, cov, y[..., t, :], mask[..., t, :], p.at("H", t), p.at("R", t), p.at("d", t)
        )
        filt_means.append(_expand_batch(mean, batch_shape, 1))
        filt_covs.append(_expand_batch(cov, batch_shape, 2))
        log_liks.append(log_lik.expand(batch_shape))
        infos.append(info.expand(batch_shape))
        if t + 1 < num_times:
            mean, cov = predict(mean, cov, p.at("F", t), p.at("Q", t), p.at("c", t))
    raise_if_not_pd(torch.stack(infos, -1), "innovation")
    return FilterResult(
        torch.stack(pred_means, -2),
        torch.stack(pred_covs, -3),
        torch.stack(filt_means, -2),
        torch.stack(filt_covs, -3),
        torch.stack(log_liks, -1),
    )


def kalman_filter(
    y: Tensor, mask: Tensor | None, params: KalmanParams, method: str = "sequential"
) -> FilterResult:
    """Kalman filter with exact handling of missing components.

    Parameters
    ----------
    y : Tensor ``(*b, T, D)``
        Observations; entries where ``mask`` is False may hold anything (NaN).
    mask : Tensor ``(*b, T, D)`` bool or None
        True where observed; None means ``~isnan(y)``.
    params : KalmanParams
        Model matrices; their batch dims broadcast against ``y``'s.
    method : {"sequential", "scan"}
        ``"sequential"`` runs the recursion step by step; ``"scan"`` runs the
        temporally parallel filter of Sarkka & Garcia-Fernandez (2021),
        vectorised over time (same results up to round-off).

    Returns
    -------
    FilterResult
        Predicted and filtered moments ``(*b, T, S)``/``(*b, T, S, S)`` and the
        per-step log-likelihoods ``(*b, T)``.

    Raises
    ------
    NumericalError (a ValueError)
        If an innovation covariance is not positive definite; names the step.
    """
    p = prepare_params(params)
    y, mask, batch_shape = prepare_observations(y, mask, p)
    if method == "sequential":
        return _filter_sequential(y, mask, p, batch_shape)
    if method == "scan":
        return filter_parallel_scan(y, mask, p, batch_shape)
    raise ValueError(f"`method` must be 'sequential' or 'scan'; got {method!r}.")


def kalman_log_likelihood(
    y: Tensor, mask: Tensor | None, params: KalmanParams, method: str = "auto", per_step: bool = False
) -> Tensor:
    """Total log-likelihood ``log p(y_{1:T})`` ``(*b,)``, by the fastest exact route;
    with ``per_step``, the one-step predictive terms ``log p(y_t | y_{<t})``
    ``(*b, T)`` instead (0 where nothing is observed), by the same routes.

    ``method``:

    - ``"steady_state"``: time-invariant params and no missing values. The
      covariance (Riccati) recursion does not depend on ``y``: it runs once
      per distinct parameter set, by doubling, until it converges (relative
      change below 1e-11, as statsmodels does), after which the steady-state
      gain is reused; the mean recursion ``a_{t+1} = F (I - K_t H) a_t +
      F K_t (y_t - d) + c`` is an affine recurrence solved by a chunked scan.
      When no input requires grad and observations are scalar (float64), it
      runs in numpy instead (``_kalman_numpy``: sequential Riccati with early
      exit, steady part as blocked Toeplitz products), same results to rounding.
    - ``"scan"``: the temporally parallel filter (any params, missing data).
    - ``"sequential"``: the step-by-step filter.
    - ``"auto"``: ``"steady_state"`` when it applies, else ``"scan"`` (falling
      back to ``"sequential"`` when the scan's elements are singular).
    """
    if method not in LOG_LIKELIHOOD_METHODS:
        raise ValueError(f"`method` must be one of {LOG_LIKELIHOOD_METHODS}; got {method!r}.")

    def reduce(per: Tensor) -> Tensor:
        return per if per_step else per.sum(-1)

    p = prepare_params(params)
    if method in ("auto", "steady_state") and not p.time_varying and _surely_fully_observed(y, mask):
        # Skip building and reducing a NaN mask over all of y (two passes).
        observed, _, batch_shape = prepare_observations(
            y, torch.ones((), dtype=torch.bool).expand(y.shape), p
        )
        found = steady_state_log_likelihood(observed, p, batch_shape, per_step)
        if found is not None:
            return found
    y, mask, batch_shape = prepare_observations(y, mask, p)
    if method == "auto":
        if not p.time_varying and bool(mask.all()):
            method = "steady_state"
        else:
            try:
                return reduce(filter_parallel_scan(y, mask, p, batch_shape).log_likelihoods)
            except NumericalError:
                # The scan's elements need H Q H^T + R positive definite, which a
                # valid model (e.g. R = 0 with a singular Q) may violate; the
                # sequential filter decides (and names the step if truly non-PD).
                method = "sequential"
    if method == "sequential":
        return reduce(_filter_sequential(y, mask, p, batch_shape).log_likelihoods)
    if method == "scan":
        return reduce(filter_parallel_scan(y, mask, p, batch_shape).log_likelihoods)
    if p.time_varying:
        raise ValueError("method='steady_state' needs time-invariant `params`; use 'scan'.")
    if not bool(mask.all()):
        raise ValueError("method='steady_state' needs fully observed `y`; use 'scan'.")
    found = steady_state_log_likelihood(y, p, batch_shape, per_step)
    if found is None:  # no per-step steady schedule for many parameter sets in torch
        return reduce(filter_parallel_scan(y, mask, p, batch_shape).log_likelihoods)
    return found


def _surely_fully_observed(y: object, mask: Tensor | None) -> bool:
    """True when ``mask`` is None and ``y`` holds no NaN, decided by one
    reduction (a finite sum has no NaN; an overflowing or infinite sum
    answers False and leaves the decision to the full mask)."""
    if mask is not None or not isinstance(y, Tensor) or not y.is_floating_point() or y.dim() < 2:
        return False
    with torch.no_grad():
        return bool(torch.isfinite(y.sum()))


def _smoother_gains(filtered: FilterResult, p: PreparedParams) -> Tensor:
    """``G_t = C_t F_t^T P_{t+1}^{-1}`` for all t < T-1 at once ``(*b, T-1, S, S)``."""
    num_times = filtered.filtered_means.shape[-2]
    F = p.F[..., : num_times - 1, :, :] if p.is_time_varying("F") else p.F.unsqueeze(-3)
    rhs = F @ filtered.filtered_covariances[..., :-1, :, :]  # F_t C_t = (G_t P_{t+1})^T
    next_pred = filtered.predicted_covariances[..., 1:, :, :]
    chol, info = torch.linalg.cholesky_ex(next_pred)
    if bool((info > 0).any()):
        # Singular predicted covariance (e.g. ARIMA states that are exact
        # functions of others): the pseudo-inverse gives the minimum-norm gain,
        # which still yields the exact smoothed moments.
        gains_t = torch.linalg.pinv(next_pred, hermitian=True) @ rhs
    else:
        gains_t = torch.cholesky_solve(rhs, chol)
    return gains_t.transpose(-1, -2)


def kalman_smoother(
    y: Tensor,
    mask: Tensor | None,
    params: KalmanParams,
    filtered: FilterResult | None = None,
) -> SmootherResult:
    """Rauch-Tung-Striebel smoother (see the module docstring for the equations).

    Returns smoothed means ``(*b, T, S)``, covariances ``(*b, T, S, S)``, the
    lag-one cross covariances ``Cov(x_{t+1}, x_t | y_{1:T})`` ``(*b, T-1, S, S)``
    (used by EM) and the filter result (computed here unless ``filtered`` is given).
    """
    p = prepare_params(params)
    if filtered is None:
        y, mask, batch_shape = prepare_observations(y, mask, p)
        filtered = _filter_sequential(y, mask, p, batch_shape)
    elif not isinstance(filtered, FilterResult):
        raise TypeError(f"`filtered` must be a FilterResult or None; got {type(filtered).__name__}.")
    num_times = filtered.filtered_means.shape[-2]
    mean = filtered.filtered_means[..., -1, :]
    cov = filtered.filtered_covariances[..., -1, :, :]
    means, covs, cross = [mean], [cov], []
    if num_times > 1:
        gains = _smoother_gains(filtered, p)
        for t in range(num_times - 2, -1, -1):
            gain = gains[..., t, :, :]
            cross.append(cov @ gain.transpose(-1, -2))
            mean = filtered.filtered_means[..., t, :] + mat_vec(
                gain, mean - filtered.predicted_means[..., t + 1, :]
            )
            cov = symmetrize(
                filtered.filtered_covariances[..., t, :, :]
                + gain @ (cov - filtered.predicted_covariances[..., t + 1, :, :]) @ gain.transpose(-1, -2)
            )
            means.append(mean)
            covs.append(cov)
    state_dim = mean.shape[-1]
    cross_stack = (
        torch.stack(cross[::-1], -3)
        if cross
        else mean.new_zeros(*mean.shape[:-1], 0, state_dim, state_dim)
    )
    return SmootherResult(
        torch.stack(means[::-1], -2), torch.stack(covs[::-1], -3), cross_stack, filtered
    )


def kalman_forecast(
    filtered: FilterResult,
    params: KalmanParams,
    horizon: int,
    future_params: KalmanParams | None = None,
) -> ForecastResult:
    """h-step-ahead predictive moments from the last filtered state.

    ``x_{T+k} | y_{1:T} ~ N(s_k, V_k)`` with ``s_1 = F m_T + c``,
    ``V_1 = F C_T F^T + Q``, ``s_{k+1} = F s_k + c``, ``V_{k+1} = F V_k F^T + Q``,
    and ``y_{T+k} | y_{1:T} ~ N(H s_k + d, H V_k H^T + R)``.

    For time-varying ``params`` pass ``future_params`` whose time-varying fields
    have a time axis of length ``horizon``: index ``k-1`` holds the F, Q, c that
    move the state from ``T+k-1`` to ``T+k`` and the H, R, d of ``y_{T+k}``.
    """
    if not is_int(horizon) or horizon < 1:
        raise ValueError(f"`horizon` must be a positive int; got {horizon!r}.")
    if not isinstance(filtered, FilterResult):
        raise TypeError(f"`filtered` must be a FilterResult; got {type(filtered).__name__}.")
    p = prepare_params(future_params if future_params is not None else params)
    if p.time_varying:
        if future_params is None:
            raise ValueError(
                "time-varying `params` need `future_params` holding the matrices of the "
                "forecast horizon."
            )
        if p.num_times < horizon:
            raise ValueError(
                f"`future_params` cover {p.num_times} steps; `horizon` is {horizon}."
            )
    dtype = p.F.dtype
    mean = filtered.filtered_means[..., -1, :].to(dtype)
    cov = filtered.filtered_covariances[..., -1, :, :].to(dtype)
    state_means, state_covs, obs_means, obs_covs = [], [], [], []
    for k in range(horizon):
        mean, cov = predict(mean, cov, p.at("F", k), p.at("Q", k), p.at("c", k))
        H, R, d = p.at("H", k), p.at("R", k), p.at("d", k)
        obs_mean = mat_vec(H, mean) if d is None else mat_vec(H, mean) + d
        obs_cov = symmetrize(H @ cov @ H.transpose(-1, -2) + R)
        state_means.append(mean)
        state_covs.append(cov)
        obs_means.append(obs_mean)
        obs_covs.append(obs_cov)
    batch_shape = torch.broadcast_shapes(mean.shape[:-1], obs_mean.shape[:-1])
    return ForecastResult(
        torch.stack([_expand_batch(m, batch_shape, 1) for m in state_means], -2),
        torch.stack([_expand_batch(m, batch_shape, 2) for m in state_covs], -3),
        torch.stack([_expand_batch(m, batch_shape, 1) for m in obs_means], -2),
        torch.stack([_expand_batch(m, batch_shape, 2) for m in obs_covs], -3),
    )


def kalman_step(
    state: KalmanState | None,
    y_t: Tensor,
    mask_t: Tensor | None,
    params: KalmanParams,
    t: int = 0,
) -> StepResult:
    """One streaming step: update on ``y_t`` ``(*b, D)``, then predict ``t+1``.

    ``state`` holds the predictive moments of ``x_t`` (``None`` = the initial
    state, for the first observation). ``t`` (0-based) selects the matrices
    of time-varying ``params``. Chaining ``kalman_step`` over ``t`` reproduces
    ``kalman_filter``.
    """
    p = prepare_params(params)
    if state is None:
        state = KalmanState(p.m1, p.P1)
    elif not isinstance(state, KalmanState):
        raise TypeError(f"`state` must be a KalmanState or None; got {type(state).__name__}.")
    if not isinstance(y_t, Tensor) or y_t.dim() < 1 or y_t.shape[-1] != p.obs_dim:
        raise ValueError(f"`y_t` must be a tensor of shape (*batch, {p.obs_dim}).")
    y_t = y_t.to(p.F.dtype)
    if mask_t is None:
        mask_t = ~torch.isnan(y_t)
    elif not isinstance(mask_t, Tensor) or mask_t.dtype != torch.bool:
        raise TypeError("`mask_t` must be a bool tensor shaped like `y_t` or None.")
    if p.time_varying and not (0 <= t < p.num_times):
        raise ValueError(f"`t` must index the time axis of `params` (0..{p.num_times - 1}); got {t}.")
    mean, cov, log_lik, info = update(
        state.mean.to(p.F.dtype), state.covariance.to(p.F.dtype), y_t, mask_t,
        p.at("H", t), p.at("R", t), p.at("d", t),
    )
    raise_if_not_pd(info.unsqueeze(-1), "innovation", time_offset=t)
    next_mean, next_cov = predict(mean, cov, p.at("F", t), p.at("Q", t), p.at("c", t))
    return StepResult(KalmanState(mean, cov), KalmanState(next_mean, next_cov), log_lik)


def _psd_sqrt(cov: Tensor) -> Tensor:
    """A factor ``L`` with ``L L^T = cov`` that also works for singular PSD ``cov``."""
    chol, info = torch.linalg.cholesky_ex(cov)
    if not bool((info > 0).any()):
        return chol
    eigvals, eigvecs = torch.linalg.eigh(symmetrize(cov))
    return eigvecs * eigvals.clamp_min(0.0).sqrt().unsqueeze(-2)


def kalman_sample(
    params: KalmanParams,
    num_steps: int,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> SampleResult:
    """Draw ``n_samples`` joint trajectories of states and observations.

    Returns states ``(n_samples, *batch, T, S)`` and observations
    ``(n_samples, *batch, T, D)`` with ``batch`` the parameters' batch shape.
    Singular (PSD) covariances are allowed.
    """
    if not is_int(num_steps) or num_steps < 1:
        raise ValueError(f"`num_steps` must be a positive int; got {num_steps!r}.")
    if not is_int(n_samples) or n_samples < 1:
        raise ValueError(f"`n_samples` must be a positive int; got {n_samples!r}.")
    p = prepare_params(params)
    if p.time_varying and p.num_times < num_steps:
        raise ValueError(f"time-varying `params` cover {p.num_times} steps; `num_steps` is {num_steps}.")
    shape = (n_samples, *p.batch_shape)
    dtype = p.F.dtype

    def noise(size: int) -> Tensor:
        return torch.randn(*shape, size, dtype=dtype, generator=generator)

    state = p.m1 + mat_vec(_psd_sqrt(p.P1), noise(p.state_dim))
    states, observations = [], []
    for t in range(num_steps):
        obs = mat_vec(p.at("H", t), state) + mat_vec(_psd_sqrt(p.at("R", t)), noise(p.obs_dim))
        d = p.at("d", t)
        if d is not None:
            obs = obs + d
        states.append(state)
        observations.append(obs)
        if t + 1 < num_steps:
            nxt = mat_vec(p.at("F", t), state) + mat_vec(_psd_sqrt(p.at("Q", t)), noise(p.state_dim))
            c = p.at("c", t)
            state = nxt if c is None else nxt + c
    return SampleResult(torch.stack(states, -2), torch.stack(observations, -2))


def kalman_filter_last(
    y: Tensor, mask: Tensor | None, params: KalmanParams, lengths: Tensor | None = None
) -> KalmanState:
    """Filtered moments of the state at each series' last step, ``x_{T_i} | y_{1:T_i}``.

    Like the last step of :func:`kalman_filter`, without keeping any per-step
    result (memory does not grow with T). ``lengths`` ``(*b,)`` gives each
    series' own number of steps (series padded at the end); default: all T.
    Returns a :class:`KalmanState` with means ``(*b, S)`` and covariances
    ``(*b, S, S)``. Not differentiable when the fast route runs (time-invariant
    params, one parameter set, scalar observations, fully observed up to each
    length, float64): the covariance recursion then runs once, until it
    converges, and only the means run per series.
    """
    p = prepare_params(params)
    y, mask, batch_shape = prepare_observations(y, mask, p)
    num_times = y.shape[-2]
    if lengths is None:
        last = torch.full(batch_shape, num_times - 1, dtype=torch.long)
    else:
        last = torch.as_tensor(lengths, dtype=torch.long).expand(batch_shape) - 1
        if bool((last < 0).any()) or bool((last >= num_times).any()):
            raise ValueError(f"`lengths` must lie in 1..{num_times} (the time axis of `y`).")
    inside = torch.arange(num_times) <= last.unsqueeze(-1)  # (*b, T)
    if (
        not p.time_varying
        and _kalman_numpy.applies(y, p)
        and bool((mask | ~inside.unsqueeze(-1)).all())
    ):
        flat = torch.where(inside.unsqueeze(-1), y, torch.zeros((), dtype=y.dtype))
        flat = flat.expand(*batch_shape, num_times, 1).reshape(-1, num_times, 1)
        found = _kalman_numpy.filtered_last_numpy(flat, p, last.reshape(-1).numpy())
        if found is not None:
            means, covs = (torch.from_numpy(x) for x in found)
            return KalmanState(means.reshape(*batch_shape, -1), covs.reshape(*batch_shape, *covs.shape[-2:]))
    mean, cov = p.m1, p.P1
    out_mean = out_cov = None
    infos = []
    for t in range(int(last.max()) + 1):
        observed = mask[..., t, :] & inside[..., t : t + 1]
        mean, cov, _, info = update(mean, cov, y[..., t, :], observed, p.at("H", t), p.at("R", t), p.at("d", t))
        infos.append(info.expand(batch_shape))
        hit = last == t
        mean_b, cov_b = _expand_batch(mean, batch_shape, 1), _expand_batch(cov, batch_shape, 2)
        out_mean = mean_b if out_mean is None else torch.where(hit.unsqueeze(-1), mean_b, out_mean)
        out_cov = cov_b if out_cov is None else torch.where(hit[..., None, None], cov_b, out_cov)
        mean, cov = predict(mean, cov, p.at("F", t), p.at("Q", t), p.at("c", t))
    raise_if_not_pd(torch.stack(infos, -1), "innovation")
    return KalmanState(out_mean, out_cov)


def kalman_forecast_marginals(state: KalmanState, params: KalmanParams, horizon: int) -> MarginalForecast:
    """Predictive means and variances of ``y_{T+1..T+h}`` ``(*b, h, D)`` from the
    filtered moments of ``x_T`` (e.g. :func:`kalman_filter_last`), for
    time-invariant ``params`` (one set, or one per series).

    The marginals of :func:`kalman_forecast` without its per-step state and
    observation covariances: memory is the output plus a few matrices, so long
    horizons fit. Runs in float64 numpy (no gradient).
    """
    if not is_int(horizon) or horizon < 1:
        raise ValueError(f"`horizon` must be a positive int; got {horizon!r}.")
    if not isinstance(state, KalmanState):
        raise TypeError(f"`state` must be a KalmanState; got {type(state).__name__}.")
    p = prepare_params(params, dtype=torch.float64)
    if p.time_varying:
        raise ValueError("`params` must be time-invariant; use `kalman_forecast` with `future_params`.")
    S, D = p.state_dim, p.obs_dim
    batch_shape = torch.broadcast_shapes(state.mean.shape[:-1], p.batch_shape)
    B = batch_shape.numel()
    G = p.batch_shape.numel()

    def sets(x: Tensor, event: tuple[int, ...]) -> np.ndarray:
        if G == 1:
            return x.detach().reshape(1, *event).numpy()
        return x.detach().expand(*batch_shape, *event).reshape(B, *event).numpy()

    mean = state.mean.detach().to(torch.float64).expand(*batch_shape, S).reshape(B, S).numpy()
    cov = state.covariance.detach().to(torch.float64).expand(*batch_shape, S, S).reshape(B, S, S).numpy()
    means, variances = _kalman_numpy.forecast_marginals_numpy(
        mean, cov, sets(p.F, (S, S)), sets(p.H, (D, S)), sets(p.Q, (S, S)), sets(p.R, (D, D)),
        None if p.c is None else sets(p.c, (S,)), None if p.d is None else sets(p.d, (D,)), horizon,
    )
    return MarginalForecast(
        torch.from_numpy(means).reshape(*batch_shape, horizon, D),
        torch.from_numpy(variances).reshape(*batch_shape, horizon, D),
    )
