"""Forecast one origin and score it with :mod:`tsgen.metrics`, per horizon step.

Every score is computed per horizon step ``h`` (averaging over variables
of a multivariate target):

- ``mae``, ``rmse``, ``mase``, ``smape`` of the point forecast (the
  predictive mean of ``model.predict``);
- ``crps``: exact, in closed form (:func:`tsgen.metrics.crps_gaussian`,
  :func:`tsgen.metrics.crps_normal_mixture`),
  for models whose forecast marginals are Gaussian in closed form (those
  with ``_predict_gaussian``: the baselines ``Naive``, ``SeasonalNaive``,
  ``Drift``, ``Mean``, ``ARIMA``, ``ETS`` with additive errors, ``Theta``,
  ``LinearGaussianSSM``) and for an ``Ensemble`` of such members (the
  CRPS of the normal mixture, also closed form), so it carries no Monte
  Carlo noise and needs no sample paths; otherwise the unbiased (``fair``) estimate from the
  ``n_samples`` joint sample paths of ``model.sample``, whose expectation is
  the same exact CRPS (the plain empirical CRPS is biased upwards by
  ``E|X - X'| / (2 n)``, which would favour closed-form models in a
  comparison);
- ``pinball_q<level>`` of the predicted quantiles;
- ``coverage_80`` / ``coverage_95``: whether ``y`` lies in the central
  80% / 95% predictive interval;
- ``log_score`` = ``-log p(y_{t+h} | y_{1:t+h-1})`` from the model's
  one-step predictive densities (``log_likelihood(per_step=True)``) on the
  training window followed by the scored window, so that the sum over the
  horizon is the joint log predictive density ``-log p(y_{t+1:t+H} | y_{1:t})``
  of the whole window. Omitted for models without a likelihood. A
  forecast that is a point mass (a baseline fitted on a constant window)
  scores ``-inf`` at a step it lands on and ``+inf`` off it.

These per-step values are summarised over many steps by
:func:`tsgen.evaluation._result.aggregate` (pooling the points, so the
RMSE of a window is not the mean of its per-step RMSEs).

Origins that share a fitted model are forecast together: the histories
go to the estimator's array-level methods (the ones under ``predict``,
``sample`` and ``log_likelihood``, without their pandas wrapping) as one
NaN-padded ``SeriesBatch`` cut from the series' array, so no pandas object
is made per origin; models that batch over series (the Kalman-based ones)
handle them in one pass, and each metric is computed once over
``(origin, horizon, dim)``.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch

from tsgen import metrics
from tsgen.data import SeriesBatch, hold_past, quantile_label

#: central interval levels reported as coverage_<level>
COVERAGE_LEVELS = (0.8, 0.95)


def interval_quantiles(levels=COVERAGE_LEVELS) -> tuple[float, ...]:
    # rounded so 0.1 from (1 - 0.8) / 2 is the same level (and column) as a requested 0.1
    return tuple(round(q, 12) for level in levels for q in ((1 - level) / 2, (1 + level) / 2))


def with_seed(model, seed: int):
    """A shallow copy of a fitted model drawing from ``seed`` (the caller's model is untouched)."""
    if "random_state" not in model.get_params(deep=False):
        return model
    seeded = copy.copy(model)
    seeded.set_params(random_state=int(seed))
    return seeded


def as_2d(y) -> np.ndarray:
    values = y.to_numpy(dtype=np.float64, na_value=np.nan)
    return values[:, None] if values.ndim == 1 else values


def _mase(actual, mean, trains, season) -> np.ndarray:
    """MASE of every origin ``(origin, horizon)``; NaN for an origin whose history has no seasonal scale."""
    try:
        return metrics.mase(actual, mean, trains, m=season, axis=2, time_axis=1)
    except ValueError:
        # undefined for some origin (history too short or constant at the seasonal lag): score each alone
        out = np.full(actual.shape[:2], np.nan)
        for k in range(actual.shape[0]):
            try:
                out[k] = metrics.mase(actual[k], mean[k], trains[k], m=season, axis=1)
            except ValueError:
                pass
        return out


def _log_scores(model, windows: SeriesBatch, horizon: int, X=None, static=None):
    """``(origin, horizon)`` log scores from one batched per-step likelihood, or None.

    Past-observed covariates are held at their value at each origin, as in the forecast."""
    covariates = model._covariates(X, windows, 0, static=static)
    if X is not None:
        covariates = hold_past(covariates, windows.lengths - horizon, model._past_columns())
    try:
        per_step = model._per_step_log_likelihood(windows, covariates)
    except NotImplementedError:
        return None
    rows = np.arange(len(windows.lengths))[:, None]
    last = windows.lengths.numpy()[:, None] - horizon + np.arange(horizon)[None, :]
    densities = np.asarray(per_step[rows, last], dtype=np.float64)
    # a point mass (a baseline fitted on a constant window) that the step lands on has density +inf, which
    # log_score refuses as a density; its score is the limit -inf, and the other metrics of the window stand
    on_mass = densities == np.inf
    scores = metrics.log_score(np.where(on_mass, np.nan, densities), axis=())
    return np.where(on_mass, -np.inf, scores)


def _crps(y, samples, marginals) -> np.ndarray:
    """``(origin, horizon)`` CRPS: exact from closed-form ``marginals`` (weights, means, stds) when given, else
    from ``samples``."""
    if marginals is None:
        return metrics.crps_sample(y, samples, axis=2, fair=samples.shape[0] > 1)
    weights, means, stds = marginals
    if len(weights) == 1:
        return metrics.crps_gaussian(y, means[0], stds[0], axis=2)
    return metrics.crps_normal_mixture(y, weights, means, stds, axis=2)


def closed_form_marginals(model, horizon, history, covariates):
    """The forecast marginals as a normal mixture ``(weights, means, stds)`` when the model has them in closed
    form (``_predict_gaussian``, or an ensemble's ``_predict_mixture``), else None."""
    gaussian = model._predict_gaussian(horizon, history, covariates)
    if gaussian is not None:
        mean, std = (np.asarray(t.detach().cpu().numpy(), dtype=np.float64) for t in gaussian)
        return np.ones(1), mean[None], std[None]
    mixture = getattr(model, "_predict_mixture", None)
    return None if mixture is None else mixture(horizon, history, covariates)


def _scores(y, mean, bands, samples, trains, quantiles, season, marginals=None) -> dict:
    """Every metric of every origin as ``(origin, horizon)`` arrays (averaged over variables).

    ``y``, ``mean`` are ``(origin, horizon, dim)``, ``bands`` maps a
    quantile level to its ``(origin, horizon, dim)`` forecast, ``samples``
    is ``(n_samples, origin, horizon, dim)`` (None with ``marginals``),
    ``marginals`` the exact normal-mixture marginals ``(weights, means,
    stds)`` or None, ``trains`` the NaN-padded histories ``(origin, time, dim)``.
    """
    scores = {
        "mae": metrics.mae(y, mean, axis=2),
        "rmse": metrics.rmse(y, mean, axis=2),
        "mase": _mase(y, mean, trains, season),
        "smape": metrics.smape(y, mean, axis=2),
        "crps": _crps(y, samples, marginals),
    }
    if quantiles:
        preds = np.stack([bands[q] for q in quantiles], axis=-1)
        losses = np.asarray(metrics.pinball_loss(y, preds, list(quantiles), axis=2)).reshape(*y.shape[:2], -1)
        for j, q in enumerate(quantiles):
            scores[f"pinball_{quantile_label(q)}"] = losses[..., j]
    for level in COVERAGE_LEVELS:
        lo, hi = interval_quantiles((level,))
        scores[f"coverage_{round(level * 100)}"] = metrics.interval_coverage(y, bands[lo], bands[hi], axis=2)
    return scores


def window_batch(values: np.ndarray, index: pd.Index, columns: tuple, spans: list) -> SeriesBatch:
    """The windows ``values[a:b]`` for ``(a, b)`` in ``spans`` as one NaN-padded batch (no pandas per window)."""
    lengths = [b - a for a, b in spans]
    padded = np.full((len(spans), max(lengths), values.shape[1]), np.nan)
    for k, (a, b) in enumerate(spans):
        padded[k, : b - a] = values[a:b]
    tensor = torch.from_numpy(padded)
    return SeriesBatch(values=tensor, mask=~torch.isnan(tensor), lengths=torch.tensor(lengths, dtype=torch.long),
                       indexes=tuple(index[a:b] for a, b in spans), columns=tuple(columns), kind="list")


def score_origins(model, values: np.ndarray, index: pd.Index, columns: tuple, spans: list, horizon: int, quantiles,
                  n_samples: int, season: int, keep_samples: bool, exog=None) -> list:
    """Forecast ``horizon`` steps after each training window ``values[a:b]`` and score them.

    ``values`` ``(time, dim)`` is one validated series with its ``index``
    and ``columns``; ``spans`` the ``(train_start, stop)`` of each origin.
    All windows go to the model in one call per method (``y=`` a batch),
    so models that batch over series condition on every origin at once,
    and every metric is computed once for all origins. Returns one
    ``(scores, forecast, times, samples)`` per origin: ``scores`` maps
    metric names to ``(horizon,)`` arrays, ``forecast`` is
    ``(horizon, dim, statistic)`` for the statistics ``mean`` and the
    requested quantiles, ``times`` the forecast index, ``samples`` the
    ``(n_samples, horizon, dim)`` paths (None unless kept). ``exog``
    (the backtest's per-series covariates, or None) gives each window its
    covariates over its steps and horizon; the model holds past-observed
    columns at the origin.
    """
    levels = tuple(sorted(set(quantiles) | set(interval_quantiles())))
    X = None if exog is None or exog.X is None else [exog.X.iloc[a : b + horizon] for a, b in spans]
    static = None if exog is None else exog.static_rows(len(spans))
    history, covariates = model._conditioning(horizon, window_batch(values, index, columns, spans), X, None, static)
    mean, bands = model._forecast(horizon, history, covariates, levels)
    marginals = closed_form_marginals(model, horizon, history, covariates)
    # closed-form marginals score the CRPS exactly: paths are drawn only when kept
    draws = model._draw_paths(horizon, n_samples, history, covariates) if marginals is None or keep_samples else None
    log_scores = _log_scores(model, window_batch(values, index, columns, [(a, b + horizon) for a, b in spans]), horizon,
                             X, static)
    y = np.stack([values[b : b + horizon] for _, b in spans])
    scores = _scores(y, mean, bands, None if draws is None else draws.swapaxes(0, 1), history.values.numpy(),
                     quantiles, season, marginals)
    if log_scores is not None:
        scores["log_score"] = log_scores
    kept = np.stack([mean] + [bands[q] for q in quantiles], axis=-1)
    # the forecast of an origin is scored against the next `horizon` observations: its times are theirs
    return [({name: v[k] for name, v in scores.items()}, kept[k], index[b : b + horizon],
             draws[k] if keep_samples else None) for k, (_, b) in enumerate(spans)]
