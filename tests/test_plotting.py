"""Every plot runs headless and returns a Figure drawn from the data it was given."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from test_backtest import _RandomWalk, _series

from tsgen.anomaly import AnomalyDetector
from tsgen.evaluation import backtest
from tsgen.plotting import plot_anomalies, plot_backtest, plot_forecast


def test_fan_chart_draws_history_bands_and_median():
    y = _series(60)
    model = _RandomWalk(random_state=0).fit(y)
    forecast = model.predict(12, quantiles=(0.025, 0.1, 0.25, 0.5, 0.75, 0.9, 0.975))
    figure = plot_forecast(y, forecast)
    assert isinstance(figure, Figure)
    axis = figure.axes[0]
    assert len(axis.collections) == 3  # 95/80/50% bands
    median = axis.lines[-1].get_ydata()
    np.testing.assert_allclose(median, forecast["q0.5"])
    figure.canvas.draw()  # renders headless


def test_fan_chart_falls_back_to_samples_and_handles_periods_and_many_variables():
    y = _series(40).to_period("D")
    model = _RandomWalk(random_state=0).fit(y)
    forecast = model.predict(5, quantiles=(0.5,))
    with pytest.raises(ValueError, match="`forecast` lacks"):
        plot_forecast(y, forecast)
    figure = plot_forecast(y, forecast, samples=model.sample(5, n_samples=200))
    assert len(figure.axes[0].collections) == 3
    frame = pd.concat([_series(30, 1, "u"), _series(30, 2, "v")], axis=1)
    multi = _RandomWalk().fit(frame)
    figure = plot_forecast(frame, multi.predict(4, quantiles=(0.025, 0.1, 0.25, 0.5, 0.75, 0.9, 0.975)))
    assert [a.get_ylabel() for a in figure.axes] == ["u", "v"]
    with pytest.raises(TypeError, match="`history`"):
        plot_forecast(np.zeros(3), forecast)


def test_backtest_overview_shows_the_metric_by_horizon():
    result = backtest(_RandomWalk(), _series(40), 4, start=30, step=2, random_state=0)
    figure = result.plot("mae")
    assert isinstance(figure, Figure) and len(figure.axes) == 2
    np.testing.assert_allclose(figure.axes[0].lines[0].get_ydata(), result.summary(by="horizon")["mae"])
    assert len(figure.axes[1].lines) == 1 + result.n_origins
    figure.canvas.draw()
    with pytest.raises(ValueError, match="`metric`"):
        plot_backtest(result, metric="accuracy")


def test_anomaly_chart_marks_flags_and_threshold():
    y = _series(200)
    spiked = y.copy()
    spiked.iloc[150] += 9.0
    detector = AnomalyDetector(_RandomWalk(), method="quantile", false_alarm_rate=0.01).fit(y.iloc[:120])
    scores = detector.score(spiked)
    labels = pd.Series(False, index=y.index)
    labels.iloc[150] = True
    figure = plot_anomalies(spiked, scores, detector.threshold_, labels=labels)
    assert isinstance(figure, Figure)
    flagged = figure.axes[1].collections[0].get_offsets()
    assert len(flagged) == int((scores > detector.threshold_).sum()) >= 1
    np.testing.assert_allclose(figure.axes[1].lines[1].get_ydata(), detector.threshold_)
    figure.canvas.draw()
    with pytest.raises(ValueError, match="`scores`"):
        plot_anomalies(spiked, scores.iloc[:10], 1.0)


def test_fan_chart_of_predict_with_its_default_quantiles():
    """Issue 9 §5: ``plot_forecast(y, m.predict(12))`` failed (default bands needed q0.025/q0.975)."""
    y = _series(60)
    forecast = _RandomWalk(random_state=0).fit(y).predict(12)
    figure = plot_forecast(y, forecast)
    axis = figure.axes[0]
    assert len(axis.collections) == 1  # the 90% band of q0.05/q0.95
    band = axis.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(forecast["q0.05"].min()) and band.max() == pytest.approx(forecast["q0.95"].max())
    assert [t.get_text() for t in axis.get_legend().get_texts()][1] == "90%"
    multi = pd.concat([_series(30, 1, "u"), _series(30, 2, "v")], axis=1)
    assert len(plot_forecast(multi, _RandomWalk().fit(multi).predict(4)).axes) == 2
