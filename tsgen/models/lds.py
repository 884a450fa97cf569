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

import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from sklearn.utils.validation import check_is_fitted

from tsgen.base import BaseForecaster
from tsgen.data import SeriesBatch, to_series_batch, unwrap
from tsgen.exceptions import ConvergenceWarning
from tsgen.inference.em import EM_VARIABLES, fit_em, fit_mle
from tsgen.inference.kalman import (
    KalmanParams,
    event_shapes,
    kalman_filter,
    kalman_forecast,
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


def _as_tensor(value, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=_DTYPE).clone()
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be an array of numbers with shape {shape}.") from None
    if tensor.dim() == 0 and len(shape) > 0:
        tensor = tensor * (torch.eye(shape[0], dtype=_DTYPE) if len(shape) == 2 and shape[0] == shape[1] else torch.ones(shape, dtype=_DTYPE))
    if tuple(tensor.shape) != shape:
        raise ValueError(f"`{name}` must have shape {shape}, got {tuple(tensor.shape)}.")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return tensor


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
    max_iter, tol : stopping rule (relative change of the log-likelihood).
    random_state : int or None
        Seeds the starting values and ``sample``.
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

    @classmethod
    def get_test_params(cls):
        return [{"n_dim_state": 2, "max_iter": 5, "random_state": 0}, {"method": "mle", "max_iter": 5}]

    @classmethod
    def from_params(cls, random_state=None, **params) -> "LinearGaussianSSM":
        """A fitted model with fixed parameters (pykalman names); predict with ``y=``."""
        required = [n for n in PARAM_NAMES[:6] if params.get(n) is None]
        if required:
            raise ValueError(f"`from_params` needs {required}.")
        unknown = set(params) - set(PARAM_NAMES)
        if unknown:
            raise TypeError(f"`from_params` got unknown parameter(s) {sorted(unknown)}; expected {PARAM_NAMES}.")
        model = cls(**params, em_vars=[], max_iter=0, random_state=random_state)
        n_dims = np.asarray(params["observation_matrices"]).shape[0]
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
        values = {}
        for name in PARAM_NAMES:
            given = getattr(self, name)
            if given is not None:
                values[name] = _as_tensor(given, name, shapes[name])
            elif name in ("transition_offsets", "observation_offsets") and name not in self._learned():
                values[name] = None
            else:
                values[name] = defaults[name]
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
        params = self._initial_params(data, data.n_dims)
        learned = sorted(self._learned())
        if self.max_iter == 0 or not learned:
            self._set_params(params)
            self.log_likelihoods_ = []
            self.n_iter_ = 0
            self.converged_ = True  # nothing to learn
            return
        fitter = fit_em if self.method == "em" else fit_mle
        result = fitter(data.values, data.mask, params, learned, max_iter=self.max_iter, tol=self.tol)
        self._set_params(KalmanParams(*(None if v is None else v.detach() for v in result.params[:8]), result.params.time_varying))
        self.log_likelihoods_ = [float(v) for v in result.log_likelihoods]
        self.n_iter_ = result.n_iter
        self.converged_ = bool(result.converged)
        if not self.converged_:
            warnings.warn(
                f"{self.method.upper()} stopped after `max_iter`={self.max_iter} iterations before the "
                f"log-likelihood changed by less than `tol`={self.tol}; raise `max_iter`.",
                ConvergenceWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------ inference
    def _filter(self, batch: SeriesBatch):
        return kalman_filter(batch.values, batch.mask, self.params_)

    def _last_filtered(self, batch: SeriesBatch):
        """Filter result cut at each series' own last step (series are padded at the end)."""
        result = self._filter(batch)
        last = (batch.lengths - 1).view(-1, 1, 1)
        S = self.params_.initial_state_mean.shape[-1]
        means = result.filtered_means.gather(1, last.expand(-1, 1, S))
        covs = result.filtered_covariances.gather(1, last.unsqueeze(-1).expand(-1, 1, S, S))
        return result._replace(filtered_means=means, filtered_covariances=covs)

    def _log_likelihood(self, data, covariates, **options):
        if options:
            raise TypeError(f"LinearGaussianSSM.log_likelihood got unexpected option(s) {sorted(options)}.")
        return self._filter(data).log_likelihoods

    def _predict_gaussian(self, horizon, history, covariates):
        forecast = kalman_forecast(self._last_filtered(history), self.params_, horizon)
        std = torch.diagonal(forecast.observation_covariances, dim1=-2, dim2=-1).clamp_min(0).sqrt()
        return forecast.observation_means, std

    def _sample(self, horizon, n_samples, history, covariates, generator):
        """Joint paths: start from the one-step state prediction and run the model forward."""
        forecast = kalman_forecast(self._last_filtered(history), self.params_, 1)
        start = self.params_._replace(
            initial_state_mean=forecast.state_means[:, 0],
            initial_state_covariance=forecast.state_covariances[:, 0],
        )
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

    def filter(self, y) -> StateEstimate:
        """Filtered state means ``E[x_t | y_1:t]`` (frame) and covariances (array)."""
        check_is_fitted(self)
        batch = to_series_batch(y, "y")
        result = self._filter(batch)
        return self._state_estimate(batch, result.filtered_means, result.filtered_covariances)

    def smooth(self, y) -> StateEstimate:
        """Smoothed state means ``E[x_t | y_1:T]`` (frame) and covariances (array)."""
        check_is_fitted(self)
        batch = to_series_batch(y, "y")
        result = kalman_smoother(batch.values, batch.mask, self.params_)
        return self._state_estimate(batch, result.smoothed_means, result.smoothed_covariances)

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
        self._set_params(KalmanParams(**{n: tensors.get(n) for n in PARAM_NAMES}))
        self.log_likelihoods_ = meta["log_likelihoods"]
        self.n_iter_ = meta["n_iter"]
        self.converged_ = meta["converged"]
