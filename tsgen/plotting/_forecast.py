"""Forecast fan chart: history, median and central predictive bands."""
from __future__ import annotations

import numpy as np
import pandas as pd

from tsgen.data import quantile_label
from tsgen.plotting._common import as_frame, new_axes, time_values

#: bands drawn from sample paths when no levels are given
DEFAULT_LEVELS = (0.5, 0.8, 0.95)


def _quantile_levels(forecast: pd.DataFrame) -> set[float]:
    stats = forecast.columns.get_level_values(-1) if isinstance(forecast.columns, pd.MultiIndex) else forecast.columns
    levels = set()
    for name in map(str, stats):
        if name.startswith("q"):
            try:
                levels.add(round(float(name[1:]), 12))
            except ValueError:
                pass
    return levels


def central_levels(forecast: pd.DataFrame) -> tuple[float, ...]:
    """The central interval levels whose two quantiles are columns of ``forecast`` (0.9 for q0.05/q0.95)."""
    quantiles = _quantile_levels(forecast)
    return tuple(sorted(round(1 - 2 * q, 12) for q in quantiles if q < 0.5 and round(1 - q, 12) in quantiles))


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


def _one_series(history, forecast: pd.DataFrame, series):
    """Panel input (a Panel, a dict by id or a long frame) and its long forecast cut to one series' pair."""
    from collections.abc import Mapping

    from tsgen.data import Panel, from_long
    from tsgen.data._panel import is_long_frame

    if not (isinstance(history, Mapping) or is_long_frame(history)):
        if series is not None:
            raise ValueError("`series` picks one series of panel input (a dict or long frame); `history` is one series.")
        return history, forecast, None
    panel = history if isinstance(history, Panel) else (
        from_long(history, name="history") if is_long_frame(history) else Panel.from_dict(history, "history"))
    series = panel.ids[0] if series is None else series
    if series not in panel:
        raise ValueError(f"`series` must be one of the ids {list(panel.ids)[:10]}; got {series!r}.")
    if panel.id_col not in forecast.columns or panel.time_col not in forecast.columns:
        raise ValueError(f"`forecast` must be the long frame predict returns for panel input, with columns "
                         f"{panel.id_col!r} and {panel.time_col!r}.")
    rows = forecast[forecast[panel.id_col] == series].drop(columns=[panel.id_col]).set_index(panel.time_col)
    if "variable" in rows.columns:  # multivariate: back to the (variable, statistic) columns of one frame
        rows = rows.pivot(columns="variable").swaplevel(0, 1, axis=1).sort_index(axis=1, level=0)
    return panel[series], rows, series


def plot_forecast(history, forecast: pd.DataFrame, samples=None, levels=None, ax=None, title=None, series=None):
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
    levels : sequence of float, optional
        Central interval levels drawn as nested bands. Default: every
        central interval whose two quantiles ``forecast`` has (the 90% band
        of ``predict``'s default quantiles 0.05/0.95), or 50/80/95% from
        ``samples`` when given.
    ax : matplotlib Axes or sequence of them, optional
        Where to draw (one per variable); a new Figure otherwise.
    series : id, optional
        For panel input (``history`` a dict by id or a long frame, and
        ``forecast`` the long frame ``predict`` returned for it): the series
        to draw (default: the first id).
    """
    if not isinstance(forecast, pd.DataFrame):
        raise TypeError(f"`forecast` must be the DataFrame returned by predict; got {type(forecast).__name__}.")
    history, forecast, chosen = _one_series(history, forecast, series)
    if chosen is not None and title is None:
        title = f"Forecast of {chosen!r}"
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
    if levels is None:
        levels = DEFAULT_LEVELS if samples is not None else central_levels(forecast)
        if not levels:
            raise ValueError(
                "`forecast` lacks a central interval (two quantile columns such as q0.05 and q0.95): "
                "predict with quantiles=(0.05, 0.5, 0.95) or pass `samples`."
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
