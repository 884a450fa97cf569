"""Bayesian online change-point detection (Adams & MacKay 2007) on a tsgen model's predictive densities.

The run length ``r_t`` counts the steps since the last change point (0: a
new regime starts at ``t``). With a constant hazard ``H`` (the prior
probability of a change at each step) the filtering posterior follows

    P(r_t = 0,     y_1:t) = H       sum_r P(r_{t-1} = r, y_1:t-1) p(y_t)
    P(r_t = r + 1, y_1:t) = (1 - H) P(r_{t-1} = r, y_1:t-1) p(y_t | y_{t-r-1:t-1})

where ``p(y_t | y_{t-r-1:t-1})`` is the model's one-step predictive density
given only the ``r + 1`` observations of the current regime, i.e.
``model.log_likelihood(y[s:], per_step=True)`` of the segment starting at
``s = t - r - 1`` (for latent models, the particle filter's one-step densities),
and ``p(y_t)`` the model's density of a first observation. The first
observation starts a regime (``r_1 = 0``). ``changepoint_probability[t] =
P(r_t = 0 | y_1:t)``. A missing ``y_t`` contributes density 1 to every
hypothesis (the model marginalises it).

Cost: one ``log_likelihood`` call per step (the regime that starts there,
over at most ``max_run_length`` steps), so ``O(T * max_run_length)``
predictive densities; run lengths beyond ``max_run_length - 1`` are merged
into the longest one, which then conditions on the last ``max_run_length - 1``
observations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import logsumexp


@dataclass(frozen=True)
class BOCPDResult:
    """``run_length_posterior``: (T, R) array, row t = P(r_t = k | y_1:t) for k = 0..R-1;
    ``changepoint_probability``: Series P(r_t = 0 | y_1:t); ``map_run_length``: Series of the most probable r_t;
    ``log_evidence``: log p(y_1:T) under the change-point prior."""

    run_length_posterior: np.ndarray
    changepoint_probability: pd.Series
    map_run_length: pd.Series
    log_evidence: float


def segment_log_densities(model, y, max_run_length: int, X=None) -> np.ndarray:
    """``L[s, j] = log p(y_{s+j} | y_s, ..., y_{s+j-1})`` from the fitted ``model`` (NaN-free; -inf beyond T)."""
    y_positional = _positional(y)
    n = len(y_positional)
    out = np.full((n, max_run_length), -np.inf)
    latent = getattr(model, "_latent_model", False)
    for s in range(n):
        piece = y_positional.iloc[s : s + max_run_length]
        options = {"X": None if X is None else X.iloc[s : s + max_run_length]}
        if latent:
            options.update(method="smc")
        values = np.asarray(model.log_likelihood(piece, per_step=True, **options), dtype=np.float64)
        out[s, : len(values)] = np.nan_to_num(values, nan=0.0)  # a missing step: density 1 under every run
    return out


def _positional(y) -> pd.Series:
    if isinstance(y, pd.Series):
        return y
    array = np.asarray(y, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"`y` must be one series; got shape {array.shape}.")
    return pd.Series(array)


def bocpd(model, y, hazard: float = 1 / 250, max_run_length: int | None = None, X=None) -> BOCPDResult:
    """Run-length posterior and change-point probabilities of ``y`` under a fitted tsgen ``model``.

    Parameters
    ----------
    model : fitted tsgen estimator
        Anything with ``log_likelihood(y, per_step=True)``.
    y : pd.Series or 1-d array
    hazard : float
        Prior probability of a change at each step (expected regime length ``1 / hazard``).
    max_run_length : int, optional
        Longest run length tracked (default: ``len(y)``, exact).
    """
    if not hasattr(model, "log_likelihood"):
        raise TypeError(f"`model` must be a fitted tsgen estimator; got {type(model).__name__}.")
    if isinstance(hazard, bool) or not isinstance(hazard, (int, float)) or not 0 < hazard < 1:
        raise ValueError(f"`hazard` must be a probability in (0, 1); got {hazard!r}.")
    series = _positional(y)
    n = len(series)
    if n == 0:
        raise ValueError("`y` is empty.")
    R = n if max_run_length is None else max_run_length
    if isinstance(R, bool) or not isinstance(R, (int, np.integer)) or R < 2:
        raise ValueError(f"`max_run_length` must be an int >= 2; got {max_run_length!r}.")
    R = int(min(R, n))
    L = segment_log_densities(model, series, R, X)
    log_h, log_1mh = np.log(hazard), np.log1p(-hazard)
    posterior = np.zeros((n, R))
    joint = np.full(R, -np.inf)  # log P(r_t = k, y_1:t)
    joint[0] = L[0, 0]
    log_evidence = joint[0]
    posterior[0, 0] = 1.0
    k = np.arange(R)
    for t in range(1, n):
        # the regime with run length k at t-1 started at t-1-k; y_t is its (k+1)-th step
        starts, steps = t - 1 - k, k + 1
        starts[-1], steps[-1] = t - R + 1, R - 1  # the merged longest run conditions on R - 1 observations
        valid = (starts >= 0) & np.isfinite(joint)
        grow = np.full(R, -np.inf)
        grow[valid] = joint[valid] + log_1mh + L[starts[valid], steps[valid]]
        new = np.full(R, -np.inf)
        new[0] = logsumexp(joint) + log_h + L[t, 0]
        new[1:] = grow[:-1]
        if R > 1 and np.isfinite(grow[-1]):  # the longest run keeps its length (see the module docstring)
            new[-1] = np.logaddexp(new[-1], grow[-1]) if np.isfinite(new[-1]) else grow[-1]
        step_evidence = logsumexp(new)
        log_evidence = step_evidence
        joint = new
        posterior[t] = np.exp(new - step_evidence)
    index = series.index
    cp = pd.Series(posterior[:, 0], index=index, name="changepoint_probability")
    run = pd.Series(posterior.argmax(axis=1), index=index, name="run_length")
    return BOCPDResult(posterior, cp, run, float(log_evidence))
