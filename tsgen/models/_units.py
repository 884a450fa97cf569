"""Series of extreme magnitude fitted in units of a power of two.

The classical models (ARIMA, ETS, Theta) are equivariant to the scale of
the data: fitted to ``c y`` they give ``c`` times the forecasts of ``y``
and a log-likelihood lower by ``log c`` per observed value. Their
arithmetic is not: squares and sums of squares of values past about
``1e154`` overflow float64 and those of values below about ``1e-154``
underflow to 0 (ARIMA forecast NaN at ``1e200``, Theta's seasonality test
divided by zero at ``1e-200``). So a series whose largest observed
magnitude lies outside ``[TINY, HUGE]`` is fitted in units ``u``, the power
of two nearest that magnitude: dividing by a power of two is exact, so the
fit is the fit of ``y`` up to the optimiser's own rounding, and series of
ordinary size (``u = 1``) are untouched. Results go back to the user's
units at the model's edge: forecasts and draws times ``u``, per-step
log-likelihoods less ``log u``.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from tsgen.data import SeriesBatch

#: largest observed magnitudes fitted as given; squares stay normal float64 numbers with a wide margin
TINY, HUGE = 1e-100, 1e100


def units_of(batch: SeriesBatch) -> Tensor:
    """Each series' unit ``(n_series,)`` float64: 1, or the power of two nearest its largest observed
    magnitude when that is outside ``[TINY, HUGE]`` (an all-zero series keeps 1)."""
    magnitude = torch.where(batch.mask, batch.values.abs(), torch.zeros((), dtype=batch.values.dtype))
    magnitude = magnitude.flatten(1).amax(1).to(torch.float64) if magnitude.numel() else torch.zeros(
        batch.n_series, dtype=torch.float64)
    extreme = (magnitude > HUGE) | ((magnitude < TINY) & (magnitude > 0))
    power = torch.round(torch.log2(torch.where(extreme, magnitude, torch.ones_like(magnitude))))
    return torch.where(extreme, torch.exp2(power), torch.ones_like(magnitude))


def in_units(batch: SeriesBatch, units: Tensor) -> SeriesBatch:
    """``batch`` with series ``i`` divided by ``units[i]`` (the same object when every unit is 1)."""
    if bool((units == 1.0).all()):
        return batch
    return dataclasses.replace(batch, values=batch.values / units.to(batch.values.dtype)[:, None, None])


def paired_units(units: Tensor, n_series: int) -> Tensor:
    """The fitted units for ``n_series`` series paired as the models pair them: one fitted series stands
    for all, many pair one to one."""
    n_fitted = units.shape[0]
    if n_fitted not in (1, n_series):
        raise ValueError(
            f"`y` has {n_series} series but the model was fitted on {n_fitted}; pass {n_fitted} series "
            "(one per fitted model) or refit."
        )
    return units.expand(n_series) if n_fitted == 1 else units


def check_units(units, n_fitted: int) -> Tensor:
    """Stored units ``(n_fitted,)`` checked on load: finite powers of two (older files have none: all 1)."""
    if units is None:
        return torch.ones(n_fitted, dtype=torch.float64)
    if tuple(units.shape) != (n_fitted,) or units.dtype != torch.float64 or not bool(torch.isfinite(units).all()) \
            or not bool((units > 0).all()) or not bool((torch.frexp(units).mantissa == 0.5).all()):
        raise ValueError(f"stored units must be {n_fitted} positive powers of two (float64)")
    return units


