"""Forecast fan chart: history, median and central predictive bands."""
from __future__ import annotations

import numpy as np
import pandas as pd

from tsgen.data import quantile_label
from tsgen.plotting._common import as_frame, new_axes, time_values

DEFAULT_LEVELS = (0.5, 0.8, 0.95)


def _statistic(forecast: pd.DataFrame, variable, stat: str):
    if isinstance(forecast.columns, pd.MultiIndex):
        key = (variable, stat)
        return forecast[key].to_numpy(dtype=float) if key in forecast.columns else None
    return forecast[stat].to_numpy(dtype=float) if stat in forecast.columns else None


def _band(forecast, samples, variable, j, level):
    lo, hi = (round((1 - level) / 2, 12), round((1 + level) / 2, 12))
    lower, upper = _statistic(forecast, variable, quantile_label(lo)), _statistic(forecast, variable, quantile_label(hi))
    if lower is not None and upper is not None:
        return lower, upper
    if samples is not None:
        return tuple(np.quantile(samples[:, :, j], [lo, hi], axis=0))
    raise ValueError(
        f"`forecast` lacks columns {quantile_label(lo)!r}/{quantile_label(hi)!r} for the {level:g} band: "
        f"predict with quantiles=(..., {lo:g}, {hi:g}) or pass `samples`."
    )


def plot_forecast(history, forecast: pd.DataFrame, samples=None, levels=DEFAULT_LEVELS, ax=None, title=None):
    """Fan chart of a forecast after its history; returns the matplotlib Figure.

    Parameters
    ----------
    history : pd.Series or pd.DataFrame
        The observed series (one panel per variable).
    forecast : pd.DataFrame
        A ``model.predict`` frame: ``mean`` and ``q<level>`` columns
        (a ``(variable, statistic)`` MultiIndex for many variables).
    samples : array, shape (n_samples, horizon, dim), optional
        Sample paths used for any band whose quantiles the frame lacks.
    levels : sequence of float
        Central interval levels drawn as nested bands (50/80/95% default).
    ax : matplotlib Axes or sequence of them, optional
        Where to draw (one per variable); a new Figure otherwise.
    """
    past = as_frame(history, "history")
    if not isinstance(forecast, pd.DataFrame):
        raise TypeError(f"`forecast` must be the DataFrame returned by predict; got {type(forecast).__name__}.")
    if samples is not None:
        samples = np.asarray(samples, dtype=float)
        if samples.ndim == 2:
            samples = samples[:, :, None]
        if samples.shape[1:] != (len(forecast), past.shape[1]):
            raise ValueError(
                f"`samples` must have shape (n_samples, {len(forecast)}, {past.shape[1]}); got {samples.shape}."
            )
    figure, axes = new_axes(past.shape[1], ax, sharex=True)
    x_past, x_future = time_values(past.index), time_values(forecast.index)
    for j, (variable, axis) in enumerate(zip(past.columns, axes)):
        axis.plot(x_past, past[variable].to_numpy(dtype=float), color="black", lw=1.2, label="history")
        for level, alpha in zip(sorted(levels, reverse=True), np.linspace(0.15, 0.45, len(levels))):
            lower, upper = _band(forecast, samples, variable, j, level)
            axis.fill_between(x_future, lower, upper, color="tab:blue", alpha=alpha, lw=0, label=f"{level:.0%}")
        centre = _statistic(forecast, variable, "q0.5")
        if centre is None:
            centre = _statistic(forecast, variable, "mean")
        axis.plot(x_future, centre, color="tab:blue", lw=1.6, label="median" if _statistic(forecast, variable, "q0.5") is not None else "mean")
        axis.set_ylabel(str(variable))
        axis.legend(loc="upper left", fontsize="small", ncol=len(levels) + 2)
    axes[0].set_title(title or "Forecast")
    return figure
