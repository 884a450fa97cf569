"""tsgen: probabilistic time-series forecasting with sequential generative models."""
from tsgen import metrics
from tsgen.anomaly import AnomalyDetector
from tsgen.base import BaseForecaster, load
from tsgen.evaluation import BacktestResult, backtest
from tsgen.models.arima import ARIMA
from tsgen.models.dmm import DeepMarkovModel
from tsgen.models.lds import LinearGaussianSSM
from tsgen.models.rnn import RNNForecaster

__version__ = "0.1.0"

__all__ = [
    "ARIMA",
    "AnomalyDetector",
    "BacktestResult",
    "BaseForecaster",
    "DeepMarkovModel",
    "LinearGaussianSSM",
    "RNNForecaster",
    "backtest",
    "load",
    "metrics",
    "__version__",
]
