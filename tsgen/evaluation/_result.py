"""The object a backtest returns: tidy metrics, the forecasts, the fits, a summary and a plot."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SUMMARY_GROUPS = (None, "horizon", "cutoff", "series")


@dataclass(frozen=True)
class BacktestResult:
    """Result of :func:`tsgen.backtest`.

    Attributes
    ----------
    metrics : pd.DataFrame
        Tidy scores, one row per (series, origin, horizon step, metric):
        columns ``series, origin, cutoff, horizon, metric, value``. ``cutoff``
        is the last timestamp of the training window, ``horizon`` runs 1..H.
        Lower is better except ``coverage_*`` (compare with 0.80 / 0.95).
    forecasts : pd.DataFrame
        One row per (series, origin, horizon step, variable): ``series,
        origin, cutoff, time, horizon, variable, y`` (the observed value),
        ``mean`` and one ``q<level>`` column per requested quantile.
    fits : pd.DataFrame
        One row per model fit: ``series, origin, cutoff, train_length``.
    samples : dict or None
        ``{(series, origin): (n_samples, horizon, dim) array}`` when
        ``keep_samples=True``.
    horizon : int
    """

    metrics: pd.DataFrame
    forecasts: pd.DataFrame
    fits: pd.DataFrame
    horizon: int
    samples: dict | None = field(default=None, repr=False)

    @property
    def n_origins(self) -> int:
        return int(self.metrics[["series", "origin"]].drop_duplicates().shape[0])

    def summary(self, by: str | None = None) -> pd.DataFrame:
        """Mean of every metric over all windows (one row), or per ``horizon``, ``cutoff`` or ``series``.

        NaN scores (e.g. MASE on a constant history) are skipped by the mean.
        """
        if by not in SUMMARY_GROUPS:
            raise ValueError(f"`by` must be one of {SUMMARY_GROUPS}; got {by!r}.")
        order = list(dict.fromkeys(self.metrics["metric"]))
        keys = ["metric"] if by is None else [by, "metric"]
        means = self.metrics.groupby(keys, sort=True)["value"].mean()
        if by is None:
            return means.reindex(order).to_frame("overall").T
        table = means.unstack("metric")
        return table[order]

    def plot(self, metric: str = "crps", **kwargs):
        """Backtest overview (see :func:`tsgen.plotting.plot_backtest`); returns the Figure."""
        from tsgen.plotting import plot_backtest

        return plot_backtest(self, metric=metric, **kwargs)

    def __repr__(self) -> str:
        overall = self.summary()
        scores = ", ".join(f"{k}={v:.4g}" for k, v in overall.iloc[0].items() if np.isfinite(v))
        return f"BacktestResult(origins={self.n_origins}, horizon={self.horizon}, {scores})"
