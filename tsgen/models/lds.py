r"""The Gaussian linear dynamical system (linear-Gaussian state-space model).

Generative model (pykalman / statsmodels convention)::

    x_1     ~ N(mu_0, P_0)
    x_{t+1} = F x_t + c + w_t,    w_t ~ N(0, Q)
    y_t     = H x_t + d + v_t,    v_t ~ N(0, R)

Inference is exact (Kalman filter, RTS smoother); parameters are learned by
EM (closed-form Shumway–Stoffer M-step) or by maximum likelihood with
gradients. Many sequences share one parameter set.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from sklearn.utils.validation import check_is_fitted

from tsgen._validation import is_int
from tsgen.base import BaseForecaster
from tsgen.data import SeriesBatch, to_series_batch, unwrap
from tsgen.exceptions import ConvergenceWarning
from tsgen.inference._kalman_step import predict as time_update
from tsgen.inference.em import EM_VARIABLES, fit_em, fit_mle
from tsgen.inference.kalman import (
    KalmanParams,
    event_shapes,
    kalman_filter,
    kalman_filter_last,
    kalman_forecast_marginals,
    kalman_log_likelihood,
    kalman_sample,
    kalman_smoother,
)

#: constructor arguments that hold parameters, in KalmanParams order
PARAM_NAMES = EM_VARIABLES
_DTYPE = torch.float64


class StateEstimate(NamedTuple):
    """State means as pandas frame(s) and covariances ``(time, S, S)`` as array(s)."""

    means: object
    covariances: object


def _as_tensor(value, name: str, shape: tuple[int, ...], per_series: bool = False) -> torch.Tensor:
    """``value`` as float64 ``shape``, or ``(n_series, *shape)`` when ``per_series`` allows it."""
    try:
        tensor = torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=_DTYPE).clone()
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be an array of numbers with shape {shape}.") from None
    if tensor.dim() == 0 and len(shape) > 0:
        tensor = tensor * (torch.eye(shape[0], dtype=_DTYPE) if len(shape) == 2 and shape[0] == shape[1] else torch.ones(shape, dtype=_DTYPE))
    batched = per_series and tensor.dim() == len(shape) + 1 and tuple(tensor.shape[1:]) == shape
    if tuple(tensor.shape) != shape and not batched:
        expected = f"{shape} or (n_series, *{shape})" if per_series else f"{shape}"
        raise ValueError(f"`{name}` must have shape {expected}, got {tuple(tensor.shape)}.")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return tensor


def _variable_scales(data: SeriesBatch) -> torch.Tensor:
    """Spread of each observed variable ``(D,)``: its standard deviation, else
    (a constant) its absolute value, else 1."""
    values = data.values.flatten(0, 1)
    mean = torch.nanmean(values, 0)
    std = torch.nanmean((values - mean) ** 2, 0).sqrt()
    fallback = torch.where(mean.abs() > 0, mean.abs(), torch.ones_like(mean))
    return torch.where(std > 0, std, fallback)


def _inference_method(method, n_particles) -> str:
    """``method`` of log_likelihood/filter/smooth, checked with the option that belongs to it."""
    if method not in ("kalman", "smc"):
        raise ValueError(f"`method` must be 'kalman' (exact) or 'smc' (particle filter); got {method!r}.")
    if method == "kalman" and n_particles is not None:
        raise ValueError("`n_particles` applies to method='smc' only; the Kalman filter is exact.")
    return method


def _particle_moments(particles: torch.Tensor, log_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean ``(..., S)`` and covariance ``(..., S, S)`` of particles ``(N, ..., S)``
    with log-weights ``(N, ...)`` (normalised or not)."""
    weights = torch.softmax(log_weights, 0).unsqueeze(-1)
    mean = (weights * particles).sum(0)
    centred = particles - mean
    cov = torch.einsum("n...i,n...j->...ij", weights * centred, centred)
    return mean, cov


class LinearGaussianSSM(BaseForecaster):
    """Gaussian linear dynamical system with Kalman inference, fitted by EM or MLE.

    Parameters
    ----------
    n_dim_state : int, optional
        Dimension ``S`` of the latent state; inferred from the given matrices,
        else the number of observed variables.
    transition_matrices, observation_matrices, transition_covariance,
    observation_covariance, initial_state_mean, initial_state_covariance,
    transition_offsets, observation_offsets : array-like, optional
        Parameters (pykalman names). Given ones are starting values for those
        learned and fixed values for the others; missing ones get a
        data-driven starting value. Offsets default to fixed zeros unless
        listed in ``em_vars``.
    em_vars : "all" or list of str
        Which parameters ``fit`` learns (like pykalman's ``em_vars``).
        ``"all"`` learns all but the offsets.
    method : {"em", "mle"}
        EM with closed-form M-step, or L-BFGS on the exact log-likelihood.
    max_iter, tol : stopping rule (relative change of the log-likelihood;
        for ``"mle"`` also every partial derivative of the per-value
        negative log-likelihood at most ``sqrt(tol)``).
    random_state : int or None
        Seeds the starting values and ``sample``.
    device : str or torch.device
        Where the particle filter and smoother of ``method="smc"`` run
        (``"cpu"``, ``"cuda"``, ``"auto"``); results come back to the CPU.
        The Kalman filter, EM and MLE run on the CPU.

    Notes
    -----
    Fixed parameters (``em_vars=[]`` or :meth:`from_params`) may carry a
    leading dimension of ``n_series``: one parameter set per series of a list.
    ``log_likelihood`` uses the likelihood-only Kalman routes (steady-state
    gain once the covariance recursion has converged); the filtered state at
    the end of the fitted series is computed once and reused by ``predict``
    and ``sample`` with ``y=None``.

    Many series are not split into partitions for ``n_jobs`` or Dask
    (:func:`tsgen.set_config`): a fit estimates one parameter set shared by
    all series from their summed likelihood, so fitting groups of series
    apart would give each group its own model. The Kalman filter and the
    EM statistics already run over all series as one batch.
    """

    def __init__(
        self,
        n_dim_state=None,
        transition_matrices=None,
        observation_matrices=None,
        transition_covariance=None,
        observation_covariance=None,
        initial_state_mean=None,
        initial_state_covariance=None,
        transition_offsets=None,
        observation_offsets=None,
        em_vars="all",
        method="em",
        max_iter=100,
        tol=1e-6,
        random_state=None,
        device="cpu",
    ):
        self.n_dim_state = n_dim_state
        self.transition_matrices = transition_matrices
        self.observation_matrices = observation_matrices
        self.transition_covariance = transition_covariance
        self.observation_covariance = observation_covariance
        self.initial_state_mean = initial_state_mean
        self.initial_state_covariance = initial_state_covariance
        self.transition_offsets = transition_offsets
        self.observation_offsets = observation_offsets
        self.em_vars = em_vars
        self.method = method
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device

    @classmethod
    def get_test_params(cls):
        return [{"n_dim_state": 2, "max_iter": 5, "random_state": 0}, {"method": "mle", "max_iter": 5}]

    @classmethod
    def from_params(cls, random_state=None, device="cpu", **params) -> "LinearGaussianSSM":
        """A fitted model with fixed parameters (pykalman names); predict with ``y=``.

        Every parameter may have a leading dimension ``n_series`` (the same
        for all that have it): one parameter set per series of a list ``y``.
        """
        required = [n for n in PARAM_NAMES[:6] if params.get(n) is None]
        if required:
            raise ValueError(f"`from_params` needs {required}.")
        unknown = set(params) - set(PARAM_NAMES)
        if unknown:
            raise TypeError(f"`from_params` got unknown parameter(s) {sorted(unknown)}; expected {PARAM_NAMES}.")
        model = cls(**params, em_vars=[], max_iter=0, random_state=random_state, device=device)
        n_dims = np.asarray(params["observation_matrices"]).shape[-2]
        model._set_params(model._initial_params(None, n_dims))
        model.history_ = None
        model.n_dims_ = n_dims
        model.n_features_ = 0
        model.covariates_ = None
        return model

    # -------------------------------------------------------------- params
    def _state_dim(self, n_dims: int) -> int:
        if self.n_dim_state is not None:
            if isinstance(self.n_dim_state, bool) or not isinstance(self.n_dim_state, (int, np.integer)) or self.n_dim_state < 1:
                raise ValueError(f"`n_dim_state` must be a positive integer, got {self.n_dim_state!r}.")
            return int(self.n_dim_state)
        for name in ("transition_matrices", "initial_state_mean", "observation_matrices"):
            value = getattr(self, name)
            if value is not None:
                return int(np.asarray(value).shape[-1])
        return n_dims

    def _learned(self) -> frozenset[str]:
        if isinstance(self.em_vars, str):
            if self.em_vars != "all":
                raise ValueError(f"`em_vars` must be 'all' or a list of {PARAM_NAMES}, got {self.em_vars!r}.")
            return frozenset(PARAM_NAMES[:6])
        learned = frozenset(self.em_vars)
        unknown = learned - set(PARAM_NAMES)
        if unknown:
            raise ValueError(f"`em_vars` has unknown name(s) {sorted(unknown)}; expected a subset of {PARAM_NAMES}.")
        return learned

    def _initial_params(self, data: SeriesBatch | None, n_dims: int) -> KalmanParams:
        """Given parameters, else starting values scaled to the data."""
        S, D = self._state_dim(n_dims), n_dims
        generator = torch.Generator().manual_seed(0 if self.random_state is None else int(self.random_state))
        if data is not None:
            obs = data.values.flatten(0, 1)
            mean = torch.nanmean(obs, 0)
            var = torch.nanmean((obs - mean) ** 2, 0).clamp_min(1e-8)
        else:
            mean, var = torch.zeros(D, dtype=_DTYPE), torch.ones(D, dtype=_DTYPE)
        scale = var.mean().sqrt()
        defaults = {
            "transition_matrices": 0.9 * torch.eye(S, dtype=_DTYPE),
            "observation_matrices": torch.eye(D, S, dtype=_DTYPE) * scale
            + 0.1 * scale * torch.randn(D, S, generator=generator, dtype=_DTYPE),
            "transition_covariance": 0.1 * torch.eye(S, dtype=_DTYPE),
            "observation_covariance": torch.diag(0.5 * var),
            "initial_state_mean": torch.zeros(S, dtype=_DTYPE),
            "initial_state_covariance": torch.eye(S, dtype=_DTYPE),
            "transition_offsets": torch.zeros(S, dtype=_DTYPE),
            "observation_offsets": mean.clone(),
        }
        shapes = event_shapes(S, D)
        fixed = not self._learned() or self.max_iter == 0
        values = {}
        for name in PARAM_NAMES:
            given = getattr(self, name)
            if given is not None:
                values[name] = _as_tensor(given, name, shapes[name], per_series=fixed)
            elif name in ("transition_offsets", "observation_offsets") and name not in self._learned():
                values[name] = None
            else:
                values[name] = defaults[name]
        sets = {v.shape[0] for n, v in values.items() if v is not None and v.dim() > len(shapes[n])}
        if len(sets) > 1:
            raise ValueError(
                f"per-series parameters must share one leading size (the number of series); got sizes {sorted(sets)}."
            )
        return KalmanParams(**values)

    def _set_params(self, params: KalmanParams) -> None:
        self.params_ = params
        for name in PARAM_NAMES:
            value = getattr(params, name)
            setattr(self, name + "_", None if value is None else value.detach().numpy().copy())

    # ------------------------------------------------------------------ fit
    def _fit(self, data, covariates):
        if self.method not in ("em", "mle"):
            raise ValueError(f"`method` must be 'em' or 'mle', got {self.method!r}.")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 0:
            raise ValueError(f"`max_iter` must be a non-negative integer, got {self.max_iter!r}.")
        from tsgen.training.device import resolve_device

        resolve_device(self.device)  # a bad `device` is refused at fit, not at the first particle filter
        learned = sorted(self._learned())
        # Start and fit in units where each variable has unit spread, so that
        # no tolerance or floor depends on the data's units; y = scale * y'
        # maps back exactly (H, d scaled by `scale`, R by scale scale^T).
        scale = _variable_scales(data)
        scaled = dataclasses.replace(data, values=data.values / scale)
        start = self._initial_params(scaled, data.n_dims)  # given values in the user's units
        params = self._to_units(start, scale, given_only=True)

        def back_to_units(fitted: KalmanParams, learned_names) -> KalmanParams:
            # fixed values given by the user come back exactly, not through a round trip
            kept = {n: getattr(start, n) for n in PARAM_NAMES if n not in learned_names and getattr(self, n) is not None}
            return self._to_units(fitted, 1.0 / scale)._replace(**kept)

        if self.max_iter == 0 or not learned:
            self._check_series_count(data, params)
            self._set_params(back_to_units(params, ()))
            self.log_likelihoods_ = []
            self.n_iter_ = 0
            self.converged_ = True  # nothing to learn
            return
        self._warn_constant_variables(data, learned)
        fitter = fit_em if self.method == "em" else fit_mle
        result = fitter(scaled.values, scaled.mask, params, learned, max_iter=self.max_iter, tol=self.tol)
        fitted = KalmanParams(*(None if v is None else v.detach() for v in result.params[:8]), result.params.time_varying)
        self._set_params(back_to_units(fitted, learned))
        # log p(y) = log p(y') - sum over observed values of log scale
        jacobian = float((data.mask * torch.log(scale)).sum())
        self.log_likelihoods_ = [float(v) - jacobian for v in result.log_likelihoods]
        self.n_iter_ = result.n_iter
        self.converged_ = bool(result.converged)
        if not self.converged_ and result.n_iter >= self.max_iter:  # other stops warn where they happen
            warnings.warn(
                f"{self.method.upper()} stopped after `max_iter`={self.max_iter} iterations before the "
                f"log-likelihood changed by less than `tol`={self.tol}"
                f"{' with a gradient below sqrt(tol)' if self.method == 'mle' else ''}; raise `max_iter`.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _to_units(self, params: KalmanParams, scale: torch.Tensor, given_only: bool = False) -> KalmanParams:
        """Observation parameters for data divided by ``scale`` ``(D,)``; with
        ``given_only``, only those the user gave (defaults are already in those units)."""
        changes = {}
        for name, divide in (
            ("observation_matrices", scale.unsqueeze(-1)),
            ("observation_offsets", scale),
            ("observation_covariance", scale.unsqueeze(-1) * scale),
        ):
            value = getattr(params, name)
            if value is not None and not (given_only and getattr(self, name) is None):
                changes[name] = value / divide
        return params._replace(**changes)

    @staticmethod
    def _warn_constant_variables(data: SeriesBatch, learned) -> None:
        """Name the variables whose observed values do not vary: their maximum-
        likelihood observation variance is 0 and the likelihood is unbounded."""
        if "observation_covariance" not in learned:
            return
        values = data.values.flatten(0, 1)
        observed = data.mask.flatten(0, 1)
        for j, column in enumerate(data.columns):
            column_values = values[observed[:, j], j]
            if column_values.numel() and bool((column_values == column_values[0]).all()):
                warnings.warn(
                    f"variable {column!r} of `y` is constant: its observation variance is driven to 0 "
                    "and the likelihood grows without bound, so the fit is degenerate. Drop the "
                    "variable, or fix `observation_covariance` (leave it out of `em_vars`).",
                    ConvergenceWarning,
                    stacklevel=4,
                )

    # ------------------------------------------------------------ inference
    @staticmethod
    def _check_series_count(batch: SeriesBatch, params: KalmanParams) -> None:
        sets = params.initial_state_mean.shape[:-1].numel()
        if sets > 1 and batch.n_series != sets:
            raise ValueError(
                f"`y` has {batch.n_series} series but the model holds {sets} per-series parameter sets: "
                "pass one series per parameter set."
            )

    def _filter(self, batch: SeriesBatch):
        self._check_series_count(batch, self.params_)
        return kalman_filter(batch.values, batch.mask, self.params_)

    def _end_state(self, batch: SeriesBatch):
        """Filtered state at each series' own last step (series are padded at the end).

        Computed once for the fitted series (``predict``/``sample`` with ``y=None``
        reuse it) and without keeping per-step covariances."""
        cached = getattr(self, "_end_state_cache", None)
        if cached is not None and cached[0] is batch and cached[1] is self.params_:
            return cached[2]
        self._check_series_count(batch, self.params_)
        state = kalman_filter_last(batch.values, batch.mask, self.params_, batch.lengths)
        if batch is getattr(self, "history_", None):
            self._end_state_cache = (batch, self.params_, state)
        return state

    def _total_log_likelihood(self, data, covariates, method="kalman", n_particles=None):
        if _inference_method(method, n_particles) == "smc":
            return None  # summed from the particle filter's one-step terms
        self._check_series_count(data, self.params_)
        if not bool(data.mask.all()):
            return None  # padding or missing values: summed from the per-step terms
        return kalman_log_likelihood(data.values, None, self.params_)

    def _log_likelihood(self, data, covariates, method="kalman", n_particles=None):
        """One-step log densities by the Kalman filter, or (``method="smc"``) the particle filter's estimates."""
        if _inference_method(method, n_particles) == "smc":
            return self._particle_filter(data, n_particles)[0].step_log_likelihood
        self._check_series_count(data, self.params_)
        if bool(data.mask.all()):
            return kalman_log_likelihood(data.values, None, self.params_, per_step=True)
        steps = torch.arange(data.values.shape[1])
        inside = (steps < data.lengths.unsqueeze(-1)).unsqueeze(-1)  # (B, T, 1)
        if bool((data.mask | ~inside).all()):
            # Only end padding is missing: a per-step term depends on the past
            # only, so zeros there change no term that is kept, and the
            # likelihood-only (steady-state) routes apply.
            values = torch.where(inside, data.values, torch.zeros((), dtype=data.values.dtype))
            return kalman_log_likelihood(values, None, self.params_, per_step=True)
        return kalman_log_likelihood(data.values, data.mask, self.params_, per_step=True)

    def _predict_gaussian(self, horizon, history, covariates):
        forecast = kalman_forecast_marginals(self._end_state(history), self.params_, horizon)
        return forecast.observation_means, forecast.observation_variances.clamp_min(0).sqrt()

    def _sample(self, horizon, n_samples, history, covariates, generator):
        """Joint paths: start from the one-step state prediction and run the model forward."""
        end = self._end_state(history)
        p = self.params_
        mean, cov = time_update(end.mean, end.covariance, p.transition_matrices, p.transition_covariance,
                                p.transition_offsets)
        start = p._replace(initial_state_mean=mean, initial_state_covariance=cov)
        draws = kalman_sample(start, horizon, n_samples, generator=generator).observations
        return draws.movedim(0, 1)  # (B, n_samples, horizon, D)

    def _state_estimate(self, batch: SeriesBatch, means: torch.Tensor, covs: torch.Tensor):
        frames, arrays = [], []
        columns = [f"state_{k}" for k in range(means.shape[-1])]
        for i, index in enumerate(batch.indexes):
            n = int(batch.lengths[i])
            frames.append(pd.DataFrame(means[i, :n].detach().numpy().copy(), index=index, columns=columns))
            arrays.append(covs[i, :n].detach().numpy().copy())
        return StateEstimate(unwrap(batch, frames), unwrap(batch, arrays))

    def filter(self, y, method="kalman", n_particles=None) -> StateEstimate:
        """Filtered state means ``E[x_t | y_1:t]`` (frame) and covariances (array).

        ``method="smc"`` estimates them by the particle filter (``n_particles``,
        default 1000, seeded by ``random_state``): a check against the Kalman filter.
        """
        check_is_fitted(self)
        batch = to_series_batch(y, "y")
        if _inference_method(method, n_particles) == "smc":
            output, _ = self._particle_filter(batch, n_particles, keep="particles")
            # particles (T, N, B, S) and weights (T, N, B) -> moments (B, T, ...)
            means, covs = _particle_moments(output.z.movedim(1, 0), output.log_weights_history.movedim(1, 0))
            return self._state_estimate(batch, means.movedim(0, 1), covs.movedim(0, 1))
        result = self._filter(batch)
        return self._state_estimate(batch, result.filtered_means, result.filtered_covariances)

    def smooth(self, y, method="kalman", n_particles=None, n_trajectories=100) -> StateEstimate:
        """Smoothed state means ``E[x_t | y_1:T]`` (frame) and covariances (array).

        ``method="smc"`` estimates them from ``n_trajectories`` FFBSi draws after
        a particle filter (``n_particles``, default 1000): a check against the RTS smoother.
        """
        check_is_fitted(self)
        batch = to_series_batch(y, "y")
        if _inference_method(method, n_particles) == "smc":
            _, paths = self._particle_filter(batch, n_particles, keep="particles", n_trajectories=n_trajectories)
            means, covs = _particle_moments(paths, paths.new_zeros(paths.shape[:-1]))  # paths (M, B, T, S)
            return self._state_estimate(batch, means, covs)
        self._check_series_count(batch, self.params_)
        result = kalman_smoother(batch.values, batch.mask, self.params_)
        return self._state_estimate(batch, result.smoothed_means, result.smoothed_covariances)

    def _particle_filter(self, batch: SeriesBatch, n_particles=None, keep="none", n_trajectories=None):
        """The particle filter (and FFBSi draws when ``n_trajectories``) of the model on the protocol,
        seeded by ``random_state``, on ``device``; the same path users get for nonlinear models. Returns CPU
        tensors."""
        from tsgen.inference.smc.filter import particle_filter
        from tsgen.inference.smc.smoothing import ffbsi
        from tsgen.models._lds_protocol import LinearGaussianModule
        from tsgen.protocol import map_state
        from tsgen.training import resolve_device, seeded_from
        from tsgen.training.randomness import make_generator

        self._check_series_count(batch, self.params_)
        device = resolve_device(self.device)
        params = self.params_._replace(**{name: getattr(self.params_, name).to(device) for name in PARAM_NAMES
                                          if getattr(self.params_, name) is not None})
        module = LinearGaussianModule(params)
        values, mask = batch.values.to(device), batch.mask.to(device)
        n = 1000 if n_particles is None else n_particles
        with torch.no_grad(), seeded_from(make_generator(self.random_state), device):
            context = module.prepare(values, mask)
            output = particle_filter(module, values, mask, n_particles=n, keep=keep, context=context)
            paths = None
            if n_trajectories is not None:
                paths = ffbsi(module, output, values, mask, context, n_trajectories).cpu()
        return map_state(output, torch.Tensor.cpu), paths

    # ----------------------------------------------------------- save/load
    def _fitted_state(self):
        tensors = {n: getattr(self.params_, n) for n in PARAM_NAMES if getattr(self.params_, n) is not None}
        meta = {
            "log_likelihoods": getattr(self, "log_likelihoods_", []),
            "n_iter": getattr(self, "n_iter_", 0),
            "converged": getattr(self, "converged_", True),
        }
        return meta, tensors

    def _load_fitted_state(self, meta, tensors):
        self._set_params(self._checked_stored_params(tensors))
        log_likelihoods, n_iter, converged = meta["log_likelihoods"], meta["n_iter"], meta["converged"]
        if not (
            isinstance(log_likelihoods, list)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in log_likelihoods)
            and is_int(n_iter) and n_iter >= 0
            and isinstance(converged, bool)
        ):
            raise ValueError("the stored fit summary (log_likelihoods, n_iter, converged) is malformed")
        self.log_likelihoods_ = log_likelihoods
        self.n_iter_ = n_iter
        self.converged_ = converged

    def _checked_stored_params(self, tensors: dict) -> KalmanParams:
        """Stored parameters, refused unless their shapes fit the stored configuration
        and their values make a valid model (finite; covariances symmetric PSD)."""
        unknown = set(tensors) - set(PARAM_NAMES)
        missing = [n for n in PARAM_NAMES[:6] if n not in tensors]
        if unknown or missing:
            raise ValueError(f"stored parameters: unknown {sorted(unknown)}, missing {missing}")
        S = int(tensors["initial_state_mean"].shape[-1])
        if self.n_dim_state is not None and S != self.n_dim_state:
            raise ValueError(f"stored state dimension {S} differs from n_dim_state={self.n_dim_state}")
        shapes = event_shapes(S, self.n_dims_)
        sets = {tensors[n].shape[: tensors[n].dim() - len(shapes[n])] for n in tensors}
        if len(sets) != 1 or len(next(iter(sets))) > 1:
            raise ValueError("stored parameters have inconsistent leading (per-series) dimensions")
        lead = next(iter(sets))
        if lead and self.history_ is not None and lead[0] != self.history_.n_series:
            raise ValueError(f"{lead[0]} stored parameter sets for {self.history_.n_series} stored series")
        for name, value in tensors.items():
            if tuple(value.shape) != tuple(lead) + shapes[name] or value.dtype != _DTYPE:
                raise ValueError(
                    f"stored `{name}` has shape {tuple(value.shape)} and dtype {value.dtype}; "
                    f"expected {tuple(lead) + shapes[name]} float64"
                )
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"stored `{name}` has NaN or infinite values")
        for name in ("transition_covariance", "observation_covariance", "initial_state_covariance"):
            cov = tensors[name]
            scale = cov.abs().amax((-1, -2), keepdim=True).clamp_min(torch.finfo(_DTYPE).tiny)
            if not bool(((cov - cov.transpose(-1, -2)).abs() <= 1e-8 * scale).all()):
                raise ValueError(f"stored `{name}` is not symmetric")
            if not bool((torch.linalg.eigvalsh(cov) >= -1e-10 * scale.squeeze(-1)).all()):
                raise ValueError(f"stored `{name}` is not positive semi-definite (a negative variance)")
        return KalmanParams(**{n: tensors.get(n) for n in PARAM_NAMES})
