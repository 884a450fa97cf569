"""Conformal calibration of any tsgen estimator's forecast distribution.

``ConformalForecaster(model)`` backtests ``model`` over the last
``n_windows`` rolling origins of the training series (with
:func:`tsgen.backtest`), keeps the signed forecast errors ``r = y - mean``
per horizon step and variable, and turns them into calibrated quantiles
around the model's mean:

    q_hat(level)_h = mean_h + r_h[(k)],   k = ceil((n + 1) level) for level >= 1/2,
                                          k = floor((n + 1) level) for level < 1/2,

with ``r_h[(1)] <= ... <= r_h[(n)]`` the ``n`` calibration errors of step
``h`` (``+inf`` when ``k > n``, ``-inf`` when ``k < 1``: too few windows
for that level).

Guarantee. If the test error at step ``h`` and the ``n`` calibration
errors of step ``h`` are exchangeable, then ``P(y_h <= q_hat(level)_h) >=
k / (n + 1) >= level`` for an upper level and ``P(y_h < q_hat(level)_h) <=
level`` for a lower one (Vovk et al. 2005; Lei et al. 2018), so the central
interval between the levels ``alpha/2`` and ``1 - alpha/2`` covers with
probability at least ``1 - alpha``: marginal, per-step coverage (averaged
over the calibration/test draw), not conditional on the history and not
joint over the horizon. It is the one-sided form of the familiar symmetric
rule "mean +- the ceil((n + 1)(1 - alpha))/n empirical quantile of |r|".

Assumptions, said plainly: exchangeability holds for i.i.d. or exchangeable
series; for a serially dependent series the errors of nearby origins
overlap and the guarantee is approximate (valid under stationarity and
mixing as n grows, Chernozhukov, Wuthrich & Zhu 2018). ``method="split"``
fits the model once, at the first calibration origin, and forecasts every
origin and the future from that one fit by conditioning on the history
(``y=``), so calibration and test errors come from the same fitted model,
the split-conformal setting. ``method="rolling"`` refits at every origin
and finally on the whole series; each error then comes from a model fitted
on a little less data than the one deployed (usually a little
conservative). Errors of several series are pooled per step: the series
are assumed exchangeable too.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from tsgen._validation import is_int
from tsgen.base import BaseForecaster, _decode, _encode, saved_class
from tsgen.data import SeriesBatch
from tsgen.exceptions import InsufficientDataWarning

_METHODS = ("split", "rolling")


def _order_statistics(errors: np.ndarray, levels) -> dict[float, np.ndarray]:
    """Conformal offsets per level: the k-th smallest error of each (step, variable), k as in the module docstring.

    ``errors`` is ``(n, horizon, dims)`` with NaN for a missing target.
    """
    ordered = np.sort(errors, axis=0)  # NaN sorts last
    n = (~np.isnan(errors)).sum(0)
    out = {}
    for level in levels:
        k = np.where(level >= 0.5, np.ceil((n + 1) * level - 1e-9), np.floor((n + 1) * level + 1e-9)).astype(int)
        value = np.take_along_axis(ordered, np.clip(k - 1, 0, max(len(ordered) - 1, 0))[None], axis=0)[0]
        out[level] = np.where(k > n, np.inf, np.where(k < 1, -np.inf, value))
    return out


class ConformalForecaster(BaseForecaster):
    """Conformal prediction intervals and quantiles for any tsgen estimator.

    Calibrates ``model``'s forecast distribution from its own rolling-origin
    errors, per horizon step: see the module docstring for the rule, the
    coverage guarantee (marginal per-step coverage >= the nominal level,
    with the finite-sample correction ceil((n + 1) level)) and its
    assumptions (exchangeable errors).

    Parameters
    ----------
    model : tsgen estimator
        The (unfitted) forecaster to calibrate; it is cloned, never fitted
        in place.
    horizon : int
        Longest calibrated horizon; ``predict``/``sample`` accept up to it.
    method : {"split", "rolling"}
        ``"split"``: fit once at the first calibration origin and condition
        that fit on every later history, including the full series for the
        future. ``"rolling"``: refit at every calibration origin, then on
        the full series.
    n_windows : int
        Calibration origins per series (the last ``n_windows`` origins that
        leave ``horizon`` observed steps; step 1). A level ``q`` needs
        ``n >= ceil(1 / min(q, 1 - q)) - 1`` errors for a finite quantile
        (19 for the 5%/95% levels).
    n_samples : int
        Sample paths per calibration origin drawn by the backtest (only its
        scores use them; the calibration reads the mean).
    random_state : int or None
        Seeds the backtest and, when ``model`` has no seed of its own, the
        fitted model.

    Attributes
    ----------
    model_ : tsgen estimator
        The fitted model whose mean is calibrated.
    errors_ : ndarray (n, horizon, n_dims)
        Calibration errors ``y - mean`` pooled over series and origins
        (NaN where the target was missing).
    bias_ : ndarray (horizon, n_dims)
        Mean calibration error, added to the model's mean.
    backtest_ : BacktestResult or None
        The calibration backtest (None after ``tsgen.load``).

    Notes
    -----
    ``predict`` returns the bias-corrected mean and the conformal
    quantiles. ``sample`` returns paths whose per-step marginals are the
    calibrated error distribution around the model's mean (the empirical
    quantiles of ``mean_h + r_h`` at levels ``(j + 1/2) / n_samples``) and
    whose dependence across steps and variables is the model's own: each
    model path keeps its ranks (the empirical copula coupling, or
    "Schaake shuffle", of Clark et al. 2004). ``log_likelihood`` and
    ``score`` are the wrapped model's (one-step densities are not
    calibrated).
    """

    def __init__(self, model=None, horizon=12, method="split", n_windows=30, n_samples=20, random_state=None):
        self.model = model
        self.horizon = horizon
        self.method = method
        self.n_windows = n_windows
        self.n_samples = n_samples
        self.random_state = random_state

    @classmethod
    def get_test_params(cls):
        from tsgen.models.baselines import Drift, Naive

        return [
            {"model": Naive(random_state=0), "horizon": 6, "n_windows": 19, "random_state": 0},
            {"model": Drift(), "horizon": 6, "method": "rolling", "n_windows": 19, "random_state": 0},
        ]

    # ------------------------------------------------------------ validation
    def _validate(self):
        if not isinstance(self.model, BaseForecaster):
            raise TypeError(f"`model` must be a tsgen estimator; got {type(self.model).__name__}.")
        if self.method not in _METHODS:
            raise ValueError(f"`method` must be one of {_METHODS}; got {self.method!r}.")
        for name in ("horizon", "n_windows", "n_samples"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive int; got {value!r}.")

    def _min_length(self) -> int:
        # the first thing fit asks, so the arguments are checked before the data
        self._validate()
        return self.model._min_length() + self.horizon + self.n_windows - 1

    def _history(self, y):
        # another history only has to be long enough for the fitted model, not for calibration
        return super()._history(None) if y is None else self.model_._history(y)

    def _check_horizon(self, horizon: int) -> None:
        if horizon > self.errors_.shape[1]:
            raise ValueError(
                f"`horizon` must be at most {self.errors_.shape[1]}, the horizon calibrated at fit; got {horizon}. "
                "Refit with a larger `horizon`."
            )

    # ----------------------------------------------------------------- fit
    def _fit(self, data: SeriesBatch, covariates):
        from tsgen.evaluation import backtest
        from tsgen.evaluation._backtest import _series_pandas

        if covariates is not None:
            raise ValueError("`X` was given but ConformalForecaster takes no covariates.")
        series = [_series_pandas(data, i) for i in range(data.n_series)]
        result = backtest(
            self.model, series, self.horizon, start=-(self.horizon + self.n_windows - 1),
            refit=self.method == "rolling", quantiles=(0.5,), n_samples=self.n_samples,
            random_state=self.random_state,
        )
        forecasts = result.forecasts
        n_out = len(forecasts) // (self.horizon * data.n_dims)
        # rows are (origin, variable, horizon) in that order (BacktestResult.forecasts)
        shape = (n_out, data.n_dims, self.horizon)
        errors = (forecasts["y"].to_numpy(float) - forecasts["mean"].to_numpy(float)).reshape(shape)
        model = clone(self.model)
        params = model.get_params(deep=False)
        if "random_state" in params and params["random_state"] is None and self.random_state is not None:
            model.set_params(random_state=self.random_state)
        if self.method == "split":
            # the fit of the first calibration origin, deployed by conditioning on the full history
            train = [s.iloc[: len(s) - self.horizon - self.n_windows + 1] for s in series]
            model.fit(train if data.is_collection else train[0])
        else:
            model.fit(series if data.is_collection else series[0])
        self.model_ = model
        self.errors_ = errors.transpose(0, 2, 1)
        observed = ~np.isnan(self.errors_)
        # a step never observed in calibration gets no bias correction (and no finite quantile)
        self.bias_ = np.where(observed, self.errors_, 0.0).sum(0) / np.maximum(observed.sum(0), 1)
        self.backtest_ = result

    # ------------------------------------------------------------ forecasts
    def _forecast(self, horizon, history, covariates, levels):
        self._check_horizon(horizon)
        mean, _ = self.model_._forecast(horizon, history, None, ())
        offsets = _order_statistics(self.errors_[:, :horizon], levels)
        unbounded = sorted(q for q in levels if np.isinf(offsets[q]).any())
        if unbounded:
            warnings.warn(
                f"quantile level(s) {unbounded} are infinite: {self.errors_.shape[0]} calibration errors "
                "cannot certify them (a level q needs at least 1/min(q, 1 - q) - 1); raise `n_windows`.",
                InsufficientDataWarning, stacklevel=3,
            )
        return mean + self.bias_[:horizon], {q: mean + offsets[q] for q in levels}

    def _draw_paths(self, horizon, n_samples, history, covariates) -> np.ndarray:
        self._check_horizon(horizon)
        paths = self.model_._draw_paths(horizon, n_samples, history, None)  # (series, n, h, d)
        mean, _ = self.model_._forecast(horizon, history, None, ())
        errors = self.errors_[:, :horizon]
        levels = (np.arange(n_samples) + 0.5) / n_samples
        if np.isnan(errors).all(axis=0).any():
            raise ValueError("a calibrated step has no observed calibration error; refit on data with fewer gaps.")
        marginal = np.nanquantile(errors, levels, axis=0)  # (n, h, d), increasing in n
        ranks = np.argsort(np.argsort(paths, axis=1, kind="stable"), axis=1, kind="stable")
        reordered = np.take_along_axis(np.broadcast_to(marginal, paths.shape), ranks, axis=1)
        return mean[:, None] + reordered

    # --------------------------------------------------------- likelihoods
    def _per_step_log_likelihood(self, data, covariates, **options):
        return self.model_._per_step_log_likelihood(data, covariates, **options)

    def _total_log_likelihood(self, data, covariates, **options):
        return self.model_._total_log_likelihood(data, covariates, **options)

    # ------------------------------------------------------------ save/load
    def _fitted_state(self):
        meta, tensors = self.model_._to_payload()
        state = {f"inner.{k}": v for k, v in tensors.items()}
        state["errors"] = torch.as_tensor(self.errors_)
        state["bias"] = torch.as_tensor(self.bias_)
        return {"model": meta}, state

    def _load_fitted_state(self, meta, tensors):
        inner = {k[len("inner."):]: v for k, v in tensors.items() if k.startswith("inner.")}
        fitted = saved_class(meta["model"]["class"], "the conformal forecaster's model", BaseForecaster)
        self.model_ = fitted._from_payload(meta["model"], inner)
        self.errors_ = tensors["errors"].numpy().astype(np.float64)
        self.bias_ = tensors["bias"].numpy().astype(np.float64)
        self.backtest_ = None

    def _to_payload(self):
        check_is_fitted(self)
        # the template estimator is stored by class and parameters in the fitted state, not as a JSON parameter
        shallow = copy.copy(self)
        shallow.model = None
        meta, tensors = BaseForecaster._to_payload(shallow)
        meta["template"] = {"class": type(self.model).__name__, "params": _encode(self.model.get_params(deep=False))}
        return meta, tensors

    @classmethod
    def _from_payload(cls, meta, tensors):
        forecaster = super()._from_payload(meta, tensors)
        template = saved_class(meta["template"]["class"], "the conformal forecaster's model", BaseForecaster)
        forecaster.set_params(model=template(**_decode(meta["template"]["params"])))
        return forecaster
