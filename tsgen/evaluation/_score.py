"""Forecast one origin and score it with :mod:`tsgen.metrics`, per horizon step.

Every score is computed per horizon step ``h`` (averaging over variables
of a multivariate target):

- ``mae``, ``rmse``, ``mase``, ``smape`` of the point forecast (the
  predictive mean of ``model.predict``);
- ``crps`` of the ``n_samples`` joint sample paths of ``model.sample``;
- ``pinball_q<level>`` of the predicted quantiles;
- ``coverage_80`` / ``coverage_95``: whether ``y`` lies in the central
  80% / 95% predictive interval;
- ``log_score`` = ``-log p(y_{t+h} | y_{1:t+h-1})`` from the model's
  one-step predictive densities (``log_likelihood(per_step=True)``) on the
  training window followed by the scored window, so that the sum over the
  horizon is the joint log predictive density ``-log p(y_{t+1:t+H} | y_{1:t})``
  of the whole window. Omitted for models without a likelihood.

Origins that share a fitted model are forecast together: the histories
go to ``predict``/``sample``/``log_likelihood`` as one list, which models
that batch over series (the Kalman-based ones) handle in one pass.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from tsgen import metrics
from tsgen.data import quantile_label

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


def stat_block(frame: pd.DataFrame, stat: str, n_dims: int) -> np.ndarray:
    """Column ``stat`` of a forecast frame as ``(horizon, dim)``."""
    if n_dims == 1:
        return frame[stat].to_numpy(dtype=np.float64)[:, None]
    return frame.xs(stat, axis=1, level="statistic").to_numpy(dtype=np.float64)


def as_2d(y) -> np.ndarray:
    values = y.to_numpy(dtype=np.float64, na_value=np.nan)
    return values[:, None] if values.ndim == 1 else values


def _safe_mase(actual, mean, history, season) -> np.ndarray:
    try:
        return metrics.mase(actual, mean, history, m=season, axis=1)
    except ValueError:
        # MASE is undefined when the history is too short or constant at the seasonal lag
        return np.full(actual.shape[0], np.nan)


def _log_scores(model, windows: list, horizon: int):
    """Per-window ``(horizon,)`` log scores from one batched ``log_likelihood`` call, or None."""
    try:
        per_step = model.log_likelihood(windows, per_step=True)
    except NotImplementedError:
        return None
    return [metrics.log_score(s.to_numpy(dtype=np.float64)[-horizon:], axis=()) for s in per_step]


def _scores(y, frame, samples, train, horizon, quantiles, season) -> dict:
    n_dims = y.shape[1]
    mean = stat_block(frame, "mean", n_dims)
    scores = {
        "mae": metrics.mae(y, mean, axis=1),
        "rmse": metrics.rmse(y, mean, axis=1),
        "mase": _safe_mase(y, mean, train, season),
        "smape": metrics.smape(y, mean, axis=1),
        "crps": metrics.crps_sample(y, samples, axis=1),
    }
    if quantiles:
        preds = np.stack([stat_block(frame, quantile_label(q), n_dims) for q in quantiles], axis=-1)
        losses = np.asarray(metrics.pinball_loss(y, preds, list(quantiles), axis=1)).reshape(horizon, -1)
        for j, q in enumerate(quantiles):
            scores[f"pinball_{quantile_label(q)}"] = losses[:, j]
    for level in COVERAGE_LEVELS:
        lo, hi = interval_quantiles((level,))
        scores[f"coverage_{round(level * 100)}"] = metrics.interval_coverage(
            y, stat_block(frame, quantile_label(lo), n_dims), stat_block(frame, quantile_label(hi), n_dims), axis=1
        )
    return scores


def score_origins(model, histories: list, actuals: list, horizon: int, quantiles, n_samples: int, season: int,
                  keep_samples: bool) -> list:
    """Forecast ``horizon`` steps after each history and score them against the matching actuals.

    All histories go to the model in one call per method (``y=`` a list),
    so models that batch over series condition on every origin at once.
    Returns one ``(scores, forecast, samples)`` per history: ``scores``
    maps metric names to ``(horizon,)`` arrays, ``forecast`` is the
    ``predict`` frame, ``samples`` the ``(n_samples, horizon, dim)`` paths
    (None unless kept).
    """
    levels = tuple(sorted(set(quantiles) | set(interval_quantiles())))
    frames = model.predict(horizon, y=list(histories), quantiles=levels)
    draws = model.sample(horizon, n_samples=n_samples, y=list(histories))
    log_scores = _log_scores(model, [pd.concat([h, a]) for h, a in zip(histories, actuals)], horizon)
    keep = ["mean"] + [quantile_label(q) for q in quantiles]
    out = []
    for k, (history, actual, frame) in enumerate(zip(histories, actuals, frames)):
        y, samples = as_2d(actual), np.asarray(draws[k], dtype=np.float64)
        scores = _scores(y, frame, samples, as_2d(history), horizon, quantiles, season)
        if log_scores is not None:
            scores["log_score"] = log_scores[k]
        forecast = frame[[c for c in frame.columns if (c if y.shape[1] == 1 else c[1]) in keep]]
        out.append((scores, forecast, samples if keep_samples else None))
    return out
