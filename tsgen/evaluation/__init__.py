"""Evaluation of forecasters: rolling-origin probabilistic backtesting."""
from tsgen.evaluation._result import BacktestResult
from tsgen.evaluation._backtest import backtest

__all__ = ["BacktestResult", "backtest"]
