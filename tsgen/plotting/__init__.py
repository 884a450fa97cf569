"""Plots that return a matplotlib Figure (the library never calls ``plt.show()``)."""
from tsgen.plotting._anomaly import plot_anomalies
from tsgen.plotting._backtest import plot_backtest
from tsgen.plotting._forecast import plot_forecast

__all__ = ["plot_anomalies", "plot_backtest", "plot_forecast"]
