"""Evaluation of forecasters: rolling-origin probabilistic backtesting."""
from tsgen.evaluation._result import BacktestResult, aggregate
from tsgen.evaluation._backtest import backtest

__all__ = ["BacktestResult", "aggregate", "backtest"]
