"""The object a backtest returns: tidy metrics, the forecasts, the fits, a summary and a plot."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SUMMARY_GROUPS = (None, "horizon", "cutoff", "series")

#: metrics whose aggregate is not the pooled mean of their rows (see :func:`aggregate`)
ROOT_MEAN_SQUARE = frozenset({"rmse"})
PER_STEP = frozenset({"log_score"})


def _observed_per_step(metrics: pd.DataFrame, forecasts: pd.DataFrame) -> np.ndarray:
    """Observed variables of each row's (series, origin, horizon) step, counted on a dense grid (no joins)."""
    step = ["series", "origin", "horizon"]
    where, rows = [], []
    for c in step:
        if pd.api.types.is_integer_dtype(forecasts[c].dtype) and pd.api.types.is_integer_dtype(metrics[c].dtype):
            where.append(forecasts[c].to_numpy(dtype=np.int64))
            rows.append(metrics[c].to_numpy(dtype=np.int64))
        else:  # series named by id (panel input): one code per id, shared by both frames
            codes, _ = pd.factorize(np.concatenate([forecasts[c].to_numpy(), metrics[c].to_numpy()]))
            where.append(codes[: len(forecasts)])
            rows.append(codes[len(forecasts):])
    shape = tuple(int(max(w.max(initial=0), r.max(initial=0))) + 1 for w, r in zip(where, rows))
    counts = np.zeros(shape)
    np.add.at(counts, tuple(where), forecasts["y"].notna().to_numpy(dtype=np.float64))
    return counts[tuple(rows)]


def aggregate(metrics: pd.DataFrame, forecasts: pd.DataFrame, keys: list[str] | None = None) -> pd.Series:
    """Each metric over the points its rows summarise, per group of ``keys``.

    A row of ``metrics`` scores one forecast step, averaging over the
    observed variables of that step (``n_obs``: the non-NaN ``y`` of that
    step in ``forecasts``; one for a univariate target). The aggregate of a
    metric is its value over every pooled point (step x observed variable)
    of the group, not the mean of its rows:

    - ``rmse``: ``sqrt(mean e^2)`` over the pooled points, i.e. the
      ``n_obs``-weighted mean of the rows' squares, then the square root
      (the mean of per-step RMSEs would be the MAE for one variable);
    - ``mae``, ``mase``, ``smape``, ``crps``, ``pinball_*``: mean over the
      pooled points (``n_obs``-weighted mean of the rows); MASE scales each
      point by its own origin's in-sample naive error first;
    - ``coverage_*``: the fraction of pooled points inside the interval;
    - ``log_score``: mean over scored steps of ``-log p(y_step | past)``,
      the joint density of the step's observed variables (the convention of
      :func:`tsgen.metrics.log_score` on ``log_likelihood(per_step=True)``).

    Rows whose value is NaN (no observed point, or MASE at an origin
    without a naive scale) are left out; a group without any scored point
    gives NaN.

    Parameters
    ----------
    metrics, forecasts : pd.DataFrame
        ``BacktestResult.metrics`` and ``BacktestResult.forecasts`` (or row
        subsets of ``metrics``).
    keys : list of str, optional
        Columns of ``metrics`` to group by (e.g. ``["horizon"]``).

    Returns
    -------
    pd.Series
        Indexed by ``keys + ["metric"]``.
    """
    keys = list(keys or [])
    n_obs = _observed_per_step(metrics, forecasts)
    values = metrics["value"].to_numpy(dtype=np.float64)
    names = metrics["metric"].to_numpy()
    scored = ~np.isnan(values)
    weight = np.where(scored, np.nan_to_num(n_obs), 0.0)
    weight = np.where(np.isin(names, list(PER_STEP)), scored.astype(np.float64), weight)
    term = np.where(np.isin(names, list(ROOT_MEAN_SQUARE)), values**2, values)
    work = metrics[keys + ["metric"]].assign(_total=np.where(weight > 0, weight * term, 0.0), _weight=weight)
    sums = work.groupby(keys + ["metric"], sort=True)[["_total", "_weight"]].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(sums["_weight"] > 0, sums["_total"] / sums["_weight"], np.nan)
    root = sums.index.get_level_values("metric").isin(list(ROOT_MEAN_SQUARE))
    # the root only of the rmse rows: another metric's mean may be negative (a log score, -inf on a point mass)
    return pd.Series(np.where(root, np.sqrt(np.where(root, mean, 0.0)), mean), index=sums.index, name="value")


@dataclass(frozen=True)
class BacktestResult:
    """Result of :func:`tsgen.backtest`.

    Attributes
    ----------
    metrics : pd.DataFrame
        Tidy scores, one row per (series, origin, horizon step, metric):
        columns ``series, origin, cutoff, horizon, metric, value``.
        ``series`` is the series' id for panel input (a long frame or a
        dict keyed by id) and its position (0, 1, ...) otherwise.
        ``cutoff`` is the last timestamp of the training window, ``horizon``
        runs 1..H, ``value`` averages over the observed variables of that
        step. Lower is better except ``coverage_*`` (compare with
        0.80 / 0.95). Aggregate rows with :meth:`summary` (or
        :func:`aggregate`), not a plain mean: the RMSE of many steps is not
        the mean of their RMSEs.
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
        """Every metric over all windows (one row), or per ``horizon``, ``cutoff`` or ``series``.

        Each metric is computed over the pooled points of the group (see
        :func:`aggregate`): e.g. ``rmse`` is the square root of the mean
        squared error of every scored point, ``coverage_80`` the fraction of
        them inside the 80% interval. NaN scores (e.g. MASE on a constant
        history) are skipped.
        """
        if by not in SUMMARY_GROUPS:
            raise ValueError(f"`by` must be one of {SUMMARY_GROUPS}; got {by!r}.")
        order = list(dict.fromkeys(self.metrics["metric"]))
        values = aggregate(self.metrics, self.forecasts, [] if by is None else [by])
        if by is None:
            return values.reindex(order).to_frame("overall").T
        table = values.unstack("metric")
        return table[order]

    def plot(self, metric: str = "crps", **kwargs):
        """Backtest overview (see :func:`tsgen.plotting.plot_backtest`); returns the Figure."""
        from tsgen.plotting import plot_backtest

        return plot_backtest(self, metric=metric, **kwargs)

    def __repr__(self) -> str:
        overall = self.summary()
        scores = ", ".join(f"{k}={v:.4g}" for k, v in overall.iloc[0].items() if np.isfinite(v))
        return f"BacktestResult(origins={self.n_origins}, horizon={self.horizon}, {scores})"
