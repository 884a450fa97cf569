"""Backtest summaries are each metric over the pooled points, checked against hand computations.

A row of ``result.metrics`` scores one forecast step; the aggregate of many
steps is the metric over all their points (an RMSE is the square root of
the mean squared error of every point, not the mean of per-step RMSEs).
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from test_backtest import _RandomWalk, _SampledWalk, _series

from tsgen.evaluation import aggregate, backtest

LEVELS = (0.025, 0.1, 0.5, 0.9, 0.975)
SEASON = 2


def _pooled(result, data: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per scored point (series, origin, horizon, variable) with every per-point score by hand."""
    points = result.forecasts.dropna(subset=["y"]).copy()
    y, mean = points["y"].to_numpy(), points["mean"].to_numpy()
    e = y - mean
    points["abs"] = np.abs(e)
    points["sq"] = e**2
    points["smape"] = 200 * np.abs(e) / (np.abs(y) + np.abs(mean))
    scales, crps = [], []
    for row in points.itertuples():
        series = data[row.series]
        stop = int(np.flatnonzero(series.index == row.cutoff)[0]) + 1
        train = series[row.variable].to_numpy()[:stop]
        lagged = np.abs(train[SEASON:] - train[:-SEASON])
        scales.append(np.nanmean(lagged))
        draws = result.samples[(row.series, row.origin)][:, row.horizon - 1, list(series.columns).index(row.variable)]
        # the unbiased ("fair") sample CRPS: pairs i != j only, n (n - 1) of them
        n = len(draws)
        crps.append(np.mean(np.abs(draws - row.y)) - 0.5 * np.sum(np.abs(draws[:, None] - draws[None])) / (n * (n - 1)))
    points["mase"] = points["abs"] / np.array(scales)
    points["crps"] = crps
    for q in LEVELS:
        u = y - points[f"q{q:g}"].to_numpy()
        points[f"pinball_q{q:g}"] = np.maximum(q * u, (q - 1) * u)
    points["coverage_80"] = ((points["q0.1"] <= points["y"]) & (points["y"] <= points["q0.9"])).astype(float)
    points["coverage_95"] = ((points["q0.025"] <= points["y"]) & (points["y"] <= points["q0.975"])).astype(float)
    return points


def _hand_summary(points: pd.DataFrame, metrics: pd.DataFrame, by: str | None) -> pd.DataFrame:
    keys = [by] if by else []
    group = points.groupby(keys) if keys else points.assign(_all="overall").groupby("_all")
    table = pd.DataFrame({
        "mae": group["abs"].mean(),
        "rmse": np.sqrt(group["sq"].mean()),
        "mase": group["mase"].mean(),
        "smape": group["smape"].mean(),
        "crps": group["crps"].mean(),
        **{f"pinball_q{q:g}": group[f"pinball_q{q:g}"].mean() for q in LEVELS},
        "coverage_80": group["coverage_80"].mean(),
        "coverage_95": group["coverage_95"].mean(),
    })
    # the log score is a joint density per step: its aggregate is the mean over scored steps
    log_rows = metrics[(metrics.metric == "log_score") & metrics.value.notna()]
    table["log_score"] = (log_rows.groupby(keys)["value"].mean() if keys
                          else pd.Series([log_rows["value"].mean()], index=["overall"]))
    return table


def _multivariate(seed: int, n: int, missing: int | None) -> pd.DataFrame:
    frame = pd.concat([_series(n, seed, "u"), _series(n, seed + 10, "v") * 3], axis=1)
    if missing is not None:
        frame.iloc[missing, 1] = np.nan  # one variable missing at a scored step: that step pools one point
    return frame


def test_rmse_of_a_univariate_backtest_is_not_the_mae():
    """Issue 9 §1.5: the summary's rmse was the mean of per-step |error|, i.e. the MAE."""
    result = backtest(_RandomWalk(), _series(40), 4, start=20, random_state=0)
    e = (result.forecasts["y"] - result.forecasts["mean"]).to_numpy()
    overall = result.summary().loc["overall"]
    assert overall["rmse"] == pytest.approx(np.sqrt(np.mean(e**2)), rel=1e-12)
    assert overall["mae"] == pytest.approx(np.mean(np.abs(e)), rel=1e-12)
    assert overall["rmse"] > overall["mae"] * 1.01
    by_h = result.summary(by="horizon")
    for h, rows in result.forecasts.groupby("horizon"):
        err = (rows["y"] - rows["mean"]).to_numpy()
        assert by_h.loc[h, "rmse"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-12)


@pytest.mark.parametrize("by", [None, "horizon", "series", "cutoff"])
def test_every_summary_metric_equals_a_hand_computation_over_the_pooled_points(by):
    data = {0: _multivariate(1, 30, missing=24), 1: _multivariate(2, 34, missing=None)}
    # a model known through its samples, so that the CRPS is the samples' (a Gaussian one's is exact)
    result = backtest(_SampledWalk(), list(data.values()), 3, start=20, step=2, quantiles=LEVELS, n_samples=40,
                      season=SEASON, random_state=4, keep_samples=True)
    n_obs = result.forecasts.groupby(["series", "origin", "horizon"])["y"].count()
    assert set(n_obs) == {1, 2}
    points = _pooled(result, data)
    expected = _hand_summary(points, result.metrics, by)
    summary = result.summary(by=by)
    if by is None:
        summary.index = ["overall"]
    summary.columns.name = None
    expected.index.name = summary.index.name
    pd.testing.assert_frame_equal(summary[expected.columns], expected, rtol=1e-10, check_dtype=False)


def test_aggregate_skips_unscored_rows_and_weights_rows_by_their_points():
    steps = dict(series=0, origin=[0, 1, 2], horizon=1)
    forecasts = pd.concat([
        pd.DataFrame({**steps, "variable": "u", "y": [1.0, 1.0, np.nan]}),
        pd.DataFrame({**steps, "variable": "v", "y": [np.nan, 1.0, np.nan]}),
        pd.DataFrame({**steps, "variable": "w", "y": [np.nan, 1.0, np.nan]}),
    ])
    metrics = pd.DataFrame({
        "series": 0, "origin": [0, 1, 2] * 3, "horizon": 1,
        "metric": ["rmse"] * 3 + ["mae"] * 3 + ["log_score"] * 3,
        "value": [3.0, 1.0, np.nan, 3.0, 1.0, np.nan, 2.0, 4.0, np.nan],
    })
    out = aggregate(metrics, forecasts)
    assert out["rmse"] == pytest.approx(np.sqrt((9 + 3 * 1) / 4))  # steps of 1 and 3 observed points
    assert out["mae"] == pytest.approx((3 + 3 * 1) / 4)
    assert out["log_score"] == pytest.approx(3.0)  # one joint density per step
    assert np.isnan(aggregate(metrics[metrics.value.isna()], forecasts)["rmse"])


def test_backtest_plot_draws_the_pooled_rmse_by_horizon():
    result = backtest(_RandomWalk(), _series(40), 4, start=26, step=2, random_state=0)
    figure = result.plot("rmse")
    expected = [np.sqrt(np.mean((rows["y"] - rows["mean"]) ** 2)) for _, rows in result.forecasts.groupby("horizon")]
    np.testing.assert_allclose(figure.axes[0].lines[0].get_ydata(), expected, rtol=1e-12)
    np.testing.assert_allclose(expected, result.summary(by="horizon")["rmse"], rtol=1e-12)


def test_cli_backtest_prints_the_pooled_rmse(tmp_path, capsys):
    from tsgen.cli import main

    y = _series(40)
    data, forecasts = tmp_path / "y.csv", tmp_path / "forecasts.csv"
    y.rename_axis("date").to_frame().to_csv(data)
    assert main(["backtest", str(data), "--model", "lds", "--horizon", "3", "--start", "30", "--refit", "never",
                 "--forecasts-out", str(forecasts)]) == 0
    printed = capsys.readouterr().out.split("overall:")[1].splitlines()
    header, row = printed[1].split()[1:], printed[2].split()[1:]
    overall = dict(zip(header, map(float, row)))
    written = pd.read_csv(forecasts)
    e = written["y"] - written["mean"]
    assert overall["rmse"] == pytest.approx(np.sqrt(np.mean(e**2)), rel=1e-3)
    assert overall["mae"] == pytest.approx(np.mean(np.abs(e)), rel=1e-3)
