"""Backtest overview: a metric by horizon step, and the forecasts at each origin."""
from __future__ import annotations

import numpy as np
import pandas as pd

from tsgen.evaluation._result import aggregate
from tsgen.plotting._common import new_axes, time_values


def plot_backtest(result, metric: str = "crps", series=None, variable=None, ax=None, title=None):
    """Two panels: ``metric`` by horizon step over all origins, and the observed values with each origin's forecast.

    Parameters
    ----------
    result : tsgen.evaluation.BacktestResult
    metric : str
        A metric of ``result.metrics`` (e.g. ``"crps"``, ``"mae"``, ``"coverage_80"``).
    series : int or id, optional
        Which series of a many-series backtest to draw forecasts for: its id
        for panel input, else its position (default: the first).
    variable : optional
        Which variable of a multivariate target (default: the first).
    """
    metrics, forecasts = result.metrics, result.forecasts
    names = list(dict.fromkeys(metrics["metric"]))
    if metric not in names:
        raise ValueError(f"`metric` must be one of {names}; got {metric!r}.")
    series = forecasts["series"].iloc[0] if series is None else series
    chosen = forecasts[forecasts["series"] == series]
    if chosen.empty:
        raise ValueError(f"`series` must be one of {sorted(set(forecasts['series']))}; got {series!r}.")
    variables = list(dict.fromkeys(chosen["variable"]))
    variable = variables[0] if variable is None else variable
    if variable not in variables:
        raise ValueError(f"`variable` must be one of {variables}; got {variable!r}.")
    chosen = chosen[chosen["variable"] == variable]
    figure, (top, bottom) = new_axes(2, ax)
    # pooled over origins as summary() does (an RMSE by horizon is not the mean of per-step RMSEs)
    by_horizon = aggregate(metrics[metrics["metric"] == metric], forecasts, ["series", "horizon"]).droplevel("metric")
    for s, values in by_horizon.groupby(level="series"):
        top.plot(values.index.get_level_values("horizon"), values.to_numpy(), marker="o", label=f"series {s}")
    top.set_xlabel("horizon step")
    top.set_ylabel(metric)
    top.set_title(title or f"Backtest: {metric} by horizon over {result.n_origins} origins")
    if by_horizon.index.get_level_values("series").nunique() > 1:
        top.legend(fontsize="small")
    actual = chosen.drop_duplicates("time").sort_values("time")
    x = time_values(_index(actual["time"]))
    bottom.plot(x, actual["y"].to_numpy(dtype=float), color="black", lw=1.2, label="observed")
    band = [c for c in ("q0.1", "q0.9") if c in chosen.columns]
    for k, (_, window) in enumerate(chosen.groupby("origin")):
        colour = f"C{k % 10}"
        xw = time_values(_index(window["time"]))
        bottom.plot(xw, window["mean"].to_numpy(dtype=float), color=colour, lw=1, alpha=0.8)
        if len(band) == 2:
            bottom.fill_between(xw, window[band[0]].to_numpy(dtype=float), window[band[1]].to_numpy(dtype=float),
                                color=colour, alpha=0.12, lw=0)
    bottom.set_ylabel(str(variable))
    # which series the lower panel draws, by its own id, once there are several to tell apart
    key = chosen["series"].iloc[0]
    named = f"{key.item() if isinstance(key, np.generic) else key!r}: " if forecasts["series"].nunique() > 1 else ""
    bottom.set_title(named + "forecast means at each origin" + (" with 80% bands" if len(band) == 2 else ""))
    bottom.legend(loc="upper left", fontsize="small")
    return figure


def _index(column):
    return pd.Index(column.to_numpy() if not isinstance(column.dtype, pd.PeriodDtype) else column.array)
