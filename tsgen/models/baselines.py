r"""Benchmark forecasters with exact Gaussian predictive distributions.

Each baseline is a generative model with a closed-form predictive
distribution (Hyndman & Athanasopoulos, *Forecasting: Principles and
Practice*, 3rd ed., §5.5), ``e_t ~ N(0, sigma^2)`` i.i.d.:

============== ============================== ======================================
model          equation                       h-step predictive ``N(mean, var)``
============== ============================== ======================================
Naive          ``y_t = y_{t-1} + e_t``        ``y_T``, ``sigma^2 h``
SeasonalNaive  ``y_t = y_{t-m} + e_t``        ``y_{T+h-mk}``, ``sigma^2 k``, ``k = floor((h-1)/m)+1``
Drift          ``y_t = y_{t-1} + c + e_t``    ``y_T + h c``, ``sigma^2 h (1 + h/(T-1))``
Mean           ``y_t = mu + e_t``             ``mu``, ``sigma^2 (1 + 1/T)``
============== ============================== ======================================

``sigma`` is the residual standard deviation of the fitted series,
``sqrt(sum(e_t^2) / (n - k))`` over its ``n`` residuals with ``k`` the number
of fitted location parameters (1 for ``c`` and ``mu``, 0 otherwise). The
drift and mean forecasts include the estimation uncertainty of ``c`` and
``mu`` (the ``h/(T-1)`` and ``1/T`` terms), as FPP3 does; ``sample`` draws
paths with exactly these marginals (the uncertain ``c`` or ``mu`` is drawn
once per path, so paths are jointly Gaussian with the right covariance).
``log_likelihood`` scores data under the fitted plug-in model: the exact
one-step density ``log p(y_t | y_<t)`` of the random walk (first step of
each lag chain not scored, NaN), or of i.i.d. ``N(mu, sigma^2)`` for
``Mean``.

Missing values (NaN) are marginalised exactly, never filled: a random walk
observed at ``p`` and next at ``t`` has ``y_t - y_p ~ N(k c, k sigma^2)``
with ``k`` the number of steps (seasons for ``SeasonalNaive``) between
them, so ``c`` is the total change over the total span (its MLE) and
``sigma^2`` is estimated from the increments divided by ``k``; ``T - 1``
in the drift variance is that span. A forecast from a history that ends in
NaN starts from the last observed value with the gap added to ``h``.

Multivariate targets are forecast variable by variable. A model fitted on
one series applies to any series; one fitted on many pairs its series one
to one with ``y``'s (as ARIMA). Conditioning on ``y`` keeps the fitted
``sigma``, ``c``, ``mu`` and takes the last values from ``y``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_is_fitted

from tsgen._validation import is_int
from tsgen.base import BaseForecaster
from tsgen.data import SeriesBatch
from tsgen.data._index import resolve_period as _resolve_period

_LOG_2PI = math.log(2.0 * math.pi)


def resolve_period(period, data: SeriesBatch | None) -> int:
    """``period`` if given, else the seasonal period of ``y``'s index frequency (1: none); the one rule
    of every estimator with a ``period`` (:func:`tsgen.data._index.resolve_period`)."""
    return _resolve_period(period, None if data is None else data.indexes)


def _rows(batch: SeriesBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Values and mask as ``(series * dims, time)`` rows, and each row's length."""
    n, t, d = batch.values.shape
    values = batch.values.permute(0, 2, 1).reshape(n * d, t)
    mask = batch.mask.permute(0, 2, 1).reshape(n * d, t)
    return values, mask, batch.lengths.repeat_interleave(d)


def _last_observed(mask: torch.Tensor, lag: int) -> torch.Tensor:
    """``(rows, time)``: the latest observed step ``s <= t`` with ``s = t mod lag``, or -1."""
    rows, t = mask.shape
    index = torch.where(mask, torch.arange(t).expand(rows, t), torch.tensor(-1))
    pad = (-t) % lag
    index = F.pad(index, (0, pad), value=-1).reshape(rows, -1, lag)
    return index.cummax(1).values.reshape(rows, -1)[:, :t]


def _increments(values: torch.Tensor, mask: torch.Tensor, lag: int):
    """Each observed step's change since the previous observed step of its lag chain, and the gap
    in lags: ``(delta, gaps, scored)``, each ``(rows, time)``; ``scored`` is False where there is none."""
    last = _last_observed(mask, lag)
    previous = F.pad(last, (lag, 0), value=-1)[:, : last.shape[1]]
    scored = mask & (previous >= 0)
    safe = previous.clamp(min=0)
    steps = torch.arange(values.shape[1]).expand_as(previous)
    gaps = torch.where(scored, (steps - safe) // lag, 1).to(values.dtype)
    delta = torch.where(scored, values - values.gather(1, safe), 0.0)
    return delta, gaps, scored


def _normal_log_density(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    density = -0.5 * (_LOG_2PI + var.log() + (x - mean) ** 2 / var)
    # a zero variance (fitted on a constant history) is a point mass, the limit of the normal: +inf on it and
    # -inf off it, so a departure scores as impossible (the formula gives NaN, read downstream as "missing")
    point_mass = torch.where(x == mean, torch.inf, -torch.inf).to(density.dtype)
    return torch.where(var > 0, density, point_mass)


class _Baseline(BaseForecaster):
    """Shared machinery: per-row statistics ``(sigma, location, count)`` and the hooks built on them.

    ``location`` is the drift ``c`` (Drift), the mean ``mu`` (Mean) or 0; ``count`` is the number of
    steps that estimated it (the span ``T - 1`` of Drift, the ``T`` of Mean)."""

    _fits_series_independently = True
    #: "walk" (a random walk on lag chains) or "iid"
    _kind = "walk"
    #: location parameters estimated besides sigma (the divisor of sigma^2 is n - _n_location)
    _n_location = 0

    def __init__(self, random_state=None):
        self.random_state = random_state

    @classmethod
    def get_test_params(cls):
        return [{"random_state": 0}]

    def _lag(self, data: SeriesBatch | None) -> int:
        """The lag of the walk for scoring and forecasting (fixed at fit)."""
        return 1

    def _fit_lag(self, data: SeriesBatch) -> int:
        return 1

    def _min_length(self) -> int:
        return 1 + self._n_location + (self._kind == "walk")

    # ---------------------------------------------------------- fitting
    def _fit(self, data, covariates):
        lag = self._fit_lag(data)
        values, mask, _ = _rows(data)
        n_needed = 1 + self._n_location
        if self._kind == "iid":
            count = mask.sum(1).to(values.dtype)
            location = torch.where(mask, values, 0.0).sum(1) / count
            residuals = torch.where(mask, values - location[:, None], 0.0)
            n_terms = count
            sum_squares = (residuals**2).sum(1)
        else:
            delta, gaps, scored = _increments(values, mask, lag)
            n_terms = scored.sum(1).to(values.dtype)
            count = gaps.where(scored, 0.0).sum(1)  # the span in lags
            if self._n_location:  # drift: total change over total span, the MLE under gaps
                location = delta.sum(1) / count.clamp(min=1.0)
            else:
                location = torch.zeros_like(count)
            sum_squares = torch.where(scored, (delta - gaps * location[:, None]) ** 2 / gaps, 0.0).sum(1)
        short = (n_terms < n_needed).nonzero().flatten()
        if len(short):
            row = int(short[0])
            series, dim = divmod(row, data.n_dims)
            what = "observed values" if self._kind == "iid" else (
                f"observed steps with an observed value one season (period={lag} steps) earlier" if lag > 1
                else "pairs of observed steps")
            raise ValueError(
                f"`y` series {series}{f' variable {dim}' if data.n_dims > 1 else ''} has "
                f"{int(n_terms[row])} {what}; {type(self).__name__} needs at least {n_needed}."
            )
        sigma = (sum_squares / (n_terms - self._n_location)).sqrt()
        self._stats = torch.stack([sigma, location, count], 1).reshape(data.n_series, data.n_dims, 3)
        self._set_attributes(data.is_collection)

    def _set_attributes(self, collection: bool):
        stats = self._stats.numpy()

        def out(column):
            values = [row[0] if len(row) == 1 else row for row in stats[..., column].tolist()]
            return values if collection else values[0]

        self.sigma_ = out(0)
        self._collection = collection
        if self._n_location:
            setattr(self, "drift_" if self._kind == "walk" else "mean_", out(1))

    def _paired(self, n_series: int, n_dims: int) -> torch.Tensor:
        """Fitted ``(sigma, location, count)`` per row of a batch of ``n_series`` series."""
        n_fitted = self._stats.shape[0]
        if n_fitted == 1:
            stats = self._stats.expand(n_series, n_dims, 3)
        elif n_fitted == n_series:
            stats = self._stats
        else:
            raise ValueError(
                f"`y` has {n_series} series but the model was fitted on {n_fitted}; pass {n_fitted} "
                "series (one per fitted model) or refit."
            )
        return stats.reshape(n_series * n_dims, 3)

    # ----------------------------------------------------------- scoring
    def _log_likelihood(self, data, covariates, **options):
        if options:
            raise TypeError(f"{type(self).__name__}.log_likelihood got unexpected option(s) {sorted(options)}.")
        values, mask, _ = _rows(data)
        sigma, location, _ = self._paired(data.n_series, data.n_dims).unbind(1)
        var = (sigma**2)[:, None]
        if self._kind == "iid":
            out = _normal_log_density(values, location[:, None], var).where(mask, 0.0)
        else:
            delta, gaps, scored = _increments(values, mask, self._lag(data))
            out = _normal_log_density(delta, gaps * location[:, None], gaps * var)
            # the first observed step of each lag chain only starts the walk: not scored
            out = torch.where(scored, out, torch.where(mask, torch.nan, 0.0))
        # variables are independent given the past: a step's density is the product over them
        out = out.reshape(data.n_series, data.n_dims, -1)
        return torch.where(out.isnan().all(1), torch.nan, out.nansum(1))

    def _total_log_likelihood(self, data, covariates, **options):
        values = self._per_step_log_likelihood(data, covariates, **options)
        # one impossible step makes the sequence impossible, even beside steps on a point mass (+inf)
        impossible = (values == -np.inf).any(1)
        return np.where(impossible, -np.inf, np.nansum(np.where(impossible[:, None], 0.0, values), 1))

    # -------------------------------------------------------- forecasting
    def _start(self, history: SeriesBatch, horizon: int):
        """Per row and future step: the value the forecast starts from, the lags ``k`` since it was
        observed, and the per-row fitted statistics."""
        values, mask, lengths = _rows(history)
        lag = self._lag(history)
        stats = self._paired(history.n_series, history.n_dims)
        steps = torch.arange(1, horizon + 1)
        future = (lengths - 1)[:, None] + steps  # index of each future step
        # the latest step of the same phase inside the history, then its latest observed one
        anchor = future - lag * torch.ceil(steps / lag).long()
        last = _last_observed(mask, lag)
        source = last.gather(1, anchor)
        if bool((source < 0).any()):
            raise ValueError(
                "`y` has a season (a position modulo the period) with no observed value to forecast from."
                if lag > 1 else "`y` has no observed value to forecast from."
            )
        start = values.gather(1, source)
        gaps = ((future - source) // lag).to(values.dtype)
        return start, gaps, stats, steps

    def _moments(self, horizon, history):
        if self._kind == "iid":
            stats = self._paired(history.n_series, history.n_dims)
            sigma, location, count = stats.unbind(1)
            mean = location[:, None].expand(-1, horizon)
            std = (sigma * (1.0 + 1.0 / count).sqrt())[:, None].expand(-1, horizon)
            return mean, std
        start, gaps, stats, _ = self._start(history, horizon)
        sigma, location, count = (s[:, None] for s in stats.unbind(1))
        var = sigma**2 * gaps
        if self._n_location:  # the drift's estimation error grows with the square of the lead time
            var = var + sigma**2 * gaps**2 / count
        return start + location * gaps, var.sqrt()

    def _as_batch(self, tensor: torch.Tensor, history: SeriesBatch) -> torch.Tensor:
        """``(rows, ...)`` -> ``(series, ..., dims)``."""
        shaped = tensor.reshape(history.n_series, history.n_dims, *tensor.shape[1:])
        return shaped.movedim(1, -1)

    def _predict_gaussian(self, horizon, history, covariates):
        mean, std = self._moments(horizon, history)
        return self._as_batch(mean, history), self._as_batch(std, history)

    def _sample(self, horizon, n_samples, history, covariates, generator):
        dtype = history.values.dtype
        rows = history.n_series * history.n_dims
        shocks = torch.randn(rows, n_samples, horizon, generator=generator, dtype=dtype)
        level_shock = torch.randn(rows, n_samples, 1, generator=generator, dtype=dtype)
        if self._kind == "iid":
            sigma, location, count = (s[:, None, None] for s in self._paired(
                history.n_series, history.n_dims).unbind(1))
            # mu is drawn once per path: its estimation error is shared by all steps of a path
            paths = location + sigma * (level_shock / count.sqrt() + shocks)
            return self._as_batch(paths, history)
        start, gaps, stats, steps = self._start(history, horizon)
        sigma, location, count = (s[:, None] for s in stats.unbind(1))
        lag = self._lag(history)
        drift = location
        if self._n_location:
            drift = location + sigma / count.sqrt() * level_shock[..., 0]  # (rows, n_samples)
        paths = torch.empty(rows, n_samples, horizon, dtype=dtype)
        for h in range(horizon):
            if h < lag:  # first step of its chain: from the observed start, over the whole gap
                k = gaps[:, h : h + 1]
                base, step_var = start[:, h : h + 1], sigma**2 * k
            else:
                k = torch.ones_like(gaps[:, h : h + 1])
                base, step_var = paths[:, :, h - lag], sigma**2
            paths[:, :, h] = base + drift * k + step_var.sqrt() * shocks[:, :, h]
        return self._as_batch(paths, history)

    # ---------------------------------------------------------- save/load
    def _fitted_state(self):
        check_is_fitted(self)
        return {"collection": self._collection}, {"stats": self._stats}

    def _load_fitted_state(self, meta, tensors):
        stats = tensors["stats"]
        if stats.dim() != 3 or stats.shape[1:] != (self.n_dims_, 3) or not stats.is_floating_point():
            raise ValueError(f"stored statistics have shape {tuple(stats.shape)}; expected (series, {self.n_dims_}, 3)")
        if not bool(torch.isfinite(stats).all()) or bool((stats[..., 0] < 0).any()):
            raise ValueError("stored statistics are not finite with a non-negative sigma")
        self._stats = stats
        self._set_attributes(bool(meta["collection"]))


class Naive(_Baseline):
    """Naive forecast: the last observed value, ``y_t = y_{t-1} + e_t``.

    h-step predictive ``N(y_T, sigma^2 h)``. See :mod:`tsgen.models.baselines`
    for the estimation of ``sigma``, missing values and many series.

    Parameters
    ----------
    random_state : int or None
        Seed of ``sample``.

    Attributes
    ----------
    sigma_ : float or list
        Residual standard deviation (a list per series when ``fit`` got a
        list, a list per variable for a multivariate target; so are the
        attributes below).
    """


class Drift(_Baseline):
    """Random walk with drift: ``y_t = y_{t-1} + c + e_t``, ``c`` the average change.

    h-step predictive ``N(y_T + h c, sigma^2 h (1 + h / (T - 1)))``, which
    includes the estimation error of ``c``. See :mod:`tsgen.models.baselines`.

    Parameters
    ----------
    random_state : int or None
        Seed of ``sample``.

    Attributes
    ----------
    sigma_ : float or list
        Residual standard deviation (lists as :class:`Naive`'s; so are the
        attributes below).
    drift_ : float or list
        The drift ``c``.
    """

    _n_location = 1


class Mean(_Baseline):
    """Mean forecast: ``y_t = mu + e_t`` i.i.d.

    h-step predictive ``N(mu, sigma^2 (1 + 1/T))``, which includes the
    estimation error of ``mu`` from ``T`` observed values. See
    :mod:`tsgen.models.baselines`.

    Parameters
    ----------
    random_state : int or None
        Seed of ``sample``.

    Attributes
    ----------
    sigma_ : float or list
        Residual standard deviation (lists as :class:`Naive`'s; so are the
        attributes below).
    mean_ : float or list
        The mean ``mu``.
    """

    _kind = "iid"
    _n_location = 1

    def _min_length(self) -> int:
        return 2


class SeasonalNaive(_Baseline):
    """Seasonal naive forecast: the value one season earlier, ``y_t = y_{t-m} + e_t``.

    h-step predictive ``N(y_{T+h-mk}, sigma^2 k)`` with
    ``k = floor((h - 1) / m) + 1``. See :mod:`tsgen.models.baselines`.

    Parameters
    ----------
    period : int or None
        Season length ``m``. None infers it from the frequency of ``y``'s
        index as :class:`tsgen.ARIMA` does (12 monthly, 4 quarterly, 7 daily,
        24 hourly, 52 weekly, 5 business daily; 1, i.e. the naive forecast,
        for other or no frequency).
    random_state : int or None
        Seed of ``sample``.

    Attributes
    ----------
    sigma_ : float or list
        Residual standard deviation (lists as :class:`Naive`'s; so are the
        attributes below).
    period_ : int
        The season length ``m`` used.
    """

    def __init__(self, period=None, random_state=None):
        self.period = period
        self.random_state = random_state

    @classmethod
    def get_test_params(cls):
        return [{"random_state": 0}, {"period": 4, "random_state": 0}]

    def _lag(self, data):
        return self.period_

    def _fit_lag(self, data):
        return resolve_period(self.period, data)

    def _min_length(self) -> int:
        return 1 + resolve_period(self.period, None)

    def _fit(self, data, covariates):
        super()._fit(data, covariates)
        self.period_ = self._fit_lag(data)

    def _fitted_state(self):
        meta, tensors = super()._fitted_state()
        return {**meta, "period": self.period_}, tensors

    def _load_fitted_state(self, meta, tensors):
        period = meta["period"]
        if not is_int(period) or period < 1:
            raise ValueError(f"stored period {period!r} is not a positive integer")
        self.period_ = int(period)
        super()._load_fitted_state(meta, tensors)


__all__ = ["Drift", "Mean", "Naive", "SeasonalNaive"]
