r"""Maximum-likelihood estimation of the linear Gaussian state-space model.

The model (pykalman / statsmodels convention, as in :mod:`tsgen.inference.kalman`)::

    x_1     ~ N(mu_0, P_0)
    y_t     = H x_t + d + v_t,        v_t ~ N(0, R)
    x_{t+1} = F x_t + c + w_t,        w_t ~ N(0, Q)

with ``B`` independent sequences ``y^{(b)}_{1:T}`` that share one parameter set.
Two estimators are offered:

* :func:`fit_em` -- expectation-maximisation (Shumway & Stoffer, 1982). The
  E-step is the RTS smoother; the M-step is closed form. Every iteration
  provably does not decrease the log-likelihood.
* :func:`fit_mle` -- direct maximisation of the exact Kalman log-likelihood by
  L-BFGS on an unconstrained parametrisation (covariances through Cholesky
  factors with a softplus diagonal).

EM sufficient statistics
------------------------
With smoothed moments ``m_t = E[x_t | Y]``, ``P_t = Cov(x_t | Y)`` and
``C_t = Cov(x_{t+1}, x_t | Y)`` write ``E[x_t x_t'] = P_t + m_t m_t'`` and
``E[x_{t+1} x_t'] = C_t + m_{t+1} m_t'``. Summing over sequences and over the
transitions ``t -> t+1`` (weights ``u_t``)::

    n_1 = sum u_t, S_00 = sum u_t E[x_t x_t'], S_11 = sum u_t E[x_{t+1} x_{t+1}'],
    S_10 = sum u_t E[x_{t+1} x_t'], s_0 = sum u_t m_t, s_1 = sum u_t m_{t+1}

the M-step for the transition block maximises
``-1/2 sum u_t (log|Q| + tr Q^{-1} E[(x_{t+1} - F x_t - c)(.)'])``:

    [F c] = [S_10 s_1] [[S_00, s_0], [s_0', n_1]]^{-1}         (both learned)
    F     = (S_10 - c s_0') S_00^{-1}                            (c fixed)
    c     = (s_1 - F s_0) / n_1                                  (F fixed)
    Q     = (S_11 - S_10 F' - F S_10' + F S_00 F' - s_1 c' - c s_1'
             + F s_0 c' + c s_0' F' + n_1 c c') / n_1

and the observation block has the same form with ``(y_t, x_t)`` in place of
``(x_{t+1}, x_t)`` and ``(H, d, R)`` in place of ``(F, c, Q)``. Because all
rows of ``H`` share the same regressors, the least-squares ``H, d`` are the
maximisers whatever ``R`` is, so fixed and learned parameters combine freely.
The initial block gives ``mu_0 = mean_b m_1`` and
``P_0 = mean_b [P_1 + (m_1 - mu_0)(m_1 - mu_0)']``.

Missing values (Shumway & Stoffer, *Time Series Analysis and Its
Applications*, 2017, section 6.4): the missing components ``y_M`` of a partly
observed vector are treated as latent too. Under the current parameters,
given ``x_t`` and the observed part ``y_O``::

    y_M | x_t, y_O ~ N(H_M x_t + d_M + K (y_O - H_O x_t - d_O), R_MM - K R_OM),
    K = R_MO R_OO^{-1}

so ``y_t = G x_t + g + e`` with ``e`` independent of ``x_t``, which gives
``E[y_t | Y]``, ``E[y_t y_t' | Y]`` and ``E[y_t x_t' | Y]`` in closed form. A
step with no observed component is left out of the observation block (its
``y_t`` integrates out of the complete-data likelihood exactly), and the
transitions after the last observed step of a sequence -- the padding of
ragged sequences -- are left out of the transition block for the same reason.
Both choices keep EM exact while not slowing it down with invented data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from tsgen._validation import is_int
from tsgen.exceptions import ConvergenceWarning, NumericalError
from tsgen.inference.kalman import (
    KalmanParams,
    event_shapes,
    kalman_filter,
    kalman_log_likelihood,
    kalman_smoother,
)

__all__ = [
    "EM_VARIABLES",
    "EMResult",
    "MLEResult",
    "em_step",
    "fit_em",
    "fit_mle",
]

EM_VARIABLES: tuple[str, ...] = (
    "transition_matrices",
    "observation_matrices",
    "transition_covariance",
    "observation_covariance",
    "initial_state_mean",
    "initial_state_covariance",
    "transition_offsets",
    "observation_offsets",
)
_COVARIANCES = frozenset(
    {"transition_covariance", "observation_covariance", "initial_state_covariance"}
)
# A covariance whose smallest eigenvalue falls below this fraction of its
# largest is lifted to it, so that the next E-step can factorise it.
_RELATIVE_EIGENVALUE_FLOOR = 1e-12


class EMResult(NamedTuple):
    """Outcome of :func:`fit_em`.

    Attributes
    ----------
    params : KalmanParams
        The fitted parameters: those of the highest log-likelihood, which is
        the last iterate unless numerical trouble made the log-likelihood
        decrease (exact EM never decreases it; the fit then stops).
    log_likelihoods : list of float
        ``log_likelihoods[k]`` is the total log-likelihood after ``k`` M-steps.
        Length ``n_iter + 1``.
    n_iter : int
        Number of M-steps applied.
    converged : bool
        Whether the relative change of the log-likelihood fell below ``tol``.
    best_iteration : int
        The ``k`` whose parameters are returned (``n_iter`` unless the
        log-likelihood decreased).
    """

    params: KalmanParams
    log_likelihoods: list[float]
    n_iter: int
    converged: bool
    best_iteration: int = -1


class MLEResult(NamedTuple):
    """Outcome of :func:`fit_mle`.

    Attributes
    ----------
    params : KalmanParams
        The fitted parameters.
    log_likelihoods : list of float
        Total log-likelihood at the start and after each L-BFGS iteration;
        the last entry is that of ``params``. Length ``n_iter + 1``.
    n_iter : int
        Number of L-BFGS iterations.
    converged : bool
        Whether the relative change of the log-likelihood fell below ``tol``
        or the gradient vanished.
    """

    params: KalmanParams
    log_likelihoods: list[float]
    n_iter: int
    converged: bool


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _resolve_variables(variables: str | Iterable[str], name: str) -> frozenset[str]:
    if isinstance(variables, str):
        if variables == "all":
            return frozenset(EM_VARIABLES)
        variables = [variables]
    try:
        chosen = frozenset(variables)
    except TypeError:
        raise TypeError(
            f"`{name}` must be 'all' or an iterable of parameter names; "
            f"got {type(variables).__name__}."
        ) from None
    unknown = sorted(v for v in chosen if v not in EM_VARIABLES)
    if unknown:
        raise ValueError(
            f"`{name}` must be 'all' or a subset of {list(EM_VARIABLES)}; "
            f"got unknown name(s) {unknown}."
        )
    return chosen


def _check_filter_method(filter_method: str) -> None:
    if filter_method not in ("scan", "sequential"):
        raise ValueError(
            f"`filter_method` must be 'scan' or 'sequential'; got {filter_method!r}."
        )


def _validate_params(params: KalmanParams) -> KalmanParams:
    if not isinstance(params, KalmanParams):
        raise TypeError(f"`params` must be a KalmanParams; got {type(params).__name__}.")
    if params.time_varying:
        raise ValueError(
            "`params` must be time-invariant for EM/MLE; got time_varying="
            f"{sorted(params.time_varying)}."
        )
    F = params.transition_matrices
    if not isinstance(F, Tensor) or F.ndim != 2 or F.shape[0] != F.shape[1]:
        raise ValueError(
            "`params.transition_matrices` must be a tensor of shape (S, S) shared by "
            f"all sequences; got shape {tuple(getattr(F, 'shape', ()))}."
        )
    if not F.is_floating_point():
        raise TypeError(f"`params.transition_matrices` must be floating point; got {F.dtype}.")
    S = F.shape[0]
    H = params.observation_matrices
    if not isinstance(H, Tensor) or H.ndim != 2 or H.shape[1] != S:
        raise ValueError(
            f"`params.observation_matrices` must have shape (D, {S}); "
            f"got {tuple(getattr(H, 'shape', ()))}."
        )
    D = H.shape[0]
    expected = {
        name: shape
        for name, shape in event_shapes(S, D).items()
        if name not in ("transition_matrices", "observation_matrices")
    }
    fields = {}
    for name, shape in expected.items():
        value = getattr(params, name)
        if value is None and name.endswith("offsets"):
            fields[name] = None
            continue
        if not isinstance(value, Tensor) or tuple(value.shape) != shape:
            raise ValueError(
                f"`params.{name}` must be a tensor of shape {shape}; "
                f"got {tuple(getattr(value, 'shape', ())) if value is not None else None}."
            )
        fields[name] = value.to(F.dtype)
    return params._replace(observation_matrices=H.to(F.dtype), **fields)


def _validate_data(y, mask, params: KalmanParams) -> tuple[Tensor, Tensor]:
    """Return ``y`` as ``(B, T, D)`` with unobserved entries zeroed, and its mask."""
    dtype = params.transition_matrices.dtype
    D = params.observation_matrices.shape[0]
    if not isinstance(y, Tensor):
        try:
            y = torch.as_tensor(y)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"`y` must be a tensor or array; got {type(y).__name__}.") from None
    if not (y.is_floating_point() or y.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"`y` must hold real numbers; got dtype {y.dtype}.")
    y = y.to(dtype)
    if y.ndim == 2:
        y = y.unsqueeze(0)
    if y.ndim != 3 or y.shape[-1] != D:
        raise ValueError(
            f"`y` must have shape (B, T, {D}) or (T, {D}) to match the observation "
            f"matrices; got {tuple(y.shape)}."
        )
    if y.shape[1] < 1:
        raise ValueError("`y` must have at least one time step; got T=0.")
    if mask is None:
        mask = ~torch.isnan(y)
    else:
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"`mask` must be a boolean tensor (True = observed); got {mask.dtype}.")
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.shape != y.shape:
            raise ValueError(
                f"`mask` must have the same shape as `y` {tuple(y.shape)}; got {tuple(mask.shape)}."
            )
    if not bool(torch.isfinite(y[mask]).all()):
        raise ValueError("`y` must be finite wherever `mask` is True; found NaN or inf.")
    if not bool(mask.any()):
        raise ValueError("`mask` must mark at least one observed value; got none.")
    # Zero the unobserved entries so that no garbage can reach a product with a
    # zero weight (0 * nan = nan).
    return torch.where(mask, y, torch.zeros((), dtype=dtype)), mask


# --------------------------------------------------------------------------
# E-step: sufficient statistics
# --------------------------------------------------------------------------


class _Statistics(NamedTuple):
    # Transition block (pairs t -> t+1).
    n_trans: Tensor
    S00: Tensor
    S11: Tensor
    S10: Tensor
    s0: Tensor
    s1: Tensor
    # Observation block (pairs y_t, x_t).
    n_obs: Tensor
    Sxx: Tensor
    Syy: Tensor
    Syx: Tensor
    sx: Tensor
    sy: Tensor
    # Initial block.
    n_init: Tensor
    first_means: Tensor  # (B, S)
    first_covariances: Tensor  # (B, S, S)
    init_weights: Tensor  # (B,)


def _outer(a: Tensor, b: Tensor) -> Tensor:
    return a.unsqueeze(-1) * b.unsqueeze(-2)


def _step_weights(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Weights of observation steps (B, T), transitions (B, T-1) and sequences (B,)."""
    observed_step = mask.any(-1)
    B, T = observed_step.shape
    steps = torch.arange(T, device=mask.device)
    # Length of a sequence = one past its last observed step; what follows is padding.
    lengths = torch.where(observed_step, steps, -1).amax(-1) + 1
    transition = (steps[:-1] + 1).unsqueeze(0) < lengths.unsqueeze(-1)
    return observed_step, transition, lengths > 0


def _expected_observations(
    y: Tensor, mask: Tensor, params: KalmanParams, means: Tensor, second_moments: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``E[y_t]``, ``E[y_t y_t']`` and ``E[y_t x_t']`` given all data (see module doc)."""
    H = params.observation_matrices
    R = params.observation_covariance
    d = params.observation_offsets
    if d is None:
        d = H.new_zeros(H.shape[0])
    observed = mask.to(H.dtype)
    missing = 1.0 - observed
    # R restricted to the observed block, with the identity on the missing
    # block: its inverse embeds R_OO^{-1} and keeps the problem batched.
    R_observed = R * _outer(observed, observed) + torch.diag_embed(missing)
    R_missing_observed = R * _outer(missing, observed)
    chol = torch.linalg.cholesky(R_observed)
    # gain = R_MO R_OO^{-1} (rows: missing, columns: observed, zero elsewhere)
    gain = torch.cholesky_solve(R_missing_observed.transpose(-1, -2), chol).transpose(-1, -2)
    G = missing.unsqueeze(-1) * H - gain @ H
    g = observed * y + missing * d + (gain @ (y - d).unsqueeze(-1)).squeeze(-1)
    noise = R * _outer(missing, missing) - (gain @ R) * missing.unsqueeze(-2)
    noise = 0.5 * (noise + noise.transpose(-1, -2))
    Gm = (G @ means.unsqueeze(-1)).squeeze(-1)
    Ey = Gm + g
    Eyy = G @ second_moments @ G.transpose(-1, -2) + _outer(Gm, g) + _outer(g, Gm) + _outer(g, g)
    Eyy = Eyy + noise
    Eyx = G @ second_moments + _outer(g, means)
    return Ey, Eyy, Eyx


def moment_statistics(y: Tensor, mask: Tensor, params: KalmanParams, m: Tensor, Exx: Tensor, Ex1x0: Tensor,
                      first_covariances: Tensor) -> _Statistics:
    """The M-step's sufficient statistics from the smoothed moments of the states.

    ``m`` ``(B, T, S)``, ``Exx`` ``E[x_t x_t']`` and ``Ex1x0``
    ``E[x_{t+1} x_t']`` ``(B, T-1, S, S)`` given the data, whether exact (the
    RTS smoother) or Monte Carlo averages over smoothed trajectories (particle
    EM); ``y`` holds 0 where ``mask`` is False.
    """
    observation_w, transition_w, init_w = (w.to(m.dtype) for w in _step_weights(mask))
    partly_observed = mask.any(-1) & ~mask.all(-1)
    if bool(partly_observed.any()):
        Ey, Eyy, Eyx = _expected_observations(y, mask, params, m, Exx)
    else:
        # Steps are either complete (E[y] = y) or carry zero weight.
        Ey, Eyy, Eyx = y, _outer(y, y), _outer(y, m)
    return _Statistics(
        n_trans=transition_w.sum(),
        S00=torch.einsum("bt,btij->ij", transition_w, Exx[:, :-1]),
        S11=torch.einsum("bt,btij->ij", transition_w, Exx[:, 1:]),
        S10=torch.einsum("bt,btij->ij", transition_w, Ex1x0),
        s0=torch.einsum("bt,bti->i", transition_w, m[:, :-1]),
        s1=torch.einsum("bt,bti->i", transition_w, m[:, 1:]),
        n_obs=observation_w.sum(),
        Sxx=torch.einsum("bt,btij->ij", observation_w, Exx),
        Syy=torch.einsum("bt,btij->ij", observation_w, Eyy),
        Syx=torch.einsum("bt,btij->ij", observation_w, Eyx),
        sx=torch.einsum("bt,bti->i", observation_w, m),
        sy=torch.einsum("bt,bti->i", observation_w, Ey),
        n_init=init_w.sum(),
        first_means=m[:, 0],
        first_covariances=first_covariances,
        init_weights=init_w,
    )


def m_step_from_moments(y: Tensor, mask: Tensor, params: KalmanParams, m: Tensor, Exx: Tensor, Ex1x0: Tensor,
                        first_covariances: Tensor, learn="all") -> KalmanParams:
    """The closed-form M-step for the parameters named in ``learn`` (pykalman names, as ``em_vars``)."""
    learn = _resolve_variables(learn, "learn")
    stats = moment_statistics(y, mask, params, m, Exx, Ex1x0, first_covariances)
    _check_enough_data(stats, learn)
    return _maximise(stats, params, learn)


def _sufficient_statistics(
    y: Tensor, mask: Tensor, params: KalmanParams, filter_method: str
) -> tuple[_Statistics, float]:
    # The forward pass dominates the cost; the time-parallel filter makes it
    # several times faster than the step-by-step one on long sequences.
    filtered = kalman_filter(y, mask, params, method=filter_method)
    smoothed = kalman_smoother(y, mask, params, filtered=filtered)
    log_likelihood = float(smoothed.filtered.log_likelihoods.sum())
    m = smoothed.smoothed_means
    Exx = smoothed.smoothed_covariances + _outer(m, m)
    Ex1x0 = smoothed.smoothed_cross_covariances + _outer(m[:, 1:], m[:, :-1])

    stats = moment_statistics(y, mask, params, m, Exx, Ex1x0, smoothed.smoothed_covariances[:, 0])
    return stats, log_likelihood


# --------------------------------------------------------------------------
# M-step
# --------------------------------------------------------------------------


def _symmetric_positive_definite(cov: Tensor) -> Tensor:
    """Symmetrise ``cov`` and lift eigenvalues below a relative floor.

    The M-step covariances are averages of posterior second moments and hence
    PSD in exact arithmetic, but they can be (numerically) singular, e.g. a
    noise-free state component or ``P_0`` learned from a single sequence whose
    first state is pinned down by the data. A singular covariance would make
    the next Cholesky factorisation fail, so only then are the offending
    eigenvalues raised to ``1e-12`` times the largest one; otherwise the
    matrix is returned unchanged (beyond symmetrisation) so EM stays exact.
    """
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    largest = eigenvalues[-1].clamp_min(torch.finfo(cov.dtype).tiny)
    floor = _RELATIVE_EIGENVALUE_FLOOR * largest
    if bool((eigenvalues >= floor).all()):
        return cov
    lifted = eigenvalues.clamp_min(floor)
    cov = eigenvectors @ torch.diag_embed(lifted) @ eigenvectors.transpose(-1, -2)
    return 0.5 * (cov + cov.transpose(-1, -2))


def _regression_update(
    n: Tensor,
    S_out_out: Tensor,
    S_out_in: Tensor,
    S_in_in: Tensor,
    s_out: Tensor,
    s_in: Tensor,
    matrix: Tensor,
    offset: Tensor | None,
    learn_matrix: bool,
    learn_offset: bool,
    learn_covariance: bool,
    covariance: Tensor,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Maximise ``sum log N(out | A in + a, Sigma)`` in expectation over ``(A, a, Sigma)``.

    ``A`` = ``matrix``, ``a`` = ``offset``, ``Sigma`` = ``covariance``; each is
    updated only when its ``learn_*`` flag is set (see the module docstring).
    """
    if offset is None and learn_offset:
        offset = matrix.new_zeros(matrix.shape[0])
    a = offset if offset is not None else matrix.new_zeros(matrix.shape[0])
    A = matrix
    if learn_matrix and learn_offset:
        k = S_in_in.shape[0]
        gram = S_in_in.new_empty(k + 1, k + 1)
        gram[:k, :k] = S_in_in
        gram[:k, k] = s_in
        gram[k, :k] = s_in
        gram[k, k] = n
        cross = torch.cat([S_out_in, s_out.unsqueeze(-1)], dim=-1)
        solution = torch.linalg.solve(gram, cross.transpose(-1, -2)).transpose(-1, -2)
        A, a = solution[:, :k], solution[:, k]
    elif learn_matrix:
        A = torch.linalg.solve(S_in_in, (S_out_in - _outer(a, s_in)).transpose(-1, -2))
        A = A.transpose(-1, -2)
    elif learn_offset:
        a = (s_out - A @ s_in) / n
    if learn_covariance:
        A_S = A @ S_out_in.transpose(-1, -2)  # A S_in,out
        As_in = A @ s_in
        residual = (
            S_out_out
            - A_S
            - A_S.transpose(-1, -2)
            + A @ S_in_in @ A.transpose(-1, -2)
            - _outer(s_out, a)
            - _outer(a, s_out)
            + _outer(As_in, a)
            + _outer(a, As_in)
            + n * _outer(a, a)
        )
        covariance = _symmetric_positive_definite(residual / n)
    new_offset = a if (offset is not None or learn_offset) else None
    return A, new_offset, covariance


def _maximise(stats: _Statistics, params: KalmanParams, learn: frozenset[str]) -> KalmanParams:
    F, c, Q = _regression_update(
        stats.n_trans,
        stats.S11,
        stats.S10,
        stats.S00,
        stats.s1,
        stats.s0,
        params.transition_matrices,
        params.transition_offsets,
        "transition_matrices" in learn,
        "transition_offsets" in learn,
        "transition_covariance" in learn,
        params.transition_covariance,
    )
    H, d, R = _regression_update(
        stats.n_obs,
        stats.Syy,
        stats.Syx,
        stats.Sxx,
        stats.sy,
        stats.sx,
        params.observation_matrices,
        params.observation_offsets,
        "observation_matrices" in learn,
        "observation_offsets" in learn,
        "observation_covariance" in learn,
        params.observation_covariance,
    )
    mu0 = params.initial_state_mean
    P0 = params.initial_state_covariance
    w = stats.init_weights
    if "initial_state_mean" in learn:
        mu0 = torch.einsum("b,bi->i", w, stats.first_means) / stats.n_init
    if "initial_state_covariance" in learn:
        centred = stats.first_means - mu0
        P0 = torch.einsum("b,bij->ij", w, stats.first_covariances + _outer(centred, centred))
        P0 = _symmetric_positive_definite(P0 / stats.n_init)
    return params._replace(
        transition_matrices=F,
        transition_offsets=c,
        transition_covariance=Q,
        observation_matrices=H,
        observation_offsets=d,
        observation_covariance=R,
        initial_state_mean=mu0,
        initial_state_covariance=P0,
    )


def _check_enough_data(stats: _Statistics, learn: frozenset[str]) -> None:
    transition = {"transition_matrices", "transition_offsets", "transition_covariance"}
    if learn & transition and float(stats.n_trans) < 1:
        raise ValueError(
            "`y` must contain a sequence with at least two steps up to its last observed "
            f"value to learn {sorted(learn & transition)}; got none."
        )


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def em_step(
    y,
    mask,
    params: KalmanParams,
    em_vars: str | Iterable[str] = "all",
    filter_method: str = "scan",
) -> tuple[KalmanParams, float]:
    """One EM iteration for the linear Gaussian state-space model.

    Parameters
    ----------
    y : Tensor or array, shape (B, T, D) or (T, D)
        ``B`` independent sequences sharing ``params``. Entries where ``mask``
        is False are ignored (they may be NaN). Ragged sequences are padded
        with fully masked steps.
    mask : bool Tensor of the shape of ``y`` or None
        True where ``y`` is observed; None means ``~isnan(y)``.
    params : KalmanParams
        Current, time-invariant parameters without batch dimensions.
    em_vars : 'all' or iterable of str
        Names (pykalman's) of the parameters to update; the others stay fixed
        and the update of the learned ones is their exact conditional
        maximiser given the fixed ones.
    filter_method : {'scan', 'sequential'}
        Forward pass of the E-step (see :func:`tsgen.inference.kalman.kalman_filter`);
        both give the same moments up to round-off.

    Returns
    -------
    new_params : KalmanParams
        Parameters after the M-step (offsets that were None and not learned
        stay None).
    log_likelihood : float
        Total log-likelihood of ``params`` (before the update).
    """
    learn = _resolve_variables(em_vars, "em_vars")
    _check_filter_method(filter_method)
    params = _validate_params(params)
    y, mask = _validate_data(y, mask, params)
    stats, log_likelihood = _sufficient_statistics(y, mask, params, filter_method)
    _check_enough_data(stats, learn)
    return _maximise(stats, params, learn), log_likelihood


def _relative_change(new: float, old: float) -> float:
    return abs(new - old) / max(abs(old), torch.finfo(torch.float64).tiny)


def fit_em(
    y,
    mask,
    params: KalmanParams,
    em_vars: str | Iterable[str] = "all",
    max_iter: int = 100,
    tol: float = 1e-6,
    callback: Callable[[int, KalmanParams, float], bool | None] | None = None,
    filter_method: str = "scan",
) -> EMResult:
    """Fit by EM until the relative change of the log-likelihood is below ``tol``.

    Parameters
    ----------
    y, mask, params, em_vars
        As in :func:`em_step`; ``params`` is the starting point.
    max_iter : int
        Maximum number of M-steps.
    tol : float
        Stop when ``|l_k - l_{k-1}| <= tol * |l_{k-1}|``.
    callback : callable, optional
        Called as ``callback(k, params_k, l_k)`` with the parameters after
        ``k`` M-steps and their log-likelihood; returning True stops the fit.
    filter_method : {'scan', 'sequential'}
        Forward pass of the E-step, as in :func:`em_step`.

    Returns
    -------
    EMResult
    """
    if not is_int(max_iter) or max_iter < 0:
        raise ValueError(f"`max_iter` must be a non-negative integer; got {max_iter!r}.")
    if not ((is_int(tol) or isinstance(tol, float)) and tol >= 0):
        raise ValueError(f"`tol` must be a non-negative number; got {tol!r}.")
    learn = _resolve_variables(em_vars, "em_vars")
    _check_filter_method(filter_method)
    params = _validate_params(params)
    y, mask = _validate_data(y, mask, params)

    log_likelihoods: list[float] = []
    converged = False
    best = (-math.inf, params, 0)  # log-likelihood, parameters, iteration
    for iteration in range(max_iter + 1):
        stats, log_likelihood = _sufficient_statistics(y, mask, params, filter_method)
        log_likelihoods.append(log_likelihood)
        if log_likelihood > best[0]:
            best = (log_likelihood, params, iteration)
        if iteration > 0:
            previous = log_likelihoods[-2]
            if not log_likelihood >= previous - 1e-8 * abs(previous):
                # Exact EM never lowers the likelihood: the covariances have
                # become ill-conditioned and further iterates only get worse.
                warnings.warn(
                    f"EM stopped: the log-likelihood decreased at iteration {iteration} "
                    f"({previous:.10g} -> {log_likelihood:.10g}), which exact EM never does. "
                    "The covariances became ill-conditioned, typically because a variable is "
                    "constant or variables are collinear (the likelihood then grows without "
                    "bound as a variance shrinks to 0). Returning the parameters of iteration "
                    f"{best[2]} (log-likelihood {best[0]:.10g}).",
                    ConvergenceWarning,
                    stacklevel=2,
                )
                break
            if _relative_change(log_likelihood, previous) <= tol:
                converged = True
        stop = callback is not None and bool(callback(iteration, params, log_likelihood))
        if converged or stop or iteration == max_iter:
            break
        _check_enough_data(stats, learn)
        params = _maximise(stats, params, learn)
    return EMResult(best[1], log_likelihoods, len(log_likelihoods) - 1, converged, best[2])


# --------------------------------------------------------------------------
# Direct maximum likelihood
# --------------------------------------------------------------------------


def _inverse_softplus(x: Tensor) -> Tensor:
    # log(expm1(x)), written to stay finite for large x.
    return x + torch.log(-torch.expm1(-x))


def _covariance_to_unconstrained(cov: Tensor) -> Tensor:
    L = torch.linalg.cholesky(cov)
    return L.tril(-1) + torch.diag_embed(_inverse_softplus(torch.diagonal(L)))


def _unconstrained_to_covariance(raw: Tensor) -> Tensor:
    L = raw.tril(-1) + torch.diag_embed(torch.nn.functional.softplus(torch.diagonal(raw)))
    return L @ L.transpose(-1, -2)


def fit_mle(
    y,
    mask,
    params: KalmanParams,
    learn: str | Iterable[str] = "all",
    max_iter: int = 200,
    tol: float = 1e-9,
) -> MLEResult:
    """Maximum-likelihood fit by L-BFGS on the exact Kalman log-likelihood.

    Matrices and offsets are free; each learned covariance ``Sigma = L L'``
    is parametrised by its Cholesky factor ``L`` with a softplus-transformed
    diagonal, so every trial point is a valid model. The objective is the
    negative log-likelihood divided by the number of observed values, so that
    ``tol`` means the same for short and long data.

    Parameters
    ----------
    y, mask, params
        As in :func:`em_step`; ``params`` is the starting point.
    learn : 'all' or iterable of str
        Names (pykalman's) of the parameters to optimise; the others are fixed.
    max_iter : int
        Maximum number of L-BFGS iterations.
    tol : float
        Stop when the relative change of the log-likelihood over one
        iteration is at most ``tol`` and no partial derivative of the
        objective exceeds ``sqrt(tol)``.

    Returns
    -------
    MLEResult
    """
    if not is_int(max_iter) or max_iter < 0:
        raise ValueError(f"`max_iter` must be a non-negative integer; got {max_iter!r}.")
    if not ((is_int(tol) or isinstance(tol, float)) and tol >= 0):
        raise ValueError(f"`tol` must be a non-negative number; got {tol!r}.")
    chosen = _resolve_variables(learn, "learn")
    params = _validate_params(params)
    y, mask = _validate_data(y, mask, params)
    n_observed = float(mask.sum())

    raw: dict[str, Tensor] = {}
    for name in sorted(chosen):
        value = getattr(params, name)
        if value is None:  # an absent offset starts at zero
            rows = params.transition_matrices if name == "transition_offsets" else params.observation_matrices
            value = rows.new_zeros(rows.shape[0])
        start = _covariance_to_unconstrained(value) if name in _COVARIANCES else value
        raw[name] = start.detach().clone().requires_grad_(True)

    def build() -> KalmanParams:
        updates = {
            name: _unconstrained_to_covariance(value) if name in _COVARIANCES else value
            for name, value in raw.items()
        }
        return params._replace(**updates)

    def objective() -> Tensor:
        return -kalman_log_likelihood(y, mask, build()).sum() / n_observed

    with torch.no_grad():
        log_likelihoods = [-float(objective()) * n_observed]
    if not raw or max_iter == 0:
        return MLEResult(params, log_likelihoods, 0, not raw)

    optimiser = torch.optim.LBFGS(
        list(raw.values()),
        lr=1.0,
        # One iteration per call so that the log-likelihood is tracked; the
        # evaluation budget must be set too, else it defaults to 5/4 of
        # max_iter and leaves the line search no evaluations at all.
        max_iter=1,
        max_eval=26,
        history_size=20,
        tolerance_grad=1e-10,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimiser.zero_grad()
        try:
            loss = objective()
        except NumericalError:
            # A trial point of the line search so far out that a covariance
            # underflowed to singular: infinitely bad, so the search steps back.
            return torch.tensor(math.inf, dtype=torch.float64)
        loss.backward()
        return loss

    converged = False
    for _ in range(max_iter):
        before = optimiser.state[optimiser.param_groups[0]["params"][0]].get("n_iter", 0)
        optimiser.step(closure)
        after = optimiser.state[optimiser.param_groups[0]["params"][0]].get("n_iter", 0)
        loss = objective()
        value = loss.detach()
        if math.isfinite(float(value)):
            gradients = torch.autograd.grad(loss, list(raw.values()), allow_unused=True)
            steepest = max((float(g.abs().max()) for g in gradients if g is not None and g.numel()), default=0.0)
        if not math.isfinite(float(value)):
            raise ValueError(
                "L-BFGS reached parameters with a non-finite log-likelihood; "
                "start from better `params` or use fit_em."
            )
        if after == before:  # the gradient already vanished: nothing to do
            converged = True
            break
        log_likelihoods.append(-float(value) * n_observed)
        # A small gain alone also happens on a plateau that L-BFGS is still crossing (the Nile local level
        # gained 1.5e-7 in one iteration 3 log-likelihood units short of its optimum). Near an optimum a
        # gradient g of the per-value objective is worth a gain of order g^2, so a gain of tol goes with a
        # gradient of order sqrt(tol): both must be that small.
        if _relative_change(log_likelihoods[-1], log_likelihoods[-2]) <= tol and steepest <= math.sqrt(tol):
            converged = True
            break
    with torch.no_grad():
        fitted = build()
    fitted = fitted._replace(
        **{name: getattr(fitted, name).detach() for name in raw}
    )
    return MLEResult(fitted, log_likelihoods, len(log_likelihoods) - 1, converged)
